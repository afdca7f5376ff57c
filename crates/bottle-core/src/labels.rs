//! The labels every backend resource of a bottle carries (containers,
//! networks, VMs), reading them back, and the one rule by which `cleanup`
//! tells an orphan from a live bottle ([`judge`], with the check for the
//! [detached marker](crate::agent_session::DETACHED_MARKER), applied to what
//! a backend found by [`Leftovers`]): how `list`, `stop` and `cleanup` find
//! what belongs to whom, the same on every backend.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use crate::backend::CleanupPlan;
use crate::bottle::ActiveAgent;
use crate::owner::{Liveness, Owner};
use crate::plan::CommonPlan;
use crate::protocol::SidecarProcess;

pub use crate::agent_session::is_detached;

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
/// Whether the bottle was started detached (`true`/`false`; for `list`:
/// `cleanup` asks the bottle itself, see [`is_detached`]).
pub const DETACHED: &str = "dev.bot-bottle.detached";
/// The agent's user inside the bottle.
pub const USER: &str = "dev.bot-bottle.user";
/// The agent's working directory inside the bottle.
pub const WORKDIR: &str = "dev.bot-bottle.workdir";
/// The operator's label.
pub const LABEL: &str = "dev.bot-bottle.label";
/// The operator's colour.
pub const COLOR: &str = "dev.bot-bottle.color";

/// The key of the warm pool the bottle was made for (see [`crate::pool`]).
pub const POOL: &str = "dev.bot-bottle.pool";

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
    if let Some(key) = &plan.pool {
        labels.insert(POOL.into(), key.clone());
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
    /// `image`, with each process beside it (`sidecars`) and whether it
    /// runs. A running bottle with a sidecar down says so in its status
    /// (`running (egress down)`); its owner's liveness is read from the labels.
    pub fn active_agent(
        &self,
        backend: &str,
        status: String,
        image: String,
        sidecars: &[(SidecarProcess, bool)],
    ) -> Option<ActiveAgent> {
        let mut agent = ActiveAgent {
            slug: self.get(SLUG)?.to_string(),
            agent: self.get(AGENT).unwrap_or_default().to_string(),
            backend: backend.to_string(),
            started_at_ms: self.created_ms(),
            status: if status.is_empty() { "unknown".into() } else { status },
            image,
            label: self.get(LABEL).map(str::to_string),
            color: self.get(COLOR).map(str::to_string),
            owner: self.owner().as_ref().map(Owner::liveness).into(),
            sidecars: sidecars.iter().map(|(process, up)| (process.name().to_string(), *up)).collect(),
            pool: self.get(POOL).map(|_| crate::bottle::PoolState::Waiting),
        };
        let down = agent.sidecars_down().join(", ");
        if agent.status == "running" && !down.is_empty() {
            agent.status = format!("running ({down} down)");
        }
        Some(agent)
    }
}

/// What `cleanup` does with the resources of one bottle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A live bottle (or one that is not ours to judge): leave it.
    Keep,
    /// An orphan: remove it.
    Remove,
    /// A bottle whose launcher is gone and whose agent still runs: an orphan
    /// unless it is marked detached ([`is_detached`]: started with
    /// `--detach` and fully launched, or detached from by its operator).
    RemoveUnlessDetached,
}

/// Judge a bottle's leftovers from its owner's liveness (`None` when the
/// owner is unknown) and whether its agent container or VM runs.
pub fn judge(owner: Option<Liveness>, agent_running: bool) -> Verdict {
    match (owner, agent_running) {
        (Some(Liveness::Alive), _) => Verdict::Keep,
        (_, false) => Verdict::Remove,
        // Foreign or unreadable owner labels: a running bottle is not ours to judge.
        (Some(Liveness::OtherHost) | None, true) => Verdict::Keep,
        // A bottle meant to outlive its launcher says so inside; a killed launcher's does not.
        (Some(Liveness::Gone), true) => Verdict::RemoveUnlessDetached,
    }
}

/// What a backend's `prepare_cleanup` found, by slug: one line per
/// resource, the owner the first of them names, and whether the agent runs.
/// [`Leftovers::judge`] applies the orphan rule to it.
#[derive(Debug, Default)]
pub struct Leftovers {
    found: BTreeMap<String, Leftover>,
}

#[derive(Debug, Default)]
struct Leftover {
    owner: Option<Owner>,
    agent_running: bool,
    what: Vec<String>,
}

impl Leftovers {
    /// Note `what` (one line: `container bb-x (stopped)`) of bottle `slug`,
    /// whose labels are `found`.
    pub fn saw(&mut self, slug: &str, what: String, found: &HashMap<String, String>) {
        self.saw_owned(slug, what, Labels(found).owner());
    }

