//! From the manifest's `egress` routes and `git` upstreams to the sidecars'
//! configuration: credentials read from the host (the only place they
//! live), the bottle's CA minted, the sentinels the bottle sees listed, and
//! each upstream's host key pinned from the operator's `known_hosts` when it
//! is there.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;

use crate::bottle::Sidecar;
use crate::manifest::{AuthScheme, EgressRoute, EnvValue, GitUpstream};
use crate::prepare::{Host, placeholder};
use crate::sidecar::{
    EgressConfig, EgressRule, GateUpstream, GitGateConfig, InjectedHeader, Listen, Secret, TokenDigest,
};
use crate::{Error, ErrorKind, Result};

/// Environment variable naming a CA bundle (PEM) the egress proxy trusts for
/// upstream TLS besides the system roots (a private upstream, a test server).
pub const UPSTREAM_CA_ENV: &str = "BOT_BOTTLE_UPSTREAM_CA";

/// Port the bottle reaches the egress proxy at, on its own loopback.
pub const EGRESS_PORT: u16 = 3128;
/// Port the bottle reaches the git gate at, on its own loopback.
pub const GATE_PORT: u16 = 8080;
/// The folder of the sidecars' unix sockets, in the sidecars and the relay
/// beside the bottle (never in the bottle itself).
pub const SOCKET_DIR: &str = "/run/bot-bottle";
/// Where the bottle's CA certificate is installed inside the bottle.
pub const GUEST_CA_FILE: &str = "/usr/local/share/ca-certificates/bot-bottle-ca.crt";
/// The bottle's system CA bundle (with the bottle's CA in it once provisioned).
pub const GUEST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The URL forms an upstream is known by, each rewritten to the gate with `insteadOf`.
pub fn upstream_url_forms(u: &GitUpstream) -> Vec<String> {
    let mut repos = vec![u.repo.clone()];
    if let Some(bare) = u.repo.strip_suffix(".git") {
        repos.push(bare.to_string());
    }
    let mut forms = Vec::new();
    for repo in &repos {
        if u.port == 22 {
            forms.push(format!("{}@{}:{repo}", u.user, u.host));
            forms.push(format!("ssh://{}@{}/{repo}", u.user, u.host));
        }
        forms.push(format!("ssh://{}@{}:{}/{repo}", u.user, u.host, u.port));
        forms.push(format!("https://{}/{repo}", u.host));
    }
    forms
}

/// The egress configuration for `routes`, with `hidden` names' placeholders
/// as sentinels. A route's own sentinels are the placeholders of the hidden
/// `env` entries that copy the host variable its `auth` reads.
pub(crate) fn egress_config(
    slug: &str,
    agent_rules: Vec<EgressRule>,
    routes: &[EgressRoute],
    env: &BTreeMap<String, EnvValue>,
    hidden: &[String],
    client_token: TokenDigest,
    host: &Host,
) -> Result<EgressConfig> {
    let mut missing = Vec::new();
    let manifest_rules: Vec<EgressRule> = routes
        .iter()
        .map(|route| {
            let inject = route.auth.as_ref().and_then(|auth| {
                let Some(credential) = host.var(&auth.from_host) else {
                    missing
                        .push(format!("egress route `{}` takes its credential from `{}`", route.host, auth.from_host));
                    return None;
                };
                let sentinels = env
                    .iter()
                    .filter(|(name, value)| {
                        matches!(value, EnvValue::FromHost { from_host, .. } if *from_host == auth.from_host)
                            && hidden.contains(name)
                    })
                    .map(|(name, _)| placeholder(name))
                    .collect();
                let (name, value) = match &auth.scheme {
                    AuthScheme::Bearer => ("authorization".to_string(), format!("Bearer {credential}")),
                    AuthScheme::XApiKey => ("x-api-key".to_string(), credential.to_string()),
                    AuthScheme::Basic { user } => (
                        "authorization".to_string(),
                        format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{credential}"))
                        ),
                    ),
                    AuthScheme::Header { name } => (name.to_ascii_lowercase(), credential.to_string()),
                };
                Some(InjectedHeader {
                    name,
                    value: Secret::new(value),
                    credential: Secret::new(credential),
                    sentinels,
                    source: format!("${}", auth.from_host),
                })
            });
            EgressRule {
                host: route.host.clone(),
                methods: route.methods.clone(),
                paths: route.paths.clone(),
                ports: route.ports.clone(),
                insecure_http: route.insecure_http,
                inject,
            }
        })
        .collect();
    if !missing.is_empty() {
        return Err(Error::new(
            ErrorKind::MissingHostEnv,
            format!("{}, which is not set; export it or remove the route's auth", missing.join("; ")),
        ));
    }
    let rules = agent_rules.into_iter().chain(manifest_rules).collect();
    let extra_upstream_ca_pem = match host.var(UPSTREAM_CA_ENV).filter(|v| !v.is_empty()) {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            Error::new(ErrorKind::NotFound, format!("{UPSTREAM_CA_ENV} names {path}, which cannot be read"))
                .with_source(e)
        })?),
        None => None,
    };
    let (ca_cert_pem, ca_key_pem) = crate::mint_ca(slug)?;
    Ok(EgressConfig {
        bottle: slug.to_string(),
        listen: Listen::Unix(format!("{SOCKET_DIR}/{}.sock", Sidecar::Egress.name())),
        client_token,
        ca_cert_pem,
        ca_key_pem,
        rules,
        sentinels: hidden.iter().map(|name| placeholder(name)).collect(),
        extra_upstream_ca_pem,
        resolve: BTreeMap::new(),
        audit_log: "-".into(),
    })
}

