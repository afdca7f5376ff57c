//! The preflight summary shown before the operator's y/N: what will run, with
//! which environment, routes and upstreams, and a warning line for each way a
//! route's credential could do more than the operator may expect. Secrets
//! appear by name only.

use std::fmt::Write;

use crate::backend::ErasedPlan;
use crate::manifest::{BottleDef, EnvValue, PushPolicy};
use crate::plan::CommonPlan;
use crate::sidecar_config::HostKeyCheck;
use crate::wiring::Wiring;

/// Render the summary of `plan` (one screen, aligned labels).
pub fn summary(plan: &ErasedPlan) -> String {
    render(plan.common(), plan.wiring(), plan.backend(), plan.summary_lines())
}

/// Render the summary from its parts (what [`summary`] does after erasure).
pub fn render(common: &CommonPlan, wiring: &Wiring, backend: &str, backend_lines: &[(String, String)]) -> String {
    let p = &common.provision;
    let mut rows: Vec<(String, String)> = vec![
        ("agent".into(), format!("{} (bottle `{}`, {})", common.agent, common.bottle, common.manifest_source)),
        ("slug".into(), format!("{}{}", common.slug, if common.resumed { " (resumed)" } else { "" })),
    ];
    if common.resumed {
        let saved = crate::session::saved_state(&common.state_dir, &p.resume_paths);
        let restores: Vec<String> = saved.iter().map(|(guest, size)| format!("{guest} ({size})")).collect();
        rows.push((
            "restores".into(),
            if restores.is_empty() {
                "nothing: no state was saved from the earlier run, the agent starts fresh".into()
            } else {
                restores.join("\n")
            },
        ));
    }
    rows.extend([
        ("provider".into(), format!("{} — Dockerfile {}", p.provider, p.image.dockerfile_origin)),
        ("backend".into(), backend.to_string()),
        ("user".into(), format!("{} (home {}, workdir {})", p.guest_user, p.guest_home, p.workdir)),
        ("isolation".into(), wiring.isolation.clone()),
    ]);
    rows.extend(backend_lines.iter().cloned());
    let env: Vec<String> = wiring
        .guest_env(common)
        .iter()
        .map(|(k, v)| {
            if p.hidden_env.contains(k) {
                format!("{k}=•••• (hidden)")
            } else {
                // The proxy variables carry the bottle's client token.
                format!("{k}={}", v.replace(common.client_token.expose(), "••••"))
            }
        })
        .collect();
    rows.push(("env".into(), list_or_none(&env)));
    let skills: Vec<String> =
        p.skills.iter().map(|s| s.guest.rsplit('/').next().unwrap_or_default().to_string()).collect();
    rows.push(("skills".into(), list_or_none(&skills)));
    rows.push((
        "prompt".into(),
        p.prompt.as_ref().map_or("none".into(), |c| format!("{} → {}", c.host.display(), c.guest)),
    ));
    rows.push((
        "git identity".into(),
        p.git_identity.as_ref().map_or("none".into(), |id| format!("{} <{}>", id.name, id.email)),
    ));
    let upstreams: Vec<String> = common
        .git_gate
        .upstreams
        .iter()
        .zip(&common.git_gate.policy.upstreams)
        .map(|(u, gate)| {
            let host_key = match gate.host_key_check() {
                HostKeyCheck::Pinned(_) => "pinned from ~/.ssh/known_hosts",
                HostKeyCheck::FirstUse => "trusted on first use",
            };
            format!(
                "{} → {}@{}:{} {} (host key {host_key})\n  push: {}",
                u.name,
                u.user,
                u.host,
                u.port,
                u.repo,
                push_policy(&u.push)
            )
        })
        .collect();
    rows.push(("git upstreams".into(), list_or_none(&upstreams)));
    let routes = common.egress.route_lines();
    rows.push((
        "egress".into(),
        if routes.is_empty() { "none (every request is denied)".into() } else { routes.join("\n") },
    ));
    for warning in &common.egress.warnings {
        rows.push(("warning".into(), warning.clone()));
    }
    rows.push(("egress proxy".into(), format!("{} (TLS intercepted with this bottle's own CA)", wiring.proxy_url())));
    if let Some(gate) = wiring.gate.as_ref().filter(|_| common.git_gate.is_needed()) {
        rows.push(("git gate".into(), gate.clone()));
    }
    let supervise = match wiring.supervise_url(common) {
        Some(url) => format!(
            "on at {url}: tools request_egress, request_push, ask_operator, notify; a request waits {} for you \
             (`bottle supervise list`), then counts as denied",
            crate::supervise::describe_wait(common.supervise.timeout)
        ),
        None => "off".into(),
    };
    rows.push(("supervise".into(), supervise));
    rows.push((
        "workspace".into(),
        common.copy_cwd.as_ref().map_or("empty".into(), |d| format!("copy of {}", d.display())),
    ));
    if let Some(label) = &common.label {
        rows.push(("label".into(), label.clone()));
    }
    rows.push((
        "mode".into(),
        if common.detached {
            "detached (the agent runs in its session; `bottle attach` connects)"
        } else {
            "attached (on a terminal C-b d detaches; removed when the agent exits)"
        }
        .into(),
    ));

    let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in rows {
        let mut lines = value.lines();
        let _ = writeln!(out, "  {label:>width$}  {}", lines.next().unwrap_or_default());
        for more in lines {
            let _ = writeln!(out, "  {:>width$}  {more}", "");
        }
    }
    out
}

