//! bottle-docker's integration tests: the conformance suite
//! (`bottle-testkit`) against the real Docker Engine, and what only Docker
//! shows (`engine.rs`: the engine's own record of a bottle's limits).
//!
//! The testkit runs each case in a process of its own, with
//! `BOT_BOTTLE_SIDECAR` naming the `bottle` binary beside this test binary
//! (`target/debug/bottle`, which `cargo test --workspace` builds; the case
//! fails saying so when it is missing). An embedding program is its bottles'
//! sidecars itself, by calling `bot_bottle::run_sidecar_if_asked()` first in
//! `main`; a test binary cannot, since libtest owns its `main`.

mod engine;

use std::path::{Path, PathBuf};
use std::process::Command;

use bottle_core::{Registry, Sidecar, StateRoot};
use bottle_testkit::fixtures::{self, text, wait_for};
use bottle_testkit::{Capability, Target, World};

/// The Docker backend, against the engine `docker` reaches.
struct Docker;

/// `docker ARGS…`, requiring success; its stdout's non-empty lines.
fn docker_lines(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(out.status.success(), "docker {args:?}: {}", text(&out.stderr));
    text(&out.stdout).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

/// `docker inspect --format FORMAT NAME`, trimmed.
fn inspect(name: &str, format: &str) -> String {
    let out = Command::new("docker").args(["inspect", "--format", format, name]).output().expect("docker inspect");
    assert!(out.status.success(), "docker inspect {name}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

impl Target for Docker {
    fn name(&self) -> &'static str {
        bottle_docker::NAME
    }

    fn require(&self) {
        fixtures::require_docker();
    }

    fn prepare_world(&self, _dir: &Path) -> Vec<(String, String)> {
        Vec::new()
    }

    fn registry(&self, _state: &StateRoot) -> Registry {
        let mut registry = Registry::new();
        bottle_docker::register(&mut registry);
        registry
    }

    fn lacks(&self) -> Vec<(Capability, &'static str)> {
        Vec::new()
    }

    fn resources(&self, _world: &World, slug: &str) -> Vec<String> {
        let label = format!("label={}={slug}", bottle_core::labels::SLUG);
        let mut found = Vec::new();
        for (kind, list) in
            [("container", ["ps", "-a"].as_slice()), ("network", &["network", "ls"]), ("volume", &["volume", "ls"])]
        {
            let format = if kind == "container" { "{{.Names}}" } else { "{{.Name}}" };
            let args: Vec<&str> = list.iter().copied().chain(["--filter", &label, "--format", format]).collect();
            found.extend(docker_lines(&args).into_iter().map(|name| format!("{kind} {name}")));
        }
        found
    }

    fn running_resources(&self, _world: &World, slug: &str) -> Vec<String> {
        [
            "container bb-{}",
            "container bb-{}-egress",
            "container bb-{}-relay",
            "network bb-{}-out",
            "volume bb-{}-sockets",
        ]
        .map(|pattern| pattern.replace("{}", slug))
        .to_vec()
    }

    fn kill_proxy(&self, _world: &World, slug: &str) {
        let out = Command::new("docker").args(["kill", &format!("bb-{slug}-egress")]).output();
        assert!(out.expect("docker kill").status.success(), "killing the proxy container");
    }

    fn kill_agent(&self, _world: &World, slug: &str) {
        let out = Command::new("docker").args(["kill", &format!("bb-{slug}")]).output();
        assert!(out.expect("docker kill").status.success(), "killing the agent container");
    }

    fn sidecar_socket(&self, _world: &World, slug: &str, sidecar: Sidecar) -> PathBuf {
        let mountpoint = inspect_volume(&format!("bb-{slug}-sockets"));
        Path::new(&mountpoint).join(format!("{}.sock", sidecar.name()))
    }

    fn expose_egress(&self, _world: &World, slug: &str, port: u16) -> Vec<String> {
        let egress = format!("bb-{slug}-egress");
        let relay = format!("0.0.0.0:{port}={}/egress.sock", bottle_core::backend::SOCKET_DIR);
        let out = Command::new("docker")
            .args(["exec", "-d", &egress, bottle_core::backend::LAUNCHER, "sidecar", "relay", &relay])
            .output()
            .expect("docker exec");
        assert!(out.status.success(), "exposing {egress}: {}", text(&out.stderr));
        let addrs: Vec<String> = inspect(&egress, "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        assert!(!addrs.is_empty(), "{egress} has an address");
        for addr in &addrs {
            let answered = wait_for(10, || tcp_answer(addr, port).starts_with("HTTP/1.1 407"));
            assert!(answered, "the exposed proxy answers the host at {addr}:{port}");
        }
        addrs
    }
}

fn inspect_volume(name: &str) -> String {
    let out = Command::new("docker")
        .args(["volume", "inspect", "--format", "{{.Mountpoint}}", name])
        .output()
        .expect("docker volume inspect");
    assert!(out.status.success(), "the volume {name}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// The first line of what a TCP server at `addr:port` answers to a bare `CONNECT`.
fn tcp_answer(addr: &str, port: u16) -> String {
    use std::io::{BufRead as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect((addr, port)) else { return String::new() };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    if stream.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n").is_err() {
        return String::new();
    }
    let mut line = String::new();
    let _ = std::io::BufReader::new(stream).read_line(&mut line);
    line
}

bottle_testkit::suite!(Docker);
