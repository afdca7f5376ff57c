//! What `bottle doctor` reports: one [`Check`] per thing a bottle needs of
//! this machine (the engine, its images, a sandbox runtime, KVM, …), each
//! `ok`, `info`, `warn` or `fail` with what was found and how to fix it.
//! Each backend checks its own engine ([`Backend::diagnose`]); the checks
//! of the host itself are here ([`host_checks`]); [`diagnose`] asks them all. [`Version`] compares the
//! dotted release numbers engines report.
//!
//! [`Backend::diagnose`]: crate::backend::Backend::diagnose

use std::fmt;

use crate::prepare::Host;
use crate::provider::{Providers, ProvisionInput};
use crate::registry::Registry;

/// How a check came out; in JSON `"ok"`, `"info"`, `"warn"` or `"fail"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// As it should be.
    Ok,
    /// Worth knowing; nothing to fix.
    Info,
    /// Works, or works for some bottles, but something is missing or exposed.
    Warn,
    /// Bottles cannot run until this is fixed.
    Fail,
}

impl CheckStatus {
    /// `ok`, `info`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Info => "info",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "fail",
        }
    }
}

/// One finding of `bottle doctor` (`--json` prints these fields).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// How it came out.
    pub status: CheckStatus,
    /// What was checked (`docker engine`, `kvm`).
    pub what: String,
    /// What was found.
    pub finding: String,
    /// How to fix it, when there is something to fix.
    pub fix: Option<String>,
}

impl Check {
    /// A check of `what` that came out `status`, having found `finding`.
    pub fn new(status: CheckStatus, what: impl Into<String>, finding: impl Into<String>) -> Self {
        Check { status, what: what.into(), finding: finding.into(), fix: None }
    }

    /// An `ok` check.
    pub fn ok(what: impl Into<String>, finding: impl Into<String>) -> Self {
        Check::new(CheckStatus::Ok, what, finding)
    }

    /// An `info` check.
    pub fn info(what: impl Into<String>, finding: impl Into<String>) -> Self {
        Check::new(CheckStatus::Info, what, finding)
    }

    /// A `warn` check.
    pub fn warn(what: impl Into<String>, finding: impl Into<String>) -> Self {
        Check::new(CheckStatus::Warn, what, finding)
    }

    /// A `fail` check.
    pub fn fail(what: impl Into<String>, finding: impl Into<String>) -> Self {
        Check::new(CheckStatus::Fail, what, finding)
    }

    /// This check with how to fix it.
    #[must_use]
    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// One line: `STATUS  WHAT: finding[; fix]`, the status padded so that the
/// lines of a report align.
impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<4}  {}: {}", self.status.as_str(), self.what, self.finding)?;
        if let Some(fix) = &self.fix {
            write!(f, "; {fix}")?;
        }
        Ok(())
    }
}

/// A release number as engines report it (`20.10.24+dfsg1`, `26.1.0-rc.1`,
/// `v1.30.2`): its first three numbers, compared in order; what follows the
/// numbers (a distribution's suffix) does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u64, pub u64, pub u64);

