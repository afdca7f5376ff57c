//! The fail-closed probe: NetworkPolicy is invisible to the API (a plugin
//! that does not enforce it accepts it silently), so before a bottle is
//! handed out its agent Pod tries to reach addresses outside its sidecars
//! directly. If one answers, the cluster does not enforce the policy and
//! the launch fails (and the bottle is removed), unless the manifest says
//! `kubernetes: { unenforced_ok: true }`.

use bottle_core::{Bottle as _, Error, ErrorKind, GuestUser, Result};

use crate::bottle::K8sBottle;

/// Addresses the agent Pod must not reach (public, so that the node
/// exception of NetworkPolicy — a Pod may always reach its own node —
/// cannot make a false alarm).
pub(crate) const TARGETS: [(&str, u16); 2] = [("1.1.1.1", 443), ("8.8.8.8", 53)];

/// Exit code of [`script`] when a target answered.
const REACHED: i64 = 10;
/// Exit code of [`script`] when the image has nothing to connect with.
const NO_TOOL: i64 = 11;

/// The probe: exit 0 when no target answers within 3 s each.
pub fn script() -> String {
    let targets: Vec<String> = TARGETS.iter().map(|(host, port)| format!("{host}:{port}")).collect();
    format!(
        "reach() {{ if command -v bash >/dev/null 2>&1; then timeout 3 bash -c \"exec 3<>/dev/tcp/$1/$2\" \
         2>/dev/null; elif command -v nc >/dev/null 2>&1; then timeout 3 nc -z -w 3 \"$1\" \"$2\" 2>/dev/null; \
         else exit {NO_TOOL}; fi; }}; for t in {}; do if reach \"${{t%:*}}\" \"${{t#*:}}\"; then echo \"$t\"; \
         exit {REACHED}; fi; done; exit 0",
        targets.join(" ")
    )
}

/// Fails, saying the network plugin does not enforce NetworkPolicy, when
/// `bottle`'s agent Pod reaches a target.
pub(crate) async fn require_enforced(bottle: &K8sBottle) -> Result<()> {
    let probed = bottle.exec(&script(), GuestUser::Agent).await?;
    match probed.exit_code {
        0 => Ok(()),
        REACHED => Err(Error::new(
            ErrorKind::Backend,
            format!(
                "the agent Pod reached {} directly: this cluster's network plugin does not enforce NetworkPolicy \
                 (flannel alone, kind before 0.24, minikube's default do not), so the bottle was removed; use a \
                 plugin that does (Calico, Cilium, kind ≥ 0.24, k3s), or accept it with \
                 `kubernetes: {{ unenforced_ok: true }}` in the manifest",
                probed.stdout.trim()
            ),
        )),
        NO_TOOL => Err(Error::new(
            ErrorKind::Backend,
            "cannot prove that the cluster enforces NetworkPolicy: the agent image has neither bash nor nc to \
             probe with; add one to the image, or accept it with `kubernetes: { unenforced_ok: true }`",
        )),
        code => Err(Error::new(
            ErrorKind::Backend,
            format!("the NetworkPolicy probe in the agent Pod exited {code}: {}", probed.stderr.trim()),
        )),
    }
}
