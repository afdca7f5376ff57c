//! The life of one bottle after prepare: launch and provision (tearing down
//! on any error), the agent's state saved at teardown and restored on resume,
//! and `stop`.

use crate::backend::{DynBackend, ErasedPlan};
use crate::bottle::{Bottle, GuestUser};
use crate::copy::CopyOut;
use crate::plan::CommonPlan;
use crate::provider::{AgentProvider, run_checked, shell_quote};
use crate::resources::ByteSize;
use crate::routes::{GUEST_CA_BUNDLE, GUEST_CA_FILE};
use crate::state::{RESUME_DIR, StateRoot};
use crate::{Error, Result};

/// A root-owned file inside every bottle that finished launching and
/// provisioning. `cleanup` spares a detached bottle whose launcher is gone only
/// when it has this marker: without it, the bottle was left half-made.
pub const READY_MARKER: &str = "/var/lib/bot-bottle/ready";

/// Launch `plan` on `backend`, provision it, and mark it ready in its
/// metadata. On any error everything the launch created is removed.
pub async fn launch(
    backend: &dyn DynBackend,
    plan: ErasedPlan,
    provider: &dyn AgentProvider,
    state: &StateRoot,
) -> Result<Box<dyn Bottle>> {
    let common = plan.common().clone();
    let bottle = match backend.launch(plan).await {
        Ok(bottle) => bottle,
        Err(e) => {
            let _ = backend.remove(&common.slug).await;
            return Err(e.with_bottle(&common.slug));
        }
    };
    if let Err(e) = provision(bottle.as_ref(), &common, provider).await {
        let _ = bottle.close().await;
        return Err(e.with_operation("provision").with_bottle(&common.slug));
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
        return Err(e.with_bottle(&common.slug));
    }
    Ok(bottle)
}

/// The provision steps, in order: prompt, provider apply, skills, agent state
/// (on resume), workspace, git.
pub async fn provision(bottle: &dyn Bottle, plan: &CommonPlan, provider: &dyn AgentProvider) -> Result<()> {
    let p = &plan.provision;
    if plan.egress.proxy_url.is_some() {
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
    provider.provision_git(bottle, plan).await?;
    Ok(())
}

/// Put the bottle's CA into the bottle's system trust store. Written by root
/// through the shell (the bottle runs with `no-new-privileges`, so root there
/// has no capabilities: it can write root-owned places but chown nothing).
async fn install_ca(bottle: &dyn Bottle, plan: &CommonPlan) -> Result<()> {
    let pem = &plan.egress.config.ca_cert_pem;
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
    match backend.attach(slug).await {
        Ok(bottle) => teardown(bottle.as_ref(), state).await,
        Err(e) if e.kind() == crate::ErrorKind::NotFound => {
            // Not running: remove whatever is left under that slug, then report it.
            backend.remove(slug).await?;
            Err(e)
        }
        Err(e) => Err(e),
    }
}
