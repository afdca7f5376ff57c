//! The git gate on Docker: the bottle clones and pushes through the gate by
//! the upstream's own URL; the push policy holds; the key never enters the
//! bottle; every push is audited.

use std::path::Path;
use std::process::Command;

use crate::conformance::{Under, for_each_backend};
use crate::harness::{find_in_bottle, text, warm_image, write};
#[allow(dead_code, reason = "the fixture serves two test binaries; this one uses part of it")]
#[path = "../../crates/bottle-sidecar/tests/it/gitgate/sshd.rs"]
pub(crate) mod sshd;

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

for_each_backend!(pushes_leave_only_through_the_gate: gate_on_docker, gate_on_smolmachines);

/// Pushes leave only through the gate, and only where the policy allows.
fn pushes_leave_only_through_the_gate(under: &dyn Under) {
    warm_image();
    let world = under.world();
    let gateway = crate::bridge::host_address();
    let sshd = sshd::Sshd::start_on(&gateway);

    // The upstream: a bare repo under the ssh user's home (manifest repos are home-relative).
    let home = std::env::var("HOME").expect("HOME");
    let rel = format!(".cache/bot-bottle-e2e/{}", world.path("").file_name().expect("name").to_string_lossy());
    let upstream = Path::new(&home).join(&rel).join("project.git");
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
    // The upstream itself refuses one branch, whatever the gate allows.
    let hook = upstream.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\nwhile read old new ref; do\n  if [ \"$ref\" = refs/heads/agent/blocked ]; then echo 'upstream says no' >&2; exit 1; fi\ndone\n",
    )
    .expect("hook");
    let mut perms = std::fs::metadata(&hook).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&hook, perms).expect("chmod");

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
    let (slug, summary) = under.start(&manifest, &[]);
    assert!(summary.contains("project →") && summary.contains("pinned from ~/.ssh/known_hosts"), "{summary}");

    // Clone by the upstream's own URL, commit, push to an allowed branch: it lands upstream.
    let url = format!("ssh://{}@{gateway}:{}/{rel}/project.git", sshd.user(), sshd.port());
    let sh = |script: &str| world.run(&["exec", &slug, "--", "sh", "-c", script]);
    let cloned = sh(&format!("cd ~ && git clone -q {url} work && cd work && git log --format=%s"));
    assert!(cloned.status.success(), "clone through the gate: {}", text(&cloned.stderr));
    assert_eq!(text(&cloned.stdout).trim(), "initial");
    let pushed = sh(
        "cd ~/work && echo change > file && git add file && git commit -qm agent-work && git push -q origin HEAD:agent/one",
    );
    assert!(pushed.status.success(), "allowed push: {}", text(&pushed.stderr));
    let landed = git(&upstream, &["log", "--format=%s %an", "-1", "agent/one"]);
    assert_eq!(landed, "agent-work Agent", "the push landed upstream with the agent's identity");

    // A branch outside the policy is refused with a reason, and the upstream is unchanged.
    let refused = sh("cd ~/work && git push origin HEAD:main");
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("refused"), "{}", text(&refused.stderr));
    assert_eq!(git(&upstream, &["log", "--format=%s", "-1", "main"]), "initial");
    let forced = sh("cd ~/work && git commit -q --amend -m rewritten && git push origin +HEAD:agent/one");
    assert!(!forced.status.success(), "force-push refused");
    assert_eq!(git(&upstream, &["log", "--format=%s", "-1", "agent/one"]), "agent-work");
    let deleted = sh("cd ~/work && git push origin :agent/one");
    assert!(!deleted.status.success(), "delete refused");
    assert_eq!(git(&upstream, &["log", "--format=%s", "-1", "agent/one"]), "agent-work");
    let rejected = sh("cd ~/work && git push origin HEAD:agent/blocked");
    assert!(!rejected.status.success(), "a push the upstream rejects fails for the agent");
    assert!(text(&rejected.stderr).contains("upstream says no"), "{}", text(&rejected.stderr));
    let blocked =
        Command::new("git").args(["rev-parse", "--verify", "-q", "agent/blocked"]).current_dir(&upstream).output();
    assert!(!blocked.expect("git").status.success(), "the upstream did not take it");

    // The key is nowhere in the bottle, and the audit log has both pushes.
    let key_line = key.lines().nth(1).expect("a key body line");
    assert_eq!(find_in_bottle(world, &slug, key_line), Vec::<String>::new(), "the push key is nowhere in the bottle");
    let log = world.ok(&["gate", "log", &slug]);
    assert!(log.contains("agent/one") && log.contains("allow") && log.contains("deny"), "{log}");
    assert!(!log.contains(key_line), "no key in the audit log");
    world.ok(&["stop", &slug]);
    under.assert_gone(&slug);
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
