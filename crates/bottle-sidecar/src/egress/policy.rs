//! The egress policy: which route a host falls under, whether that route
//! allows a method and path, and which resolved addresses the proxy may
//! connect to. Every denial carries one sentence saying what was denied, by
//! which route, and how the operator can allow it.
//!
//! - A route's host is an exact name or a leading `*.` wildcard (`*.crates.io`
//!   matches `index.crates.io` and `a.b.crates.io`, not `crates.io`);
//!   comparisons ignore case and a trailing dot. The first route whose host
//!   matches decides; later routes are not consulted.
//! - A path pattern without `*` is a prefix of the path; a pattern with `*` must
//!   match the whole path, each `*` standing for any run of characters
//!   (including `/`). Paths are matched without their query string. A route
//!   with paths refuses paths with `.` or `..` segments (also percent-encoded),
//!   which the upstream could resolve to a path the route does not allow.
//! - A route with `ports` reaches only those ports; without, 443 and 80.
//! - A route's credential goes over TLS to port 443 or to the route's
//!   `ports`, and over plain http only with `insecure_http` (to port 80 or to
//!   `ports`); a request on that route that does not qualify is refused.
//! - Private, loopback, link-local, unspecified, CGNAT, multicast and
//!   unique-local addresses (also IPv4-mapped) are refused unless the route's
//!   host is that address literally, or `localhost` for loopback addresses.
//! - Live grants (a bottle with supervise): the routes the operator approved
//!   since the bottle started, read from the supervise queue's grants file
//!   when a request would be denied (so an allowed request never waits on
//!   it). A grant covers a host no manifest route covers, or, for a host
//!   that has one, the methods and paths the manifest's route does not
//!   allow; it never carries a credential. A denial then tells the agent to
//!   call `request_egress`, with the arguments to call it with.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use bottle_core::sidecar::EgressRule;
use bottle_core::supervise::Grant;

/// Whether the route host `pattern` (exact, or `*.suffix`) covers `host`;
/// case-insensitive, ignoring a trailing dot and IPv6 brackets.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = normalize_host(pattern);
    let host = normalize_host(host);
    if let Some(suffix) = pattern.strip_prefix("*.") {
        return host
            .strip_suffix(suffix)
            .and_then(|rest| rest.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.ends_with('.'));
    }
    match (pattern.parse::<IpAddr>(), host.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a.to_canonical() == b.to_canonical(),
        _ => pattern == host,
    }
}

