//! `bottle gate log`: the git gate's audit log of pushes, allowed and
//! refused, with no key in it. (What the gate does is the conformance
//! suite's gate case.)

use std::path::Path;
use std::process::Command;

use bottle_testkit::fixtures::bridge::host_address;
use bottle_testkit::fixtures::sshd::Sshd;

use crate::harness::{World, require_docker, text, warm_image, write};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=e2e", "-c", "user.email=e2e@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

#[test]
fn gate_log_prints_allowed_and_refused_pushes() {
    require_docker();
    warm_image();
    let world = World::new();
    let gateway = host_address();
    let sshd = Sshd::start_on(&gateway);

    // The upstream: a bare repo under the ssh user's home (manifest repos are home-relative).
    let rel = format!(".cache/bot-bottle-e2e/{}", world.path("").file_name().expect("name").to_string_lossy());
    let upstream = sshd.home().join(&rel).join("project.git");
    std::fs::create_dir_all(&upstream).expect("mkdir");
    let _remove = RemoveOnDrop(upstream.parent().expect("parent").to_path_buf());
    git(&upstream, &["init", "--bare", "-q", "-b", "main"]);
    let seed = world.path("seed");
    std::fs::create_dir_all(&seed).expect("mkdir");
    git(&seed, &["init", "-q", "-b", "main"]);
    std::fs::write(seed.join("README"), "upstream\n").expect("write");
    git(&seed, &["add", "."]);
    git(&seed, &["commit", "-qm", "initial"]);
    git(&seed, &["push", "-q", upstream.to_str().expect("utf8"), "main"]);
    // The operator's key and known_hosts, and a manifest naming the upstream.
    let key = sshd.client_key();
    let key_path = write(&world.path("home"), "deploy_key", &key);
    std::fs::create_dir_all(world.path("home/.ssh")).expect("mkdir");
    write(&world.path("home/.ssh"), "known_hosts", &sshd.known_hosts_line());
    let manifest = write(
        &world.path("work"),
        "bot-bottle.yaml",
        &format!(
            "agents:\n  shell:\n    bottle: b\n    git_identity: {{ name: Agent, email: agent@example.com }}\n\
             bottles:\n  b:\n    agent_provider:\n      template: shell\n    git:\n      - Name: project\n        \
             Host: \"{gateway}\"\n        Port: {port}\n        User: {user}\n        Repo: {rel}/project.git\n        \
             IdentityFile: {key}\n        push: {{ branches: [\"agent/*\"] }}\n",
            port = sshd.port(),
            user = sshd.user(),
            key = key_path.display(),
        ),
    );
    let (slug, _) = world.start_manifest(&manifest, &[]);

    // Clone through the gate, push to an allowed branch and to a refused one.
    let url = format!("ssh://{}@{gateway}:{}/{rel}/project.git", sshd.user(), sshd.port());
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

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // And the folder of all such upstreams, once no other test has one there.
        if let Some(parent) = self.0.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}
