//! The command line itself: `--version` names the commit, `completions`
//! says where its script goes, a backend nobody knows is refused by every
//! command, and `DOCKER_HOST` is honoured — an engine it names is used, and
//! one that does not answer is an error, never a fall back to the local
//! socket.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::harness::{World, require_docker, text};

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = World::new().run(&["--version"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git rev-parse");
    let version = text(&out.stdout);
    assert!(version.starts_with(&format!("bottle {} (commit ", env!("CARGO_PKG_VERSION"))), "{version}");
    if head.status.success() {
        let head = text(&head.stdout).trim().to_string();
        assert!(version.contains(&format!("(commit {head}")), "{version} names HEAD {head}");
    }
}

#[test]
fn completions_print_the_script_and_say_where_it_goes() {
    let out = World::new().run(&["completions", "bash"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("complete -F _bottle"), "stdout is the bash script alone");
    assert!(!text(&out.stdout).contains("save it as"), "the hint stays off stdout");
    let hint = text(&out.stderr);
    assert!(hint.contains("~/.local/share/bash-completion/completions/bottle"), "{hint}");
    let help = World::new().run(&["completions", "--help"]);
    assert!(text(&help.stdout).contains("~/.config/fish/completions/bottle.fish"), "{}", text(&help.stdout));
}

#[test]
fn a_backend_nobody_knows_is_refused_by_every_command() {
    let world = World::new();
    for args in [
        &["--backend", "nosuch", "list", "active"][..],
        &["--backend", "nosuch", "cleanup", "--dry-run"],
        &["--backend", "nosuch", "list", "agents"],
        &["--backend", "nosuch", "stop", "shell-0000aaaa"],
        &["--backend", "nosuch", "start", "shell", "--yes"],
        &["--backend", "nosuch", "doctor"],
        &["--backend", "nosuch", "cp", "notes.txt", "shell-0000aaaa:notes.txt"],
        &["--backend", "nosuch", "exec", "shell-0000aaaa", "--", "true"],
    ] {
        let out = world.run(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("unknown backend `nosuch`") && err.contains("docker"), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
    }
    let out = world.bottle(&["list", "active"]).env("BOT_BOTTLE_BACKEND", "nosuch").output().expect("run");
    assert_eq!(out.status.code(), Some(1), "from the environment too: {}", text(&out.stderr));
}

/// A TCP port that forwards every connection to the local engine's socket,
/// counting them: an engine reached through `tcp://`.
fn engine_over_tcp() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            seen.fetch_add(1, Ordering::SeqCst);
            let Ok(engine) = UnixStream::connect("/var/run/docker.sock") else { continue };
            let pump = |mut from: Box<dyn Read + Send>, mut to: Box<dyn Write + Send>| {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                })
            };
            let (c2, e2) = (client.try_clone().expect("clone"), engine.try_clone().expect("clone"));
            pump(Box::new(client), Box::new(engine));
            pump(Box::new(e2), Box::new(c2));
        }
    });
    (port, count)
}

#[test]
fn docker_host_is_honoured_and_an_engine_it_names_that_does_not_answer_is_an_error() {
    require_docker();
    let world = World::new();
    let (port, connections) = engine_over_tcp();
    let host = format!("tcp://127.0.0.1:{port}");
    let out = world.bottle(&["--backend", "docker", "list", "active", "--json"]).env("DOCKER_HOST", &host).output();
    let out = out.expect("run");
    assert!(out.status.success(), "through {host}: {}", text(&out.stderr));
    assert!(connections.load(Ordering::SeqCst) > 0, "the engine was reached through {host}");

    let closed = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let dead = format!("tcp://127.0.0.1:{closed}");
    let out = world.bottle(&["--backend", "docker", "list", "active"]).env("DOCKER_HOST", &dead).output();
    let out = out.expect("run");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "no fall back to the local socket: {err}");
    assert!(err.contains(&dead) && err.trim().lines().count() == 1, "{err}");

    let out = world.bottle(&["--backend", "docker", "list", "active"]).env("DOCKER_HOST", "ftp://x").output();
    let err = text(&out.expect("run").stderr);
    assert!(err.contains("DOCKER_HOST=ftp://x is not a form bot-bottle supports"), "{err}");
}