/// Whether the route path `pattern` allows `path` (without its query): a
/// prefix when `pattern` has no `*`, else a whole-path glob whose `*` matches
/// any run of characters, `/` included.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    if !pattern.contains('*') {
        return path.starts_with(pattern);
    }
    // Iterative wildcard matching with one backtrack point: linear in
    // practice, O(pattern × path) at worst, no recursion.
    let (p, s) = (pattern.as_bytes(), path.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((star_pi, star_si)) = star {
            pi = star_pi + 1;
            si = star_si + 1;
            star = Some((star_pi, star_si + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Lower-case, without a trailing dot or IPv6 brackets.
pub(crate) fn normalize_host(host: &str) -> String {
    let host = host.trim_end_matches('.');
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.to_ascii_lowercase()
}

/// Why a request was refused: the one-sentence reason
/// (`egress denied: WHAT; FIX`), what was denied, and the route that
/// refused it (`None` when no route matched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denial {
    pub(crate) reason: String,
    what: String,
    pub(crate) route: Option<usize>,
}

impl Denial {
    /// `egress denied: WHAT; FIX` (without the fix when it is empty), made
    /// fit for a header.
    fn new(what: String, fix: &str, route: Option<usize>) -> Self {
        let reason =
            if fix.is_empty() { format!("egress denied: {what}") } else { format!("egress denied: {what}; {fix}") };
        Denial { reason: sanitize(&reason), what, route }
    }

    /// The same denial with `fix` instead of its own, when there is one.
    fn fixed(self, fix: Option<String>) -> Self {
        match fix {
            Some(fix) => Denial::new(self.what, &fix, self.route),
            None => self,
        }
    }
}

/// The routes the operator granted live, and the file they come from.
#[derive(Debug)]
struct Grants {
    path: PathBuf,
    /// The file's length when it was last read, and the routes it held.
    read: RwLock<(u64, Arc<Vec<Arc<EgressRule>>>)>,
}

impl Grants {
    /// The granted routes as last read, without looking at the file: a
    /// route index handed out from [`Grants::current`] stays valid in it
    /// (grants are only ever appended while the proxy runs).
    fn last(&self) -> Arc<Vec<Arc<EgressRule>>> {
        Arc::clone(&self.read.read().unwrap_or_else(|e| e.into_inner()).1)
    }

    /// The granted routes, read again when the file grew since the last read.
    fn current(&self) -> Arc<Vec<Arc<EgressRule>>> {
        let len = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        {
            let read = self.read.read().unwrap_or_else(|e| e.into_inner());
            if read.0 == len {
                return Arc::clone(&read.1);
            }
        }
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let rules: Vec<Arc<EgressRule>> = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Grant>(line).ok())
            .filter(|grant| !grant.host.trim().is_empty())
            .map(|grant| Arc::new(grant.rule()))
            .collect();
        let rules = Arc::new(rules);
        *self.read.write().unwrap_or_else(|e| e.into_inner()) = (len, Arc::clone(&rules));
        rules
    }
}

/// The bottle's routes, in manifest order, then the operator's live grants.
#[derive(Debug)]
pub(crate) struct Policy {
    bottle: String,
    rules: Vec<Arc<EgressRule>>,
    grants: Option<Grants>,
}

impl Policy {
    pub(crate) fn new(bottle: &str, rules: Vec<EgressRule>) -> Self {
        Policy { bottle: bottle.to_owned(), rules: rules.into_iter().map(Arc::new).collect(), grants: None }
    }

    /// The same, reading live grants from `grants` (a supervise queue's grants file).
    pub(crate) fn with_grants(mut self, grants: Option<String>) -> Self {
        self.grants =
            grants.map(|path| Grants { path: PathBuf::from(path), read: RwLock::new((0, Arc::new(Vec::new()))) });
        self
    }

    /// The index of the first granted route past the manifest's.
    fn granted(&self) -> usize {
        self.rules.len()
    }

    /// What a denial tells the agent to do when the bottle has supervise:
    /// the tool to call and its arguments.
    fn supervise_fix(&self, host: &str, method: Option<&str>, path: Option<&str>, port: u16) -> Option<String> {
        self.grants.as_ref()?;
        let mut args = format!("\"host\": \"{host}\"");
        if !DEFAULT_PORTS.contains(&port) {
            args.push_str(&format!(", \"ports\": [{port}]"));
        }
        if let Some(method) = method {
            args.push_str(&format!(", \"methods\": [\"{method}\"]"));
        }
        if let Some(path) = path {
            args.push_str(&format!(", \"paths\": [\"{path}\"]"));
        }
        Some(format!(
            "to ask the operator for it, call the MCP tool request_egress (server bot-bottle-supervise) with \
             {{{args}, \"reason\": \"why the task needs it\"}}, then retry once it returns approved"
        ))
    }

    /// The route for `host` on `port`: the first manifest route whose host
    /// covers it, when it allows the port; else a live grant that covers
    /// both; else the denial saying how to add one (the manifest route's
    /// port denial when there is such a route).
    pub(crate) fn route(&self, host: &str, port: u16) -> Result<usize, Denial> {
        let first = self.rules.iter().position(|rule| host_matches(&rule.host, host));
        let port_denial = match first.map(|route| (route, self.check_port(route, port))) {
            Some((route, Ok(()))) => return Ok(route),
            Some((_, Err(denial))) => Some(denial),
            None => None,
        };
        if let Some(grants) = &self.grants {
            let current = grants.current();
            let allows = |rule: &EgressRule| {
                let ports: &[u16] = if rule.ports.is_empty() { &DEFAULT_PORTS } else { &rule.ports };
                host_matches(&rule.host, host) && ports.contains(&port)
            };
            if let Some(at) = current.iter().position(|rule| allows(rule)) {
                return Ok(self.granted() + at);
            }
        }
        let denial = port_denial.unwrap_or_else(|| {
            let what = format!("host {host} is not in bottle {}'s egress routes", self.bottle);
            let fix = format!("ask the operator to add `- host: {host}` to the bottle's egress in the manifest");
            Denial::new(what, &fix, None)
        });
        Err(denial.fixed(self.supervise_fix(host, None, None, port)))
    }

    /// Route `route` (a manifest route's index, or past them a grant's).
    pub(crate) fn rule(&self, route: usize) -> Arc<EgressRule> {
        match self.rules.get(route) {
            Some(rule) => Arc::clone(rule),
            None => {
                let grants = self.grants.as_ref().map(Grants::last).unwrap_or_default();
                grants.get(route - self.granted()).cloned().unwrap_or_else(|| Arc::new(EgressRule::open("")))
            }
        }
    }

    /// For a request that route `route` denied (`denial`): a live grant for
    /// the same host that allows `method` on `path`, or the denial, telling
    /// the agent how to ask for one when the bottle has supervise.
    pub(crate) fn regrant(
        &self,
        route: usize,
        (host, port): (&str, u16),
        method: &str,
        path: &str,
        denial: Denial,
    ) -> Result<usize, Denial> {
        let Some(grants) = &self.grants else { return Err(denial) };
        let first = if route >= self.granted() { route - self.granted() + 1 } else { 0 };
        let current = grants.current();
        for (at, rule) in current.iter().enumerate().skip(first) {
            let index = self.granted() + at;
            let fits = self.check_request(index, method, path).is_ok() && self.check_port(index, port).is_ok();
            if host_matches(&rule.host, host) && fits {
                return Ok(index);
            }
        }
        Err(denial.fixed(self.supervise_fix(host, Some(method), Some(path), port)))
    }

    /// Whether route `route` allows `method` on `path` (no query string).
    pub(crate) fn check_request(&self, route: usize, method: &str, path: &str) -> Result<(), Denial> {
        let rule = self.rule(route);
        let deny = |what: String, fix: &str| Err(Denial::new(what, fix, Some(route)));
        let (host, bottle) = (&rule.host, &self.bottle);
        if !rule.methods.is_empty() && !rule.methods.iter().any(|m| m.eq_ignore_ascii_case(method)) {
            let methods = rule.methods.join(", ");
            return deny(
                format!("method {method} is not allowed by route {host} of bottle {bottle} (methods: {methods})"),
                &format!("ask the operator to add {method} to that route's methods in the manifest"),
            );
        }
        if rule.paths.is_empty() {
            return Ok(());
        }
        if has_dot_segment(path) {
            return deny(
                format!(
                    "path {path} has a `.` or `..` segment, which route {host} of bottle {bottle} does not allow \
                     because it restricts paths"
                ),
                "send the path without dot-segments",
            );
        }
        if !rule.paths.iter().any(|pattern| path_matches(pattern, path)) {
            let paths = rule.paths.join(", ");
            return deny(
                format!("path {path} is not allowed by route {host} of bottle {bottle} (paths: {paths})"),
                "ask the operator to add a pattern matching it to that route's paths in the manifest",
            );
        }
        Ok(())
    }

    /// Whether route `route` may reach `port`: its `ports`, or without them
    /// [`DEFAULT_PORTS`] (HTTPS and HTTP).
    pub(crate) fn check_port(&self, route: usize, port: u16) -> Result<(), Denial> {
        let rule = self.rule(route);
        let allowed: &[u16] = if rule.ports.is_empty() { &DEFAULT_PORTS } else { &rule.ports };
        if allowed.contains(&port) {
            return Ok(());
        }
        let ports: Vec<String> = allowed.iter().map(u16::to_string).collect();
        Err(Denial::new(
            format!(
                "port {port} is not allowed by route {} of bottle {} (ports: {})",
                rule.host,
                self.bottle,
                ports.join(", ")
            ),
            &format!("ask the operator to add {port} to that route's ports in the manifest"),
            Some(route),
        ))
    }

    /// Whether route `route`'s credential, if it has one, may go on a
    /// request to `port`, over TLS or not: over TLS to 443 or to the
    /// route's `ports`; in clear only with `insecure_http`, to 80 or to `ports`.
    pub(crate) fn check_credential(&self, route: usize, tls: bool, port: u16) -> Result<(), Denial> {
        let rule = self.rule(route);
        let Some(inject) = &rule.inject else { return Ok(()) };
        let (host, bottle) = (&rule.host, &self.bottle);
        let default = if tls { 443 } else { 80 };
        let (what, fix) = if !tls && !rule.insecure_http {
            (
                format!(
                    "route {host} of bottle {bottle} injects a credential ({}), which goes only over TLS, and this \
                     request is plain http",
                    inject.source
                ),
                "use https://, or add `insecure_http: true` to that route in the manifest to send the credential in \
                 clear"
                    .to_string(),
            )
        } else if port != default && !rule.ports.contains(&port) {
            let how = if tls { "over TLS" } else { "over plain http" };
            (
                format!(
                    "route {host} of bottle {bottle} sends its credential ({}) {how} only to port {default}, and \
                     this request goes to port {port}",
                    inject.source
                ),
                format!("add `ports: [{port}]` to that route in the manifest to send it there"),
            )
        } else {
            return Ok(());
        };
        Err(Denial::new(what, &fix, Some(route)))
    }

    /// The addresses among `addrs` (which `host` resolved to) that route
    /// `route` may reach, or why none may.
    pub(crate) fn screen(&self, route: usize, host: &str, addrs: &[IpAddr]) -> Result<Vec<IpAddr>, Denial> {
        let rule = self.rule(route);
        let named_ip = normalize_host(&rule.host).parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
        let names_loopback = normalize_host(&rule.host) == "localhost";
        let allowed = |ip: IpAddr| {
            let ip = ip.to_canonical();
            match restricted(ip) {
                None => true,
                Some(_) if named_ip == Some(ip) => true,
                Some(_) => names_loopback && ip.is_loopback(),
            }
        };
        let reachable: Vec<IpAddr> = addrs.iter().copied().filter(|&ip| allowed(ip)).collect();
        if !reachable.is_empty() {
            return Ok(reachable);
        }
        let denial = match addrs.first() {
            None => Denial::new(format!("host {host} resolves to no address"), "", Some(route)),
            Some(&ip) => {
                let kind = restricted(ip.to_canonical()).unwrap_or("restricted");
                let what = format!(
                    "host {host} resolves to {ip}, a {kind} address, which bottle {} may reach only through a route \
                     whose host is that address (or localhost, for loopback)",
                    self.bottle
                );
                let fix = format!("add `- host: {ip}` to the bottle's egress in the manifest and use the address");
                Denial::new(what, &fix, Some(route))
            }
        };
        Err(denial)
    }
}

/// The ports a route without `ports` reaches.
pub(crate) const DEFAULT_PORTS: [u16; 2] = [443, 80];

/// What kind of non-public address `ip` is, or `None` for a public one.
/// IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64's
/// `64:ff9b::/96`, 6to4's `2002::/16`) are judged by that address.
pub(crate) fn restricted(ip: IpAddr) -> Option<&'static str> {
    if let IpAddr::V6(v6) = ip
        && let Some(embedded) = embedded_v4(v6)
    {
        return restricted(IpAddr::V4(embedded));
    }
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if a == 0 {
                Some("unspecified")
            } else if a == 100 && (64..128).contains(&b) {
                Some("CGNAT (100.64.0.0/10)")
            } else if v4.is_multicast() {
                Some("multicast")
            } else if v4.is_broadcast() {
                Some("broadcast")
            } else if a == 192 && b == 0 && c == 0 {
                Some("IETF protocol assignments (192.0.0.0/24)")
            } else if a == 198 && (b == 18 || b == 19) {
                Some("benchmarking (198.18.0.0/15)")
            } else if a >= 240 {
                Some("reserved (240.0.0.0/4)")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first & 0xfe00 == 0xfc00 {
                Some("unique-local (fc00::/7)")
            } else if first & 0xffc0 == 0xfec0 {
                Some("site-local (fec0::/10)")
            } else {
                None
            }
        }
    }
}

