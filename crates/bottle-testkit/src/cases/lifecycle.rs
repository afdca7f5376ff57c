//! A bottle's life through the library: prepare, launch, commands as the
//! agent and as root, listed while it runs, teardown leaving nothing.

use bottle_core::ErrorKind;

use crate::probe;
use crate::{Capability, World};

pub(super) async fn lifecycle(world: &World) {
    // Prepared and dropped before launch: the state folder it minted goes, nothing was made.
    let session = world.prepare(&world.spec(world.default_manifest()), &[]).await;
    let dropped = session.slug().to_string();
    assert!(world.state().bottle_dir(&dropped).join("metadata.json").is_file(), "prepare minted {dropped}");
    drop(session);
    assert!(!world.state().bottle_dir(&dropped).exists(), "a session dropped before launch leaves no state");
    assert_eq!(world.resources(&dropped), Vec::<String>::new(), "and nothing on the engine");

    let mut spec = world.spec(world.default_manifest());
    spec.label = Some("testkit lifecycle".into());
    let running = world.start(&spec, &[]).await;
    let slug = running.slug().to_string();
    assert!(slug.starts_with("shell-"), "slug {slug}");
    assert_eq!(
        world.resources(&slug),
        world.running_resources(&slug),
        "the agent, its egress proxy and what connects them"
    );

    let bottle = running.bottle();
    assert_eq!(probe::ok(bottle, "id -un").await.trim(), "agent", "runs as the non-root agent user");
    if world.can(Capability::OtherUsers) {
        assert_eq!(probe::root(bottle, "id -u").await.trim(), "0", "and as root when asked");
    }
    assert!(world.state().read(&slug).expect("metadata").ready, "a launched bottle's metadata says it is ready");
    assert!(
        !bottle_core::backend::is_detached(bottle).await,
        "a bottle started attached is not marked detached: its launcher's death makes it an orphan"
    );

    let listed = world.backend().enumerate_active_dyn().await.expect("enumerate_active");
    let mine = listed.iter().find(|a| a.slug == slug).unwrap_or_else(|| panic!("{slug} is listed: {listed:?}"));
    assert_eq!(mine.agent, "shell");
    assert_eq!(mine.backend, world.target().name());
    assert_eq!(mine.status, "running");
    assert_eq!(mine.label.as_deref(), Some("testkit lifecycle"));
    assert!(!mine.image.is_empty(), "with its image: {mine:?}");
    let started = world.state().read(&slug).expect("metadata").owner.created_ms;
    assert_eq!(mine.started_at_ms, started, "started when its owner created it");
    let keys: Vec<(u64, &str)> = listed.iter().map(|a| (a.started_at_ms, a.slug.as_str())).collect();
    assert!(keys.windows(2).all(|w| w[0] <= w[1]), "sorted by start time, then slug: {keys:?}");

    let notes = running.teardown().await.expect("teardown");
    assert_eq!(notes, Vec::<String>::new(), "nothing to report for a small history");
    assert_eq!(world.resources(&slug), Vec::<String>::new(), "teardown leaves nothing of the bottle");
    assert!(world.state().bottle_dir(&slug).join("metadata.json").is_file(), "its identity stays, for resume");
    let listed = world.backend().enumerate_active_dyn().await.expect("enumerate_active");
    assert!(listed.iter().all(|a| a.slug != slug), "no longer listed: {listed:?}");
    match world.backend().attach_dyn(&slug).await {
        Ok(_) => panic!("attached to {slug} after teardown"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
            assert!(e.to_string().contains("no running bottle"), "{e}");
        }
    }
}
