//! The life of one bottle, owned by the library: [`Session`] (prepare, the
//! summary, launch with provisioning) and [`Running`] (attached or detached,
//! teardown), the agent's state saved at teardown and restored on resume,
//! and `stop`. A front end adds only the confirmation, the signals and the
//! printing.

use std::future::Future;
use std::sync::Arc;

use crate::agent_session;
use crate::backend::{DynBackend, ErasedPlan};
use crate::bottle::{Bottle, GuestUser};
use crate::copy::CopyOut;
use crate::plan::CommonPlan;
use crate::prepare::{BottleSpec, Host};
use crate::provider::Providers;
use crate::provider::{AgentProvider, run_checked, shell_quote};
use crate::resources::ByteSize;
use crate::sidecar_config::{GUEST_CA_BUNDLE, GUEST_CA_FILE};
use crate::state::{RESUME_DIR, StateRoot};
use crate::{Error, ErrorKind, Result};

/// One bottle's life in the library: prepared (its state folder minted),
/// shown, launched, then run attached or left detached, and torn down.
/// Every step cleans up after itself on every path: a session dropped before
/// launch removes the state folder it minted; a launch that fails or is
/// cancelled removes what it created (and that folder); a bottle's teardown
/// saves the agent's state first.
///
/// ```no_run
/// # async fn demo(registry: &bottle_core::Registry, providers: &bottle_core::Providers,
/// #     spec: bottle_core::BottleSpec) -> bottle_core::Result<()> {
/// let host = bottle_core::Host::from_process()?;
/// let session = bottle_core::Session::prepare(&spec, providers, &host, registry.get("docker")?).await?;
/// println!("{}", session.summary());
/// let running = session.launch(std::future::pending()).await?;
/// let out = running.bottle().exec("id -un", bottle_core::GuestUser::Agent).await?;
/// running.teardown().await?;
/// # Ok(()) }
/// ```
pub struct Session {
    backend: Arc<dyn DynBackend>,
    provider: Arc<dyn AgentProvider>,
    plan: ErasedPlan,
    state: StateRoot,
    /// Removes the state folder on drop, unless launched.
    minted: Minted,
    /// How long preparing took (the launch adds its phases).
    timings: crate::timings::Timings,
}

/// A state folder minted for a session, removed on drop unless `kept`.
struct Minted {
    state: StateRoot,
    slug: String,
    minted: bool,
    kept: bool,
}

impl Drop for Minted {
    fn drop(&mut self) {
        if self.minted && !self.kept {
            let _ = self.state.discard(&self.slug);
        }
    }
}

impl Session {
    /// Checks that `backend` answers, runs [`prepare`](crate::prepare) and
    /// resolves the backend's plan: everything short of creating anything
    /// outside the state folder (safe before the operator's y/N).
    pub async fn prepare(
        spec: &BottleSpec,
        providers: &Providers,
        host: &Host,
        backend: Arc<dyn DynBackend>,
    ) -> Result<Session> {
        Session::prepare_member(spec, providers, host, backend, None).await
    }

    /// [`Session::prepare`], for a member of the warm pool of key `pool`
    /// when it names one.
    pub(crate) async fn prepare_member(
        spec: &BottleSpec,
        providers: &Providers,
        host: &Host,
        backend: Arc<dyn DynBackend>,
        pool: Option<&str>,
    ) -> Result<Session> {
        let since = std::time::Instant::now();
        backend.is_available_dyn().await?;
        let common = crate::prepare::prepare_member(spec, providers, host, backend.name_dyn(), pool)?;
        let minted = Minted {
            state: host.state.clone(),
            slug: common.slug.clone(),
            minted: spec.identity.is_none(),
            kept: false,
        };
        let provider = providers.get(&common.provision.provider)?;
        let plan = backend.resolve_plan_dyn(common).await?;
        // Kept for readers of a running bottle (the dashboard's details);
        // removed with the state folder if the bottle is never launched.
        crate::PolicyRecord::of(&plan).write(&host.state, &plan.common().slug)?;
        let mut timings = crate::timings::Timings::default();
        timings.record("prepare", since, Vec::new());
        Ok(Session { backend, provider, plan, state: host.state.clone(), minted, timings })
    }

    /// The bottle's slug.
    pub fn slug(&self) -> &str {
        &self.plan.common().slug
    }

    /// The resolved plan.
    pub fn plan(&self) -> &ErasedPlan {
        &self.plan
    }

    /// The preflight summary: what will run, secrets by name only.
    pub fn summary(&self) -> String {
        crate::summary(&self.plan)
    }

    /// Launches and provisions the bottle and marks it ready, unless
    /// `cancel` resolves first (Ctrl-C): then, as on any error, everything
    /// the launch created is removed (and the state folder it minted) and
    /// the error says so ([`ErrorKind::Interrupted`] for a cancel).
    pub async fn launch(mut self, cancel: impl Future<Output = ()>) -> Result<Running> {
        let slug = self.slug().to_string();
        // A `stop` meanwhile waits for the launch to finish, then stops the bottle whole.
        let _lock = self.state.lock(&slug).await?;
        let common = self.plan.common().clone();
        let mut timings = std::mem::take(&mut self.timings);
        let steps = launch_steps(self.backend.as_ref(), self.plan, self.provider.as_ref(), &self.state, &mut timings);
        match race(steps, cancel).await {
            Either::Left(Ok(bottle)) => {
                self.minted.kept = true;
                Ok(Running {
                    backend: self.backend,
                    bottle,
                    provider: self.provider,
                    state: self.state,
                    slug: common.slug,
                    provision: common.provision,
                    agent_args: common.agent_args,
                    timings,
                })
            }
            Either::Left(Err(e)) => {
                let _ = self.backend.remove_dyn(&slug).await;
                Err(e.with_bottle(&slug))
            }
            Either::Right(()) => {
                // The launch was dropped mid-step: a create the engine was
                // still carrying out may land after the first removal, so
                // look again once such a request has had time to finish.
                let _ = self.backend.remove_dyn(&slug).await;
                for _ in 0..2 {
                    let _ = crate::blocking::unblock(|| std::thread::sleep(LATE_CREATE)).await;
                    let _ = self.backend.remove_dyn(&slug).await;
                }
                Err(Error::new(ErrorKind::Interrupted, format!("interrupted: bottle {slug} removed"))
                    .with_bottle(&slug))
            }
        }
    }
}

