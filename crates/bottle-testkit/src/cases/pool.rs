//! Warm pools through the backend's own methods: `pool::fill` makes ready
//! bottles, each with a CA and a token of its own; `pool::claim` hands one
//! out with the workspace copied in; a changed manifest makes the rest
//! stale, never handed out; `pool::drain` leaves nothing of them.

use std::sync::Arc;

use bottle_core::pool;

use crate::World;
use crate::probe;

/// A manifest `name` with agent `shell` pooled by two, its bottle having `extra`.
fn pooled(world: &World, name: &str, extra: &str) -> Arc<bottle_core::Manifest> {
    world.manifest(
        name,
        &format!(
            "agents:\n  shell:\n    bottle: b\n    pool: {{ size: 2 }}\nbottles:\n  b:\n    agent_provider:\n      \
             template: shell\n{extra}"
        ),
    )
}

pub(super) async fn pool(world: &World) {
    let manifest = pooled(world, "pool.yaml", "");
    let (host, providers, backend) = (world.host(), world.providers(), world.backend());
    let filled = pool::fill(&manifest, &[], providers, host, Arc::clone(backend), std::future::pending).await;
    let made = filled.expect("fill").into_iter().flat_map(|f| f.made).collect::<Vec<_>>();
    assert_eq!(made.len(), 2, "fill makes the pool's size: {made:?}");
    let mut secrets = Vec::new();
    for slug in &made {
        let bottle = backend.attach_dyn(slug).await.expect("a member runs");
        let ca = probe::root(bottle.as_ref(), &format!("cat {}", bottle_core::provider::GUEST_CA_FILE)).await;
        let token = probe::ok(bottle.as_ref(), "printenv HTTPS_PROXY").await;
        assert!(ca.contains("BEGIN CERTIFICATE"), "{ca}");
        secrets.push((ca, token));
    }
    assert_ne!(secrets[0].0, secrets[1].0, "no two members share a CA");
    assert_ne!(secrets[0].1, secrets[1].1, "no two members share a client token");

    // A claim hands one out with the workspace copied in.
    crate::fixtures::write(&world.path("work"), "notes.txt", "from the host\n");
    let spec = bottle_core::BottleSpec { copy_cwd: true, detached: true, ..world.spec(Arc::clone(&manifest)) };
    let running = pool::claim(&spec, providers, host, Arc::clone(backend)).await.expect("claim").expect("a member");
    let claimed = running.slug().to_string();
    assert!(made.contains(&claimed), "{claimed} of {made:?}");
    let workdir = world.state().read(&claimed).expect("its metadata").workdir;
    let copied = probe::ok(running.bottle(), &format!("cat {workdir}/notes.txt")).await;
    assert_eq!(copied, "from the host\n", "the workspace was copied in");

    // The manifest changes: the other member is stale and never handed out.
    let changed = pooled(world, "pool.yaml", "    env:\n      MOOD: changed\n");
    let stale = made.iter().find(|s| **s != claimed).expect("the other member").clone();
    let status = pool::status(&changed, &[], providers, host, backend.name_dyn()).expect("status");
    assert_eq!(status[0].stale, std::slice::from_ref(&stale), "{status:?}");
    let spec = world.spec(Arc::clone(&changed));
    assert!(pool::claim(&spec, providers, host, Arc::clone(backend)).await.expect("claim").is_none(), "stale");

    let drained = pool::drain(&changed, &[], world.state(), backend.as_ref()).await.expect("drain");
    assert_eq!(drained, std::slice::from_ref(&stale), "drain removes the member left, not the claimed bottle");
    assert_eq!(world.resources(&stale), Vec::<String>::new(), "nothing of a drained member is left");
    assert!(!world.state().bottle_dir(&stale).exists(), "nor its state folder");
    running.teardown().await.expect("teardown");
    assert_eq!(world.resources(&claimed), Vec::<String>::new());
}
