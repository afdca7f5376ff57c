//! What the sidecars are told: the egress proxy's and the git gate's
//! configuration. Prepare resolves it on the host (secrets included), a
//! backend writes it as JSON into the sidecar's own container or state
//! folder — never into the bottle — and `bottle sidecar` reads it.

pub use crate::bundle::{LAUNCHER, SidecarProgram};
pub use crate::ca::mint_ca;
pub use crate::protocol::{RelayPair, SidecarCommand, SidecarProcess};
pub use crate::sidecar_config::{HostKeyCheck, UPSTREAM_CA_ENV, proxy_env};

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::PushPolicy;

/// A secret value: serialised as itself (the sidecar needs it), never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(••••)")
    }
}

/// Where a sidecar listens for its bottle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Listen {
    /// A TCP address, e.g. `127.0.0.1:0` (a free port).
    Tcp(String),
    /// A unix socket at this path (replaced if it exists; mode 0666, so
    /// who may connect is decided by the folder it is in).
    Unix(String),
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(addr) => f.write_str(addr),
            Listen::Unix(path) => write!(f, "unix:{path}"),
        }
    }
}

/// The per-bottle secret by which a bottle's sidecars know their own
/// bottle's clients: 256 random bits, minted in prepare. The bottle holds
/// the token (in its proxy URL and git configuration); the sidecars hold
/// only its [`TokenDigest`].
#[derive(Clone, PartialEq, Eq)]
pub struct ClientToken(Secret);

impl ClientToken {
    /// A new random token (64 hex digits).
    pub fn mint() -> crate::Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| {
            crate::Error::new(crate::ErrorKind::Io, format!("the system has no random numbers to mint a token: {e}"))
        })?;
        Ok(Self(Secret::new(hex(&bytes))))
    }

    /// A token with this value (read back from a bottle's state).
    pub fn from_value(value: impl Into<String>) -> Self {
        Self(Secret::new(value))
    }

    /// The token itself, for the bottle's proxy URL and git configuration.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// What a sidecar keeps to check the token.
    pub fn digest(&self) -> TokenDigest {
        TokenDigest(hex(&Sha256::digest(self.expose().as_bytes())))
    }
}

impl fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientToken(••••)")
    }
}

/// The SHA-256 (hex) of a [`ClientToken`]: what a sidecar holds, so that its
/// configuration never contains the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenDigest(String);

impl TokenDigest {
    /// Whether `presented` is the token, compared in constant time (over
    /// the digests, so neither the length nor any prefix of the token leaks).
    pub fn matches(&self, presented: &str) -> bool {
        let presented = hex(&Sha256::digest(presented.as_bytes()));
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
    }
}

/// The user name in the `user:token` pairs a bottle's clients send
/// (`Proxy-Authorization` and the gate's `Authorization`).
pub const TOKEN_USER: &str = "bb";

/// The git configuration that makes git send `token` to the gate at
/// `gate_url` (and to nothing else): an `http.<url>.extraHeader`.
pub(crate) fn gate_credentials_config(gate_url: &str, token: &ClientToken) -> String {
    use base64::Engine as _;
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{TOKEN_USER}:{}", token.expose()));
    format!(
        "# The bottle's credentials for its git gate (written by bot-bottle).\n[http \"{gate_url}/\"]\n\textraHeader = Authorization: Basic {pair}\n"
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A credential the egress proxy sets on requests to one route's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectedHeader {
    /// Header name, lower-case (`authorization`, `x-api-key`, or the manifest's `header`).
    pub name: String,
    /// The full header value (`Bearer …`, `Basic …`, the key itself).
    pub value: Secret,
    /// The credential itself, without a scheme (the token; the password for
    /// `basic`): what the route's sentinels are swapped for in a request, and
    /// one of the values scrubbed from its responses.
    pub credential: Secret,
    /// The sentinels the bottle sees in place of this credential (the
    /// placeholders of the variables that hold it); each is swapped for the
    /// credential wherever a request on this route carries it. The first also
    /// replaces the credential in responses.
    #[serde(default)]
    pub sentinels: Vec<String>,
    /// Where the value came from (a host variable's name, or `claude login`), for logs and the summary.
    pub source: String,
}

/// One allowed route, as the proxy enforces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRule {
    /// Exact host, or `*.suffix`; an IP literal or `localhost` names a private address explicitly.
    pub host: String,
    /// Allowed methods (upper-case); empty allows all.
    pub methods: Vec<String>,
    /// Allowed path prefixes or globs (`*`); empty allows all.
    pub paths: Vec<String>,
    /// The ports the route may reach, and where its credential goes over
    /// TLS; empty allows every port, with the credential only to 443.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Whether the credential also goes over plain `http://` (to port 80, or to `ports`).
    #[serde(default)]
    pub insecure_http: bool,
    /// The credential to inject, if any.
    pub inject: Option<InjectedHeader>,
}

