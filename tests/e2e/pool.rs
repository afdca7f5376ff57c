//! Warm pools through the CLI against the real Docker Engine: `bottle pool
//! fill` makes ready bottles, each with its own CA and token; `bottle start`
//! claims one (the workspace copied in, the label recorded) and fills the
//! pool again in the background; a changed manifest makes members stale,
//! never handed out; `drain` leaves nothing; `cleanup` removes an orphaned
//! member and spares waiting ones.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{World, containers_of, networks_of, text, wait_for, warm_image};

/// A manifest `pool.yaml` with agent `shell` pooled by `size`, its bottle
/// having the lines `bottle` (indented under it).
fn pooled_manifest(world: &World, size: u32, bottle: &str) -> PathBuf {
    let yaml = format!(
        "agents:\n  shell:\n    bottle: b\n    pool: {{ size: {size} }}\nbottles:\n  b:\n    agent_provider:\n      \
         template: shell\n{bottle}"
    );
    crate::harness::write(&world.path("work"), "pool.yaml", &yaml)
}

fn with_manifest<'a>(manifest: &'a Path, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--manifest", manifest.to_str().expect("utf8 path")];
    all.extend_from_slice(args);
    all
}

/// `bottle pool fill`'s slugs, each tracked for removal.
fn fill(world: &World, manifest: &Path) -> Vec<String> {
    let out = world.ok(&with_manifest(manifest, &["pool", "fill"]));
    let slugs: Vec<String> = out.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
    for slug in &slugs {
        world.track(slug);
    }
    slugs
}

/// `bottle pool status --json` of agent `shell`.
fn status(world: &World, manifest: &Path) -> serde_json::Value {
    let out = world.ok(&with_manifest(manifest, &["pool", "status", "--json"]));
    let all: serde_json::Value = serde_json::from_str(&out).expect("pool status JSON");
    all.as_array().and_then(|a| a.first()).cloned().expect("the shell pool")
}

fn slugs_of(value: &serde_json::Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
}

