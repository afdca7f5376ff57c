//! `bottle cp`: files and folders in and out of a running bottle with their
//! modification times, a guest path relative to the agent's workdir, an
//! existing folder as the destination; a guest path that is not there, one
//! over `--limit`, one climbing out of the workdir, an unknown bottle or a
//! missing host file is one line, exit 1, and nothing on the host.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use crate::harness::{World, require_docker, text};

/// 2021-01-01T00:00:00Z.
const HOST_TIME: u64 = 1_609_459_200;
/// 2020-02-02T00:00:00Z.
const GUEST_TIME: u64 = 1_580_601_600;

fn set_mtime(path: &Path, secs: u64) {
    let file = std::fs::File::options().write(true).open(path).expect("open");
    file.set_modified(UNIX_EPOCH + Duration::from_secs(secs)).expect("set the time");
}

fn mtime(path: &Path) -> u64 {
    let modified = std::fs::metadata(path).expect("stat").modified().expect("mtime");
    modified.duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// A world with a detached bottle, and the bottle's slug.
fn detached() -> (World, String) {
    require_docker();
    let world = World::new();
    let slug = world.start_detached(&[]);
    (world, slug)
}

#[test]
fn files_and_folders_go_in_and_out_with_their_times() {
    let (world, slug) = detached();
    let host = world.path("work");

    // In: a file to a relative path (the agent's workdir), its time kept.
    std::fs::write(host.join("notes.txt"), "from the host\n").expect("write");
    set_mtime(&host.join("notes.txt"), HOST_TIME);
    world.ok(&["cp", "notes.txt", &format!("{slug}:notes.txt")]);
    let inside = world.ok(&["exec", &slug, "--", "stat", "-c", "%Y %U", "/home/agent/workspace/notes.txt"]);
    assert_eq!(inside.trim(), format!("{HOST_TIME} agent"), "relative to the workdir, the agent's, time kept");

    // In: a folder into an existing guest folder, under its own name.
    std::fs::create_dir_all(host.join("data/sub")).expect("mkdir");
    std::fs::write(host.join("data/sub/deep.txt"), "deep\n").expect("write");
    set_mtime(&host.join("data/sub/deep.txt"), HOST_TIME);
    let copied = world.run(&["cp", "data", &format!("{slug}:/tmp")]);
    assert!(copied.status.success(), "{}", text(&copied.stderr));
    assert!(text(&copied.stderr).contains(&format!("{slug}:/tmp/data")), "says where: {}", text(&copied.stderr));
    let deep =
        world.ok(&["exec", &slug, "--", "sh", "-c", "cat /tmp/data/sub/deep.txt; stat -c %Y /tmp/data/sub/deep.txt"]);
    assert_eq!(deep, format!("deep\n{HOST_TIME}\n"));

    // Out: a file touched inside, to an existing host folder, its time kept.
    world.ok(&["exec", &slug, "--", "touch", "-d", "2020-02-02T00:00:00Z", "notes.txt"]);
    std::fs::create_dir_all(host.join("out")).expect("mkdir");
    world.ok(&["cp", &format!("{slug}:notes.txt"), "out"]);
    assert_eq!(std::fs::read_to_string(host.join("out/notes.txt")).expect("copied"), "from the host\n");
    assert_eq!(mtime(&host.join("out/notes.txt")), GUEST_TIME, "the guest's time comes out with it");

    // Out: a folder by absolute path to a new host name, with a link left behind and said so.
    world.ok(&["exec", &slug, "--", "ln", "-s", "/etc/passwd", "/tmp/data/link"]);
    let out = world.run(&["cp", &format!("{slug}:/tmp/data"), "out/data-copy"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(host.join("out/data-copy/sub/deep.txt")).expect("copied"), "deep\n");
    assert_eq!(mtime(&host.join("out/data-copy/sub/deep.txt")), HOST_TIME, "times survive the round trip");
    assert!(std::fs::symlink_metadata(host.join("out/data-copy/link")).is_err(), "links stay in the bottle");
    let said = text(&out.stderr);
    assert!(said.contains("left in the bottle: data/link (a link)"), "says what was skipped: {said}");

    // Out again to the same place: nothing on the host is overwritten.
    let again = world.run(&["cp", &format!("{slug}:notes.txt"), "out"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("exists on the host"), "{}", text(&again.stderr));
}

#[test]
fn a_missing_path_or_one_over_the_limit_is_one_line_and_leaves_nothing() {
    let (world, slug) = detached();
    let host = world.path("work");

    let missing = world.run(&["cp", &format!("{slug}:no/such/file"), "got"]);
    let err = text(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1), "{err}");
    assert!(err.contains("/home/agent/workspace/no/such/file") && err.contains("nothing copied"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!host.join("got").exists());

    world.ok(&["exec", &slug, "--", "sh", "-c", "head -c 100000 /dev/zero > big.bin"]);
    let over = world.run(&["cp", "--limit", "64k", &format!("{slug}:big.bin"), "big.bin"]);
    let err = text(&over.stderr);
    assert_eq!(over.status.code(), Some(1), "{err}");
    assert!(err.contains("over the 64 KiB") && err.contains("nothing copied"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let left: Vec<String> = std::fs::read_dir(&host)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "nothing on the host, not even a partial file: {left:?}");

    let fits = world.run(&["cp", "--limit", "1m", &format!("{slug}:big.bin"), "big.bin"]);
    assert!(fits.status.success(), "under the limit it copies: {}", text(&fits.stderr));
    assert_eq!(std::fs::metadata(host.join("big.bin")).expect("copied").len(), 100_000);
}

#[test]
fn bad_slugs_escaping_paths_and_missing_sources_are_one_line_each() {
    let (world, slug) = detached();
    let host = world.path("work");
    std::fs::write(host.join("notes.txt"), "x\n").expect("write");

    let fails = |args: &[&str], says: &str| {
        let out = world.run(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?} says `{says}`: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    };
    fails(&["cp", "notes.txt", "nosuch-0000:notes.txt"], "no running bottle `nosuch-0000`");
    fails(&["cp", "nosuch-0000:notes.txt", "out.txt"], "no running bottle `nosuch-0000`");
    fails(&["cp", "notes.txt", "other.txt"], "neither `notes.txt` nor `other.txt` is in a bottle");
    fails(&["cp", &format!("{slug}:a"), &format!("{slug}:b")], "both in a bottle");
    fails(&["cp", "missing.txt", &format!("{slug}:x")], "it is not on the host");
    fails(&["cp", &format!("{slug}:../.bashrc"), "bashrc"], "climbs out of the agent's workdir /home/agent/workspace");
    fails(&["cp", "notes.txt", &format!("{slug}:src/../../x")], "climbs out of the agent's workdir");
    fails(&["cp", "notes.txt", &format!("{slug}:/")], "the bottle's root folder");

    let left: Vec<String> = std::fs::read_dir(&host)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["notes.txt"], "nothing new on the host");
    let inside = world.ok(&["exec", &slug, "--", "sh", "-c", "ls -d /home/agent/x /home/agent/workspace/x 2>&1; true"]);
    assert_eq!(inside.matches("No such file").count(), 2, "nothing new in the bottle: {inside}");
}
