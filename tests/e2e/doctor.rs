//! `bottle doctor`: one `STATUS  WHAT: finding[; fix]` line per check, as
//! this machine truly is (the engine answers; its release, the base image,
//! KVM, smolvm and a Kubernetes cluster as they are here; gVisor never a
//! failure); an engine that does not answer fails the engine check and the
//! exit status.

use std::process::Command;

use crate::harness::{World, require_docker, text};

/// The line of `report` about `what`.
fn line<'a>(report: &'a str, what: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(&format!("{what}: "))))
        .unwrap_or_else(|| panic!("no line for `{what}` in:\n{report}"))
}

fn status(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or_default()
}

/// Whether Docker Engine `release` has the CVE-2024-29018 fix (26.0, 25.0.4, 23.0.11).
fn has_dns_fix(release: &str) -> bool {
    let numbers: Vec<u64> =
        release.split(|c: char| !c.is_ascii_digit()).take(3).map(|n| n.parse().unwrap_or(0)).collect();
    match numbers[..] {
        [major, ..] if major >= 26 => true,
        [25, 0, patch] => patch >= 4,
        [25, minor, _] => minor > 0,
        [23, 0, patch] => patch >= 11,
        [23, minor, _] => minor > 0,
        _ => false,
    }
}

#[test]
fn doctor_reports_each_check_as_this_machine_is() {
    require_docker();
    let out = World::new().run(&["doctor"]);
    let report = text(&out.stdout);
    for l in report.lines() {
        let (head, rest) = l.split_at(6.min(l.len()));
        assert!(["ok    ", "info  ", "warn  ", "fail  "].contains(&head), "`STATUS  ` first: {l}");
        assert!(rest.split_once(": ").is_some_and(|(what, finding)| !what.is_empty() && !finding.is_empty()), "{l}");
    }

    let release = Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output().expect("docker");
    let release = text(&release.stdout).trim().to_string();
    let engine = line(&report, "docker engine");
    assert!(engine.starts_with(&format!("ok    docker engine: Docker Engine {release} (API ")), "{engine}");

    let cve = line(&report, "docker CVE-2024-29018");
    assert_eq!(status(cve), if has_dns_fix(&release) { "ok" } else { "warn" }, "{cve}");
    if !has_dns_fix(&release) {
        assert!(cve.contains("bottles have no network at all") && cve.contains("other containers"), "{cve}");
    }

    let base = Command::new("docker").args(["image", "inspect", "debian:bookworm-slim"]).output().expect("docker");
    let base_line = line(&report, "base image debian:bookworm-slim");
    assert_eq!(status(base_line), if base.status.success() { "ok" } else { "warn" }, "{base_line}");
    for image in ["claude", "codex", "shell", "sidecar"] {
        let l = line(&report, &format!("image bot-bottle/{image}"));
        assert_eq!(status(l), "info", "informational: {l}");
    }

    let runsc = line(&report, "runsc");
    assert_ne!(status(runsc), "fail", "gVisor is detected, never required: {runsc}");

    let kvm = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    let kvm_line = line(&report, "kvm");
    assert_eq!(status(kvm_line), if kvm { "ok" } else { "warn" }, "{kvm_line}");

    let smolvm =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).any(|d| d.join("smolvm").is_file());
    let smolvm_line = line(&report, "smolvm");
    assert_eq!(status(smolvm_line), if smolvm { "ok" } else { "warn" }, "{smolvm_line}");
    if !smolvm {
        assert!(smolvm_line.contains("smolmachines backend is unavailable"), "{smolvm_line}");
    }

    // The Kubernetes backend says which cluster answers, or that none is configured (never a failure).
    let kubernetes = line(&report, "kubernetes");
    assert!(
        ["ok    kubernetes:", "info  kubernetes:", "warn  kubernetes:"].iter().any(|s| kubernetes.starts_with(s)),
        "{report}"
    );
    // The world's HOME has no ~/.kube/config: without $KUBECONFIG no cluster is configured.
    if std::env::var_os("KUBECONFIG").is_none() {
        assert!(kubernetes.contains("no Kubernetes cluster configured"), "{kubernetes}");
    }
    let failed = report.lines().any(|l| l.starts_with("fail"));
    assert_eq!(out.status.code(), Some(i32::from(failed)), "exit 1 exactly when a check fails:\n{report}");
}

#[test]
fn doctor_fails_when_the_engine_does_not_answer() {
    let out = World::new().bottle(&["doctor"]).env("DOCKER_HOST", "tcp://127.0.0.1:1").output().expect("run");
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}\n{}", text(&out.stderr));
    let engine = line(&report, "docker engine");
    assert!(engine.starts_with("fail  docker engine: ") && engine.contains("tcp://127.0.0.1:1"), "{engine}");
    assert!(!report.contains("base image"), "nothing is asked of an engine that does not answer:\n{report}");
}

#[test]
fn doctor_json_carries_the_same_checks() {
    require_docker();
    let world = World::new();
    let lines = world.run(&["doctor"]);
    let json = world.run(&["doctor", "--json"]);
    assert_eq!(json.status.code(), lines.status.code(), "the same exit status");
    let checks: serde_json::Value = serde_json::from_slice(&json.stdout).expect("doctor --json prints JSON");
    let checks = checks.as_array().expect("an array of checks");
    let report = text(&lines.stdout);
    assert_eq!(checks.len(), report.lines().count(), "one object per line:\n{report}");
    for check in checks {
        let field = |k: &str| check[k].as_str().unwrap_or_else(|| panic!("`{k}` in {check}")).to_string();
        let (status, what, finding) = (field("status"), field("what"), field("finding"));
        assert!(["ok", "info", "warn", "fail"].contains(&status.as_str()), "{check}");
        let l = line(&report, &what);
        assert!(l.starts_with(&format!("{status:<4}  {what}: ")), "{l} vs {check}");
        if !what.starts_with("image ") {
            // Another test may build an image between the two runs.
            assert!(l.contains(&finding), "{l} vs {check}");
        }
        assert!(check["fix"].is_null() || check["fix"].is_string(), "{check}");
    }
    let engine = checks.iter().find(|c| c["what"] == "docker engine").expect("the engine check");
    assert_eq!(engine["status"], "ok", "{engine}");
}