/// The whole push policy in one line, e.g. `branches agent/*; no force, no
/// delete, no tags; CI definitions refused; paths_deny none; at most 1024 MB a push`.
pub(crate) fn push_policy(push: &PushPolicy) -> String {
    let allowed = |yes: bool, what: &str| if yes { what.to_string() } else { format!("no {what}") };
    format!(
        "branches {}; {}, {}, {}; CI definitions {}; paths_deny {}; at most {} MB a push",
        if push.branches.is_empty() { "none".to_string() } else { push.branches.join(",") },
        allowed(push.force, "force"),
        allowed(push.delete, "delete"),
        allowed(push.tags, "tags"),
        if push.ci { "allowed" } else { "refused" },
        if push.paths_deny.is_empty() { "none".to_string() } else { push.paths_deny.join(",") },
        push.max_push_mb,
    )
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() { "none".into() } else { items.join("\n") }
}

/// What the operator should know about `bottle`'s route credentials before
/// the y/N, one line each (`hidden`: the env names the bottle sees as
/// sentinels):
///
/// - a route with `auth` to a git upstream's host, or to that host's API
///   (`api.HOST`; GitLab's `/api/` is on the host itself), allowing more
///   than `GET` and `HEAD`: the credential could change the upstream past
///   the git gate's push policy;
/// - a plain `env` entry copying the host variable a route's `auth` reads:
///   the credential would enter the bottle in clear.
pub(crate) fn credential_warnings(bottle: &BottleDef, hidden: &[String]) -> Vec<String> {
    let mut warnings = Vec::new();
    for route in &bottle.egress {
        let Some(auth) = &route.auth else { continue };
        let read_only =
            !route.methods.is_empty() && route.methods.iter().all(|method| matches!(method.as_str(), "GET" | "HEAD"));
        let reached = bottle.git.iter().find_map(|upstream| {
            [upstream.host.clone(), format!("api.{}", upstream.host)]
                .into_iter()
                .find(|host| covers(&route.host, host))
                .map(|host| (host, upstream))
        });
        if let (false, Some((host, upstream))) = (read_only, reached) {
            let methods = if route.methods.is_empty() {
                "every method".to_string()
            } else {
                format!("methods {}", route.methods.join(", "))
            };
            warnings.push(format!(
                "egress route {} sends ${} to {host} with {methods}: the agent could change git upstream `{}` with \
                 it, bypassing the git gate; add `methods: [GET]` to the route",
                route.host, auth.from_host, upstream.name
            ));
        }
        for (name, value) in &bottle.env {
            let copies = matches!(value, EnvValue::FromHost { from_host, .. } if *from_host == auth.from_host);
            if copies && !hidden.contains(name) {
                warnings.push(format!(
                    "env {name} copies ${}, the credential of egress route {}, into the bottle in clear; add \
                     `secret: true` to it (the bottle then sees a sentinel the proxy swaps for the credential)",
                    auth.from_host, route.host
                ));
            }
        }
    }
    warnings
}