    /// Note `what` of bottle `slug`, owned by `owner` (`None` when unknown):
    /// the first owner known for a slug is its owner.
    pub fn saw_owned(&mut self, slug: &str, what: String, owner: Option<Owner>) {
        let leftover = self.found.entry(slug.to_string()).or_default();
        if leftover.owner.is_none() {
            leftover.owner = owner;
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

    /// The orphans among what was found, by [`judge`]; `detached(slug)` says
    /// whether a bottle whose launcher is gone is meant to outlive it
    /// ([`is_detached`] on a handle on its agent).
    pub async fn judge<F, Fut>(self, mut detached: F) -> Orphans
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
            let orphan = match judge(liveness, leftover.agent_running) {
                Verdict::Keep => false,
                Verdict::Remove => true,
                Verdict::RemoveUnlessDetached => !detached(slug.clone()).await,
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
    fn slugs(&self) -> Vec<String> {
        self.by_slug.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphans_are_judged_by_owner_state_and_whether_the_agent_runs() {
        use Liveness::*;
        let check = |owner, running, expect| {
            assert_eq!(judge(owner, running), expect, "{owner:?} running={running}");
        };
        check(Some(Alive), false, Verdict::Keep);
        check(Some(Alive), true, Verdict::Keep);
        check(Some(Gone), false, Verdict::Remove);
        check(None, false, Verdict::Remove);
        check(Some(OtherHost), true, Verdict::Keep);
        check(None, true, Verdict::Keep);
        // A gone launcher's running bottle: kept only when it says it is detached.
        check(Some(Gone), true, Verdict::RemoveUnlessDetached);
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
    async fn leftovers_are_judged_by_the_rule_and_only_a_gone_launchers_running_bottles_asked_if_detached() {
        let alive = Owner::current();
        let gone = Owner { pid_start: alive.pid_start + 1, ..alive.clone() };
        let mut found = Leftovers::default();
        found.saw_owned("live", "container bb-live (running)".into(), Some(alive.clone()));
        found.agent_runs("live");
        for slug in ["crashed", "detached"] {
            found.saw_owned(slug, format!("container bb-{slug} (running)"), Some(gone.clone()));
            found.agent_runs(slug);
        }
        found.saw_owned("stopped", "network bb-stopped-out".into(), None);
        // An owner learned later fills in an unknown one: a live launcher's bottle is kept.
        found.saw_owned("late", "network bb-late-out".into(), None);
        found.saw_owned("late", "egress sidecar (pid 1)".into(), Some(alive.clone()));
        // The first owner noted wins: a later resource's labels do not make a live bottle an orphan.
        found.saw_owned("live", "volume bb-live-sockets".into(), Some(gone));
        assert!(found.has("live") && !found.has("never-seen"));
        let mut asked = Vec::new();
        let orphans = found
            .judge(|slug| {
                asked.push(slug.clone());
                std::future::ready(slug == "detached")
            })
            .await;
        assert_eq!(asked, ["crashed", "detached"], "only running bottles of a gone launcher are asked");
        assert_eq!(orphans.slugs().collect::<Vec<_>>(), ["crashed", "stopped"]);
        assert_eq!(orphans.describe(), ["crashed: container bb-crashed (running)", "stopped: network bb-stopped-out"]);
    }

    #[test]
    fn an_agent_is_listed_from_its_labels() {
        let labels: HashMap<String, String> = [(SLUG, "s1"), (AGENT, "dev"), (CREATED_MS, "42"), (LABEL, "mine")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let agent = Labels(&labels).active_agent("docker", String::new(), "img".into(), &[]).expect("a slug");
        assert_eq!((agent.slug.as_str(), agent.agent.as_str(), agent.backend.as_str()), ("s1", "dev", "docker"));
        assert_eq!((agent.started_at_ms, agent.status.as_str(), agent.image.as_str()), (42, "unknown", "img"));
        assert_eq!((agent.label.as_deref(), agent.color.as_deref()), (Some("mine"), None));
        assert_eq!(agent.owner, crate::bottle::OwnerState::Unknown, "no owner labels");
        assert_eq!(Labels(&HashMap::new()).active_agent("docker", "running".into(), "img".into(), &[]), None);
    }

    #[test]
    fn an_agent_shows_its_owner_and_which_sidecars_are_down() {
        use crate::bottle::OwnerState;
        let owner = Owner::current();
        let labels = |owner: &Owner| -> HashMap<String, String> {
            [
                (SLUG, "s1".to_string()),
                (OWNER_HOST, owner.host.clone()),
                (OWNER_PID, owner.pid.to_string()),
                (OWNER_START, owner.pid_start.to_string()),
                (CREATED_MS, owner.created_ms.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
        };
        let list = |owner: &Owner, status: &str, sidecars: &[(SidecarProcess, bool)]| {
            Labels(&labels(owner)).active_agent("docker", status.into(), "img".into(), sidecars).expect("a slug")
        };
        let up = [(SidecarProcess::Egress, true), (SidecarProcess::Relay, true)];
        let all_up = list(&owner, "running", &up);
        assert_eq!((all_up.owner, all_up.status.as_str()), (OwnerState::Alive, "running"));
        assert_eq!(all_up.sidecars, [("egress".to_string(), true), ("relay".to_string(), true)].into());
        let gone = Owner { pid_start: owner.pid_start + 1, ..owner.clone() };
        let egress_down =
            [(SidecarProcess::Egress, false), (SidecarProcess::GitGate, true), (SidecarProcess::Relay, true)];
        let down = list(&gone, "running", &egress_down);
        assert_eq!((down.owner, down.status.as_str()), (OwnerState::Gone, "running (egress down)"));
        assert_eq!(down.sidecars_down(), ["egress"]);
        let both = list(&owner, "running", &[(SidecarProcess::Egress, false), (SidecarProcess::GitGate, false)]);
        assert_eq!(both.status, "running (egress, gate down)");
        let elsewhere = Owner { host: "elsewhere.invalid".into(), ..owner.clone() };
        let exited = list(&elsewhere, "exited", &egress_down);
        assert_eq!(
            (exited.owner, exited.status.as_str()),
            (OwnerState::OtherHost, "exited"),
            "only a running one says so"
        );
        let json = serde_json::to_value(&down).expect("json");
        assert_eq!(json["owner"], "gone");
        assert_eq!(json["sidecars"], serde_json::json!({ "egress": false, "gate": true, "relay": true }));
    }
}
