//! Identities kept and let go, and health shown: `list stopped` with what
//! each stopped bottle saved, `forget` and `prune` (never of a running
//! bottle), `list active` with the launcher's liveness, each sidecar up or
//! down and the bottle's colour, and the bottle's host name, its slug.

use std::process::Command;

use crate::harness::{World, require_docker, text, wait_for, warm_image};
use crate::terminal::{on_a_terminal, on_a_terminal_with};

/// The entry of bottle `slug` in `bottle list WHAT --json`, if listed.
fn listed(world: &World, what: &str, slug: &str) -> Option<serde_json::Value> {
    let all: serde_json::Value = serde_json::from_str(&world.ok(&["list", what, "--json"])).expect("JSON");
    all.as_array().expect("an array").iter().find(|b| b["slug"] == slug).cloned()
}

/// The line of `table` that names `slug`.
fn row<'a>(table: &'a str, slug: &str) -> Option<&'a str> {
    table.lines().find(|l| l.contains(slug))
}

#[test]
fn list_stopped_shows_a_stopped_bottle_with_its_saved_history_and_not_a_running_one() {
    require_docker();
    let world = World::new();
    let (stopped, running) = (world.start_detached(&[]), world.start_detached(&[]));
    world.ok(&["exec", &stopped, "--", "sh", "-c", "echo x >> ~/.bash_history"]);
    world.ok(&["stop", &stopped]);

    let entry = listed(&world, "stopped", &stopped).expect("the stopped bottle is listed");
    assert_eq!(entry["agent"], "shell");
    assert!(entry["stopped_ms"].as_u64().is_some(), "when it stopped: {entry}");
    assert_eq!(entry["saved"][0]["path"], "/home/agent/.bash_history", "{entry}");
    assert!(entry["saved_bytes"].as_u64().is_some_and(|b| b >= 2), "the history's bytes: {entry}");
    assert!(listed(&world, "stopped", &running).is_none(), "a running bottle is not stopped");

    let table = world.ok(&["list", "stopped"]);
    let line = row(&table, &stopped).unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains("/home/agent/.bash_history (") && line.contains(" ago"), "{line}");
    assert!(row(&table, &running).is_none(), "{table}");
    world.ok(&["stop", &running]);
}

#[test]
fn forget_refuses_a_running_bottle_and_removes_a_stopped_ones_folder() {
    require_docker();
    let world = World::new();
    let slug = world.start_detached(&[]);
    let folder = world.path("state/bot-bottle").join(&slug);
    let refused = world.run(&["forget", &slug]);
    assert_eq!(refused.status.code(), Some(1));
    let err = text(&refused.stderr);
    assert!(err.contains("not forgotten: it runs on docker") && err.trim().lines().count() == 1, "{err}");
    assert!(folder.is_dir(), "a running bottle's state stays");

    world.ok(&["stop", &slug]);
    let stopped = world.run(&["exec", &slug, "--", "true"]);
    assert_eq!(stopped.status.code(), Some(1));
    assert!(
        text(&stopped.stderr).contains("`bottle list stopped`"),
        "points at the stopped: {}",
        text(&stopped.stderr)
    );
    world.ok(&["forget", &slug]);
    assert!(!folder.exists(), "its state folder is gone");
    assert!(listed(&world, "stopped", &slug).is_none());
    let again = world.run(&["forget", &slug]);
    assert_eq!(again.status.code(), Some(1), "an unknown bottle: {}", text(&again.stderr));
    let resumed = world.run(&["resume", &slug, "--yes"]);
    assert_eq!(resumed.status.code(), Some(1), "a forgotten bottle cannot be resumed");
    let err = text(&resumed.stderr);
    assert!(err.contains("`bottle list stopped`") && err.trim().lines().count() == 1, "{err}");
}