/// Whether the route host `pattern` (exact or `*.suffix`) covers `host`.
fn covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.strip_suffix(suffix).is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::Manifest;

    /// The warnings for bottle `b` of a manifest with these `egress`, `git` and `env` lines.
    fn warnings(egress: &str, git: &str, env: &str, hidden: &[&str]) -> Vec<String> {
        let text = format!(
            "agents:\n  a: {{ bottle: b }}\nbottles:\n  b:\n    agent_provider: {{ template: shell }}\n    \
             egress:\n{egress}    git:\n{git}    env:\n{env}"
        );
        let manifest = Manifest::parse(&text, Path::new("/m.yaml"), &["shell"]).unwrap_or_else(|e| panic!("{e}"));
        let hidden: Vec<String> = hidden.iter().map(|name| (*name).to_string()).collect();
        credential_warnings(&manifest.bottles["b"], &hidden)
    }

    const GITHUB: &str = "      - { Name: project, Host: github.com, Repo: org/p.git, IdentityFile: /k }\n";

    #[test]
    fn a_credential_that_could_write_to_a_git_upstream_is_flagged() {
        let auth = "auth: { scheme: bearer, from_host: GH_TOKEN }";
        let route = |host: &str, extra: &str| format!("      - {{ host: {host}, {auth}{extra} }}\n");
        let api = warnings(&route("api.github.com", ""), GITHUB, "", &[]);
        assert_eq!(api.len(), 1, "{api:?}");
        assert!(api[0].starts_with("egress route api.github.com sends $GH_TOKEN to api.github.com with every method"));
        assert!(api[0].contains("git upstream `project`") && api[0].contains("add `methods: [GET]`"), "{api:?}");
        let host = warnings(&route("github.com", ", methods: [GET, POST]"), GITHUB, "", &[]);
        assert_eq!(host.len(), 1, "{host:?}");
        assert!(host[0].contains("to github.com with methods GET, POST"), "{host:?}");
        let wildcard = warnings(&route("'*.github.com'", ", wildcard_auth: true"), GITHUB, "", &[]);
        assert!(wildcard[0].contains("to api.github.com"), "{wildcard:?}");
        let gitlab = "      - { Name: lab, Host: gitlab.com, Repo: org/p.git, IdentityFile: /k }\n";
        let api = warnings(&route("gitlab.com", ", paths: [/api/]"), gitlab, "", &[]);
        assert!(api[0].contains("git upstream `lab`"), "{api:?}");

        for quiet in [
            warnings(&route("api.github.com", ", methods: [GET]"), GITHUB, "", &[]),
            warnings(&route("api.github.com", ", methods: [GET, HEAD]"), GITHUB, "", &[]),
            warnings(&route("api.gitlab.com", ""), GITHUB, "", &[]),
            warnings("      - { host: api.github.com }\n", GITHUB, "", &[]),
            warnings(&route("'*.example.com'", ", wildcard_auth: true"), GITHUB, "", &[]),
        ] {
            assert!(quiet.is_empty(), "{quiet:?}");
        }
    }

    #[test]
    fn a_plain_env_copy_of_a_route_credential_is_flagged() {
        let route = "      - { host: api.example.com, auth: { scheme: bearer, from_host: TOK } }\n";
        let plain = warnings(route, "", "      CLEAR: { from_host: TOK }\n      OTHER: { from_host: X }\n", &[]);
        assert_eq!(plain.len(), 1, "{plain:?}");
        assert!(
            plain[0]
                .starts_with("env CLEAR copies $TOK, the credential of egress route api.example.com, into the bottle")
                && plain[0].contains("add `secret: true`"),
            "{plain:?}"
        );
        let secret = warnings(route, "", "      HIDDEN: { from_host: TOK, secret: true }\n", &["HIDDEN"]);
        assert!(secret.is_empty(), "{secret:?}");
        let provider_hidden = warnings(route, "", "      API_KEY: { from_host: TOK }\n", &["API_KEY"]);
        assert!(provider_hidden.is_empty(), "a name the provider hides stays out: {provider_hidden:?}");
    }

    #[test]
    fn the_push_line_shows_the_whole_policy() {
        assert_eq!(
            push_policy(&PushPolicy::default()),
            "branches none; no force, no delete, no tags; CI definitions refused; paths_deny none; at most 1024 MB a push"
        );
        let open = PushPolicy {
            branches: vec!["agent/*".into(), "fix/**".into()],
            force: true,
            delete: true,
            tags: true,
            ci: true,
            paths_deny: vec!["secrets/**".into(), "**/*.pem".into()],
            max_push_mb: 10,
        };
        assert_eq!(
            push_policy(&open),
            "branches agent/*,fix/**; force, delete, tags; CI definitions allowed; paths_deny secrets/**,**/*.pem; \
             at most 10 MB a push"
        );
    }
}
