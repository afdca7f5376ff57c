//! The embedding example runs: it starts a real Docker bottle of the
//! embedded default manifest, runs a command in it and removes it, leaving
//! no container, network, volume or state behind.

use std::path::PathBuf;
use std::process::Command;

/// `examples/embed`, which `cargo test` builds beside this test.
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary");
    let target = exe.parent().and_then(|deps| deps.parent()).expect("target/debug");
    let example = target.join("examples").join("embed");
    assert!(example.is_file(), "{} is missing: `cargo test -p bot-bottle` builds it", example.display());
    example
}

fn docker_lines(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("this test needs Docker (`cargo xtask setup` installs and starts it): {e}"));
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

#[test]
fn the_embed_example_starts_uses_and_removes_a_real_bottle() {
    let version = Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output();
    assert!(
        version.is_ok_and(|o| o.status.success()),
        "this test needs a running Docker Engine: run `cargo xtask setup` (installs docker.io, starts dockerd)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(example())
        .current_dir(dir.path())
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .env("HOME", dir.path())
        .env_remove("BOT_BOTTLE_MANIFEST")
        .env_remove("BOT_BOTTLE_BACKEND")
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the example failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let mut lines = stdout.lines();
    let ran = lines.next().expect("the command's output");
    let slug = lines.next().expect("the slug");
    assert!(slug.starts_with("shell-"), "{stdout}");
    // The bottle's host name is its slug.
    assert_eq!(ran, format!("agent in {slug}"), "the command ran in the bottle as its agent: {stdout}");
    let label = format!("label=dev.bot-bottle.slug={slug}");
    assert!(docker_lines(&["ps", "-aq", "--filter", &label]).is_empty(), "no container left");
    assert!(docker_lines(&["network", "ls", "-q", "--filter", &label]).is_empty(), "no network left");
    assert!(docker_lines(&["volume", "ls", "-q", "--filter", &label]).is_empty(), "no volume left");
    let state = dir.path().join("state/bot-bottle").join(slug);
    assert!(state.join("metadata.json").is_file(), "its identity stays, for resume");
}
