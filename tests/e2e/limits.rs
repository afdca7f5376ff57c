//! Bounds a hostile agent cannot push past, on every backend: the state that
//! comes out at teardown is bounded (a 2 GiB sparse file is left behind
//! without `bottle stop` reading it into memory) and clean (no setuid bit, no
//! link out of the tree); a bottle over its memory limit has its processes
//! killed while the host and its sidecars stay up; the preflight shows the
//! limits, and the engine holds them.

use std::time::Duration;

use crate::conformance::{Under, for_each_backend};
use crate::harness::{World, text, warm_image, write};

for_each_backend!(saved_state_is_bounded_and_clean: state_bounds_on_docker, state_bounds_on_smolmachines);
for_each_backend!(memory_over_the_limit_is_killed: memory_on_docker, memory_on_smolmachines);

fn manifest(world: &World, resources: &str) -> std::path::PathBuf {
    write(
        &world.path("work"),
        "limits.yaml",
        &format!(
            "agents:\n  shell:\n    bottle: b\nbottles:\n  b:\n    agent_provider:\n      template: shell\n    \
             resources: {{ {resources} }}\n"
        ),
    )
}

/// Runs `bottle args…` and returns its output with the highest resident
/// memory it reached (VmHWM), read while it ran.
fn run_measured(world: &World, args: &[&str]) -> (std::process::Output, u64) {
    let mut child = world
        .bottle(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run bottle");
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    while child.try_wait().expect("wait").is_none() {
        if let Ok(text) = std::fs::read_to_string(&status) {
            let hwm = text.lines().find_map(|l| l.strip_prefix("VmHWM:")).map(|v| v.trim().trim_end_matches(" kB"));
            peak_kib = peak_kib.max(hwm.and_then(|v| v.trim().parse().ok()).unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (child.wait_with_output().expect("output"), peak_kib * 1024)
}

fn saved_state_is_bounded_and_clean(under: &dyn Under) {
    warm_image();
    let world = under.world();
    let (slug, summary) = under.start(&manifest(world, "state: 1m"), &[]);
    assert!(summary.contains("saved state at most 1 MiB"), "the summary shows the cap: {summary}");

    // Over the cap: a 2 GiB sparse history. `stop` leaves it, says so, stays small, removes the bottle.
    world.ok(&["exec", &slug, "--", "truncate", "-s", "2G", "/home/agent/.bash_history"]);
    let (out, peak) = run_measured(world, &["stop", &slug]);
    assert!(out.status.success(), "stop: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("/home/agent/.bash_history was not saved"), "{}", text(&out.stderr));
    assert!(peak < 200 << 20, "stop stayed within its memory bound: peak {} MiB", peak >> 20);
    under.assert_gone(&slug);
    let saved = world.path("state/bot-bottle").join(&slug).join("resume/home/agent/.bash_history");
    assert!(!saved.exists(), "nothing of it was kept");

    // Clean: a setuid, world-writable history comes out owner-only; a link out of the tree stays behind.
    let (slug, _) = under.start(&manifest(world, "state: 1m"), &[]);
    world.ok(&["exec", &slug, "--", "sh", "-c", "echo ls > ~/.bash_history && chmod 4777 ~/.bash_history"]);
    world.ok(&["stop", &slug]);
    let saved = world.path("state/bot-bottle").join(&slug).join("resume/home/agent/.bash_history");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&saved).expect("saved").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "no setuid bit, owner only");
    assert_eq!(std::fs::read_to_string(&saved).expect("read"), "ls\n");
    let dir_mode = std::fs::metadata(world.path("state/bot-bottle").join(&slug)).expect("dir").permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700, "the state dir is the operator's alone");

    let (slug, _) = under.start(&manifest(world, "state: 1m"), &[]);
    world.ok(&["exec", &slug, "--", "ln", "-sf", "/etc/hostname", "/home/agent/.bash_history"]);
    let out = world.run(&["stop", &slug]);
    assert!(out.status.success(), "stop: {}", text(&out.stderr));
    let saved = world.path("state/bot-bottle").join(&slug).join("resume/home/agent/.bash_history");
    assert!(std::fs::symlink_metadata(&saved).is_err(), "a link is not copied out");
    assert!(text(&out.stderr).contains("a link"), "and the operator is told: {}", text(&out.stderr));
}

fn memory_over_the_limit_is_killed(under: &dyn Under) {
    warm_image();
    let world = under.world();
    let (slug, summary) = under.start(&manifest(world, "memory: 64m, cpus: 1, pids: 256"), &[]);
    assert!(summary.contains("memory 64 MiB"), "the summary shows the limit: {summary}");
    // `tail` keeps the one endless line of /dev/zero in memory.
    let hog = world.run(&["exec", &slug, "--", "sh", "-c", "head -c 400M /dev/zero | tail >/dev/null"]);
    assert_eq!(hog.status.code(), Some(137), "the process over the limit is killed: {}", text(&hog.stderr));
    assert_eq!(world.ok(&["exec", &slug, "--", "echo", "alive"]).trim(), "alive", "the bottle stays up");
    let proxy = world.run(&[
        "exec",
        &slug,
        "--",
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_connect}",
        "https://example.com/",
    ]);
    assert_eq!(text(&proxy.stdout), "403", "and its proxy still answers");
    world.ok(&["stop", &slug]);
    under.assert_gone(&slug);
}

#[test]
fn docker_holds_the_limits_the_summary_shows() {
    crate::harness::require_docker();
    warm_image();
    let world = World::new();
    let (slug, summary) = world.start_manifest(&manifest(&world, "memory: 256m, cpus: 0.5, pids: 300"), &[]);
    assert!(summary.contains("memory 256 MiB (no swap), 0.5 CPUs, 300 processes"), "{summary}");
    let inspect = |name: &str, format: &str| {
        let out = std::process::Command::new("docker").args(["inspect", "--format", format, name]).output();
        text(&out.expect("docker inspect").stdout).trim().to_string()
    };
    let agent = format!("bb-{slug}");
    let limits = "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}}";
    assert_eq!(inspect(&agent, limits), format!("{} {} 500000000 300", 256 << 20, 256 << 20));
    assert_eq!(inspect(&agent, "{{index .HostConfig.LogConfig.Config \"max-size\"}}"), "10m", "logs rotate");
    let egress = format!("bb-{slug}-egress");
    assert_eq!(inspect(&egress, "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}"), format!("{} 512", 256 << 20));
    world.ok(&["stop", &slug]);
}