impl EgressRule {
    /// The route in one line for a person:
    /// `host [methods] [paths] [ports P,…] [auth:scheme from SOURCE[, also over plain http]]`.
    /// Never a credential.
    pub fn line(&self) -> String {
        let mut line = self.host.clone();
        if !self.methods.is_empty() {
            line.push_str(&format!(" {}", self.methods.join(",")));
        }
        if !self.paths.is_empty() {
            line.push_str(&format!(" {}", self.paths.join(",")));
        }
        if !self.ports.is_empty() {
            let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
            line.push_str(&format!(" ports {}", ports.join(",")));
        }
        if let Some(inject) = &self.inject {
            let value = inject.value.expose();
            let scheme = match inject.name.as_str() {
                "authorization" if value.starts_with("Bearer ") => "bearer".to_string(),
                "authorization" if value.starts_with("Basic ") => "basic".to_string(),
                "x-api-key" => "x-api-key".to_string(),
                other => format!("header {other}"),
            };
            let plain = if self.insecure_http { ", also over plain http" } else { "" };
            line.push_str(&format!(" [auth:{scheme} from {}{plain}]", inject.source));
        }
        line
    }

    /// A route to `host` allowing every method, path and port, without a credential.
    pub fn open(host: impl Into<String>) -> Self {
        EgressRule {
            host: host.into(),
            methods: Vec::new(),
            paths: Vec::new(),
            ports: Vec::new(),
            insecure_http: false,
            inject: None,
        }
    }
}

/// Where a sidecar listens and writes: what its backend decides (see
/// `Wiring`), never core.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Where it listens.
    pub listen: Listen,
    /// Where it appends its audit log (JSON lines); `-` for stdout.
    pub audit_log: String,
    /// Where it keeps its files (the git gate's mirrors and keys).
    pub work_dir: String,
}

/// What the egress proxy enforces: the bottle's routes, credentials and CA,
/// resolved by `prepare`. With a [`Placement`] it makes an [`EgressConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressPolicy {
    /// The bottle's slug (in every audit line).
    pub bottle: String,
    /// The bottle's client token, checked on every request (`407` without it).
    pub client_token: TokenDigest,
    /// The bottle's CA certificate (PEM): leaf certificates are minted from it.
    pub ca_cert_pem: String,
    /// The CA's private key (PEM).
    pub ca_key_pem: Secret,
    /// Allowed routes, first match wins.
    pub rules: Vec<EgressRule>,
    /// Placeholder values the bottle sees instead of secrets: removed from
    /// any request header or query parameter they appear in, unless they are
    /// a sentinel of the route's own credential, which takes its place.
    pub sentinels: Vec<String>,
    /// Extra CA certificates (PEM) to trust for upstream TLS, besides the system roots.
    pub extra_upstream_ca_pem: Option<String>,
    /// Name → address overrides for upstream resolution (like curl's `--resolve`).
    pub resolve: BTreeMap<String, std::net::IpAddr>,
}

impl EgressPolicy {
    /// The proxy's configuration with this policy, placed by its backend.
    pub fn placed(&self, placement: &Placement) -> EgressConfig {
        EgressConfig {
            listen: placement.listen.clone(),
            audit_log: placement.audit_log.clone(),
            grants: None,
            policy: self.clone(),
        }
    }
}

/// The egress proxy's whole configuration: what `bottle sidecar egress` reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressConfig {
    /// Where to listen.
    pub listen: Listen,
    /// Where to append the audit log (JSON lines); `-` for stdout.
    pub audit_log: String,
    /// The supervise queue's live grants file (JSON lines of
    /// [`Grant`](crate::supervise::Grant)), read when a request would be
    /// denied: an approved route is allowed from then on, and a denial tells
    /// the agent to call `request_egress`. `None` without supervise.
    #[serde(default)]
    pub grants: Option<String>,
    /// What to enforce.
    #[serde(flatten)]
    pub policy: EgressPolicy,
}

