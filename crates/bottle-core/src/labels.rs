//! The labels every backend resource of a bottle carries (containers,
//! networks, VMs), reading them back, and the one rule by which `cleanup`
//! tells an orphan from a live bottle ([`judge`], with the [`READY_MARKER`]
//! check, applied to what a backend found by [`Leftovers`]): how `list`,
//! `stop` and `cleanup` find what belongs to whom, the same on every backend.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use crate::backend::CleanupPlan;
use crate::bottle::{ActiveAgent, Bottle, GuestUser};
use crate::owner::{Liveness, Owner};
use crate::plan::CommonPlan;

/// A root-owned file inside every bottle that finished launching and
/// provisioning. `cleanup` spares a detached bottle whose launcher is gone only
/// when it has this marker: without it, the bottle was left half-made.
pub const READY_MARKER: &str = "/var/lib/bot-bottle/ready";

/// Whether a bottle finished launching (its [`READY_MARKER`] is there):
/// what `cleanup` asks before it spares a detached bottle whose owner is gone.
pub async fn is_ready(bottle: &dyn Bottle) -> bool {
    let check = format!("test -e {READY_MARKER}");
    bottle.exec(&check, GuestUser::Root).await.is_ok_and(|r| r.success())
}

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

    /// The bottle as `list active` shows it, from its agent's labels, when
    /// they name a slug: `backend` runs it, in the engine's `status`, from
    /// `image`.
    pub fn active_agent(&self, backend: &str, status: String, image: String) -> Option<ActiveAgent> {
        Some(ActiveAgent {
            slug: self.get(SLUG)?.to_string(),
            agent: self.get(AGENT).unwrap_or_default().to_string(),
            backend: backend.to_string(),
            started_at_ms: self.created_ms(),
            status: if status.is_empty() { "unknown".into() } else { status },
            image,
            label: self.get(LABEL).map(str::to_string),
            color: self.get(COLOR).map(str::to_string),
        })
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

/// What a backend's `prepare_cleanup` found, by slug: one line per
/// resource, the owner and detachment the first of them names, and whether
/// the agent runs. [`Leftovers::judge`] applies the orphan rule to it.
#[derive(Debug, Default)]
pub struct Leftovers {
    found: BTreeMap<String, Leftover>,
}

#[derive(Debug, Default)]
struct Leftover {
    owner: Option<Owner>,
    detached: bool,
    agent_running: bool,
    what: Vec<String>,
}

impl Leftovers {
    /// Note `what` (one line: `container bb-x (stopped)`) of bottle `slug`,
    /// whose labels are `found`.
    pub fn saw(&mut self, slug: &str, what: String, found: &HashMap<String, String>) {
        let l = Labels(found);
        self.saw_owned(slug, what, l.owner(), l.detached());
    }

    /// Note `what` of bottle `slug`, owned by `owner` (`None` when unknown),
    /// detached or not: the first owner known for a slug is its owner.
    pub fn saw_owned(&mut self, slug: &str, what: String, owner: Option<Owner>, detached: bool) {
        let leftover = self.found.entry(slug.to_string()).or_default();
        if leftover.owner.is_none() {
            (leftover.owner, leftover.detached) = (owner, detached);
        }
        leftover.what.push(what);
    }

    /// Note that bottle `slug`'s agent container or VM runs.
    pub fn agent_runs(&mut self, slug: &str) {
        self.found.entry(slug.to_string()).or_default().agent_running = true;
    }

    /// Whether anything of `slug` was noted.
    pub fn has(&self, slug: &str) -> bool {
        self.found.get(slug).is_some_and(|l| !l.what.is_empty())
    }

    /// The orphans among what was found, by [`judge`]; `ready(slug)` says
    /// whether a detached bottle whose launcher is gone finished launching
    /// ([`is_ready`] on a handle on its agent).
    pub async fn judge<F, Fut>(self, mut ready: F) -> Orphans
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = bool>,
    {
        let mut orphans = Orphans::default();
        for (slug, leftover) in self.found {
            if leftover.what.is_empty() {
                continue;
            }
            let liveness = leftover.owner.as_ref().map(Owner::liveness);
            let orphan = match judge(liveness, leftover.agent_running, leftover.detached) {
                Verdict::Keep => false,
                Verdict::Remove => true,
                Verdict::RemoveUnlessReady => !ready(slug.clone()).await,
            };
            if orphan {
                orphans.by_slug.insert(slug, leftover.what);
            }
        }
        orphans
    }
}

/// What `cleanup` removes: the orphaned bottles' slugs, with one line per
/// resource of theirs. Every backend's [`CleanupPlan`].
#[derive(Debug, Default)]
pub struct Orphans {
    by_slug: BTreeMap<String, Vec<String>>,
}

impl Orphans {
    /// The orphaned bottles' slugs.
    pub fn slugs(&self) -> impl Iterator<Item = &str> {
        self.by_slug.keys().map(String::as_str)
    }
}

impl CleanupPlan for Orphans {
    fn describe(&self) -> Vec<String> {
        self.by_slug.iter().flat_map(|(slug, what)| what.iter().map(move |w| format!("{slug}: {w}"))).collect()
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

    #[tokio::test]
    async fn leftovers_are_judged_by_the_rule_and_only_the_detached_asked_if_ready() {
        let alive = Owner::current();
        let gone = Owner { pid_start: alive.pid_start + 1, ..alive.clone() };
        let mut found = Leftovers::default();
        found.saw_owned("live", "container bb-live (running)".into(), Some(alive.clone()), false);
        found.agent_runs("live");
        found.saw_owned("crashed", "container bb-crashed (running)".into(), Some(gone.clone()), false);
        found.agent_runs("crashed");
        for slug in ["ready", "half-made"] {
            found.saw_owned(slug, format!("container bb-{slug} (running)"), Some(gone.clone()), true);
            found.agent_runs(slug);
        }
        found.saw_owned("stopped", "network bb-stopped-out".into(), None, false);
        // An owner learned later fills in an unknown one: a live launcher's bottle is kept.
        found.saw_owned("late", "network bb-late-out".into(), None, false);
        found.saw_owned("late", "egress sidecar (pid 1)".into(), Some(alive.clone()), false);
        // The first owner noted wins: a later resource's labels do not make a live bottle an orphan.
        found.saw_owned("live", "volume bb-live-sockets".into(), Some(gone), false);
        assert!(found.has("live") && !found.has("never-seen"));
        let mut asked = Vec::new();
        let orphans = found
            .judge(|slug| {
                asked.push(slug.clone());
                std::future::ready(slug == "ready")
            })
            .await;
        assert_eq!(asked, ["half-made", "ready"], "only detached bottles of a gone launcher are asked");
        assert_eq!(orphans.slugs().collect::<Vec<_>>(), ["crashed", "half-made", "stopped"]);
        assert_eq!(
            orphans.describe(),
            [
                "crashed: container bb-crashed (running)",
                "half-made: container bb-half-made (running)",
                "stopped: network bb-stopped-out"
            ]
        );
    }

    #[test]
    fn an_agent_is_listed_from_its_labels() {
        let labels: HashMap<String, String> = [(SLUG, "s1"), (AGENT, "dev"), (CREATED_MS, "42"), (LABEL, "mine")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let agent = Labels(&labels).active_agent("docker", String::new(), "img".into()).expect("a slug");
        assert_eq!((agent.slug.as_str(), agent.agent.as_str(), agent.backend.as_str()), ("s1", "dev", "docker"));
        assert_eq!((agent.started_at_ms, agent.status.as_str(), agent.image.as_str()), (42, "unknown", "img"));
        assert_eq!((agent.label.as_deref(), agent.color.as_deref()), (Some("mine"), None));
        assert_eq!(Labels(&HashMap::new()).active_agent("docker", "running".into(), "img".into()), None);
    }
}
