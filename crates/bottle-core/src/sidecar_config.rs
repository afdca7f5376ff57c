//! From the manifest's `egress` routes and `git` upstreams to what the
//! sidecars enforce ([`EgressPolicy`], [`GatePolicy`]): credentials read from the host (the only place they
//! live), the bottle's CA minted, the sentinels the bottle sees listed, and
//! each upstream's host key pinned from the operator's `known_hosts` when it
//! is there.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;

use crate::manifest::{AuthScheme, EgressRoute, EnvValue, GitUpstream};
use crate::prepare::{Host, placeholder};
use crate::sidecar::{EgressPolicy, EgressRule, GatePolicy, GateUpstream, InjectedHeader, Secret, TokenDigest};
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
) -> Result<EgressPolicy> {
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
    let (ca_cert_pem, ca_key_pem) = crate::ca::mint_ca(slug)?;
    Ok(EgressPolicy {
        bottle: slug.to_string(),
        client_token,
        ca_cert_pem,
        ca_key_pem,
        rules,
        sentinels: hidden.iter().map(|name| placeholder(name)).collect(),
        extra_upstream_ca_pem,
        resolve: BTreeMap::new(),
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

/// The `known_hosts` lines that name `host` (`[host]:port` when the port is
/// not 22), as `ssh-keygen -F` and ssh itself find them:
///
/// - a line's names are a comma-separated list of patterns, matched without
///   regard to case, where `*` and `?` are wildcards and a leading `!`
///   negates (a negated match rules the line out);
/// - a hashed name, `|1|SALT|HASH` (what `HashKnownHosts yes`, Debian's and
///   Ubuntu's default, writes), matches when HASH is the HMAC-SHA1 of the
///   name keyed by SALT (both base64);
/// - `@cert-authority` and `@revoked` lines count by their names like the
///   others, and go along with their marker; comments never count.
fn known_host_lines(known_hosts: &str, host: &str, port: u16) -> String {
    let wanted = if port == 22 { host.to_ascii_lowercase() } else { format!("[{}]:{port}", host.to_ascii_lowercase()) };
    known_hosts
        .lines()
        .map(str::trim)
        .filter(|line| {
            let mut fields = line.split_whitespace();
            let names = match fields.next() {
                Some(marker) if marker.starts_with('@') => fields.next(),
                first => first,
            };
            !line.starts_with('#') && names.is_some_and(|names| names_match(names, &wanted))
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Whether the `known_hosts` names field `names` matches `wanted` (see [`known_host_lines`]).
fn names_match(names: &str, wanted: &str) -> bool {
    if let Some(hashed) = names.strip_prefix("|1|") {
        return hashed_name_matches(hashed, wanted);
    }
    let mut matched = false;
    for pattern in names.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(pattern) => (true, pattern),
            None => (false, pattern),
        };
        let pattern: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
        if wildcard_match(&pattern, &wanted.chars().collect::<Vec<_>>()) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// Whether `SALT|HASH` (the part of a hashed name after `|1|`) is `name`'s.
fn hashed_name_matches(hashed: &str, name: &str) -> bool {
    use hmac::Mac as _;
    let Some((salt, hash)) = hashed.split_once('|') else { return false };
    let base64 = base64::engine::general_purpose::STANDARD;
    let (Ok(salt), Ok(hash)) = (base64.decode(salt), base64.decode(hash)) else { return false };
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else { return false };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// ssh's host pattern match: `*` is any run of characters, `?` any one.
fn wildcard_match(pattern: &[char], name: &[char]) -> bool {
    match pattern {
        [] => name.is_empty(),
        ['*', rest @ ..] => (0..=name.len()).any(|skip| wildcard_match(rest, &name[skip..])),
        ['?', rest @ ..] => !name.is_empty() && wildcard_match(rest, &name[1..]),
        [literal, rest @ ..] => name.first() == Some(literal) && wildcard_match(rest, &name[1..]),
    }
}

/// The gate configuration for `upstreams`: keys read, host keys pinned where the operator has them.
pub(crate) fn gate_config(
    slug: &str,
    upstreams: &[GitUpstream],
    client_token: TokenDigest,
    host: &Host,
) -> Result<GatePolicy> {
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
    Ok(GatePolicy {
        bottle: slug.to_string(),
        client_token,
        upstreams,
        idle_timeout_secs: GatePolicy::DEFAULT_IDLE_TIMEOUT_SECS,
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
    fn known_hosts_patterns_negations_and_markers_count_as_ssh_counts_them() {
        let file = "*.example.org,!evil.example.org ssh-ed25519 WILD\n\
                    @revoked git.example.org ssh-ed25519 OLD\n\
                    @cert-authority [gi?.example.org]:* ssh-ed25519 CA\n\
                    GIT.Example.Org ssh-ed25519 UPPER\n";
        let lines = |host: &str, port: u16| -> Vec<String> {
            known_host_lines(file, host, port)
                .lines()
                .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
                .collect()
        };
        assert_eq!(lines("git.example.org", 22), ["WILD", "OLD", "UPPER"]);
        assert_eq!(lines("evil.example.org", 22), Vec::<String>::new());
        assert_eq!(lines("git.example.org", 2222), ["CA"]);
        assert_eq!(lines("example.org", 22), Vec::<String>::new());
    }

    /// A fresh ed25519 public key, `TYPE BASE64`, made by `ssh-keygen` in `dir`.
    fn public_key(dir: &Path, name: &str) -> String {
        let key = dir.join(name);
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&key)
            .stdin(std::process::Stdio::null())
            .status()
            .expect("running ssh-keygen");
        assert!(made.success(), "ssh-keygen -t ed25519 failed");
        let public = std::fs::read_to_string(key.with_extension("pub")).expect("the public key");
        public.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    }

    /// Writes `lines` to `file` and hashes it in place with `ssh-keygen -H`,
    /// as `HashKnownHosts yes` leaves it; returns the hashed text.
    fn hash_known_hosts(file: &Path, lines: &str) -> String {
        std::fs::write(file, lines).expect("writing known_hosts");
        let hashed = std::process::Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(file)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running ssh-keygen -H");
        assert!(hashed.status.success(), "ssh-keygen -H: {}", String::from_utf8_lossy(&hashed.stderr));
        std::fs::read_to_string(file).expect("the hashed known_hosts")
    }

    /// What `ssh-keygen -F NAME` finds in `file`, without its comment lines.
    fn ssh_keygen_finds(file: &Path, name: &str) -> String {
        let found = std::process::Command::new("ssh-keygen")
            .args(["-F", name, "-f"])
            .arg(file)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running ssh-keygen -F");
        String::from_utf8_lossy(&found.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    #[test]
    fn hashed_known_hosts_lines_match_as_ssh_keygen_finds_them() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (github, example) = (public_key(dir.path(), "github"), public_key(dir.path(), "example"));
        let file = dir.path().join("known_hosts");
        let hashed = hash_known_hosts(&file, &format!("github.com {github}\n[git.example]:2222 {example}\n"));
        assert_eq!(hashed.lines().count(), 2, "{hashed}");
        assert!(hashed.lines().all(|line| line.starts_with("|1|")), "ssh-keygen -H hashed every name: {hashed}");

        let found = known_host_lines(&hashed, "github.com", 22);
        assert_eq!(found.lines().count(), 1, "{found}");
        assert!(found.starts_with("|1|") && found.ends_with(&format!("{github}\n")), "{found}");
        assert_eq!(found, ssh_keygen_finds(&file, "github.com"));
        let found = known_host_lines(&hashed, "git.example", 2222);
        assert!(found.ends_with(&format!("{example}\n")) && found.lines().count() == 1, "{found}");
        assert_eq!(found, ssh_keygen_finds(&file, "[git.example]:2222"));
        for (host, port) in [("git.example", 22), ("github.com", 2222), ("gitlab.com", 22), ("github.co", 22)] {
            assert_eq!(known_host_lines(&hashed, host, port), "", "{host}:{port}");
        }
    }

    #[test]
    fn the_gate_pins_a_host_key_from_a_hashed_known_hosts() {
        let home = tempfile::tempdir().expect("a temp home");
        std::fs::create_dir(home.path().join(".ssh")).expect("~/.ssh");
        let key = public_key(home.path(), "host");
        let hashed = hash_known_hosts(
            &home.path().join(".ssh/known_hosts"),
            &format!("other.example {key}\n[git.example]:2222 {key}\n"),
        );
        let pinned: String = hashed.lines().nth(1).map(|line| format!("{line}\n")).expect("the second line");
        let identity_file = home.path().join("deploy_key");
        std::fs::write(&identity_file, "a private key").expect("the key");
        let upstream = |host: &str| GitUpstream {
            name: "p".into(),
            host: host.into(),
            port: 2222,
            user: "git".into(),
            repo: "org/p.git".into(),
            identity_file: identity_file.clone(),
            push: Default::default(),
        };
        let host = Host {
            env: Default::default(),
            home: home.path().to_path_buf(),
            state: crate::state::StateRoot::at("/nonexistent"),
        };
        let digest = crate::sidecar::ClientToken::mint().expect("token").digest();
        let config =
            gate_config("s-1", &[upstream("git.example"), upstream("new.example")], digest, &host).expect("config");
        assert_eq!(config.upstreams[0].host_key_check(), HostKeyCheck::Pinned(pinned));
        assert_eq!(config.upstreams[1].host_key_check(), HostKeyCheck::FirstUse);
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
            state: crate::state::StateRoot::at("/nonexistent"),
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
        let digest = crate::sidecar::ClientToken::mint().expect("token").digest();
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
        let mut plan = crate::plan::EgressPlan { routes: routes.to_vec(), policy: config, warnings: vec![] };
        plan.policy.rules[0].ports = vec![443, 8443];
        plan.policy.rules[0].insecure_http = true;
        let lines = plan.route_lines();
        assert_eq!(lines[0], "api.example.com ports 443,8443 [auth:bearer from $T, also over plain http]");
        assert_eq!(lines[2], "api.example.com [auth:basic from $T]");
        assert!(lines.iter().all(|l| !l.contains("tok") || l.contains("from $T")), "{lines:?}");
        let empty = Host { env: Default::default(), ..host };
        let err = egress_config("s-1", vec![], &routes[..1], &env, &[], digest, &empty).expect_err("T unset");
        assert_eq!(err.kind(), ErrorKind::MissingHostEnv);
    }
}