/// One upstream the git gate mirrors and pushes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateUpstream {
    /// The manifest's `Name`; served as `/<name>.git`.
    pub name: String,
    /// SSH host.
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// SSH user.
    pub user: String,
    /// Repository path on the host.
    pub repo: String,
    /// The private key (the manifest's `IdentityFile` content).
    pub identity_key: Secret,
    /// `known_hosts` lines pinning the upstream's host key; `None` = trust on first use.
    pub known_hosts: Option<String>,
    /// What pushes are allowed.
    pub push: PushPolicy,
}

/// What the git gate enforces: the bottle's upstreams and push policies,
/// resolved by `prepare`. With a [`Placement`] it makes a [`GitGateConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatePolicy {
    /// The bottle's slug (in every audit line).
    pub bottle: String,
    /// The bottle's client token, checked on every request (`401` without it).
    pub client_token: TokenDigest,
    /// The upstreams.
    pub upstreams: Vec<GateUpstream>,
    /// How long the gate waits on a client that sends and reads nothing, in
    /// the middle of a request or between requests, before it cuts the
    /// connection (a push stalled mid-pack is then dropped with its quarantine).
    #[serde(default = "GatePolicy::default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
}

impl GatePolicy {
    /// The default of [`GatePolicy::idle_timeout_secs`]: 5 minutes, far
    /// longer than git stays silent (its keepalives come every 5 s).
    pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 300;

    fn default_idle_timeout_secs() -> u64 {
        Self::DEFAULT_IDLE_TIMEOUT_SECS
    }

    /// The gate's configuration with this policy, placed by its backend.
    pub fn placed(&self, placement: &Placement) -> GitGateConfig {
        GitGateConfig {
            listen: placement.listen.clone(),
            audit_log: placement.audit_log.clone(),
            work_dir: placement.work_dir.clone(),
            grants: None,
            policy: self.clone(),
        }
    }
}

/// The git gate's whole configuration: what `bottle sidecar git-gate` reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitGateConfig {
    /// Where to listen for git smart HTTP.
    pub listen: Listen,
    /// Where to append the audit log (JSON lines); `-` for stdout.
    pub audit_log: String,
    /// Where mirrors, keys and scratch files live (created if missing).
    pub work_dir: String,
    /// The supervise queue's live grants file, whose branch globs every
    /// push may also update. `None` without supervise.
    #[serde(default)]
    pub grants: Option<String>,
    /// What to enforce.
    #[serde(flatten)]
    pub policy: GatePolicy,
}

/// What the supervise sidecar is told (`bottle sidecar supervise --config FILE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuperviseConfig {
    /// Where it listens for its bottle.
    pub listen: Listen,
    /// The bottle's slug.
    pub bottle: String,
    /// The digest of the bottle's client token, which every request must present.
    pub client_token: TokenDigest,
    /// The bottle's supervise queue folder, as the sidecar sees it.
    pub queue_dir: String,
    /// How long a request waits for the operator before it is denied.
    pub timeout_secs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_serialise_for_the_sidecar_but_never_debug_print() {
        let h = InjectedHeader {
            name: "authorization".into(),
            value: Secret::new("Bearer tok-1"),
            credential: Secret::new("tok-1"),
            sentinels: vec!["bot-bottle-hidden:GH".into()],
            source: "GH".into(),
        };
        assert!(!format!("{h:?}").contains("tok-1"));
        let json = serde_json::to_string(&h).expect("json");
        assert!(json.contains("Bearer tok-1"));
        assert_eq!(serde_json::from_str::<InjectedHeader>(&json).expect("back"), h);
    }

    #[test]
    fn a_token_is_random_never_debug_printed_and_its_digest_checks_it() {
        let token = ClientToken::mint().expect("token");
        let other = ClientToken::mint().expect("token");
        assert_eq!(token.expose().len(), 64);
        assert_ne!(token.expose(), other.expose());
        assert!(!format!("{token:?}").contains(token.expose()));
        let digest = token.digest();
        assert!(digest.matches(token.expose()));
        assert!(!digest.matches(other.expose()));
        assert!(!digest.matches(""));
        assert!(!digest.matches(&token.expose()[..63]));
        let json = serde_json::to_string(&digest).expect("json");
        assert!(!json.contains(token.expose()), "the digest is not the token");
    }
}
