//! One file is the whole tool: `bottle` copied alone into an empty folder
//! starts a bottle whose sidecars run, and the sidecar image runs `bottle`
//! through the loader and libraries it brought, never the image's own.

use std::process::Command;

use crate::harness::{World, containers_of, require_docker, text, warm_image};

#[test]
fn bottle_copied_alone_into_an_empty_folder_runs_a_bottle_with_its_sidecars() {
    require_docker();
    warm_image();
    let world = World::new();
    let alone = world.path("bin");
    std::fs::create_dir(&alone).expect("mkdir");
    let bin = alone.join("bottle");
    std::fs::copy(crate::harness::bottle_bin(), &bin).expect("copy bottle");
    let out = world
        .bottle_at(&bin, &["start", "shell", "--yes", "--detach"])
        // Nothing to find on PATH either: only the system's own programs.
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env_remove(bot_bottle::backend::SIDECAR_ENV)
        .output()
        .expect("run the copied bottle");
    assert!(out.status.success(), "the copied bottle failed: {}", text(&out.stderr));
    let slug = text(&out.stdout).trim().to_string();
    world.track(&slug);
    assert_eq!(std::fs::read_dir(&alone).expect("ls").count(), 1, "the folder still holds only `bottle`");
    assert!(containers_of(&slug).contains(&format!("bb-{slug}-egress")), "the egress sidecar runs");
    let who = world.bottle_at(&bin, &["exec", &slug, "--", "id", "-un"]).output().expect("exec");
    assert_eq!(text(&who.stdout).trim(), "agent", "{}", text(&who.stderr));

    let inspect = docker(&["inspect", "--format", "{{json .Config.Cmd}}", &format!("bb-{slug}-egress")]);
    let cmd: Vec<String> = serde_json::from_str(inspect.trim()).expect("Cmd as JSON");
    assert_eq!(cmd[..3], [bot_bottle::backend::LAUNCHER, "sidecar", "egress"], "the sidecar runs through the launcher");
    world.bottle_at(&bin, &["stop", &slug]).output().expect("stop");
}

#[test]
fn the_sidecar_bundle_runs_in_an_image_that_has_nothing_else() {
    require_docker();
    let world = World::new();
    let slug = world.start_detached(&[]);
    let image = docker(&["inspect", "--format", "{{.Config.Image}}", &format!("bb-{slug}-egress")]);
    let image = image.trim();

    // /opt/bot-bottle of the sidecar image, and nothing else, as an image of its own.
    let holder = docker(&["create", image]);
    let holder = holder.trim();
    let dir = world.path("bundle");
    std::fs::create_dir(&dir).expect("mkdir");
    let tar = dir.join("bundle.tar");
    let copied = Command::new("docker")
        .args(["cp", &format!("{holder}:{}", bot_bottle::backend::BUNDLE_DIR), "-"])
        .stdout(std::fs::File::create(&tar).expect("create tar"))
        .status()
        .expect("docker cp");
    docker(&["rm", holder]);
    assert!(copied.success(), "docker cp of the bundle");
    let scratch = format!("bot-bottle-e2e/bundle-only:{slug}");
    let imported = Command::new("docker")
        .args(["import", "-", &scratch])
        .stdin(std::fs::File::open(&tar).expect("open tar"))
        .output()
        .expect("docker import");
    assert!(imported.status.success(), "docker import: {}", text(&imported.stderr));
    let _untag = Untag(scratch.clone());

    // What the launcher runs, with the bundle now at /bot-bottle.
    let unpacked = Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&dir).status().expect("tar");
    assert!(unpacked.success());
    let launcher = std::fs::read_to_string(dir.join("bot-bottle/run")).expect("the launcher");
    let exec = launcher.lines().find_map(|line| line.strip_prefix("exec ")).expect("an exec line");
    let argv: Vec<String> = exec
        .split_whitespace()
        .filter(|word| *word != "\"$@\"")
        .map(|word| word.replace(bot_bottle::backend::BUNDLE_DIR, "/bot-bottle"))
        .collect();
    assert!(
        argv[0].starts_with("/bot-bottle/"),
        "the launcher runs the bundle's own loader (or a static bottle): {launcher}"
    );
    let listing = Command::new("docker")
        .args(["run", "--rm", "--entrypoint", &argv[0], &scratch])
        .args(&argv[1..])
        .arg("--version")
        .output()
        .expect("docker run");
    assert!(listing.status.success(), "the bundle alone does not run: {}", text(&listing.stderr));
    assert!(text(&listing.stdout).starts_with("bottle "), "{}", text(&listing.stdout));
    let sh = Command::new("docker").args(["run", "--rm", &scratch, "/bin/sh", "-c", "true"]).output().expect("run");
    assert!(!sh.status.success(), "the image really has nothing else (no /bin/sh)");
    world.ok(&["stop", &slug]);
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(out.status.success(), "docker {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Removes the test's own image when dropped.
struct Untag(String);

impl Drop for Untag {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}
