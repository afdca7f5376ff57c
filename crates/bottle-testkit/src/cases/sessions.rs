//! What outlives whom: a detached bottle runs its agent, with its arguments,
//! in a session of its own; a bottle whose agent container or VM was
//! stopped behind the backend's back still has its state saved by `stop`;
//! two stops at once take turns; the sidecars' audit logs outlive the
//! bottle in its state folder.

use bottle_core::{ErrorKind, Sidecar, agent_session, session};

use crate::probe;
use crate::{Capability, World};

pub(super) async fn a_detached_agent_runs_in_its_session(world: &World) {
    let mut spec = world.spec(world.default_manifest());
    spec.detached = true;
    spec.agent_args = ["-c", "echo ran > /tmp/x; sleep 300"].map(String::from).to_vec();
    let running = world.start(&spec, &[]).await;
    let bottle = running.bottle();
    let mut ran = String::new();
    for _ in 0..50 {
        ran = probe::sh(bottle, "cat /tmp/x 2>/dev/null").await.stdout;
        if !ran.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(ran.trim(), "ran", "the agent ran with the arguments it was given");
    assert!(probe::runs(bottle, "sleep 300").await, "and runs on after launch");
    assert!(agent_session::is_running(bottle).await, "in its session");
    assert!(bottle_core::backend::is_detached(bottle).await, "a detached launch marks the bottle detached");
    if world.can(Capability::HostAttach) {
        let argv = running.attach_argv().expect("the backend has a host command for the session");
        assert!(argv.windows(2).any(|w| w == ["attach-session", "-t"]), "it attaches to the session: {argv:?}");
    }
    let slug = running.detach();
    let stopped = session::stop(world.backend().as_ref(), &slug, world.state()).await.expect("stop");
    assert!(!stopped.already);
    assert_eq!(world.resources(&slug), Vec::<String>::new(), "stop removes the bottle and its session");
}

pub(super) async fn stop_saves_the_state_of_a_stopped_agent(world: &World) {
    let running = world.start_detached().await;
    probe::ok(running.bottle(), "echo before-the-kill >> ~/.bash_history").await;
    let slug = running.detach();
    world.target().kill_agent(world, &slug);
    match world.backend().attach_dyn(&slug).await {
        Ok(_) => panic!("the agent of {slug} still runs after it was killed"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::NotFound, "{e}"),
    }

    let stopped = session::stop(world.backend().as_ref(), &slug, world.state()).await.expect("stop");
    assert!(!stopped.already, "there was a bottle to stop");
    assert!(stopped.notes.iter().any(|n| n.contains("had stopped")), "says it started it again: {:?}", stopped.notes);
    let saved = world.state().bottle_dir(&slug).join("resume/home/agent/.bash_history");
    let text = std::fs::read_to_string(&saved).expect("the history is saved from the stopped agent");
    assert!(text.contains("before-the-kill"), "{text}");
    assert_eq!(world.resources(&slug), Vec::<String>::new(), "and everything is removed");
}

pub(super) async fn two_stops_at_once_take_turns(world: &World) {
    let slug = world.start_detached().await.detach();
    // One stop in another process, one here, at once.
    let mut elsewhere = world.stop_elsewhere(&slug);
    let here = session::stop(world.backend().as_ref(), &slug, world.state()).await.expect("stop here");
    let notes = elsewhere.notes();
    let status = elsewhere.child.wait().expect("the other stop");
    assert!(status.success(), "the other stop failed: {status}");
    let there_already = notes.iter().any(|n| n == crate::case::ALREADY_STOPPED);
    assert!(here.already != there_already, "exactly one of the two stopped it: here {here:?}, there {notes:?}");
    let again = session::stop(world.backend().as_ref(), &slug, world.state()).await.expect("a third stop");
    assert!(again.already, "a stop after both finds it gone");
    assert_eq!(world.resources(&slug), Vec::<String>::new(), "nothing is left");
    for note in here.notes.iter().chain(&notes) {
        assert!(!note.contains("Engine"), "no raw engine error: {note}");
    }
}

pub(super) async fn audit_logs_outlive_the_bottle(world: &World) {
    let running = world.start_detached().await;
    let out = probe::curl(running.bottle(), &["-o", "/dev/null", "https://denied.example/"]).await;
    assert!(out.stderr.contains("CONNECT tunnel failed, response 403"), "the proxy denies it: {}", out.stderr);
    let slug = running.detach();
    session::stop(world.backend().as_ref(), &slug, world.state()).await.expect("stop");
    let path = world.state().log_path(&slug, Sidecar::Egress);
    let log = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let line = log.lines().find(|l| l.contains("denied.example")).unwrap_or_else(|| panic!("no line in {log}"));
    let entry: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    assert_eq!(entry["decision"], "deny", "{line}");
    assert_eq!(world.resources(&slug), Vec::<String>::new());
}
