//! The life of one bottle, owned by the library: [`Session`] (prepare, the
//! summary, launch with provisioning) and [`Running`] (attached or detached,
//! teardown), the agent's state saved at teardown and restored on resume,
//! and `stop`. A front end adds only the confirmation, the signals and the
//! printing.

use std::future::Future;
use std::sync::Arc;

use crate::backend::{DynBackend, ErasedPlan};
use crate::bottle::{Bottle, GuestUser};
use crate::copy::CopyOut;
use crate::labels::READY_MARKER;
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
        backend.is_available_dyn().await?;
        let common = crate::prepare(spec, providers, host, backend.name_dyn())?;
        let minted = Minted {
            state: host.state.clone(),
            slug: common.slug.clone(),
            minted: spec.identity.is_none(),
            kept: false,
        };
        let provider = providers.get(&common.provision.provider)?;
        let plan = backend.resolve_plan_dyn(common).await?;
        Ok(Session { backend, provider, plan, state: host.state.clone(), minted })
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
        let common = self.plan.common().clone();
        let wiring = self.plan.wiring().clone();
        let steps = launch_steps(self.backend.as_ref(), self.plan, self.provider.as_ref(), &self.state);
        match race(steps, cancel).await {
            Either::Left(Ok(bottle)) => {
                self.minted.kept = true;
                Ok(Running { bottle, provider: self.provider, state: self.state, common, wiring })
            }
            Either::Left(Err(e)) => {
                let _ = self.backend.remove_dyn(&slug).await;
                Err(e.with_bottle(&slug))
            }
            Either::Right(()) => {
                let _ = self.backend.remove_dyn(&slug).await;
                Err(Error::new(ErrorKind::Interrupted, format!("interrupted: bottle {slug} removed"))
                    .with_bottle(&slug))
            }
        }
    }
}

/// Launch, provision, mark ready; on a provisioning error the bottle is closed.
async fn launch_steps(
    backend: &dyn DynBackend,
    plan: ErasedPlan,
    provider: &dyn AgentProvider,
    state: &StateRoot,
) -> Result<Box<dyn Bottle>> {
    let common = plan.common().clone();
    let wiring = plan.wiring().clone();
    let bottle = backend.launch_dyn(plan).await?;
    if let Err(e) = provision(bottle.as_ref(), &common, &wiring, provider).await {
        let _ = bottle.close().await;
        return Err(e.with_operation("provision"));
    }
    let marked = run_checked(
        bottle.as_ref(),
        &format!("mkdir -p /var/lib/bot-bottle && touch {READY_MARKER}"),
        GuestUser::Root,
        "marking the bottle ready",
    )
    .await;
    if let Err(e) = marked.and_then(|()| state.update(&common.slug, |m| m.ready = true).map(|_| ())) {
        let _ = bottle.close().await;
        return Err(e);
    }
    Ok(bottle)
}

/// A launched, provisioned bottle.
pub struct Running {
    bottle: Box<dyn Bottle>,
    provider: Arc<dyn AgentProvider>,
    state: StateRoot,
    common: CommonPlan,
    wiring: crate::wiring::Wiring,
}

/// How an attached agent session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The agent's exit code (130 when cancelled).
    pub code: i32,
    /// What teardown wants the operator to know, one line each.
    pub notes: Vec<String>,
}

impl Running {
    /// The bottle's slug.
    pub fn slug(&self) -> &str {
        &self.common.slug
    }

    /// The running bottle: commands, copies.
    pub fn bottle(&self) -> &dyn Bottle {
        self.bottle.as_ref()
    }

    /// How the bottle is wired to its sidecars.
    pub fn wiring(&self) -> &crate::wiring::Wiring {
        &self.wiring
    }

    /// The agent session's argv inside the bottle (the provider's command,
    /// its continue arguments on resume, the operator's extra arguments).
    pub fn agent_argv(&self) -> Vec<String> {
        self.provider.agent_argv(&self.common.provision, &self.common.agent_args)
    }