/// How long a removal after a cancelled launch waits for a create still in
/// flight in the engine before it looks again.
const LATE_CREATE: std::time::Duration = std::time::Duration::from_millis(750);

/// Launch, provision, mark ready; a detached bottle's agent session started
/// and the bottle marked detached last. On an error after the launch the
/// bottle is closed.
async fn launch_steps(
    backend: &dyn DynBackend,
    plan: ErasedPlan,
    provider: &dyn AgentProvider,
    state: &StateRoot,
    timings: &mut crate::timings::Timings,
) -> Result<Box<dyn Bottle>> {
    let common = plan.common().clone();
    let wiring = plan.wiring().clone();
    let since = std::time::Instant::now();
    let bottle = backend.launch_dyn(plan).await?;
    timings.record("launch", since, Vec::new());
    let since = std::time::Instant::now();
    let mut steps = crate::timings::Steps::default();
    if let Err(e) = provision(bottle.as_ref(), &common, &wiring, provider, &mut steps).await {
        let _ = bottle.close().await;
        return Err(e.with_operation("provision"));
    }
    timings.record("provision", since, steps.into_inner());
    let since = std::time::Instant::now();
    let ready = async {
        state.update(&common.slug, |m| m.ready = true)?;
        if common.pool.is_some() {
            // A pool member waits for its claim with no session, meant to
            // outlive the fill that made it.
            agent_session::mark_detached(bottle.as_ref()).await?;
            return crate::pool::mark_waiting(state, &common.slug);
        }
        if common.detached {
            let argv = provider.agent_argv(&common.provision, &common.agent_args);
            agent_session::start(bottle.as_ref(), &argv, &common.provision.workdir).await?;
            agent_session::mark_detached(bottle.as_ref()).await?;
        }
        Ok::<_, Error>(())
    };
    if let Err(e) = ready.await {
        let _ = bottle.close().await;
        return Err(e);
    }
    timings.record("session", since, Vec::new());
    Ok(bottle)
}

/// A launched, provisioned bottle.
pub struct Running {
    pub(crate) backend: Arc<dyn DynBackend>,
    pub(crate) bottle: Box<dyn Bottle>,
    pub(crate) provider: Arc<dyn AgentProvider>,
    pub(crate) state: StateRoot,
    pub(crate) slug: String,
    /// How the agent was provisioned (its argv and workdir come from it).
    pub(crate) provision: crate::plan::AgentProvisionPlan,
    pub(crate) agent_args: Vec<String>,
    pub(crate) timings: crate::timings::Timings,
}

/// How an attached agent session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The agent's exit code (130 when cancelled; 0 when the operator detached).
    pub code: i32,
    /// What teardown wants the operator to know, one line each.
    pub notes: Vec<String>,
    /// Whether the operator detached from the agent's session (`C-b d`):
    /// the bottle keeps running, nothing was torn down.
    pub detached: bool,
}

impl Running {
    /// How long each phase of its start took (`bottle start --timings`).
    pub fn timings(&self) -> &crate::timings::Timings {
        &self.timings
    }

    /// The bottle's slug.
    pub fn slug(&self) -> &str {
        &self.slug
    }

    /// The running bottle: commands, copies.
    pub fn bottle(&self) -> &dyn Bottle {
        self.bottle.as_ref()
    }

    /// The agent session's argv inside the bottle (the provider's command,
    /// its continue arguments on resume, the operator's extra arguments).
    pub fn agent_argv(&self) -> Vec<String> {
        self.provider.agent_argv(&self.provision, &self.agent_args)
    }

    /// The host command that shows the agent's session on the terminal it
    /// runs on (`docker exec -it … tmux attach …`): for a terminal
    /// multiplexer's pane. `None` when the backend has none.
    pub fn attach_argv(&self) -> Option<Vec<String>> {
        self.bottle.host_argv(&agent_session::attach_argv(), GuestUser::Agent)
    }

    /// Runs the agent attached to this process's terminal until it exits or
    /// `cancel` resolves, then tears the bottle down. On a terminal (and an
    /// image with tmux) the agent runs in its [session](crate::agent_session):
    /// the operator may detach (`C-b d`) and the bottle keeps running
    /// ([`Ended::detached`]); elsewhere it runs straight on this process's
    /// stdio.
    pub async fn attach(self, cancel: impl Future<Output = ()>) -> Result<Ended> {
        use std::io::IsTerminal as _;
        let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
        if tty && agent_session::supported(self.bottle.as_ref()).await? {
            return self.attach_session(cancel).await;
        }
        let argv = self.agent_argv();
        let outcome = match race(self.bottle.exec_attached(&argv, GuestUser::Agent), cancel).await {
            Either::Left(code) => code,
            Either::Right(()) => Ok(130),
        };
        let (stopped_elsewhere, notes) = self.finish().await?;
        // A stop from elsewhere ended the agent on purpose: not its failure.
        let code = if stopped_elsewhere { 0 } else { outcome? };
        Ok(Ended { code, notes, detached: false })
    }

