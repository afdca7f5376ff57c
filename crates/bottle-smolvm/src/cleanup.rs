//! Removing a smolvm bottle and finding what killed runs left behind: the
//! machine (stopped first), the sidecar processes and their folder, and the
//! network namespace with its socket folder go with `remove`;
//! `prepare_cleanup` notes each bottle's machine, running sidecars and
//! namespace (sidecars outlive a killed launcher, and may run before or
//! without a machine) and lets the shared orphan rule
//! ([`Leftovers::judge`]) decide which are orphans.

use std::path::Path;

use bottle_core::backend::{Handle, Leftovers, Orphans, is_detached};
use bottle_core::labels::{Labels, SLUG};
use bottle_core::{Result, StateRoot};

use crate::bottle::SmolvmBottle;
use crate::cli::{self, Machine, Smolvm};
use crate::network;
use crate::sidecar::{self, Role};

/// This backend's machines, optionally of one slug.
pub(crate) async fn machines(smolvm: &Smolvm, slug: Option<&str>) -> Result<Vec<Machine>> {
    Ok(smolvm
        .list()
        .await?
        .into_iter()
        .filter(|m| {
            let l = Labels(&m.labels);
            l.get(bottle_core::labels::BACKEND) == Some(crate::NAME) && slug.is_none_or(|s| l.get(SLUG) == Some(s))
        })
        .collect())
}

/// Remove the machine (stopped first), the sidecars in `sidecars` and, for
/// a bottle isolated in a network namespace, the namespace and its socket
/// folder; the first failure is the error, after every step was tried.
pub(crate) async fn remove_everything(smolvm: &Smolvm, machine: Option<&Machine>, sidecars: &Path) -> Result<()> {
    let mut errors = Vec::new();
    if let Some(m) = machine {
        if m.is_running() {
            // A failed stop is fine as long as the delete succeeds.
            let _ = smolvm.output(&cli::lifecycle_args("stop", &m.name), "stop the machine").await;
        }
        if let Err(e) = smolvm.checked(&cli::lifecycle_args("delete", &m.name), "delete the machine").await {
            errors.push(e);
        }
    }
    if let Err(e) = sidecar::remove_all(sidecars).await {
        errors.push(e);
    }
    if let Some(slug) = sidecars.parent().and_then(|d| d.file_name()).and_then(|n| n.to_str())
        && let Err(e) = network::remove(&network::netns_name(slug), &network::socket_dir(slug)).await
    {
        errors.push(e);
    }
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Remove everything of bottle `slug`, whatever state it is in. Idempotent.
pub(crate) async fn remove_slug(smolvm: &Smolvm, state: &StateRoot, slug: &str) -> Result<()> {
    bottle_core::validate_slug(slug)?;
    let found = machines(smolvm, Some(slug)).await?;
    let dir = sidecar::dir(&state.bottle_dir(slug));
    if found.is_empty() {
        return remove_everything(smolvm, None, &dir).await.map_err(|e| e.with_bottle(slug));
    }
    for m in &found {
        remove_everything(smolvm, Some(m), &dir).await.map_err(|e| e.with_bottle(slug))?;
    }
    Ok(())
}

/// What killed or crashed runs left behind, judged by the orphan rule.
pub(crate) async fn prepare(smolvm: &Smolvm, state: &StateRoot) -> Result<Orphans> {
    let mut found = Leftovers::default();
    let mut running_machines = std::collections::HashMap::new();
    for m in machines(smolvm, None).await? {
        let Some(slug) = Labels(&m.labels).get(SLUG).map(str::to_string) else { continue };
        found.saw(
            &slug,
            format!("machine {} ({})", m.name, if m.is_running() { "running" } else { &m.state }),
            &m.labels,
        );
        if m.is_running() {
            found.agent_runs(&slug);
            running_machines.insert(slug, m.name.clone());
        }
    }
    // Sidecars outlive a killed launcher, and may run before (or without) a machine.
    for meta in state.list().into_iter().filter(|meta| meta.backend == crate::NAME) {
        let dir = sidecar::dir(&state.bottle_dir(&meta.slug));
        let mut what: Vec<String> = Role::STOP_ORDER
            .into_iter()
            .filter_map(|role| sidecar::running(&dir, role).map(|pid| format!("{} sidecar (pid {pid})", role.name())))
            .collect();
        let netns = network::netns_name(&meta.slug);
        if network::netns_exists(&netns) {
            what.push(format!("network namespace {netns}"));
        }
        if what.is_empty() && dir.exists() && !found.has(&meta.slug) {
            what.push(format!("sidecar files {}", dir.display()));
        }
        for line in what {
            found.saw_owned(&meta.slug, line, Some(meta.owner.clone()));
        }
    }
    Ok(found
        .judge(|slug| {
            let machine = running_machines.get(&slug).cloned();
            let dir = sidecar::dir(&state.bottle_dir(&slug));
            async move {
                let Some(machine) = machine else { return false };
                is_detached(&SmolvmBottle::new(smolvm.clone(), machine, dir, Handle::new(slug, "root", "/"))).await
            }
        })
        .await)
}

/// Remove what `prepare` found.
pub(crate) async fn cleanup(smolvm: &Smolvm, state: &StateRoot, orphans: &Orphans) -> Result<()> {
    for slug in orphans.slugs() {
        remove_slug(smolvm, state, slug).await?;
    }
    Ok(())
}
