//! `bottle exec` interrupted without a terminal (SIGTERM, SIGINT to the
//! `bottle` process): it exits 128 + the signal, and the command it ran is
//! stopped inside the bottle too, its PID file gone.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{World, require_docker, text, wait_for};

/// The agent container of bottle `slug`, by its labels.
fn agent_container(slug: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("label=dev.bot-bottle.slug={slug}")])
        .args(["--filter", "label=dev.bot-bottle.role=agent"])
        .output()
        .expect("docker ps");
    let ids: Vec<String> = text(&out.stdout).split_whitespace().map(str::to_string).collect();
    assert_eq!(ids.len(), 1, "one agent container for {slug}: {ids:?}");
    ids[0].clone()
}

/// The PIDs in bottle `slug` whose command line is exactly `cmdline`, as
/// `docker exec` sees them: not through `bottle exec`, the code under test.
/// (The `shell` image has no `ps`; this is what `ps -eo pid,args` reads.)
fn running(slug: &str, cmdline: &str) -> Vec<String> {
    let script = format!(
        "for p in /proc/[0-9]*; do [ \"$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\" = '{cmdline} ' ] && echo ${{p#/proc/}}; \
         done; true"
    );
    let out = std::process::Command::new("docker")
        .args(["exec", &agent_container(slug), "sh", "-c", &script])
        .output()
        .expect("docker exec");
    assert!(out.status.success(), "docker exec: {}", text(&out.stderr));
    text(&out.stdout).split_whitespace().map(str::to_string).collect()
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

/// Run `argv` through `bottle exec`, signal the `bottle` process with
/// `signal` once `cmdline` runs in the bottle, and return its exit code and
/// stderr.
fn interrupt(world: &World, slug: &str, argv: &[&str], cmdline: &str, signal: &str) -> (Option<i32>, String) {
    let mut args = vec!["exec", slug, "--"];
    args.extend_from_slice(argv);
    let mut child =
        world.bottle(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn bottle exec");
    assert!(wait_for(30, || !running(slug, cmdline).is_empty()), "`{cmdline}` runs in the bottle");
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

    // SIGINT (Ctrl-C without a terminal): a shell, its foreground child and
    // a background child that ignores SIGINT (as in any script) all go.
    let script = "sleep 303 & sleep 301; wait";
    let (code, stderr) = interrupt(&world, &slug, &["sh", "-c", script], "sleep 301", "INT");
    assert_eq!(code, Some(130), "128 + SIGINT: {stderr}");
    assert!(stderr.contains("interrupted: `sh` was stopped in the bottle"), "{stderr}");
    for gone in [format!("sh -c {script}"), "sleep 301".into(), "sleep 303".into()] {
        assert!(running(&slug, &gone).is_empty(), "`{gone}` no longer runs in the bottle");
    }

    let (code, stderr) = interrupt(&world, &slug, &["sleep", "300"], "sleep 300", "TERM");
    assert_eq!(code, Some(143), "128 + SIGTERM: {stderr}");
    assert!(stderr.contains("interrupted: `sleep` was stopped in the bottle"), "{stderr}");
    assert!(running(&slug, "sleep 300").is_empty(), "sleep no longer runs in the bottle");

    let pid_files = std::process::Command::new("docker")
        .args(["exec", &agent_container(&slug), "sh", "-c", "ls /tmp | grep -c '^bot-bottle-exec-' || true"])
        .output()
        .expect("docker exec");
    assert_eq!(text(&pid_files.stdout).trim(), "0", "no PID file is left in /tmp");
    let code = world.run(&["exec", &slug, "--", "sh", "-c", "exit 7"]).status.code();
    assert_eq!(code, Some(7), "uninterrupted, the command's own code");
}