    /// [`Running::attach`] through the agent's session.
    async fn attach_session(self, cancel: impl Future<Output = ()>) -> Result<Ended> {
        let bottle = self.bottle.as_ref();
        if let Err(e) = agent_session::start(bottle, &self.agent_argv(), &self.provision.workdir).await {
            let _ = self.teardown().await;
            return Err(e);
        }
        let attached = race(bottle.exec_attached(&agent_session::attach_argv(), GuestUser::Agent), cancel).await;
        let code = match attached {
            Either::Right(()) => 130,
            Either::Left(attach_code) => {
                if agent_session::is_running(bottle).await {
                    // The operator detached: the bottle outlives this process.
                    agent_session::mark_detached(bottle).await?;
                    self.state.update(&self.slug, |m| m.detached = true)?;
                    return Ok(Ended { code: 0, notes: Vec::new(), detached: true });
                }
                match agent_session::exit_code(bottle).await {
                    Some(code) => code,
                    None => attach_code?,
                }
            }
        };
        let (stopped_elsewhere, notes) = self.finish().await?;
        Ok(Ended { code: if stopped_elsewhere { 0 } else { code }, notes, detached: false })
    }

    /// Leaves the bottle running (it outlives this process) and returns its slug.
    pub fn detach(self) -> String {
        self.slug
    }

    /// Saves the agent's state and the sidecars' audit logs, then removes
    /// the bottle; returns what the operator should know (state left
    /// unsaved, and why; a bottle stopped meanwhile from elsewhere).
    pub async fn teardown(self) -> Result<Vec<String>> {
        Ok(self.finish().await?.1)
    }

    /// [`Running::teardown`], and whether the bottle had been stopped from
    /// elsewhere meanwhile (then the agent's end was that stop's doing).
    async fn finish(self) -> Result<(bool, Vec<String>)> {
        let stopped = stop(self.backend.as_ref(), &self.slug, &self.state).await?;
        let mut notes = stopped.notes;
        if stopped.already {
            notes.push(format!("bottle {} was stopped from elsewhere (`bottle stop`) meanwhile", self.slug));
        }
        Ok((stopped.already, notes))
    }
}

/// One of two futures' outputs.
enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Runs `a` and `b` together; the output of the first to finish (the other is dropped).
async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(out) = a.as_mut().poll(cx) {
            return std::task::Poll::Ready(Either::Left(out));
        }
        b.as_mut().poll(cx).map(Either::Right)
    })
    .await
}

/// The provision steps, in order: the CA, prompt, provider apply, skills,
/// agent state (on resume), workspace, git, the supervise MCP server.
async fn provision(
    bottle: &dyn Bottle,
    plan: &CommonPlan,
    wiring: &crate::wiring::Wiring,
    provider: &dyn AgentProvider,
    steps: &mut crate::timings::Steps,
) -> Result<()> {
    let p = &plan.provision;
    steps.time("root", root_steps(bottle, plan, wiring)).await?;
    steps.time("prompt", provider.provision_prompt(bottle, p)).await?;
    steps.time("provider", provider.apply(bottle, p)).await?;
    steps.time("skills", provider.provision_skills(bottle, p)).await?;
    if plan.resumed {
        steps.time("restore", restore_agent_state(bottle, plan)).await?;
    }
    let workspace = async {
        // A detached bottle's empty workdir is made by its session's start.
        let session_makes_it = plan.copy_cwd.is_none() && plan.detached && plan.pool.is_none();
        if !session_makes_it {
            let mkdir = format!("mkdir -p {}", shell_quote(&p.workdir));
            run_checked(bottle, &mkdir, GuestUser::Agent, "creating the workdir").await?;
        }
        match &plan.copy_cwd {
            Some(cwd) => bottle.cp_in(cwd, &p.workdir).await,
            None => Ok(()),
        }
    };
    steps.time("workspace", workspace).await?;
    steps.time("git", provider.provision_git(bottle, plan, wiring)).await?;
    if let Some(url) = wiring.supervise_url(plan) {
        steps.time("supervise", provider.provision_supervise(bottle, plan, url)).await?;
    }
    Ok(())
}

/// The provisioning steps root takes, in one command: the bottle's CA put
/// into its system trust store (when the wiring asks for it) and the agent
/// session's tmux configuration.
///
/// The CA: its file in `/usr/local/share/ca-certificates` (which a later
/// `update-ca-certificates` in the bottle keeps) appended to the system
/// bundle that the bottle's variables name. No `update-ca-certificates` at
/// start: it rehashes every certificate (about 1 s of a start) for the
/// hashed folder no variable names. Written by root through the shell (the
/// bottle runs with `no-new-privileges`, so root there has no capabilities:
/// it can write root-owned places but chown nothing).
async fn root_steps(bottle: &dyn Bottle, plan: &CommonPlan, wiring: &crate::wiring::Wiring) -> Result<()> {
    let mut script = Vec::new();
    if wiring.install_ca {
        let pem = &plan.egress.policy.ca_cert_pem;
        script.push(format!(
            "mkdir -p {dir} /etc/ssl/certs && printf '%s' {pem} > {GUEST_CA_FILE} && chmod 644 {GUEST_CA_FILE} && \
             cat {GUEST_CA_FILE} >> {GUEST_CA_BUNDLE}",
            dir = GUEST_CA_FILE.rsplit_once('/').map_or("/", |(d, _)| d),
            pem = shell_quote(pem),
        ));
    }
    script.push(agent_session::conf_script());
    run_checked(
        bottle,
        &script.join(" && "),
        GuestUser::Root,
        "installing the bottle's CA certificate and the agent session's configuration",
    )
    .await
}