/// The IPv4 address an IPv6 one carries: IPv4-compatible (`::a.b.c.d`, not
/// `::` or `::1`), NAT64 (`64:ff9b::/96`), 6to4 (`2002:AABB:CCDD::/48`).
/// (IPv4-mapped addresses are canonicalized by the caller.)
fn embedded_v4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = v6.segments();
    let low = |hi: u16, lo: u16| std::net::Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    let compatible = s[..6] == [0; 6] && (s[6] != 0 || s[7] > 1);
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if compatible || nat64 {
        Some(low(s[6], s[7]))
    } else if s[0] == 0x2002 {
        Some(low(s[1], s[2]))
    } else {
        None
    }
}

/// Whether `path` has a `.` or `..` segment, also percent-encoded.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

/// `text` with every character a header value cannot carry replaced by `?`.
pub(crate) fn sanitize(text: &str) -> String {
    text.chars().map(|c| if (' '..='~').contains(&c) { c } else { '?' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(host: &str, methods: &[&str], paths: &[&str]) -> EgressRule {
        EgressRule {
            methods: methods.iter().map(|m| (*m).into()).collect(),
            paths: paths.iter().map(|p| (*p).into()).collect(),
            ..EgressRule::open(host)
        }
    }

    fn credential_rule(host: &str, ports: &[u16], insecure_http: bool) -> EgressRule {
        EgressRule {
            ports: ports.to_vec(),
            insecure_http,
            inject: Some(bottle_core::sidecar::InjectedHeader {
                name: "authorization".into(),
                value: bottle_core::sidecar::Secret::new("Bearer t"),
                credential: bottle_core::sidecar::Secret::new("t"),
                sentinels: vec![],
                source: "$T".into(),
            }),
            ..EgressRule::open(host)
        }
    }

    #[test]
    fn ports_and_where_a_credential_may_go() {
        let policy = Policy::new(
            "b",
            vec![
                rule("open", &[], &[]),
                credential_rule("tls", &[], false),
                credential_rule("listed", &[8443, 8080], false),
                credential_rule("clear", &[], true),
                credential_rule("clear-listed", &[8080], true),
            ],
        );
        let reason = |result: Result<(), Denial>| result.expect_err("denied").reason;
        assert!(policy.check_port(0, 1234).is_err(), "a route without ports reaches 443 and 80 only");
        assert!(policy.check_port(0, 443).is_ok() && policy.check_credential(0, false, 1234).is_ok());
        assert!(policy.check_port(1, 443).is_ok() && policy.check_port(1, 80).is_ok(), "without ports: 443 and 80");
        let other = policy.check_port(1, 8443).expect_err("without ports, only 443 and 80").reason;
        assert!(other.contains("port 8443 is not allowed") && other.contains("(ports: 443, 80)"), "{other}");
        assert!(policy.check_credential(1, true, 443).is_ok());
        let off_port = reason(policy.check_credential(1, true, 8443));
        assert!(off_port.contains("only to port 443") && off_port.contains("add `ports: [8443]`"), "{off_port}");
        let plain = reason(policy.check_credential(1, false, 80));
        assert!(plain.contains("only over TLS") && plain.contains("`insecure_http: true`"), "{plain}");
        let outside = reason(policy.check_port(2, 443));
        assert!(
            outside.contains("port 443 is not allowed by route listed of bottle b (ports: 8443, 8080)"),
            "{outside}"
        );
        assert!(policy.check_credential(2, true, 8443).is_ok() && policy.check_credential(2, true, 8080).is_ok());
        assert!(policy.check_credential(2, false, 8080).is_err(), "ports do not allow plain http");
        assert!(policy.check_credential(3, false, 80).is_ok() && policy.check_credential(3, true, 443).is_ok());
        let clear_off_port = reason(policy.check_credential(3, false, 8080));
        assert!(clear_off_port.contains("over plain http only to port 80"), "{clear_off_port}");
        assert!(policy.check_credential(4, false, 8080).is_ok());
    }

    #[test]
    fn address_kinds() {
        fn check(ip: &str, expect: Option<&str>) {
            let ip: IpAddr = ip.parse().expect("test address");
            assert_eq!(restricted(ip).map(|kind| kind.split(' ').next().unwrap_or(kind)), expect, "{ip}");
        }
        check("127.0.0.1", Some("loopback"));
        check("10.1.2.3", Some("private"));
        check("172.16.0.1", Some("private"));
        check("192.168.1.1", Some("private"));
        check("169.254.169.254", Some("link-local"));
        check("0.0.0.0", Some("unspecified"));
        check("100.64.0.1", Some("CGNAT"));
        check("100.127.255.255", Some("CGNAT"));
        check("100.128.0.1", None);
        check("224.0.0.1", Some("multicast"));
        check("255.255.255.255", Some("broadcast"));
        check("8.8.8.8", None);
        check("::1", Some("loopback"));
        check("::", Some("unspecified"));
        check("fe80::1", Some("link-local"));
        check("fd00::1", Some("unique-local"));
        check("fc00::1", Some("unique-local"));
        check("ff02::1", Some("multicast"));
        check("::ffff:10.0.0.1", Some("private"));
        check("::ffff:169.254.169.254", Some("link-local"));
        check("2606:4700::1111", None);
        check("192.0.0.8", Some("IETF"));
        check("198.18.0.1", Some("benchmarking"));
        check("198.19.255.1", Some("benchmarking"));
        check("198.20.0.1", None);
        check("240.0.0.1", Some("reserved"));
        check("fec0::1", Some("site-local"));
        check("64:ff9b::a9fe:a9fe", Some("link-local")); // NAT64 of 169.254.169.254
        check("64:ff9b::808:808", None); // NAT64 of a public address, as DNS64 gives on IPv6-only hosts
        check("2002:7f00:1::1", Some("loopback")); // 6to4 of 127.0.0.1
        check("2002:0a00:0001::", Some("private"));
        check("::7f00:1", Some("loopback")); // IPv4-compatible 127.0.0.1
    }

    #[test]
    fn first_matching_route_decides() {
        let policy = Policy::new("b", vec![rule("*.example.com", &["GET"], &[]), rule("api.example.com", &[], &[])]);
        assert_eq!(policy.route("API.example.com.", 443), Ok(0));
        assert!(policy.check_request(0, "POST", "/").is_err(), "the first route's methods decide");
        let denial = policy.route("example.com", 443).expect_err("the bare domain is not covered");
        assert_eq!(denial.route, None);
        assert!(denial.reason.contains("add `- host: example.com`"), "{}", denial.reason);
    }

    #[test]
    fn methods_and_paths() {
        let policy = Policy::new("b", vec![rule("h", &["GET", "HEAD"], &["/v1/", "/repos/*/pulls"])]);
        let check = |method: &str, path: &str| policy.check_request(0, method, path).is_ok();
        assert!(check("GET", "/v1/messages"));
        assert!(check("get", "/v1/"));
        assert!(!check("DELETE", "/v1/messages"));
        assert!(check("HEAD", "/repos/a/pulls"));
        assert!(!check("GET", "/repos/a/pulls/1"));
        assert!(!check("GET", "/v2/"));
        assert!(!check("GET", "/v1/../admin"));
        assert!(!check("GET", "/v1/%2E%2e/admin"));
        assert!(!check("GET", "/v1/./x"));
        assert!(check("GET", "/v1/..x"));
    }

    #[test]
    fn screening_addresses() {
        let ips = |list: &[&str]| list.iter().map(|ip| ip.parse().expect("ip")).collect::<Vec<IpAddr>>();
        let policy = Policy::new(
            "b",
            vec![rule("internal.test", &[], &[]), rule("localhost", &[], &[]), rule("10.0.0.5", &[], &[])],
        );
        let denial = policy.screen(0, "internal.test", &ips(&["127.0.0.1"])).expect_err("loopback by another name");
        assert!(denial.reason.contains("127.0.0.1, a loopback address"), "{}", denial.reason);
        assert!(policy.screen(0, "internal.test", &ips(&["169.254.169.254"])).is_err());
        assert!(policy.screen(0, "internal.test", &ips(&["::ffff:192.168.0.1"])).is_err());
        assert_eq!(policy.screen(0, "internal.test", &ips(&["10.0.0.1", "1.2.3.4"])), Ok(ips(&["1.2.3.4"])));
        assert!(policy.screen(0, "internal.test", &[]).is_err());
        assert_eq!(policy.screen(1, "localhost", &ips(&["127.0.0.1", "::1"])), Ok(ips(&["127.0.0.1", "::1"])));
        assert!(policy.screen(1, "localhost", &ips(&["10.0.0.1"])).is_err(), "localhost names loopback only");
        assert_eq!(policy.screen(2, "10.0.0.5", &ips(&["10.0.0.5"])), Ok(ips(&["10.0.0.5"])));
        assert!(policy.screen(2, "10.0.0.5", &ips(&["10.0.0.6"])).is_err());
    }

    #[test]
    fn sanitized_reasons_fit_in_a_header() {
        assert_eq!(sanitize("host é\r\nx"), "host ???x");
    }

    #[test]
    fn a_live_grant_allows_a_host_or_path_once_written_and_denials_say_how_to_ask() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("grants.jsonl");
        let policy = Policy::new("b", vec![rule("api.example.com", &["GET"], &["/v1/"])])
            .with_grants(Some(file.display().to_string()));
        let denied = policy.route("pypi.org", 443).expect_err("no route yet").reason;
        assert!(denied.contains("call the MCP tool request_egress"), "{denied}");
        assert!(denied.contains(r#"{"host": "pypi.org", "reason": "#), "{denied}");
        let grant = |id: &str, host: &str, methods: &[&str], paths: &[&str]| {
            let grant = Grant {
                id: id.into(),
                time_ms: 0,
                host: host.into(),
                methods: methods.iter().map(|m| m.to_string()).collect(),
                paths: paths.iter().map(|p| p.to_string()).collect(),
                ports: vec![],
                branches: vec![],
                scope: Default::default(),
            };
            let mut line = serde_json::to_string(&grant).expect("json");
            line.push('\n');
            use std::io::Write as _;
            std::fs::OpenOptions::new().create(true).append(true).open(&file).expect("open").write_all(line.as_bytes())
        };
        grant("00000001", "pypi.org", &[], &[]).expect("write");
        let route = policy.route("pypi.org", 443).expect("granted live");
        let other_port = policy.route("pypi.org", 8443).expect_err("the grant has the default ports").reason;
        assert!(other_port.contains(r#""ports": [8443]"#), "{other_port}");
        assert_eq!(
            (route, policy.rule(route).host.as_str(), policy.rule(route).inject.is_none()),
            (1, "pypi.org", true)
        );
        assert!(policy.check_request(route, "POST", "/any").is_ok(), "a grant without methods or paths allows all");
        let post = policy.check_request(0, "POST", "/v1/x").expect_err("the manifest route allows GET only");
        let regranted = policy.regrant(0, ("api.example.com", 443), "POST", "/v1/x", post).expect_err("no grant yet");
        assert!(regranted.reason.contains(r#""methods": ["POST"], "paths": ["/v1/x"]"#), "{}", regranted.reason);
        assert!(
            regranted.reason.contains("method POST is not allowed by route api.example.com"),
            "{}",
            regranted.reason
        );
        grant("00000002", "api.example.com", &["POST"], &["/v1/*"]).expect("write");
        let post = policy.check_request(0, "POST", "/v1/x").expect_err("still denied by the manifest route");
        assert_eq!(policy.regrant(0, ("api.example.com", 443), "POST", "/v1/x", post).expect("granted"), 2);
        let without = Policy::new("b", vec![]);
        assert!(without.route("pypi.org", 443).expect_err("denied").reason.contains("in the manifest"));
    }
}
