//! `bottle exec` interrupted without a terminal (SIGTERM, SIGINT to the
//! `bottle` process): it exits 128 + the signal, and the command it ran is
//! stopped inside the bottle too, its PID file gone.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{World, require_docker, wait_for};

/// The PIDs in bottle `slug` whose command line is exactly `cmdline`.
fn running(world: &World, slug: &str, cmdline: &str) -> Vec<String> {
    let script = format!(
        "for p in /proc/[0-9]*; do [ \"$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\" = '{cmdline} ' ] && echo ${{p#/proc/}}; \
         done; true"
    );
    world.ok(&["exec", slug, "--", "sh", "-c", &script]).split_whitespace().map(str::to_string).collect()
}

/// Wait for `child` to exit, at most `secs`.
fn exit_code(child: &mut Child, secs: u64) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("bottle exec did not exit within {secs} s of the signal");
}

/// Run `sleep SECS` through `bottle exec`, signal the `bottle` process with
/// `signal` once it runs, and return its exit code and stderr.
fn interrupt(world: &World, slug: &str, secs: &str, signal: &str) -> (Option<i32>, String) {
    let mut child = world
        .bottle(&["exec", slug, "--", "sleep", secs])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bottle exec");
    let cmdline = format!("sleep {secs}");
    assert!(wait_for(30, || !running(world, slug, &cmdline).is_empty()), "`{cmdline}` runs in the bottle");
    let sent = std::process::Command::new("kill").args(["-s", signal, &child.id().to_string()]).status();
    assert!(sent.expect("kill").success(), "signalled bottle exec");
    let code = exit_code(&mut child, 20);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read stderr");
    (code, stderr)
}

#[test]
fn an_interrupted_exec_stops_its_command_in_the_bottle() {
    require_docker();
    let world = World::new();
    let slug = world.start_detached(&[]);

    let (code, stderr) = interrupt(&world, &slug, "300", "TERM");
    assert_eq!(code, Some(143), "128 + SIGTERM: {stderr}");
    assert!(stderr.contains("interrupted: `sleep` was stopped in the bottle"), "{stderr}");
    assert!(running(&world, &slug, "sleep 300").is_empty(), "sleep no longer runs in the bottle");

    let (code, stderr) = interrupt(&world, &slug, "301", "INT");
    assert_eq!(code, Some(130), "128 + SIGINT: {stderr}");
    assert!(running(&world, &slug, "sleep 301").is_empty(), "sleep no longer runs in the bottle");

    let pid_files = world.ok(&["exec", &slug, "--", "sh", "-c", "ls /tmp | grep -c '^bot-bottle-exec-' || true"]);
    assert_eq!(pid_files.trim(), "1", "only this exec's own PID file is left: {pid_files}");
    let code = world.run(&["exec", &slug, "--", "sh", "-c", "exit 7"]).status.code();
    assert_eq!(code, Some(7), "uninterrupted, the command's own code");
}