fn saved_path(state_dir: &std::path::Path, guest: &str) -> std::path::PathBuf {
    state_dir.join(RESUME_DIR).join(guest.trim_start_matches('/'))
}

/// What a bottle's state folder `state_dir` holds of its agent's state: each
/// of `resume_paths` that was saved, with the bytes of its files, in order.
pub fn saved_state(state_dir: &std::path::Path, resume_paths: &[String]) -> Vec<(String, ByteSize)> {
    fn bytes(path: &std::path::Path) -> u64 {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => std::fs::read_dir(path)
                .map(|entries| entries.filter_map(|e| e.ok()).map(|e| bytes(&e.path())).sum())
                .unwrap_or(0),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        }
    }
    resume_paths
        .iter()
        .filter_map(|guest| {
            let saved = saved_path(state_dir, guest);
            saved.exists().then(|| (guest.clone(), ByteSize(bytes(&saved))))
        })
        .collect()
}

async fn restore_agent_state(bottle: &dyn Bottle, plan: &CommonPlan) -> Result<()> {
    for (guest, _) in saved_state(&plan.state_dir, &plan.provision.resume_paths) {
        bottle.cp_in(&saved_path(&plan.state_dir, &guest), &guest).await?;
    }
    Ok(())
}

/// Copy the agent's own state out of the bottle into its state dir, for
/// `resume`, within the bottle's limit for saved state (its metadata's
/// `state_limit`, shared by all its resume paths). Returns one line for each
/// path that did not come out whole, for the operator.
pub async fn save_agent_state(bottle: &dyn Bottle, state: &StateRoot) -> Result<Vec<String>> {
    let meta = state.read(bottle.slug())?;
    let dir = state.bottle_dir(bottle.slug());
    let mut left = meta.state_limit;
    let mut notes = Vec::new();
    for guest in &meta.resume_paths {
        let saved = saved_path(&dir, guest);
        let fresh = saved.with_file_name(format!(
            ".{}.new",
            saved.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        ));
        remove_tree(&fresh)?;
        match bottle.cp_out(guest, &fresh, left).await? {
            CopyOut::Missing => {}
            CopyOut::Copied { bytes, skipped } => {
                remove_tree(&saved)?;
                std::fs::rename(&fresh, &saved)
                    .map_err(|e| Error::io(format!("moving the saved {guest} into place"), e))?;
                left = ByteSize(left.0.saturating_sub(bytes));
                if !skipped.is_empty() {
                    notes.push(format!("{guest}: saved without {}", skipped.join(", ")));
                }
            }
            CopyOut::NothingKept { skipped } => {
                notes.push(format!("{guest} was not saved: {}", skipped.join(", ")));
            }
            CopyOut::TooLarge { limit } => notes.push(format!(
                "{guest} was not saved: it is over the {limit} left for this bottle's saved state \
                 (raise `resources.state` in the manifest){}",
                if saved.exists() { "; `resume` restores the copy saved before" } else { "" }
            )),
        }
    }
    Ok(notes)
}

fn remove_tree(path: &std::path::Path) -> Result<()> {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    removed.map_err(|e| Error::io(format!("removing {}", path.display()), e))
}

/// Tear a bottle down: save the agent's state and its sidecars' audit logs,
/// then remove it. Returns what [`save_agent_state`] and the log copies said.
/// Callers hold the bottle's lock ([`StateRoot::lock`]).
async fn teardown(bottle: &dyn Bottle, state: &StateRoot) -> Result<Vec<String>> {
    // The agent's state first, then the logs: the sidecars write a line as
    // a request ends and the engine collects it a moment later, so the logs
    // are read last (side by side, a line of a request just made was missed).
    let saved = save_agent_state(bottle, state).await;
    let mut notes = save_logs(bottle, state).await;
    bottle.close().await?;
    let _ = state.update(bottle.slug(), |m| m.stopped_ms = Some(crate::owner::now_ms()));
    notes.extend(saved?);
    Ok(notes)
}

/// Append each sidecar's audit log to the bottle's state folder
/// ([`StateRoot::log_path`]), where `egress log` and `gate log` find it
/// after the bottle is gone. Returns a line for each log that could not be
/// kept.
async fn save_logs(bottle: &dyn Bottle, state: &StateRoot) -> Vec<String> {
    let slug = bottle.slug();
    let gate = state.read(slug).map_or(true, |m| m.gate);
    let sidecars = [crate::bottle::Sidecar::Egress].into_iter().chain(gate.then_some(crate::bottle::Sidecar::GitGate));
    let mut notes = Vec::new();
    for sidecar in sidecars {
        let path = state.log_path(slug, sidecar);
        let kept = async {
            let dir = path.parent().unwrap_or(std::path::Path::new("."));
            std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            bottle.sidecar_log(sidecar, false, &mut file).await
        };
        if let Err(e) = kept.await {
            notes.push(format!("the {} audit log was not kept: {e}", sidecar.name()));
        }
    }
    notes
}

/// What [`stop`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stopped {
    /// What the operator should know, one line each (state left unsaved and
    /// why, a stopped agent started again to save its state).
    pub notes: Vec<String>,
    /// The bottle was already gone (stopped before, or by another `stop`
    /// meanwhile): nothing was saved, whatever it left was removed.
    pub already: bool,
}

