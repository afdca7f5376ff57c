//! bottle-smolvm's integration tests: the conformance suite
//! (`bottle-testkit`) against the fake `smolvm` (`crates/smolvm-fake`,
//! whose machines are Docker containers; `cargo test --workspace` builds it
//! at `target/debug/smolvm`), and what only this backend shows (`calls.rs`:
//! the exact `smolvm` commands it runs; booting a prebuilt image archive
//! without Docker).
//!
//! The testkit runs each case in a process of its own, with the fake first
//! on `PATH` and its machines in the case's folder, and with
//! `BOT_BOTTLE_SIDECAR` naming the `bottle` binary beside this test binary
//! (`target/debug/bottle`; the case fails saying how to build either when
//! missing). An embedding program is its bottles' sidecars itself, by
//! calling `bot_bottle::run_sidecar_if_asked()` first in `main`; a test
//! binary cannot, since libtest owns its `main`.

mod calls;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use bottle_core::{Registry, Sidecar, StateRoot};
use bottle_smolvm::SmolvmBackend;
use bottle_testkit::fixtures::{self, text, wait_for};
use bottle_testkit::{Capability, Target, World};

/// The smolvm backend, against the fake `smolvm`.
struct Smolvm;

/// The cases' shared cache (the image archives the backend saves, by image
/// id): kept between runs, like the operator's own `~/.cache`.
const CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/bottle-smolvm-cache");

/// Where the sockets of namespace-isolated bottles' sidecars live.
const SOCKET_ROOT: &str = "/run/bot-bottle";

/// Whether this process runs as root (then each machine gets a network namespace).
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The fake's machine store of the case.
fn fake_state(world: &World) -> PathBuf {
    world.path("fake-state")
}

/// Runs the fake `smolvm` itself, on the case's machines.
fn smolvm(world: &World, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(fixtures::fake_smolvm());
    cmd.args(args).env("SMOLVM_FAKE_STATE", fake_state(world));
    cmd.output().expect("run the fake smolvm")
}