/// How an upstream's SSH host key is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// Pinned from these `known_hosts` lines of the operator's.
    Pinned(String),
    /// Trusted on first use and recorded by the gate.
    FirstUse,
}

/// The `known_hosts` lines naming `host` (`[host]:port` when the port is not 22).
fn known_host_lines(known_hosts: &str, host: &str, port: u16) -> String {
    let wanted = if port == 22 { host.to_string() } else { format!("[{host}]:{port}") };
    known_hosts
        .lines()
        .filter(|line| {
            let line = line.trim();
            !line.starts_with('#')
                && line.split_whitespace().next().is_some_and(|names| names.split(',').any(|n| n == wanted))
        })
        .map(|line| format!("{}\n", line.trim()))
        .collect()
}

/// The gate configuration for `upstreams`: keys read, host keys pinned where the operator has them.
pub(crate) fn gate_config(
    slug: &str,
    upstreams: &[GitUpstream],
    client_token: TokenDigest,
    host: &Host,
) -> Result<GitGateConfig> {
    let known = std::fs::read_to_string(host.home.join(".ssh/known_hosts")).unwrap_or_default();
    let upstreams = upstreams
        .iter()
        .map(|u| {
            let key = read_key(&u.identity_file, &u.name)?;
            let pinned = known_host_lines(&known, &u.host, u.port);
            Ok(GateUpstream {
                name: u.name.clone(),
                host: u.host.clone(),
                port: u.port,
                user: u.user.clone(),
                repo: u.repo.clone(),
                identity_key: Secret::new(key),
                known_hosts: (!pinned.is_empty()).then_some(pinned),
                push: u.push.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(GitGateConfig {
        bottle: slug.to_string(),
        listen: Listen::Unix(format!("{SOCKET_DIR}/{}.sock", Sidecar::GitGate.name())),
        client_token,
        work_dir: "/var/lib/bot-bottle/gate".into(),
        upstreams,
        audit_log: "-".into(),
    })
}

impl GateUpstream {
    /// How this upstream's host key is checked.
    pub fn host_key_check(&self) -> HostKeyCheck {
        match &self.known_hosts {
            Some(lines) => HostKeyCheck::Pinned(lines.clone()),
            None => HostKeyCheck::FirstUse,
        }
    }
}

fn read_key(path: &Path, name: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::new(
            ErrorKind::NotFound,
            format!(
                "git upstream `{name}`'s IdentityFile {} cannot be read; fix the path in the manifest",
                path.display()
            ),
        )
        .with_source(e)
    })
}

/// The environment that points a bottle's programs at the egress proxy and the bottle's CA.
pub fn proxy_env(proxy_url: &str, no_proxy: &[&str]) -> BTreeMap<String, String> {
    let (ca_bundle, ca_file) = (GUEST_CA_BUNDLE, GUEST_CA_FILE);
    let no_proxy = no_proxy.join(",");
    [
        ("HTTPS_PROXY", proxy_url),
        ("HTTP_PROXY", proxy_url),
        ("https_proxy", proxy_url),
        ("http_proxy", proxy_url),
        ("NO_PROXY", &no_proxy),
        ("no_proxy", &no_proxy),
        ("SSL_CERT_FILE", ca_bundle),
        ("REQUESTS_CA_BUNDLE", ca_bundle),
        ("CURL_CA_BUNDLE", ca_bundle),
        ("GIT_SSL_CAINFO", ca_bundle),
        ("NODE_EXTRA_CA_CERTS", ca_file),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_lines_match_host_and_port() {
        let file = "github.com,140.82.1.1 ssh-ed25519 AAAA1\n# comment github.com\n[git.example]:2222 ssh-rsa BBBB\n|1|hashed= ssh-rsa CCCC\n";
        assert_eq!(known_host_lines(file, "github.com", 22), "github.com,140.82.1.1 ssh-ed25519 AAAA1\n");
        assert_eq!(known_host_lines(file, "git.example", 2222), "[git.example]:2222 ssh-rsa BBBB\n");
        assert_eq!(known_host_lines(file, "git.example", 22), "");
    }

    #[test]
    fn every_url_form_of_an_upstream_is_rewritten() {
        let u = GitUpstream {
            name: "p".into(),
            host: "github.com".into(),
            port: 22,
            user: "git".into(),
            repo: "org/p.git".into(),
            identity_file: "/k".into(),
            push: Default::default(),
        };
        assert_eq!(
            upstream_url_forms(&u),
            [
                "git@github.com:org/p.git",
                "ssh://git@github.com/org/p.git",
                "ssh://git@github.com:22/org/p.git",
                "https://github.com/org/p.git",
                "git@github.com:org/p",
                "ssh://git@github.com/org/p",
                "ssh://git@github.com:22/org/p",
                "https://github.com/org/p",
            ]
        );
    }

    #[test]
    fn route_credentials_come_from_the_host_in_each_scheme() {
        use crate::manifest::RouteAuth;
        let host = Host {
            env: [("T".to_string(), "tok".to_string())].into(),
            home: "/nonexistent".into(),
            state: crate::StateRoot::at("/nonexistent"),
        };
        let route = |scheme| EgressRoute {
            host: "api.example.com".into(),
            methods: vec![],
            paths: vec![],
            ports: vec![],
            auth: Some(RouteAuth { scheme, from_host: "T".into() }),
            insecure_http: false,
            wildcard_auth: false,
        };
        let routes = [
            route(AuthScheme::Bearer),
            route(AuthScheme::XApiKey),
            route(AuthScheme::Basic { user: "bot".into() }),
            route(AuthScheme::Header { name: "X-Token".into() }),
        ];
        let digest = crate::ClientToken::mint().expect("token").digest();
        let env = BTreeMap::from([
            ("GH".to_string(), EnvValue::FromHost { from_host: "T".into(), secret: true }),
            ("COPY".to_string(), EnvValue::FromHost { from_host: "T".into(), secret: false }),
            ("OTHER".to_string(), EnvValue::FromHost { from_host: "U".into(), secret: true }),
        ]);
        let hidden = ["GH".to_string(), "OTHER".to_string()];
        let config = egress_config("s-1", vec![], &routes, &env, &hidden, digest.clone(), &host).expect("config");
        let injected: Vec<(&str, &str)> = config
            .rules
            .iter()
            .map(|r| r.inject.as_ref().expect("inject"))
            .map(|i| (i.name.as_str(), i.value.expose()))
            .collect();
        assert_eq!(
            injected,
            [
                ("authorization", "Bearer tok"),
                ("x-api-key", "tok"),
                ("authorization", "Basic Ym90OnRvaw=="),
                ("x-token", "tok")
            ]
        );
        let bare: Vec<&str> =
            config.rules.iter().filter_map(|r| r.inject.as_ref()).map(|i| i.credential.expose()).collect();
        assert_eq!(bare, ["tok"; 4], "the credential itself, whatever the scheme");
        for rule in &config.rules {
            let sentinels = &rule.inject.as_ref().expect("inject").sentinels;
            assert_eq!(sentinels, &["bot-bottle-hidden:GH"], "only the hidden copies of T are the route's sentinels");
        }
        assert_eq!(config.sentinels, ["bot-bottle-hidden:GH", "bot-bottle-hidden:OTHER"]);
        assert!(config.ca_cert_pem.contains("BEGIN CERTIFICATE"));
        let mut plan = crate::EgressPlan { routes: routes.to_vec(), config, proxy_url: None, warnings: vec![] };
        plan.config.rules[0].ports = vec![443, 8443];
        plan.config.rules[0].insecure_http = true;
        let lines = plan.route_lines();
        assert_eq!(lines[0], "api.example.com ports 443,8443 [auth:bearer from $T, also over plain http]");
        assert_eq!(lines[2], "api.example.com [auth:basic from $T]");
        assert!(lines.iter().all(|l| !l.contains("tok") || l.contains("from $T")), "{lines:?}");
        let empty = Host { env: Default::default(), ..host };
        let err = egress_config("s-1", vec![], &routes[..1], &env, &[], digest, &empty).expect_err("T unset");
        assert_eq!(err.kind(), ErrorKind::MissingHostEnv);
    }
}
