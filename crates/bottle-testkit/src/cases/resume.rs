//! Resume: the agent's state, saved when a detached bottle is stopped
//! (`session::stop`, as `bottle stop` does), comes back in a new bottle
//! under the same identity.

use crate::World;
use crate::probe;

pub(super) async fn resume(world: &World) {
    let running = world.start_detached().await;
    probe::ok(running.bottle(), "echo remembered-line >> ~/.bash_history").await;
    let slug = running.detach();

    let stopped = bottle_core::session::stop(world.backend().as_ref(), &slug, world.state()).await.expect("stop");
    assert_eq!(stopped.notes, Vec::<String>::new(), "the history came out whole");
    assert!(!stopped.already, "it was running");
    assert_eq!(world.resources(&slug), Vec::<String>::new(), "stop removes the bottle");
    let saved = world.state().bottle_dir(&slug).join("resume/home/agent/.bash_history");
    let text = std::fs::read_to_string(&saved).expect("the history is saved at teardown");
    assert!(text.contains("remembered-line"), "{text}");

    let mut again = world.spec(world.default_manifest());
    again.identity = Some(slug.clone());
    let session = world.prepare(&again, &[]).await;
    assert_eq!(session.slug(), slug, "resume keeps the identity");
    assert!(session.plan().common().resumed, "and knows it resumes");
    let summary = session.summary();
    assert!(
        summary.lines().any(|l| l.contains("restores") && l.contains("/home/agent/.bash_history")),
        "the summary says what it restores: {summary}"
    );
    let running = session.launch(std::future::pending()).await.expect("launch the resumed bottle");
    let history = probe::ok(running.bottle(), "cat /home/agent/.bash_history").await;
    assert!(history.contains("remembered-line"), "the state is back: {history}");
    assert_eq!(world.state().read(&slug).expect("metadata").resumes, 1, "counted as a resume");
    running.teardown().await.expect("teardown");
    assert_eq!(world.resources(&slug), Vec::<String>::new());

    // Stopping what no longer runs says so (it is idempotent), and still leaves nothing.
    let again = bottle_core::session::stop(world.backend().as_ref(), &slug, world.state()).await;
    assert!(again.expect("stopping a stopped bottle is fine").already, "and says it was already stopped");
    assert_eq!(world.resources(&slug), Vec::<String>::new());
    // A slug nobody knows, no backend and no state folder, is an error.
    let unknown = bottle_core::session::stop(world.backend().as_ref(), "shell-0000dead", world.state()).await;
    let e = unknown.expect_err("stopping a bottle nobody knows");
    assert_eq!(e.kind(), bottle_core::ErrorKind::NotFound, "{e}");
}