/// The machines the fake knows (`machine ls --json`).
fn machines(world: &World) -> Vec<serde_json::Value> {
    let out = smolvm(world, &["machine", "ls", "--json"]);
    assert!(out.status.success(), "machine ls: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("a JSON array")
}

/// Live `bottle sidecar` processes of `slug`, as (pid, role).
fn sidecars_of(world: &World, slug: &str) -> Vec<(String, String)> {
    fixtures::sidecar_processes(&world.state().bottle_dir(slug), slug).into_iter().map(|p| (p.pid, p.role)).collect()
}

impl Target for Smolvm {
    fn name(&self) -> &'static str {
        bottle_smolvm::NAME
    }

    fn require(&self) {
        fixtures::require_docker();
        fixtures::fake_smolvm();
    }

    fn prepare_world(&self, dir: &Path) -> Vec<(String, String)> {
        let bin = fixtures::install_fake_smolvm(&dir.join("fake-bin"));
        std::fs::create_dir_all(dir.join("fake-state")).expect("mkdir");
        let path = std::env::var("PATH").unwrap_or_default();
        vec![
            ("PATH".into(), format!("{}:{path}", bin.display())),
            ("SMOLVM_FAKE_STATE".into(), dir.join("fake-state").display().to_string()),
            ("XDG_CACHE_HOME".into(), CACHE.into()),
            // The fake reaches Docker even where a case hides it from the backend.
            (fixtures::FAKE_DOCKER_HOST_ENV.into(), std::env::var("DOCKER_HOST").unwrap_or_default()),
        ]
    }

    fn registry(&self, state: &StateRoot) -> Registry {
        let mut registry = Registry::new();
        registry.register(Arc::new(SmolvmBackend::with_state_root(state.clone())));
        registry.alias(bottle_smolvm::ALIAS, bottle_smolvm::NAME);
        registry
    }

    fn lacks(&self) -> Vec<(Capability, &'static str)> {
        let mut lacks = vec![(
            Capability::ProcessLimit,
            "smolvm's CLI has no process limit: `machine create` takes --cpus and --mem",
        )];
        if !is_root() {
            lacks.push((
                Capability::OwnNetwork,
                "not root, so no network namespace per machine: machines share the host's loopback",
            ));
        }
        lacks
    }

    fn resources(&self, world: &World, slug: &str) -> Vec<String> {
        let machine = format!("bb-{slug}");
        let mut found: Vec<String> = machines(world)
            .iter()
            .filter_map(|m| m["name"].as_str())
            .filter(|name| *name == machine)
            .map(|name| format!("machine {name}"))
            .collect();
        let out = Command::new("docker")
            .args(["ps", "-a", "--filter", &format!("name=^smolvm-fake-{machine}$"), "--format", "{{.Names}}"])
            .output()
            .expect("docker ps");
        found.extend(text(&out.stdout).lines().map(|c| format!("container {c}")));
        found.extend(sidecars_of(world, slug).into_iter().map(|(_, role)| format!("{role} sidecar process")));
        if Path::new(&format!("/run/netns/{machine}")).exists() {
            found.push(format!("network namespace {machine}"));
        }
        if Path::new(&format!("{SOCKET_ROOT}/{slug}")).exists() {
            found.push(format!("socket folder {SOCKET_ROOT}/{slug}"));
        }
        if world.state().bottle_dir(slug).join("sidecars").exists() {
            found.push("sidecar files".into());
        }
        found
    }

    fn running_resources(&self, _world: &World, slug: &str) -> Vec<String> {
        let mut expected = vec![
            format!("machine bb-{slug}"),
            format!("container smolvm-fake-bb-{slug}"),
            "egress sidecar process".to_string(),
            "sidecar files".to_string(),
        ];
        if is_root() {
            expected.extend([
                "relay sidecar process".to_string(),
                format!("network namespace bb-{slug}"),
                format!("socket folder {SOCKET_ROOT}/{slug}"),
            ]);
        }
        expected
    }

    fn kill_proxy(&self, world: &World, slug: &str) {
        let egress: Vec<String> =
            sidecars_of(world, slug).into_iter().filter(|(_, role)| role == "egress").map(|(pid, _)| pid).collect();
        assert!(!egress.is_empty(), "no egress process of {slug} found");
        for pid in egress {
            assert!(Command::new("kill").args(["-KILL", &pid]).status().expect("kill").success());
        }
    }

    fn kill_agent(&self, world: &World, slug: &str) {
        let out = smolvm(world, &["machine", "stop", "--name", &format!("bb-{slug}")]);
        assert!(out.status.success(), "stopping the machine: {}", text(&out.stderr));
    }

    fn sidecar_socket(&self, _world: &World, slug: &str, sidecar: Sidecar) -> PathBuf {
        Path::new(SOCKET_ROOT).join(slug).join(format!("{}.sock", sidecar.name()))
    }

    fn expose_egress(&self, world: &World, slug: &str, port: u16) -> Vec<String> {
        let socket = self.sidecar_socket(world, slug, Sidecar::Egress);
        let netns = format!("bb-{slug}");
        let pair = format!("127.0.0.1:{port}={}", socket.display());
        let child = Command::new("ip")
            .args(["netns", "exec", &netns])
            .arg(fixtures::bottle())
            .args(["sidecar", "relay", &pair])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ip netns exec");
        world.keep(child);
        let probe = format!("http://127.0.0.1:{port}/");
        let answered = wait_for(10, || {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &netns,
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--noproxy",
                    "*",
                ])
                .arg(&probe)
                .output();
            out.is_ok_and(|o| o.stdout.starts_with(b"407"))
        });
        assert!(answered, "the exposed proxy answers inside {slug}'s namespace at 127.0.0.1:{port}");
        vec!["127.0.0.1".to_string()]
    }
}

bottle_testkit::suite!(Smolvm);
