//! The CLI's own part of a bottle's life: `start --detach` prints the slug,
//! `exec` runs as the agent (or `--user`) and exits with the command's
//! code, `list active` shows the bottle (JSON and table), `stop`, `resume`
//! by identity, attached sessions, the refusal without a terminal, and the
//! one line a user without Docker gets. What the backend does (resources,
//! teardown, saved state, secrets) is the conformance suite's.

use crate::harness::{World, containers_of, networks_of, require_docker, text, warm_image};

#[test]
fn detached_bottle_runs_commands_lists_and_stops() {
    require_docker();
    let world = World::new();
    let slug = world.start_detached(&["--label", "e2e lifecycle"]);
    assert!(slug.starts_with("shell-"), "slug {slug}");

    assert_eq!(world.ok(&["exec", &slug, "--", "id", "-un"]).trim(), "agent", "runs as the non-root agent user");
    assert_eq!(world.ok(&["exec", &slug, "--user", "root", "--", "id", "-u"]).trim(), "0");
    let code = world.run(&["exec", &slug, "--", "sh", "-c", "exit 7"]).status.code();
    assert_eq!(code, Some(7), "exec exits with the command's code");

    let listed: serde_json::Value = serde_json::from_str(&world.ok(&["list", "active", "--json"])).expect("json");
    let mine = listed.as_array().expect("array").iter().find(|a| a["slug"] == slug.as_str()).expect("listed");
    assert_eq!(mine["agent"], "shell");
    assert_eq!(mine["backend"], "docker");
    assert_eq!(mine["status"], "running");
    assert_eq!(mine["label"], "e2e lifecycle");
    assert!(world.ok(&["list", "active"]).contains(&slug), "the table lists it too");

    let stopped = world.run(&["stop", &slug]);
    assert!(stopped.status.success(), "stop: {}", text(&stopped.stderr));
    assert!(text(&stopped.stderr).contains(&format!("bottle {slug} stopped and removed")), "{}", text(&stopped.stderr));
    let again = world.run(&["exec", &slug, "--", "true"]);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("no running bottle"), "{}", text(&again.stderr));
}

#[test]
fn attached_session_runs_the_agent_and_removes_the_bottle_on_exit() {
    require_docker();
    warm_image();
    let world = World::new();
    std::fs::write(world.path("work").join("notes.txt"), "from the host\n").expect("write");
    let out = world
        .bottle(&["start", "shell", "--yes", "--copy-cwd", "--", "-c", "cat notes.txt; pwd; exit 3"])
        .output()
        .expect("run");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "the session's exit code; stderr: {}", text(&out.stderr));
    assert!(stdout.contains("from the host"), "--copy-cwd copied the workspace: {stdout}");
    assert!(stdout.contains("/home/agent/workspace"), "session starts in the workdir: {stdout}");
    let slug = std::fs::read_dir(world.path("state/bot-bottle")).expect("state").next().expect("one").expect("entry");
    let slug = slug.file_name().to_string_lossy().into_owned();
    world.track(&slug);
    assert!(containers_of(&slug).is_empty() && networks_of(&slug).is_empty(), "nothing left after the session");
}

#[test]
fn start_without_a_terminal_or_yes_refuses_and_leaves_nothing() {
    require_docker();
    let world = World::new();
    let out = world.run(&["start", "shell"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("pass --yes"), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("agent"), "the summary was shown first: {}", text(&out.stderr));
    let left = std::fs::read_dir(world.path("state/bot-bottle")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "no state left behind");
}

#[test]
fn resume_keeps_the_identity_and_refuses_a_running_bottle() {
    require_docker();
    let world = World::new();
    let slug = world.start_detached(&[]);
    world.ok(&["stop", &slug]);
    let resumed = world.ok(&["resume", &slug, "--yes", "--detach"]);
    assert_eq!(resumed.trim(), slug, "resume keeps the identity");
    let running = world.run(&["resume", &slug, "--yes", "--detach"]);
    assert!(!running.status.success() && text(&running.stderr).contains("still running"));
    world.ok(&["stop", &slug]);
}

#[test]
fn without_docker_the_error_says_what_to_run() {
    let world = World::new();
    let out = world
        .bottle(&["start", "shell", "--yes"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        // Many users have it set: a user error still reads as one line.
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("apt-get install -y docker.io") && err.contains("dockerd"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn start_with_timings_prints_each_phase_and_the_provisioning_steps() {
    require_docker();
    warm_image();
    let world = World::new();
    let out = world.run(&["start", "shell", "--yes", "--detach", "--timings"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    world.track(text(&out.stdout).trim());
    let line = err.lines().find(|l| l.starts_with("timings: ")).unwrap_or_else(|| panic!("no timings line: {err}"));
    let at = |needle: &str| line.find(needle).unwrap_or_else(|| panic!("{needle} in: {line}"));
    assert!(
        at("prepare ") < at(", launch ")
            && at(", launch ") < at(", provision ")
            && at(", provision ") < at(", session ")
    );
    assert!(line.contains("(root ") && line.contains("workspace ") && line.contains("; total "), "{line}");
    let plain = world.run(&["start", "shell", "--yes", "--detach"]);
    world.track(text(&plain.stdout).trim());
    assert!(!text(&plain.stderr).contains("timings:"), "only when asked");
}