/// `docker exec bb-SLUG sh -c SCRIPT` as root, its stdout.
fn in_bottle(slug: &str, script: &str) -> String {
    let out = Command::new("docker")
        .args(["exec", "-u", "root", &format!("bb-{slug}"), "sh", "-c", script])
        .output()
        .expect("docker exec");
    assert!(out.status.success(), "docker exec in {slug}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Whether process `pid` runs (and is no zombie).
fn runs(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .is_ok_and(|s| !s.lines().any(|l| l.starts_with("State:") && l.contains('Z')))
}

#[test]
fn fill_makes_members_of_their_own_and_a_start_claims_one_with_the_workspace_then_drain_leaves_nothing() {
    warm_image();
    let world = World::new();
    let manifest = pooled_manifest(&world, 2, "");
    let members = fill(&world, &manifest);
    assert_eq!(members.len(), 2, "fill makes the pool's size");
    let ready = status(&world, &manifest);
    assert_eq!(slugs_of(&ready["ready"]).len(), 2, "{ready}");
    for slug in &members {
        assert!(!containers_of(slug).is_empty(), "member {slug} runs");
    }

    // Each member has secrets of its own: its CA and its client token.
    let ca = |slug: &str| in_bottle(slug, "cat /usr/local/share/ca-certificates/bot-bottle-ca.crt");
    let proxy = |slug: &str| in_bottle(slug, "printenv HTTPS_PROXY");
    assert!(ca(&members[0]).contains("BEGIN CERTIFICATE"));
    assert_ne!(ca(&members[0]), ca(&members[1]), "no two members share a CA");
    assert_ne!(proxy(&members[0]), proxy(&members[1]), "no two members share a client token");
    assert!(!world.run(&["exec", &members[0], "--", "tmux", "ls"]).status.success(), "no session before the claim");

    // Waiting members are hidden from `list active` unless asked for.
    let listed = world.ok(&with_manifest(&manifest, &["list", "active", "--json"]));
    assert!(members.iter().all(|m| !listed.contains(m.as_str())), "{listed}");
    let with_pool = world.ok(&with_manifest(&manifest, &["list", "active", "--json", "--pool"]));
    assert!(members.iter().all(|m| with_pool.contains(m.as_str())), "{with_pool}");
    assert!(with_pool.contains("\"waiting\""), "{with_pool}");

    // A start claims one: the workspace copied in, the label recorded.
    std::fs::write(world.path("work").join("notes.txt"), "from the host\n").expect("write");
    let mut start = world.bottle(&with_manifest(
        &manifest,
        &["start", "shell", "--yes", "--detach", "--copy-cwd", "--label", "claimed one"],
    ));
    let out = start.output().expect("bottle start");
    assert!(out.status.success(), "start: {}", text(&out.stderr));
    let claimed = text(&out.stdout).trim().to_string();
    world.track(&claimed);
    assert!(members.contains(&claimed), "the start handed out a member: {claimed} of {members:?}");
    assert!(text(&out.stderr).contains("claimed from the warm pool"), "{}", text(&out.stderr));
    let copied = world.ok(&["exec", &claimed, "--", "cat", "notes.txt"]);
    assert_eq!(copied, "from the host\n", "the workspace was copied in at the claim");
    let listed = world.ok(&with_manifest(&manifest, &["list", "active", "--json"]));
    let active: serde_json::Value = serde_json::from_str(&listed).expect("json");
    let entry = active.as_array().into_iter().flatten().find(|a| a["slug"] == claimed.as_str()).expect("listed");
    assert_eq!((entry["label"].as_str(), entry["pool"].as_str()), (Some("claimed one"), Some("claimed")));
    assert!(world.ok(&["exec", &claimed, "--", "tmux", "ls"]).contains("agent:"), "the session runs");

    // The pool is filled again in the background, by a process of its own.
    let mut filler = None;
    let refilled = wait_for(180, || {
        let now = status(&world, &manifest);
        for slug in slugs_of(&now["ready"]).into_iter().chain(slugs_of(&now["making"])) {
            world.track(&slug);
        }
        filler = filler.or(now["filling"].as_u64());
        slugs_of(&now["ready"]).len() == 2 && !slugs_of(&now["ready"]).contains(&claimed)
    });
    assert!(refilled, "the pool was filled again in the background: {}", status(&world, &manifest));

    // Drain removes every waiting member and leaves no fill running; the claimed bottle stays.
    let waiting = slugs_of(&status(&world, &manifest)["ready"]);
    let drained = world.ok(&with_manifest(&manifest, &["pool", "drain"]));
    for slug in &waiting {
        assert!(drained.contains(slug.as_str()), "{slug} drained: {drained}");
        assert!(containers_of(slug).is_empty() && networks_of(slug).is_empty(), "nothing of {slug} left");
        assert!(!world.path("state").join("bot-bottle").join(slug).exists(), "{slug}'s state folder removed");
    }
    if let Some(pid) = filler {
        assert!(!runs(pid), "the background fill (pid {pid}) is gone");
    }
    let after = status(&world, &manifest);
    assert!(slugs_of(&after["ready"]).is_empty() && after["filling"].is_null(), "{after}");
    assert!(!containers_of(&claimed).is_empty(), "a claimed bottle is not the pool's to drain");
    world.ok(&["stop", "--yes", &claimed]);
}

#[test]
fn a_changed_manifest_makes_members_stale_never_handed_out_and_fill_replaces_them() {
    warm_image();
    let world = World::new();
    let manifest = pooled_manifest(&world, 1, "");
    let old = fill(&world, &manifest);
    assert_eq!(old.len(), 1);

    let manifest = pooled_manifest(&world, 1, "    env:\n      MOOD: changed\n");
    let now = status(&world, &manifest);
    assert_eq!(slugs_of(&now["stale"]), old, "{now}");
    assert!(slugs_of(&now["ready"]).is_empty(), "{now}");

    let out = world.run(&with_manifest(&manifest, &["start", "shell", "--yes", "--detach"]));
    assert!(out.status.success(), "start: {}", text(&out.stderr));
    let fresh = text(&out.stdout).trim().to_string();
    world.track(&fresh);
    assert!(!old.contains(&fresh), "a stale member is never handed out");
    assert!(!text(&out.stderr).contains("claimed"), "{}", text(&out.stderr));
    assert_eq!(world.ok(&["exec", &fresh, "--", "printenv", "MOOD"]), "changed\n", "the fresh bottle has the new plan");

    let made = fill(&world, &manifest);
    assert_eq!(made.len(), 1);
    assert!(containers_of(&old[0]).is_empty(), "fill removed the stale member");
    assert_eq!(in_bottle(&made[0], "printenv MOOD"), "changed\n", "the new member has the new plan");
    world.ok(&with_manifest(&manifest, &["pool", "drain"]));
    assert!(containers_of(&made[0]).is_empty());
    world.ok(&["stop", "--yes", &fresh]);
}

#[test]
fn cleanup_removes_an_orphaned_pool_member_and_spares_the_waiting_ones() {
    warm_image();
    let world = World::new();
    let manifest = pooled_manifest(&world, 2, "");
    let members = fill(&world, &manifest);
    assert_eq!(members.len(), 2);
    // One member's agent dies (an engine restart, an out-of-memory kill): an orphan.
    let killed = Command::new("docker").args(["kill", &format!("bb-{}", members[0])]).output().expect("docker kill");
    assert!(killed.status.success(), "{}", text(&killed.stderr));

    let plan = world.ok(&["cleanup", "--dry-run"]);
    assert!(plan.contains(members[0].as_str()), "the orphan is listed: {plan}");
    assert!(!plan.contains(members[1].as_str()), "a waiting member is spared, like a detached bottle: {plan}");
    world.ok(&["cleanup", "--yes"]);
    assert!(containers_of(&members[0]).is_empty() && networks_of(&members[0]).is_empty(), "the orphan is gone");
    assert!(!containers_of(&members[1]).is_empty(), "the waiting member still runs");
    world.ok(&with_manifest(&manifest, &["pool", "drain"]));
    assert!(containers_of(&members[1]).is_empty());
}