impl Version {
    /// The version `text` starts with, or `None` when it starts with no number.
    pub fn parse(text: &str) -> Option<Version> {
        let text = text.trim();
        let text = text.strip_prefix('v').unwrap_or(text);
        let end = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
        let mut numbers = text[..end].split('.').map(|n| n.parse::<u64>());
        let major = numbers.next()?.ok()?;
        let mut next = || numbers.next().and_then(|n| n.ok()).unwrap_or(0);
        let (minor, patch) = (next(), next());
        Some(Version(major, minor, patch))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// `bottle doctor`: each backend of `registry` checks its engine, given the
/// recipes of the bundled agents' images as `host` would build them (its CA
/// bundle included), then come the host's own checks ([`host_checks`],
/// left out when the registry has a `kubernetes` backend to ask instead).
pub async fn diagnose(registry: &Registry, providers: &Providers, host: &Host) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut recipes = Vec::new();
    for name in providers.names() {
        let input = ProvisionInput {
            slug: format!("{name}-doctor"),
            guest_env: Default::default(),
            hidden_env: Vec::new(),
            prompt: None,
            skills: Vec::new(),
            git_identity: None,
            dockerfile_override: None,
            host_ca_bundle: host.ca_bundle(),
            image_archive: None,
            resumed: false,
        };
        match providers.get(name).and_then(|provider| provider.build_provision_plan(input)) {
            Ok(plan) => recipes.push(plan.image),
            Err(e) => checks.push(Check::warn(format!("agent {name}"), format!("no image recipe: {e}"))),
        }
    }
    for backend in registry.all() {
        checks.extend(backend.diagnose_dyn(&recipes).await);
    }
    // A registry with the Kubernetes backend has it say what it found instead.
    if !registry.names().contains(&"kubernetes") {
        checks.extend(host_checks(&|k| host.var(k).map(str::to_string)));
    }
    checks
}

/// The checks of the host itself for a build without the Kubernetes
/// backend: only whether `kubectl` and `$KUBECONFIG` are there, no network.
/// `env` reads the host's variables.
pub fn host_checks(env: &dyn Fn(&str) -> Option<String>) -> Vec<Check> {
    let kubectl = env("PATH").is_some_and(|path| on_path(&path, "kubectl"));
    let kubeconfig = env("KUBECONFIG").is_some_and(|v| !v.is_empty());
    let seen = match (kubectl, kubeconfig) {
        (true, true) => "kubectl is on PATH and $KUBECONFIG is set",
        (true, false) => "kubectl is on PATH, $KUBECONFIG is not set",
        (false, true) => "$KUBECONFIG is set, kubectl is not on PATH",
        (false, false) => "no kubectl on PATH, no $KUBECONFIG",
    };
    vec![Check::info("kubernetes", format!("no backend yet ({seen}; no cluster was contacted)"))]
}

/// Whether an executable file `program` is in one of `path`'s folders.
fn on_path(path: &str, program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::split_paths(path).any(|dir| {
        std::fs::metadata(dir.join(program)).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_their_numbers_and_compare_in_order() {
        for (text, expect) in [
            ("20.10.24+dfsg1", Some(Version(20, 10, 24))),
            ("26.1.0-rc.1", Some(Version(26, 1, 0))),
            ("v1.30.2", Some(Version(1, 30, 2))),
            ("25.0", Some(Version(25, 0, 0))),
            ("27", Some(Version(27, 0, 0))),
            (" 23.0.11 ", Some(Version(23, 0, 11))),
            ("dev", None),
            ("", None),
        ] {
            assert_eq!(Version::parse(text), expect, "{text:?}");
        }
        assert!(Version(23, 0, 11) > Version(23, 0, 9), "the patch counts as a number, not as text");
        assert!(Version(20, 10, 24) < Version(23, 0, 0));
        assert!(Version(25, 0, 4) < Version(26, 0, 0));
        assert_eq!(Version(20, 10, 24).to_string(), "20.10.24");
    }

    #[test]
    fn a_check_is_one_aligned_line_with_its_fix() {
        let ok = Check::ok("docker engine", "20.10.24 answers");
        assert_eq!(ok.to_string(), "ok    docker engine: 20.10.24 answers");
        let fail = Check::fail("kvm", "/dev/kvm is missing").with_fix("enable virtualisation");
        assert_eq!(fail.to_string(), "fail  kvm: /dev/kvm is missing; enable virtualisation");
        assert_eq!(Check::info("x", "y").to_string(), "info  x: y");
        assert_eq!(Check::warn("x", "y").to_string(), "warn  x: y");
    }

    #[test]
    fn a_check_in_json_has_its_status_in_lower_case_and_its_fix_or_null() {
        let fail = Check::fail("kvm", "/dev/kvm is missing").with_fix("enable virtualisation");
        assert_eq!(
            serde_json::to_value(&fail).expect("json"),
            serde_json::json!({
                "status": "fail", "what": "kvm", "finding": "/dev/kvm is missing", "fix": "enable virtualisation"
            })
        );
        let info = serde_json::to_value(Check::info("runsc", "absent")).expect("json");
        assert_eq!((info["status"].as_str(), info["fix"].is_null()), (Some("info"), true));
    }

    #[test]
    fn kubernetes_is_information_and_says_what_is_there() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let kubectl = tmp.path().join("kubectl");
        std::fs::write(&kubectl, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&kubectl, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let path = tmp.path().display().to_string();
        let with = |k: &str| match k {
            "PATH" => Some(path.clone()),
            "KUBECONFIG" => Some("/k/config".into()),
            _ => None,
        };
        let checks = host_checks(&with);
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].status, CheckStatus::Info);
        assert!(checks[0].to_string().starts_with("info  kubernetes: no backend yet"), "{}", checks[0]);
        assert!(checks[0].finding.contains("kubectl is on PATH and $KUBECONFIG is set"), "{}", checks[0]);
        let without = host_checks(&|_| None);
        assert!(without[0].finding.contains("no kubectl on PATH, no $KUBECONFIG"), "{}", without[0]);
    }
}
