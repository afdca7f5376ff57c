//! Cleanup after a killed launch: a process that launched a bottle and was
//! killed with SIGKILL leaves its resources; `prepare_cleanup` names them
//! (and removes nothing), `cleanup` removes them, and a live detached
//! bottle whose launcher exited is spared.
//!
//! `cleanup` removes every orphan it finds, and on a shared engine other
//! runs may have some: the case refuses to sweep those (it waits a while
//! for their owners to clear them, then fails naming them).

use std::time::{Duration, Instant};

use crate::World;
use crate::probe;

/// How long to wait for other runs' orphans to go before giving up.
const FOREIGN_PATIENCE: Duration = Duration::from_secs(90);

pub(super) async fn cleanup_after_a_killed_launch(world: &World) {
    let live = world.launch_detached();
    assert_eq!(world.resources(&live), world.running_resources(&live), "the detached bottle runs on its own");

    let (mut launcher, slug) = world.launch_attached();
    let bottle = world.backend().attach_dyn(&slug).await.expect("attach to the attached session's bottle");
    let mut started = false;
    for _ in 0..300 {
        if probe::runs(bottle.as_ref(), "sleep 600").await {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(started, "the attached session did not start");
    launcher.child.kill().expect("SIGKILL the launcher");
    launcher.child.wait().expect("reap it");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(world.resources(&slug), world.running_resources(&slug), "SIGKILL leaves the whole bottle behind");

    let plan = world.backend().prepare_cleanup_dyn().await.expect("prepare_cleanup");
    let lines = plan.describe().to_vec();
    assert!(lines.iter().any(|l| l.starts_with(&format!("{slug}: "))), "names the orphan: {lines:?}");
    assert!(!lines.iter().any(|l| l.contains(&live)), "a live detached bottle is not an orphan: {lines:?}");
    assert_eq!(world.resources(&slug), world.running_resources(&slug), "finding orphans removes nothing");

    let plan = without_foreign_orphans(world, plan, &slug).await;
    let removed = world.backend().cleanup_dyn(plan).await.expect("cleanup");
    assert!(removed.iter().any(|l| l.starts_with(&format!("{slug}: "))), "says what it removed: {removed:?}");
    assert_eq!(world.resources(&slug), Vec::<String>::new(), "cleanup removes everything of the orphan");
    assert_eq!(world.resources(&live), world.running_resources(&live), "the live bottle still runs, whole");

    let stopped = bottle_core::session::stop(world.backend().as_ref(), &live, world.state()).await.expect("stop");
    assert_eq!(stopped.notes, Vec::<String>::new());
    assert!(!stopped.already, "the live bottle was running");
    assert_eq!(world.resources(&live), Vec::<String>::new());
}

/// A cleanup plan naming only this case's orphans: `plan` when it does,
/// else a fresh one once other runs' orphans are gone.
async fn without_foreign_orphans(
    world: &World,
    mut plan: bottle_core::backend::ErasedCleanupPlan,
    slug: &str,
) -> bottle_core::backend::ErasedCleanupPlan {
    let deadline = Instant::now() + FOREIGN_PATIENCE;
    loop {
        let foreign: Vec<String> =
            plan.describe().iter().filter(|l| !l.starts_with(&format!("{slug}: "))).cloned().collect();
        if foreign.is_empty() {
            return plan;
        }
        assert!(
            Instant::now() < deadline,
            "the {} engine holds other runs' orphans, which `cleanup` would remove too; remove them \
             (`bottle cleanup`) and run this again:\n  {}",
            world.target().name(),
            foreign.join("\n  ")
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        plan = world.backend().prepare_cleanup_dyn().await.expect("prepare_cleanup");
    }
}
