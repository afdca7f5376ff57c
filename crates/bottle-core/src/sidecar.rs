//! What the sidecars are told: the egress proxy's and the git gate's
//! configuration. Prepare resolves it on the host (secrets included), a
//! backend writes it as JSON into the sidecar's own container or state
//! folder — never into the bottle — and `bottle sidecar` reads it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

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

/// A credential the egress proxy sets on requests to one route's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectedHeader {
    /// Header name, lower-case (`authorization`, `x-api-key`, or the manifest's `header`).
    pub name: String,
    /// The full header value (`Bearer …`, `Basic …`, the key itself).
    pub value: Secret,
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
    /// The credential to inject, if any.
    pub inject: Option<InjectedHeader>,
}

/// The egress proxy's whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressConfig {
    /// The bottle's slug (in every audit line).
    pub bottle: String,
    /// Address to listen on, e.g. `0.0.0.0:3128` or `127.0.0.1:0`.
    pub listen: String,
    /// The bottle's CA certificate (PEM): leaf certificates are minted from it.
    pub ca_cert_pem: String,
    /// The CA's private key (PEM).
    pub ca_key_pem: Secret,
    /// Allowed routes, first match wins.
    pub rules: Vec<EgressRule>,
    /// Placeholder values the bottle sees instead of secrets: removed from
    /// any request they appear in, unless the route injects the real value.
    pub sentinels: Vec<String>,
    /// Extra CA certificates (PEM) to trust for upstream TLS, besides the system roots.
    pub extra_upstream_ca_pem: Option<String>,
    /// Name → address overrides for upstream resolution (like curl's `--resolve`).
    pub resolve: BTreeMap<String, std::net::IpAddr>,
    /// Where to append the audit log (JSON lines); `-` for stdout.
    pub audit_log: String,
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

/// The git gate's whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitGateConfig {
    /// The bottle's slug (in every audit line).
    pub bottle: String,
    /// Address to listen on for git smart HTTP.
    pub listen: String,
    /// Where mirrors, keys and scratch files live (created if missing).
    pub work_dir: String,
    /// The upstreams.
    pub upstreams: Vec<GateUpstream>,
    /// Where to append the audit log (JSON lines); `-` for stdout.
    pub audit_log: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_serialise_for_the_sidecar_but_never_debug_print() {
        let h =
            InjectedHeader { name: "authorization".into(), value: Secret::new("Bearer tok-1"), source: "GH".into() };
        assert!(!format!("{h:?}").contains("tok-1"));
        let json = serde_json::to_string(&h).expect("json");
        assert!(json.contains("Bearer tok-1"));
        assert_eq!(serde_json::from_str::<InjectedHeader>(&json).expect("back"), h);
    }
}
