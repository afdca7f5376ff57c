//! start → exec → list → stop, attached sessions, resume, secrets, and the
//! message a user without Docker gets.

use crate::harness::{
    World, containers_of, find_in_bottle, networks_of, require_docker, text, volumes_of, warm_image, write,
};

#[test]
fn detached_bottle_runs_commands_lists_and_stops_without_leftovers() {
    require_docker();
    let world = World::new();
    let slug = world.start_detached(&["--label", "e2e lifecycle"]);
    assert!(slug.starts_with("shell-"), "slug {slug}");
    let mut containers = containers_of(&slug);
    containers.sort();
    assert_eq!(
        containers,
        [format!("bb-{slug}"), format!("bb-{slug}-egress"), format!("bb-{slug}-relay")],
        "the agent, its egress proxy and the relay on its loopback"
    );
    assert_eq!(networks_of(&slug).len(), 1, "the proxy's way out (the bottle itself has none)");
    assert_eq!(volumes_of(&slug).len(), 1, "the sidecars' sockets");

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

    world.ok(&["stop", &slug]);
    assert!(containers_of(&slug).is_empty(), "stop removes the container");
    assert!(networks_of(&slug).is_empty(), "stop removes the network");
    assert!(volumes_of(&slug).is_empty(), "stop removes the socket volume");
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
fn resume_brings_the_agent_state_back() {
    require_docker();
    let world = World::new();
    let slug = world.start_detached(&[]);
    world.ok(&["exec", &slug, "--", "sh", "-c", "echo remembered-line >> ~/.bash_history"]);
    world.ok(&["stop", &slug]);
    let saved = world.path("state/bot-bottle").join(&slug).join("resume/home/agent/.bash_history");
    assert!(std::fs::read_to_string(&saved).expect("saved at teardown").contains("remembered-line"));
    let resumed = world.ok(&["resume", &slug, "--yes", "--detach"]);
    assert_eq!(resumed.trim(), slug, "resume keeps the identity");
    let history = world.ok(&["exec", &slug, "--", "cat", "/home/agent/.bash_history"]);
    assert!(history.contains("remembered-line"), "{history}");
    let running = world.run(&["resume", &slug, "--yes", "--detach"]);
    assert!(!running.status.success() && text(&running.stderr).contains("still running"));
    world.ok(&["stop", &slug]);
}

#[test]
fn secrets_stay_on_the_host() {
    require_docker();
    let world = World::new();
    let secret = "s3cr3t-value-e2e-7d1f";
    let manifest = write(
        &world.path("work"),
        "bot-bottle.yaml",
        "agents:\n  shell:\n    bottle: b\nbottles:\n  b:\n    agent_provider:\n      template: shell\n    env:\n      \
         TOKEN: { from_host: E2E_TOKEN, secret: true }\n      PLAIN: hello\n",
    );
    let (slug, summary) = world.start_manifest(&manifest, &[("E2E_TOKEN", secret)]);
    assert!(!summary.contains(secret), "the summary never shows a secret");
    assert!(summary.contains("TOKEN=•••• (hidden)"), "{summary}");
    let env = world.ok(&["exec", &slug, "--", "env"]);
    assert!(env.contains("PLAIN=hello") && env.contains("TOKEN=bot-bottle-hidden:TOKEN"), "{env}");
    let control = find_in_bottle(&world, &slug, "bot-bottle-hidden:TOKEN");
    assert!(control.iter().any(|p| p.ends_with("/environ")), "the search finds what is there: {control:?}");
    assert_eq!(find_in_bottle(&world, &slug, secret), Vec::<String>::new(), "the secret is nowhere in the bottle");
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
