//! Bounds a hostile agent cannot push past: the state that comes out at
//! teardown is bounded (a 2 GiB sparse file is left behind, without the
//! process tearing the bottle down holding it in memory) and clean (no
//! setuid bit, no link out of the tree); a process over the bottle's memory
//! limit is killed while the bottle and its proxy stay up; processes over
//! its process limit are refused.

use std::os::unix::fs::PermissionsExt as _;

use crate::{World, probe};

fn limited(world: &World, resources: &str) -> std::sync::Arc<bottle_core::Manifest> {
    world.shell_manifest("limits.yaml", &format!("    resources: {{ {resources} }}\n"))
}

/// The history file, as the state folder of `slug` saves it.
fn saved_history(world: &World, slug: &str) -> std::path::PathBuf {
    world.state().bottle_dir(slug).join("resume/home/agent/.bash_history")
}

pub(super) async fn saved_state_is_bounded_and_clean(world: &World) {
    let mut spec = world.spec(limited(world, "state: 1m"));
    spec.detached = true;
    let session = world.prepare(&spec, &[]).await;
    let summary = session.summary();
    assert!(summary.contains("saved state at most 1 MiB"), "the summary shows the cap: {summary}");

    // Over the cap: a 2 GiB sparse history. Stopping it (in a process of its
    // own, measured) leaves it, says so, stays small, removes the bottle.
    let running = session.launch(std::future::pending()).await.expect("launch");
    probe::ok(running.bottle(), "truncate -s 2G /home/agent/.bash_history").await;
    let slug = running.detach();
    let mut stop = world.stop_elsewhere(&slug);
    let (status, peak) = stop.wait_measured();
    let notes = stop.notes();
    assert!(status.success(), "stop failed: {status}");
    assert!(notes.iter().any(|n| n.contains("/home/agent/.bash_history was not saved")), "{notes:?}");
    assert!(peak < 200 << 20, "stop stayed within its memory bound: peak {} MiB", peak >> 20);
    assert_eq!(world.resources(&slug), Vec::<String>::new(), "the bottle is removed all the same");
    assert!(!saved_history(world, &slug).exists(), "nothing of it was kept");

    // Clean: a setuid, world-writable history comes out owner-only.
    let running = world.start(&world.spec(limited(world, "state: 1m")), &[]).await;
    probe::ok(running.bottle(), "echo ls > ~/.bash_history && chmod 4777 ~/.bash_history").await;
    let slug = running.slug().to_string();
    assert_eq!(running.teardown().await.expect("teardown"), Vec::<String>::new());
    let saved = saved_history(world, &slug);
    let mode = std::fs::metadata(&saved).expect("saved").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "no setuid bit, owner only");
    assert_eq!(std::fs::read_to_string(&saved).expect("read"), "ls\n");
    let dir_mode = std::fs::metadata(world.state().bottle_dir(&slug)).expect("dir").permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700, "the state dir is the operator's alone");

    // A link out of the tree stays behind, and the operator is told.
    let running = world.start(&world.spec(limited(world, "state: 1m")), &[]).await;
    probe::ok(running.bottle(), "ln -sf /etc/hostname /home/agent/.bash_history").await;
    let slug = running.slug().to_string();
    let notes = running.teardown().await.expect("teardown");
    assert!(std::fs::symlink_metadata(saved_history(world, &slug)).is_err(), "a link is not copied out");
    assert!(notes.iter().any(|n| n.contains("a link")), "and the operator is told: {notes:?}");
}

pub(super) async fn memory_over_the_limit_is_killed(world: &World) {
    let session = world.prepare(&world.spec(limited(world, "memory: 64m, cpus: 1, pids: 256")), &[]).await;
    let summary = session.summary();
    assert!(summary.contains("memory 64 MiB"), "the summary shows the limit: {summary}");
    let running = session.launch(std::future::pending()).await.expect("launch");
    let bottle = running.bottle();
    // `tail` keeps the one endless line of /dev/zero in memory.
    let hog = probe::sh(bottle, "head -c 400M /dev/zero | tail >/dev/null").await;
    assert_eq!(hog.exit_code, 137, "the process over the limit is killed: {}", hog.stderr);
    assert_eq!(probe::ok(bottle, "echo alive").await.trim(), "alive", "the bottle stays up");
    let proxy = probe::sh(bottle, "curl -s -o /dev/null -w '%{http_connect}' https://example.com/").await;
    assert_eq!(proxy.stdout, "403", "and its proxy still answers");
    let slug = running.slug().to_string();
    running.teardown().await.expect("teardown");
    assert_eq!(world.resources(&slug), Vec::<String>::new());
}

pub(super) async fn processes_over_the_limit_are_refused(world: &World) {
    let running = world.start(&world.spec(limited(world, "pids: 64")), &[]).await;
    let bottle = running.bottle();
    // Up to 200 children, forked by perl (a shell dies at its first failed fork), then killed.
    let script = "perl -e 'my @kids; for (1..200) { my $p = fork; last unless defined $p; \
                  if (!$p) { sleep 30; exit 0 } push @kids, $p } print scalar(@kids), \"\\n\"; \
                  kill \"KILL\", @kids; 1 while wait != -1'";
    let out = probe::sh(bottle, script).await;
    let forked: u32 = out.stdout.trim().parse().unwrap_or_else(|_| panic!("a count: {out:?}"));
    assert!(forked < 64, "a fork past the limit of 64 processes is refused: {forked} children ran");
    assert!(forked > 32, "and the limit is the one set, not lower: {forked} children ran");
    assert_eq!(probe::ok(bottle, "echo alive").await.trim(), "alive", "the bottle stays usable");
    let slug = running.slug().to_string();
    running.teardown().await.expect("teardown");
    assert_eq!(world.resources(&slug), Vec::<String>::new());
}