/// `bottle stop SLUG`: the agent's state and the sidecars' logs saved, then
/// everything of the bottle removed; idempotent and safe to run twice at
/// once (they take turns; the second finds the bottle gone). A bottle whose
/// agent container or VM had stopped is started again to save its state. A
/// slug no backend and no state folder knows is [`ErrorKind::NotFound`].
pub async fn stop(backend: &dyn DynBackend, slug: &str, state: &StateRoot) -> Result<Stopped> {
    crate::state::validate_slug(slug)?;
    let lock = state.lock(slug).await?;
    let (bottle, mut notes) = match backend.attach_dyn(slug).await {
        Ok(bottle) => (Some(bottle), Vec::new()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let revived = backend.revive_dyn(slug).await?;
            let note = revived
                .as_ref()
                .map(|_| format!("the agent of bottle {slug} had stopped; it was started again to save its state"));
            (revived, note.into_iter().collect())
        }
        Err(e) => return Err(e),
    };
    match bottle {
        Some(bottle) => {
            notes.extend(teardown(bottle.as_ref(), state).await?);
            Ok(Stopped { notes, already: false })
        }
        None => {
            // Gone: remove whatever it left (a sidecar, a network), then say so.
            backend.remove_dyn(slug).await?;
            if lock.is_none() {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "no bottle `{slug}` on {} and no saved state for it; `bottle list active` shows running ones, \
                         `bottle list stopped` the stopped ones",
                        backend.name_dyn()
                    ),
                )
                .with_bottle(slug));
            }
            Ok(Stopped { notes, already: true })
        }
    }
}

/// `bottle cleanup`: each orphan in `plan` stopped as [`stop`] does (its
/// agent's state and its logs saved first, when this host keeps its state
/// folder), then whatever is left removed. Returns one line per orphan: what
/// was saved, or why nothing could be.
pub async fn cleanup(
    backend: &dyn DynBackend,
    plan: crate::backend::ErasedCleanupPlan,
    state: &StateRoot,
) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for slug in plan.slugs().to_vec() {
        let slug: String = slug;
        if state.read(&slug).is_err() {
            lines.push(format!("{slug}: no state folder here; removed without saving its state"));
            continue;
        }
        match stop(backend, &slug, state).await {
            Ok(stopped) if stopped.already => lines.push(format!("{slug}: already gone")),
            Ok(stopped) if stopped.notes.is_empty() => {
                lines.push(format!("{slug}: state saved for `bottle resume {slug}`"))
            }
            Ok(stopped) => lines.push(format!("{slug}: {}", stopped.notes.join("; "))),
            Err(e) => lines.push(format!("{slug}: state not saved ({e})")),
        }
    }
    backend.cleanup_dyn(plan).await?;
    Ok(lines)
}

/// One line when bottle `slug`'s workspace holds work that stopping it
/// would lose (uncommitted changes, commits no remote has), for the
/// operator to see before `stop`; `None` when there is none (or no git
/// repository there, or the bottle is not running).
pub async fn unsaved_work(backend: &dyn DynBackend, slug: &str, state: &StateRoot) -> Option<String> {
    let workdir = state.read(slug).ok()?.workdir;
    if workdir.is_empty() {
        return None;
    }
    let bottle = backend.attach_dyn(slug).await.ok()?;
    let script = format!(
        "cd {} 2>/dev/null && git rev-parse --is-inside-work-tree >/dev/null 2>&1 || exit 0; \
         [ -n \"$(git status --porcelain 2>/dev/null | head -n 1)\" ] && echo uncommitted; \
         [ -n \"$(git log --branches --not --remotes --oneline 2>/dev/null | head -n 1)\" ] && echo unpushed; exit 0",
        shell_quote(&workdir)
    );
    let out = bottle.exec(&script, GuestUser::Agent).await.ok()?;
    let found: Vec<&str> = out.stdout.split_whitespace().collect();
    let what = match (found.contains(&"uncommitted"), found.contains(&"unpushed")) {
        (true, true) => "uncommitted changes and unpushed commits",
        (true, false) => "uncommitted changes",
        (false, true) => "unpushed commits",
        (false, false) => return None,
    };
    Some(format!(
        "bottle {slug}'s workspace {workdir} has {what}, which stopping it discards; push them through the gate or \
         copy them out first (`bottle cp {slug}:{workdir} DEST`)"
    ))
}

/// How an attach to a running bottle's agent session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detach {
    /// The operator detached (or was interrupted); the agent runs on.
    AgentRuns,
    /// The agent ended, with this exit code when it left one; the bottle
    /// runs on until it is stopped.
    AgentEnded(Option<i32>),
}

/// `bottle attach SLUG`: this process's terminal on the agent's session of
/// a running bottle, until the operator detaches, the agent ends or
/// `cancel` resolves. Several terminals may attach in turn or at once.
pub async fn attach(backend: &dyn DynBackend, slug: &str, cancel: impl Future<Output = ()>) -> Result<Detach> {
    use std::io::IsTerminal as _;
    crate::state::validate_slug(slug)?;
    let bottle = backend.attach_dyn(slug).await?;
    if !agent_session::is_running(bottle.as_ref()).await {
        let ended = match agent_session::exit_code(bottle.as_ref()).await {
            Some(code) => format!("its agent exited with {code}"),
            None => "it was started attached, or its agent ended".to_string(),
        };
        return Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "bottle {slug} has no agent session to attach to ({ended}); `bottle exec {slug} -- CMD` runs \
                 commands in it, `bottle stop {slug}` removes it"
            ),
        )
        .with_bottle(slug));
    }
    if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "attaching needs a terminal on stdin and stdout; `bottle exec {slug} -- CMD` runs a command without one"
            ),
        )
        .with_bottle(slug));
    }
    if let Either::Left(code) =
        race(bottle.exec_attached(&agent_session::attach_argv(), GuestUser::Agent), cancel).await
    {
        code?;
    }
    if agent_session::is_running(bottle.as_ref()).await {
        return Ok(Detach::AgentRuns);
    }
    Ok(Detach::AgentEnded(agent_session::exit_code(bottle.as_ref()).await))
}

