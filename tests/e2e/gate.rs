//! `bottle gate log`: the git gate's audit log of pushes, allowed and
//! refused, with no key in it. (What the gate does is the conformance
//! suite's gate case.)

use bottle_testkit::fixtures::bridge::host_address;
use bottle_testkit::fixtures::repo::SeededRepo;
use bottle_testkit::fixtures::sshd::Sshd;

use crate::harness::{World, require_docker, text, warm_image, write};

#[test]
fn gate_log_prints_allowed_and_refused_pushes() {
    require_docker();
    warm_image();
    let world = World::new();
    let gateway = host_address();
    let sshd = Sshd::start_on(&gateway);

    // The upstream, seeded; the operator's key and known_hosts; a manifest naming it.
    let name = world.path("").file_name().expect("name").to_string_lossy().into_owned();
    let repo = SeededRepo::new(&sshd, "bot-bottle-e2e", &name, &world.path("seed"), &world.path("home"));
    let key = repo.key();
    let manifest = write(&world.path("work"), "bot-bottle.yaml", &repo.manifest(&sshd, &gateway));
    let (slug, _) = world.start_manifest(&manifest, &[]);

    // Clone through the gate, push to an allowed branch and to a refused one.
    let url = repo.url(&sshd, &gateway);
    let sh = |script: &str| world.run(&["exec", &slug, "--", "sh", "-c", script]);
    let cloned = sh(&format!("cd ~ && git clone -q {url} work && cd work && git log --format=%s"));
    assert!(cloned.status.success(), "clone through the gate: {}", text(&cloned.stderr));
    assert_eq!(text(&cloned.stdout).trim(), "initial");
    let pushed = sh(
        "cd ~/work && echo change > file && git add file && git commit -qm agent-work && git push -q origin HEAD:agent/one",
    );
    assert!(pushed.status.success(), "allowed push: {}", text(&pushed.stderr));
    let refused = sh("cd ~/work && git push origin HEAD:main");
    assert!(!refused.status.success(), "a push to a branch outside the policy is refused");

    // The audit log has both pushes, and no key.
    let key_line = key.lines().nth(1).expect("a key body line");
    let log = world.ok(&["gate", "log", &slug]);
    assert!(log.contains("agent/one") && log.contains("allow") && log.contains("deny"), "{log}");
    assert!(!log.contains(key_line), "no key in the audit log");
    world.ok(&["stop", &slug]);
}
