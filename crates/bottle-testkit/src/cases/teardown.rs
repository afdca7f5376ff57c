//! Teardown leaves nothing: a bottle with every sidecar (egress proxy and
//! git gate) is removed whole, closing or removing again is harmless, and
//! a launch cancelled midway removes what it made and the state it minted.

use std::time::Duration;

use bottle_core::ErrorKind;

use crate::World;
use crate::probe;

pub(super) async fn teardown(world: &World) {
    let key = crate::fixtures::write(&world.path("work"), "key", "not a key\n");
    let manifest = world.shell_manifest(
        "gate.yaml",
        &format!(
            "    egress:\n      - host: example.com\n    git:\n      - Name: project\n        Host: 127.0.0.1\n        \
             Repo: nowhere.git\n        IdentityFile: {}\n",
            key.display()
        ),
    );
    let running = world.start(&world.spec(manifest), &[]).await;
    let slug = running.slug().to_string();
    let with_gate = world.resources(&slug);
    let plain = world.running_resources(&slug);
    assert!(
        plain.iter().all(|r| with_gate.contains(r)) && with_gate.len() > plain.len(),
        "a bottle with a git gate has its sidecar too: {with_gate:?}"
    );
    probe::ok(running.bottle(), "git config --global --get-regexp '^url\\.'").await;
    let again = world.backend().attach_dyn(&slug).await.expect("a second handle on the running bottle");

    running.teardown().await.expect("teardown");
    assert_eq!(world.resources(&slug), Vec::<String>::new(), "teardown leaves nothing, sidecars included");
    again.close().await.expect("closing a removed bottle is harmless");
    world.backend().remove_dyn(&slug).await.expect("removing a removed bottle is harmless");
    assert_eq!(world.resources(&slug), Vec::<String>::new());

    // Cancelled once the launch has made something: what it made is removed, with the state it minted.
    let session = world.prepare(&world.spec(world.default_manifest()), &[]).await;
    let cancelled = session.slug().to_string();
    let made_something = async {
        while world.resources(&cancelled).is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    match session.launch(made_something).await {
        Err(e) => assert_eq!(e.kind(), ErrorKind::Interrupted, "{e}"),
        Ok(running) => {
            running.teardown().await.expect("teardown");
            panic!("the launch finished before anything of it showed on the engine");
        }
    }
    assert_eq!(world.resources(&cancelled), Vec::<String>::new(), "a cancelled launch leaves nothing");
    assert!(!world.state().bottle_dir(&cancelled).exists(), "nor the state folder it minted");
}