/// The host command that shows bottle `slug`'s agent session on the
/// terminal it runs on, for a terminal multiplexer's pane (see
/// [`Running::attach_argv`]).
pub async fn attach_argv(backend: &dyn DynBackend, slug: &str) -> Result<Option<Vec<String>>> {
    crate::state::validate_slug(slug)?;
    let bottle = backend.attach_dyn(slug).await?;
    Ok(bottle.host_argv(&agent_session::attach_argv(), GuestUser::Agent))
}

/// Why bottle `meta` may not be forgotten now, or `None` when it may: it
/// runs (its backend lists it), its backend cannot tell, or its launcher
/// still runs (it may be starting).
async fn why_kept(registry: &crate::Registry, meta: &crate::BottleMetadata) -> Result<Option<String>> {
    let slug = &meta.slug;
    let backend = registry.get(&meta.backend)?;
    if let Err(e) = backend.is_available_dyn().await {
        return Ok(Some(format!(
            "its backend {} is not available here, so whether it runs cannot be told ({e})",
            meta.backend
        )));
    }
    if backend.enumerate_active_dyn().await?.iter().any(|a| &a.slug == slug) {
        return Ok(Some(format!("it runs on {}; `bottle stop {slug}` stops it (saving its state)", meta.backend)));
    }
    Ok(match meta.owner.liveness() {
        crate::owner::Liveness::Gone => None,
        crate::owner::Liveness::Alive => {
            Some(format!("the `bottle` process that started it (pid {}) still runs", meta.owner.pid))
        }
        crate::owner::Liveness::OtherHost => {
            Some(format!("it was started on host {}; forget it there", meta.owner.host))
        }
    })
}

/// `bottle forget SLUG`: remove a stopped bottle's state folder (its
/// identity, saved agent state and audit logs): it cannot be resumed after.
/// Refuses ([`ErrorKind::InvalidInput`], one line saying why) a bottle that
/// runs, one whose backend cannot tell, and one whose launcher still runs;
/// holds the bottle's lock while it checks and removes, so a `stop` or
/// `cleanup` of it finishes first. An unknown slug is [`ErrorKind::NotFound`].
pub async fn forget(registry: &crate::Registry, slug: &str, state: &StateRoot) -> Result<()> {
    crate::state::validate_slug(slug)?;
    let meta = state.read(slug)?;
    let Some(_lock) = state.lock(slug).await? else {
        return Err(
            Error::new(ErrorKind::NotFound, "forgotten meanwhile, by another `bottle` process").with_bottle(slug)
        );
    };
    // Read again under the lock: a stop that held it may have changed it.
    let meta = state.read(slug).unwrap_or(meta);
    if let Some(why) = why_kept(registry, &meta).await? {
        return Err(Error::new(ErrorKind::InvalidInput, format!("not forgotten: {why}")).with_bottle(slug));
    }
    state.discard(slug)
}

/// `bottle prune`: [`forget`] each of `slugs` (from
/// [`prunable`](crate::state::prunable)), one after the other; returns each
/// slug with what became of it.
pub async fn prune(registry: &crate::Registry, slugs: &[String], state: &StateRoot) -> Vec<(String, Result<()>)> {
    let mut done = Vec::new();
    for slug in slugs {
        done.push((slug.clone(), forget(registry, slug, state).await));
    }
    done
}

/// The most `bottle cp` copies out of a bottle unless told otherwise.
pub const COPY_OUT_LIMIT: ByteSize = ByteSize::gib(1);

/// The absolute guest path `path` names in bottle `slug`: relative to the
/// agent's workdir (from its state folder) unless it starts with `/`.
fn guest_path_of(state: &StateRoot, slug: &str, path: &str) -> Result<String> {
    let workdir =
        if path.starts_with('/') { String::new() } else { state.read(slug).map(|m| m.workdir).unwrap_or_default() };
    crate::copy_path::resolve_guest_path(&workdir, path).map_err(|e| e.with_bottle(slug))
}

/// What of a host tree cannot go into a bottle (FIFOs, sockets, devices),
/// as `path (kind)`; at most `most` of them.
fn unpackable(host: &std::path::Path, most: usize) -> Vec<String> {
    use std::os::unix::fs::FileTypeExt as _;
    let mut found = Vec::new();
    let mut todo = vec![host.to_path_buf()];
    while let Some(path) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let kind = meta.file_type();
        if kind.is_dir() {
            todo.extend(std::fs::read_dir(&path).into_iter().flatten().filter_map(|e| e.ok()).map(|e| e.path()));
        } else if kind.is_fifo() || kind.is_socket() || kind.is_block_device() || kind.is_char_device() {
            let what = if kind.is_fifo() {
                "a FIFO"
            } else if kind.is_socket() {
                "a socket"
            } else {
                "a device"
            };
            found.push(format!("{} ({what})", path.display()));
            if found.len() >= most {
                break;
            }
        }
    }
    found
}

