//! The labels every backend resource of a bottle carries (containers,
//! networks, VMs), reading them back, and the one rule by which `cleanup`
//! tells an orphan from a live bottle: how `list`, `stop` and `cleanup` find
//! what belongs to whom, the same on every backend.

use std::collections::HashMap;

use crate::owner::{Liveness, Owner};
use crate::plan::CommonPlan;

/// The bottle's slug.
pub const SLUG: &str = "dev.bot-bottle.slug";
/// The backend that made the resource.
pub const BACKEND: &str = "dev.bot-bottle.backend";
/// What the resource is for ([`ROLE_AGENT`], a sidecar's name, `network`).
pub const ROLE: &str = "dev.bot-bottle.role";
/// The agent's name.
pub const AGENT: &str = "dev.bot-bottle.agent";
/// The owner's host name.
pub const OWNER_HOST: &str = "dev.bot-bottle.owner-host";
/// The owner's PID.
pub const OWNER_PID: &str = "dev.bot-bottle.owner-pid";
/// The owner PID's start time.
pub const OWNER_START: &str = "dev.bot-bottle.owner-start";
/// When the bottle was created, in milliseconds since the Unix epoch.
pub const CREATED_MS: &str = "dev.bot-bottle.created-ms";
/// Whether the bottle outlives its launcher (`true`/`false`).
pub const DETACHED: &str = "dev.bot-bottle.detached";
/// The agent's user inside the bottle.
pub const USER: &str = "dev.bot-bottle.user";
/// The agent's working directory inside the bottle.
pub const WORKDIR: &str = "dev.bot-bottle.workdir";
/// The operator's label.
pub const LABEL: &str = "dev.bot-bottle.label";
/// The operator's colour.
pub const COLOR: &str = "dev.bot-bottle.color";

/// Role of the agent's container or VM (sidecars get their own roles).
pub const ROLE_AGENT: &str = "agent";

/// The labels of a resource of `plan`, made by `backend`, with `role`.
pub fn for_plan(plan: &CommonPlan, backend: &str, role: &str) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = [
        (SLUG, plan.slug.clone()),
        (BACKEND, backend.to_string()),
        (ROLE, role.to_string()),
        (AGENT, plan.agent.clone()),
        (OWNER_HOST, plan.owner.host.clone()),
        (OWNER_PID, plan.owner.pid.to_string()),
        (OWNER_START, plan.owner.pid_start.to_string()),
        (CREATED_MS, plan.owner.created_ms.to_string()),
        (DETACHED, plan.detached.to_string()),
        (USER, plan.provision.guest_user.clone()),
        (WORKDIR, plan.provision.workdir.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(label) = &plan.label {
        labels.insert(LABEL.into(), label.clone());
    }
    if let Some(color) = &plan.color {
        labels.insert(COLOR.into(), color.clone());
    }
    labels
}

/// Read typed facts back from a resource's labels.
#[derive(Debug, Clone, Copy)]
pub struct Labels<'a>(pub &'a HashMap<String, String>);

impl Labels<'_> {
    /// One label's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The owner, when all its labels are there and readable.
    pub fn owner(&self) -> Option<Owner> {
        Some(Owner {
            host: self.get(OWNER_HOST)?.to_string(),
            pid: self.get(OWNER_PID)?.parse().ok()?,
            pid_start: self.get(OWNER_START)?.parse().ok()?,
            created_ms: self.get(CREATED_MS)?.parse().ok()?,
        })
    }

    /// Whether the bottle is detached.
    pub fn detached(&self) -> bool {
        self.get(DETACHED) == Some("true")
    }

    /// Creation time (0 when unknown).
    pub fn created_ms(&self) -> u64 {
        self.get(CREATED_MS).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

/// What `cleanup` does with the resources of one bottle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A live bottle (or one that is not ours to judge): leave it.
    Keep,
    /// An orphan: remove it.
    Remove,
    /// A detached bottle whose launcher is gone: an orphan only if it never
    /// became ready (no [`READY_MARKER`](crate::session::READY_MARKER) inside).
    RemoveUnlessReady,
}

/// Judge a bottle's leftovers from its owner's liveness (`None` when the
/// owner is unknown), whether its agent container or VM runs, and whether it
/// is detached.
pub fn judge(owner: Option<Liveness>, agent_running: bool, detached: bool) -> Verdict {
    match (owner, agent_running) {
        (Some(Liveness::Alive), _) => Verdict::Keep,
        (_, false) => Verdict::Remove,
        // Foreign or unreadable owner labels: a running bottle is not ours to judge.
        (Some(Liveness::OtherHost) | None, true) => Verdict::Keep,
        (Some(Liveness::Gone), true) if !detached => Verdict::Remove,
        // A detached bottle outlives its launcher; it is an orphan only if it never became ready.
        (Some(Liveness::Gone), true) => Verdict::RemoveUnlessReady,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphans_are_judged_by_owner_state_and_detachment() {
        use Liveness::*;
        let check = |owner, running, detached, expect| {
            assert_eq!(judge(owner, running, detached), expect, "{owner:?} running={running} detached={detached}");
        };
        check(Some(Alive), false, false, Verdict::Keep);
        check(Some(Alive), true, true, Verdict::Keep);
        check(Some(Gone), false, true, Verdict::Remove);
        check(None, false, false, Verdict::Remove);
        check(Some(OtherHost), true, false, Verdict::Keep);
        check(None, true, false, Verdict::Keep);
        check(Some(Gone), true, false, Verdict::Remove);
        check(Some(Gone), true, true, Verdict::RemoveUnlessReady);
    }

    #[test]
    fn labels_read_back_what_was_written() {
        let owner = Owner::current();
        let labels: HashMap<String, String> = [
            (OWNER_HOST, owner.host.clone()),
            (OWNER_PID, owner.pid.to_string()),
            (OWNER_START, owner.pid_start.to_string()),
            (CREATED_MS, owner.created_ms.to_string()),
            (DETACHED, "true".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let l = Labels(&labels);
        assert_eq!(l.owner(), Some(owner.clone()));
        assert!(l.detached());
        assert_eq!(l.created_ms(), owner.created_ms);
        assert_eq!(Labels(&HashMap::new()).owner(), None);
    }
}