    /// Runs the agent attached to this process's terminal until it exits or
    /// `cancel` resolves, then tears the bottle down.
    pub async fn attach(self, cancel: impl Future<Output = ()>) -> Result<Ended> {
        let argv = self.agent_argv();
        let outcome = match race(self.bottle.exec_attached(&argv, GuestUser::Agent), cancel).await {
            Either::Left(code) => code,
            Either::Right(()) => Ok(130),
        };
        let notes = self.teardown().await;
        let code = outcome?;
        Ok(Ended { code, notes: notes? })
    }

    /// Leaves the bottle running (it outlives this process) and returns its slug.
    pub fn detach(self) -> String {
        self.common.slug
    }

    /// Saves the agent's state, then removes the bottle; returns what the
    /// operator should know (state left unsaved, and why).
    pub async fn teardown(self) -> Result<Vec<String>> {
        teardown(self.bottle.as_ref(), &self.state).await
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
/// agent state (on resume), workspace, git.
pub async fn provision(
    bottle: &dyn Bottle,
    plan: &CommonPlan,
    wiring: &crate::wiring::Wiring,
    provider: &dyn AgentProvider,
) -> Result<()> {
    let p = &plan.provision;
    if wiring.install_ca {
        install_ca(bottle, plan).await?;
    }
    provider.provision_prompt(bottle, p).await?;
    provider.apply(bottle, p).await?;
    provider.provision_skills(bottle, p).await?;
    if plan.resumed {
        restore_agent_state(bottle, plan).await?;
    }
    run_checked(bottle, &format!("mkdir -p {}", shell_quote(&p.workdir)), GuestUser::Agent, "creating the workdir")
        .await?;
    if let Some(cwd) = &plan.copy_cwd {
        bottle.cp_in(cwd, &p.workdir).await?;
    }
    provider.provision_git(bottle, plan, wiring).await?;
    Ok(())
}

/// Put the bottle's CA into the bottle's system trust store. Written by root
/// through the shell (the bottle runs with `no-new-privileges`, so root there
/// has no capabilities: it can write root-owned places but chown nothing).
async fn install_ca(bottle: &dyn Bottle, plan: &CommonPlan) -> Result<()> {
    let pem = &plan.egress.policy.ca_cert_pem;
    let script = format!(
        "mkdir -p {dir} && printf '%s' {pem} > {GUEST_CA_FILE} && chmod 644 {GUEST_CA_FILE} && \
         if command -v update-ca-certificates >/dev/null; then update-ca-certificates >/dev/null 2>&1; \
         else mkdir -p /etc/ssl/certs && cat {GUEST_CA_FILE} >> {GUEST_CA_BUNDLE}; fi",
        dir = GUEST_CA_FILE.rsplit_once('/').map_or("/", |(d, _)| d),
        pem = shell_quote(pem),
    );
    run_checked(bottle, &script, GuestUser::Root, "installing the bottle's CA certificate").await
}

fn saved_path(state_dir: &std::path::Path, guest: &str) -> std::path::PathBuf {
    state_dir.join(RESUME_DIR).join(guest.trim_start_matches('/'))
}

async fn restore_agent_state(bottle: &dyn Bottle, plan: &CommonPlan) -> Result<()> {
    for guest in &plan.provision.resume_paths {
        let saved = saved_path(&plan.state_dir, guest);
        if saved.exists() {
            bottle.cp_in(&saved, guest).await?;
        }
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

/// Tear a bottle down: save the agent's state (best effort when the bottle is
/// already gone), then remove it. Returns what [`save_agent_state`] said.
pub async fn teardown(bottle: &dyn Bottle, state: &StateRoot) -> Result<Vec<String>> {
    let saved = save_agent_state(bottle, state).await;
    bottle.close().await?;
    saved
}

/// `bottle stop SLUG`: attach, tear down; returns what teardown said.
pub async fn stop(backend: &dyn DynBackend, slug: &str, state: &StateRoot) -> Result<Vec<String>> {
    crate::state::validate_slug(slug)?;
    match backend.attach_dyn(slug).await {
        Ok(bottle) => teardown(bottle.as_ref(), state).await,
        Err(e) if e.kind() == crate::ErrorKind::NotFound => {
            // Not running: remove whatever is left under that slug, then report it.
            backend.remove_dyn(slug).await?;
            Err(e)
        }
        Err(e) => Err(e),
    }
}