#[test]
fn prune_removes_stopped_bottles_and_keeps_running_ones() {
    require_docker();
    let world = World::new();
    let (old, running) = (world.start_detached(&[]), world.start_detached(&[]));
    world.ok(&["stop", &old]);
    let folder = |slug: &str| world.path("state/bot-bottle").join(slug);

    let unconfirmed = world.run(&["prune", "--older-than", "0m"]);
    assert_eq!(unconfirmed.status.code(), Some(1), "no terminal, no --yes");
    assert!(text(&unconfirmed.stderr).contains("pass --yes"), "{}", text(&unconfirmed.stderr));
    let dry = world.ok(&["prune", "--older-than", "0m", "--dry-run"]);
    assert!(dry.contains(&old) && !dry.contains(&running), "{dry}");
    let recent = world.run(&["prune", "--yes"]);
    assert!(text(&recent.stderr).contains("nothing to prune"), "30d by default: {}", text(&recent.stderr));
    assert!(folder(&old).is_dir(), "nothing removed so far");

    world.ok(&["prune", "--older-than", "0m", "--yes"]);
    assert!(!folder(&old).exists(), "the stopped bottle's state is removed");
    assert!(folder(&running).is_dir(), "the running bottle's is kept");
    assert_eq!(world.ok(&["exec", &running, "--", "echo", "on"]).trim(), "on", "and it runs on");
    world.ok(&["stop", &running]);
}

#[test]
fn list_active_shows_the_launcher_the_sidecars_and_the_colour_and_a_dead_egress() {
    require_docker();
    let world = World::new();
    let slug = world.start_detached(&["--color", "green"]);
    assert_eq!(world.ok(&["exec", &slug, "--", "hostname"]).trim(), slug, "the host name is the slug");

    let mine = listed(&world, "active", &slug).expect("listed");
    assert_eq!(mine["owner"], "gone", "a detached bottle's launcher has exited");
    assert_eq!(mine["sidecars"], serde_json::json!({ "egress": true, "relay": true }), "no gate: no upstreams");
    assert_eq!((mine["status"].as_str(), mine["color"].as_str()), (Some("running"), Some("green")));
    let table = world.ok(&["list", "active"]);
    let line = row(&table, &slug).unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains(" gone ") && line.contains("egress up, relay up") && line.contains("green"), "{line}");
    let shown = on_a_terminal(&world, &["list", "active"]);
    assert!(shown.contains(&format!("\x1b[32m{slug}\x1b[0m")), "drawn in its colour on a terminal: {shown:?}");
    let plain = on_a_terminal_with(&world, &[("NO_COLOR", "1")], &["list", "active"]);
    let line = row(&plain, &slug).unwrap_or_else(|| panic!("{plain}"));
    assert!(line.starts_with(&format!("{slug} ")) && !plain.contains('\x1b'), "NO_COLOR: no colour: {plain:?}");

    let killed = Command::new("docker").args(["kill", &format!("bb-{slug}-egress")]).output().expect("docker");
    assert!(killed.status.success(), "docker kill: {}", text(&killed.stderr));
    let down = wait_for(20, || listed(&world, "active", &slug).is_some_and(|a| a["sidecars"]["egress"] == false));
    assert!(down, "the dead egress shows down");
    let mine = listed(&world, "active", &slug).expect("listed");
    assert_eq!(mine["status"], "running (egress down)");
    assert_eq!(mine["sidecars"]["relay"], true);
    let line = world.ok(&["list", "active"]);
    let line = row(&line, &slug).expect("listed");
    assert!(line.contains("running (egress down)") && line.contains("egress down, relay up"), "{line}");
    world.ok(&["stop", &slug]);
}

#[test]
fn list_active_shows_an_attached_launcher_alive_then_gone_once_killed() {
    require_docker();
    warm_image();
    let world = World::new();
    let mut launcher = world
        .bottle(&["start", "shell", "--yes", "--", "-c", "sleep 120"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start attached");
    let state = world.path("state/bot-bottle");
    let mut slug = String::new();
    let minted = wait_for(60, || {
        let found = std::fs::read_dir(&state).ok().and_then(|mut d| d.next()).and_then(|e| e.ok());
        slug = found.map(|e| e.file_name().to_string_lossy().into_owned()).unwrap_or_default();
        !slug.is_empty()
    });
    assert!(minted, "the launcher minted a slug");
    world.track(&slug);
    let running = || listed(&world, "active", &slug).filter(|a| a["status"] == "running");
    assert!(wait_for(120, || running().is_some()), "the attached bottle runs");
    assert_eq!(running().expect("listed")["owner"], "alive", "its launcher runs");

    launcher.kill().expect("kill the launcher");
    launcher.wait().expect("reap");
    assert_eq!(listed(&world, "active", &slug).expect("left running")["owner"], "gone", "its launcher is dead");
    world.ok(&["stop", &slug]);
}
