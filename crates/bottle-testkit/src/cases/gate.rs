//! The git gate: the bottle clones and pushes through the gate by the
//! upstream's own URL, to a real sshd upstream on the host; the push policy
//! holds (branches, no force-push, no delete), a push the upstream rejects
//! fails for the agent too; the key never enters the bottle; every push is
//! audited.

use std::process::Command;

use bottle_core::Sidecar;

use crate::fixtures::repo::{SeededRepo, git};
use crate::fixtures::sshd::Sshd;

use crate::{World, probe};

pub(super) async fn gate(world: &World) {
    let gateway = world.target().host_address();
    let sshd = Sshd::start_on(&gateway);

    // The upstream, seeded; the operator's key and known_hosts; a manifest naming it.
    let name = world.dir().file_name().expect("name").to_string_lossy().into_owned();
    let repo = SeededRepo::new(&sshd, "bot-bottle-testkit", &name, &world.path("seed"), &world.path("home"));
    let upstream = repo.path();
    // The upstream itself refuses one branch, whatever the gate allows.
    let hook = upstream.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\nwhile read old new ref; do\n  if [ \"$ref\" = refs/heads/agent/blocked ]; then echo 'upstream says no' >&2; exit 1; fi\ndone\n",
    )
    .expect("hook");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let key = repo.key();
    let manifest = world.manifest("gate.yaml", &repo.manifest(&sshd, &gateway));
    let session = world.prepare(&world.spec(manifest), &[]).await;
    let summary = session.summary();
    assert!(summary.contains("project →") && summary.contains("pinned from ~/.ssh/known_hosts"), "{summary}");
    let running = session.launch(std::future::pending()).await.expect("launch");
    let slug = running.slug().to_string();
    let bottle = running.bottle();

    // Clone by the upstream's own URL, commit, push to an allowed branch: it lands upstream.
    let url = repo.url(&sshd, &gateway);
    let cloned = probe::sh(bottle, &format!("cd ~ && git clone -q {url} work && cd work && git log --format=%s")).await;
    assert!(cloned.success(), "clone through the gate: {}", cloned.stderr);
    assert_eq!(cloned.stdout.trim(), "initial");
    let pushed = probe::sh(
        bottle,
        "cd ~/work && echo change > file && git add file && git commit -qm agent-work && git push -q origin HEAD:agent/one",
    )
    .await;
    assert!(pushed.success(), "allowed push: {}", pushed.stderr);
    let landed = git(upstream, &["log", "--format=%s %an", "-1", "agent/one"]);
    assert_eq!(landed, "agent-work Agent", "the push landed upstream with the agent's identity");

    // A branch outside the policy is refused with a reason, and the upstream is unchanged.
    let refused = probe::sh(bottle, "cd ~/work && git push origin HEAD:main").await;
    assert!(!refused.success());
    assert!(refused.stderr.contains("refused"), "{}", refused.stderr);
    assert_eq!(git(upstream, &["log", "--format=%s", "-1", "main"]), "initial");
    let forced =
        probe::sh(bottle, "cd ~/work && git commit -q --amend -m rewritten && git push origin +HEAD:agent/one").await;
    assert!(!forced.success(), "force-push refused");
    assert_eq!(git(upstream, &["log", "--format=%s", "-1", "agent/one"]), "agent-work");
    let deleted = probe::sh(bottle, "cd ~/work && git push origin :agent/one").await;
    assert!(!deleted.success(), "delete refused");
    assert_eq!(git(upstream, &["log", "--format=%s", "-1", "agent/one"]), "agent-work");
    let rejected = probe::sh(bottle, "cd ~/work && git push origin HEAD:agent/blocked").await;
    assert!(!rejected.success(), "a push the upstream rejects fails for the agent");
    assert!(rejected.stderr.contains("upstream says no"), "{}", rejected.stderr);
    let blocked =
        Command::new("git").args(["rev-parse", "--verify", "-q", "agent/blocked"]).current_dir(upstream).output();
    assert!(!blocked.expect("git").status.success(), "the upstream did not take it");

    // The key is nowhere in the bottle, and the audit log has both pushes.
    let key_line = key.lines().nth(1).expect("a key body line");
    assert_eq!(probe::find(bottle, key_line).await, Vec::<String>::new(), "the push key is nowhere in the bottle");
    let mut log = Vec::new();
    bottle.sidecar_log(Sidecar::GitGate, false, &mut log).await.expect("the gate's audit log");
    let log = String::from_utf8(log).expect("utf8");
    assert!(log.contains("agent/one") && log.contains("allow") && log.contains("deny"), "{log}");
    assert!(!log.contains(key_line), "no key in the audit log");
    running.teardown().await.expect("teardown");
    assert_eq!(world.resources(&slug), Vec::<String>::new(), "nothing of the bottle is left");
}