/// `bottle cp HOST SLUG:PATH`: copy host file or folder `host` into bottle
/// `slug` at `guest` (relative to the agent's workdir unless absolute; into
/// it, under `host`'s name, when it is an existing folder), owned by the
/// agent, with its files' modification times; links go in as links. A tree
/// holding a FIFO, a socket or a device is refused whole. Returns the guest
/// path it was copied to.
pub async fn copy_in(
    backend: &dyn DynBackend,
    state: &StateRoot,
    slug: &str,
    host: &std::path::Path,
    guest: &str,
) -> Result<String> {
    crate::state::validate_slug(slug)?;
    if let Err(e) = std::fs::symlink_metadata(host) {
        return Err(Error::io(format!("cannot copy {} into bottle {slug}: it is not on the host", host.display()), e));
    }
    let refused = unpackable(host, 4);
    if !refused.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "nothing copied: {} holds what cannot go into a bottle: {}; copy the files and folders around it",
                host.display(),
                refused.join(", ")
            ),
        )
        .with_bottle(slug));
    }
    let name = crate::copy_path::host_name(host)?;
    let bottle = backend.attach_dyn(slug).await?;
    let mut target = guest_path_of(state, slug, guest)?;
    let is_dir = bottle.exec(&format!("test -d {}", shell_quote(&target)), GuestUser::Root).await?;
    if is_dir.success() {
        target = format!("{}/{name}", target.trim_end_matches('/'));
    }
    bottle.cp_in(host, &target).await.map_err(|e| e.with_bottle(slug))?;
    Ok(target)
}

/// What [`copy_out`] copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedOut {
    /// The guest path it copied.
    pub guest: String,
    /// Where it is on the host.
    pub host: std::path::PathBuf,
    /// The bytes of file content copied.
    pub bytes: u64,
    /// What stayed in the bottle (links, devices, FIFOs), as `path (kind)`.
    pub skipped: Vec<String>,
}

/// `bottle cp SLUG:PATH DEST`: copy `guest` (relative to the agent's
/// workdir unless absolute) out of bottle `slug` to `dest` (into it, under
/// the guest name, when it is an existing folder), at most `limit` bytes of
/// it, as every copy out of a bottle is ([`CopyOut`]): regular files and
/// folders only, owner-only, with their modification times. Nothing on the
/// host is overwritten. A guest path that does not exist
/// ([`ErrorKind::NotFound`]), one over the limit or one of which nothing
/// may come out ([`ErrorKind::InvalidInput`]) leaves nothing on the host.
pub async fn copy_out(
    backend: &dyn DynBackend,
    state: &StateRoot,
    slug: &str,
    guest: &str,
    dest: &std::path::Path,
    limit: ByteSize,
) -> Result<CopiedOut> {
    crate::state::validate_slug(slug)?;
    let bottle = backend.attach_dyn(slug).await?;
    let guest = guest_path_of(state, slug, guest)?;
    let host = crate::copy_path::host_target(dest, crate::copy_path::guest_name(&guest));
    if std::fs::symlink_metadata(&host).is_ok() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} exists on the host; bottle cp overwrites nothing: remove it or name another DEST",
                host.display()
            ),
        )
        .with_bottle(slug));
    }
    let parent = match host.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => std::path::Path::new("."),
    };
    if !parent.is_dir() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("there is no folder {} on the host to copy {guest} into", parent.display()),
        )
        .with_bottle(slug));
    }
    let outcome = bottle.cp_out(&guest, &host, limit).await.map_err(|e| e.with_bottle(slug))?;
    let refuse = |kind, message: String| Err(Error::new(kind, message).with_bottle(slug));
    match outcome {
        CopyOut::Copied { bytes, skipped } => Ok(CopiedOut { guest, host, bytes, skipped }),
        CopyOut::Missing => refuse(ErrorKind::NotFound, format!("there is no {guest} in the bottle; nothing copied")),
        CopyOut::TooLarge { limit } => refuse(
            ErrorKind::InvalidInput,
            format!("{guest} is over the {limit} a copy out may take; nothing copied (a larger --limit copies it)"),
        ),
        CopyOut::NothingKept { skipped } => refuse(
            ErrorKind::InvalidInput,
            format!(
                "nothing copied: {} stays in the bottle; only regular files and folders come out",
                skipped.join(", ")
            ),
        ),
    }
}

/// The grace a command inside gets after each signal of an interrupted
/// [`exec`] before the next, stronger one, in tenths of a second.
const EXEC_GRACE_TENTHS: u32 = 20;

/// `bottle exec SLUG -- ARGV…`: run `argv` in bottle `slug` as `user`, on
/// this process's stdio (a terminal when stdin is one), in the agent's
/// workdir, and return its exit code, unless `cancel` resolves first (a
/// signal to this process): then the command is stopped inside the bottle
/// too — `SIGINT` to it and every process it started (and to its process
/// group when it leads one), then `SIGTERM`, then `SIGKILL`, each after a
/// grace of 2 s while any of them lives — and the error is
/// [`ErrorKind::Interrupted`]. (On a terminal Ctrl-C is a byte the command
/// reads itself, as over `ssh`.) The command runs wrapped so that its PID
/// lands in a file of its own in the bottle's `/tmp`; the signals are sent
/// as `user`, who could have run `kill` itself, and the file is removed.
pub async fn exec(
    backend: &dyn DynBackend,
    slug: &str,
    argv: &[String],
    user: GuestUser,
    cancel: impl Future<Output = ()>,
) -> Result<i32> {
    crate::state::validate_slug(slug)?;
    let bottle = backend.attach_dyn(slug).await?;
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce)
        .map_err(|e| Error::new(ErrorKind::Io, format!("no randomness for a file name: {e}")))?;
    let hex: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let pid_file = format!("/tmp/bot-bottle-exec-{hex}.pid");
    let wrapped = exec_wrapper(&pid_file, argv);
    match race(bottle.exec_attached(&wrapped, user.clone()), cancel).await {
        Either::Left(code) => {
            let _ = bottle.exec(&format!("rm -f {pid_file}"), user).await;
            code
        }
        Either::Right(()) => {
            let what = argv.first().map_or("the command", String::as_str);
            let stopped = bottle.exec(&stop_script(&pid_file), user).await;
            let message = match stopped {
                Ok(out) if out.success() => format!("interrupted: `{what}` was stopped in the bottle"),
                Ok(out) if out.exit_code == 3 => format!("interrupted: `{what}` had not started, or had ended"),
                Ok(out) => format!(
                    "interrupted, but `{what}` still runs in the bottle after SIGKILL{}; `bottle stop {slug}` ends it",
                    if out.stderr.trim().is_empty() { String::new() } else { format!(" ({})", out.stderr.trim()) }
                ),
                Err(e) => format!("interrupted; `{what}` may still run in the bottle: stopping it failed: {e}"),
            };
            Err(Error::new(ErrorKind::Interrupted, message).with_bottle(slug))
        }
    }
}

