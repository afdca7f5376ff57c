//! A `bottle start` killed with SIGKILL leaves its resources; `cleanup`
//! finds and removes them, and leaves live bottles alone.

use std::time::Duration;

use crate::harness::{World, containers_of, networks_of, require_docker, text, volumes_of, wait_for, warm_image};

#[test]
fn cleanup_removes_what_a_killed_start_left_and_spares_live_bottles() {
    require_docker();
    warm_image();
    let world = World::new();
    let live = world.start_detached(&[]);

    let mut child = world
        .bottle(&["start", "shell", "--yes", "--", "-c", "sleep 600"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let state = world.path("state/bot-bottle");
    let mut slug = String::new();
    let running = wait_for(120, || {
        let Ok(entries) = std::fs::read_dir(&state) else { return false };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name != live {
                slug = name;
            }
        }
        !slug.is_empty()
            && std::process::Command::new("docker")
                .args(["top", &format!("bb-{slug}")])
                .output()
                .is_ok_and(|o| text(&o.stdout).contains("sleep 600"))
    });
    assert!(running, "the attached session did not start");
    world.track(&slug);
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(containers_of(&slug).len(), 3, "SIGKILL leaves the agent, proxy and relay containers behind");
    assert_eq!(networks_of(&slug).len(), 1, "and the sidecars' network");
    assert_eq!(volumes_of(&slug).len(), 1, "and the socket volume");

    let dry = world.run(&["cleanup", "--dry-run"]);
    assert!(dry.status.success());
    assert!(text(&dry.stdout).contains(&slug), "dry run names the orphan: {}", text(&dry.stdout));
    assert!(!text(&dry.stdout).contains(&live), "a live detached bottle is not an orphan");
    assert_eq!(containers_of(&slug).len(), 3, "dry run removes nothing");

    world.ok(&["cleanup", "--yes"]);
    assert!(containers_of(&slug).is_empty(), "cleanup removed the container");
    assert!(networks_of(&slug).is_empty(), "cleanup removed the network");
    assert!(volumes_of(&slug).is_empty(), "cleanup removed the volume");
    assert_eq!(containers_of(&live).len(), 3, "the live bottle still runs");
    world.ok(&["stop", &live]);
}
