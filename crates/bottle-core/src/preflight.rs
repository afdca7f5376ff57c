//! The preflight summary shown before the operator's y/N: what will run, with
//! which environment, routes and upstreams. Secrets appear by name only.

use std::fmt::Write;

use crate::backend::ErasedPlan;
use crate::manifest::PushPolicy;
use crate::plan::CommonPlan;
use crate::routes::HostKeyCheck;

/// Render the summary of `plan` (one screen, aligned labels).
pub fn summary(plan: &ErasedPlan) -> String {
    render(plan.common(), plan.backend(), plan.summary_lines())
}

/// Render the summary from its parts (what [`summary`] does after erasure).
pub fn render(common: &CommonPlan, backend: &str, backend_lines: &[(String, String)]) -> String {
    let p = &common.provision;
    let mut rows: Vec<(String, String)> = vec![
        ("agent".into(), format!("{} (bottle `{}`, {})", common.agent, common.bottle, common.manifest_source)),
        ("slug".into(), format!("{}{}", common.slug, if common.resumed { " (resumed)" } else { "" })),
        ("provider".into(), format!("{} — Dockerfile {}", p.provider, p.image.dockerfile_origin)),
        ("backend".into(), backend.to_string()),
        ("user".into(), format!("{} (home {}, workdir {})", p.guest_user, p.guest_home, p.workdir)),
    ];
    rows.extend(backend_lines.iter().cloned());
    let env: Vec<String> = p
        .guest_env
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
        .zip(&common.git_gate.config.upstreams)
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
    if let Some(proxy) = &common.egress.proxy_url {
        rows.push(("egress proxy".into(), format!("{proxy} (TLS intercepted with this bottle's own CA)")));
    }
    if let Some(gate) = &common.git_gate.url {
        rows.push(("git gate".into(), gate.clone()));
    }
    rows.push(("supervise".into(), if common.supervise.enabled { "on" } else { "off" }.into()));
    rows.push((
        "workspace".into(),
        common.copy_cwd.as_ref().map_or("empty".into(), |d| format!("copy of {}", d.display())),
    ));
    if let Some(label) = &common.label {
        rows.push(("label".into(), label.clone()));
    }
    rows.push(("mode".into(), if common.detached { "detached" } else { "attached (removed on exit)" }.into()));

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
fn push_policy(push: &PushPolicy) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