/// `argv` run by a shell that first writes its PID (the command's, after
/// `exec`) to `pid_file`.
fn exec_wrapper(pid_file: &str, argv: &[String]) -> Vec<String> {
    let mut wrapped: Vec<String> =
        ["sh", "-c", &format!("echo $$ > {}; exec \"$@\"", shell_quote(pid_file)), "sh"].map(String::from).to_vec();
    wrapped.extend(argv.iter().cloned());
    wrapped
}

/// The script that stops the command whose PID [`exec`]'s wrapper wrote to
/// `pid_file`, and every process it started: it waits for the file (the
/// command may be starting), removes it, then sends `INT`, `TERM`, `KILL`
/// in turn — to the command's process group when it leads one, and to each
/// process of its tree (found through `/proc/*/stat` before each signal, so
/// a child orphaned by its parent's death is still known) — until none is
/// left. Exits 0 when they are gone, 3 when there was no PID to signal, 1
/// when one survived.
fn stop_script(pid_file: &str) -> String {
    let grace = EXEC_GRACE_TENTHS;
    let file = shell_quote(pid_file);
    format!(
        r#"f={file}; i=0; while [ ! -s "$f" ] && [ $i -lt {grace} ]; do sleep 0.1; i=$((i+1)); done
p=$(cat "$f" 2>/dev/null); rm -f "$f"
case "$p" in ''|*[!0-9]*) exit 3;; esac
t=" $p "
grow() {{
  n=0
  while [ "$n" -ne "${{#t}}" ]; do
    n=${{#t}}
    for st in /proc/[0-9]*/stat; do
      {{ read -r l < "$st"; }} 2>/dev/null || continue
      q=${{l%% *}}; r=${{l##*") "}}; set -- $r
      case "$t" in *" $2 "*) case "$t" in *" $q "*) ;; *) t="$t$q ";; esac;; esac
    done
  done
}}
live() {{
  a=
  for m in $t; do
    kill -0 "$m" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' /proc/"$m"/status 2>/dev/null && a="$a $m"
  done
  [ -n "$a" ]
}}
grow; live || exit 3
for s in INT TERM KILL; do
  grow; live || exit 0
  kill -s $s -- -"$p" 2>/dev/null
  for q in $a; do kill -s $s "$q" 2>/dev/null; done
  i=0; while live && [ $i -lt {grace} ]; do sleep 0.1; i=$((i+1)); done
done
live && exit 1; exit 0"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PIDs of this machine's processes whose command line is `cmdline`.
    fn running(cmdline: &str) -> Vec<u32> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let zombie = status.lines().any(|l| l.starts_with("State:") && l.contains('Z'));
            if !zombie && String::from_utf8_lossy(&raw).replace('\0', " ").trim_end() == cmdline {
                found.push(pid);
            }
        }
        found
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what} within 10 s");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    #[test]
    fn the_stop_script_ends_the_command_and_every_process_it_started() {
        // A shell whose foreground child dies of SIGINT and whose background
        // child ignores it (as in any non-interactive shell): both must go.
        let tmp = tempfile::tempdir().expect("tempdir");
        let pid_file = tmp.path().join("exec.pid").display().to_string();
        let nonce = 900_000 + std::process::id() % 99_999;
        let (fore, back) = (format!("sleep {nonce}"), format!("sleep {}", nonce + 100_000));
        let script = format!("{back} & {fore}; wait");
        let wrapped = exec_wrapper(&pid_file, &["sh".into(), "-c".into(), script]);
        let mut command = std::process::Command::new(&wrapped[0]).args(&wrapped[1..]).spawn().expect("spawn");
        wait_until("both sleeps run", || running(&fore).len() == 1 && running(&back).len() == 1);
        let leader = std::fs::read_to_string(&pid_file).expect("the wrapper wrote its PID");
        assert_eq!(leader.trim(), command.id().to_string(), "the PID is the command's own, after exec");

        let stop = std::process::Command::new("sh").args(["-c", &stop_script(&pid_file)]).status().expect("stop");
        if stop.code() != Some(0) {
            // Never leave the test waiting on what the script failed to stop.
            for pid in running(&fore).into_iter().chain(running(&back)).chain([command.id()]) {
                let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
        let _ = command.wait();
        assert_eq!(stop.code(), Some(0), "the script says they are gone");
        assert!(running(&fore).is_empty() && running(&back).is_empty(), "no process of the tree is left");
        assert!(!std::path::Path::new(&pid_file).exists(), "the PID file is removed");

        let again = std::process::Command::new("sh").args(["-c", &stop_script(&pid_file)]).status().expect("stop");
        assert_eq!(again.code(), Some(3), "without a PID file there is nothing to stop");
    }
}
