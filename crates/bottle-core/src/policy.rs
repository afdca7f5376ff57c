//! The resolved policy of a bottle as it was launched, kept in its state
//! folder (`policy.json`) so that a later reader (the dashboard's details
//! tab) shows what the sidecars enforce, not the manifest as it reads now:
//! the routes, the git upstreams with their push policy, the limits, the
//! isolation and supervise. Credentials appear by their host variable's
//! name only, as in the preflight summary.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::backend::ErasedPlan;
use crate::error::{Error, ErrorKind, Result};
use crate::state::StateRoot;

/// The file in a bottle's state folder that holds its [`PolicyRecord`].
const POLICY_FILE: &str = "policy.json";

/// What a bottle's sidecars and engine enforce, in lines for a person.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// The egress routes (`host methods paths ports [auth:scheme from VAR]`).
    pub routes: Vec<String>,
    /// The git upstreams (`name → user@host:port repo`) and, for each, its push policy.
    pub upstreams: Vec<(String, String)>,
    /// The limits: memory, CPUs, processes, disk, saved state.
    pub limits: String,
    /// How the bottle is isolated, and the backend's own facts (runtime, network).
    pub isolation: Vec<(String, String)>,
    /// Whether supervise runs, and how long a request waits.
    pub supervise: String,
}

impl PolicyRecord {
    /// The record of `plan`.
    pub fn of(plan: &ErasedPlan) -> PolicyRecord {
        let common = plan.common();
        let upstreams = common
            .git_gate
            .upstreams
            .iter()
            .map(|u| {
                (
                    format!("{} → {}@{}:{} {}", u.name, u.user, u.host, u.port, u.repo),
                    crate::preflight::push_policy(&u.push),
                )
            })
            .collect();
        let l = &common.limits;
        let limits = format!(
            "memory {}, cpus {}, processes {}, disk {}, saved state {}",
            l.memory, l.cpus, l.pids, l.disk, l.state
        );
        let mut isolation = vec![("isolation".to_string(), plan.wiring().isolation.clone())];
        isolation.extend(plan.summary_lines().iter().cloned());
        let supervise = if common.supervise.enabled {
            format!(
                "on: a request waits {} for the operator, then counts as denied",
                crate::supervise::describe_wait(common.supervise.timeout)
            )
        } else {
            "off: nothing can be asked for or granted live".into()
        };
        PolicyRecord { routes: common.egress.route_lines(), upstreams, limits, isolation, supervise }
    }

    /// Where bottle `slug`'s record is.
    pub fn path(state: &StateRoot, slug: &str) -> PathBuf {
        state.bottle_dir(slug).join(POLICY_FILE)
    }

    /// Write it for bottle `slug` (replacing an earlier run's).
    pub fn write(&self, state: &StateRoot, slug: &str) -> Result<()> {
        crate::state::write_json(&Self::path(state, slug), self)
    }

    /// Bottle `slug`'s record; `None` when it has none (started before
    /// records were kept, or by another host).
    pub fn read(state: &StateRoot, slug: &str) -> Result<Option<PolicyRecord>> {
        let path = Self::path(state, slug);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::new(ErrorKind::Io, format!("{} is not a policy record", path.display())).with_source(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_through_the_state_folder_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateRoot::at(dir.path());
        std::fs::create_dir_all(state.bottle_dir("shell-1a2b3c4d")).expect("bottle dir");
        assert_eq!(PolicyRecord::read(&state, "shell-1a2b3c4d").expect("read"), None);
        let record = PolicyRecord {
            routes: vec!["api.anthropic.com [auth:x-api-key from ANTHROPIC_API_KEY]".into()],
            upstreams: vec![("origin → git@example.com:22 me/repo".into(), "branches agent/*".into())],
            limits: "memory 4 GiB".into(),
            isolation: vec![("isolation".into(), "container".into())],
            supervise: "off".into(),
        };
        record.write(&state, "shell-1a2b3c4d").expect("write");
        assert_eq!(PolicyRecord::read(&state, "shell-1a2b3c4d").expect("read"), Some(record));
        std::fs::write(PolicyRecord::path(&state, "shell-1a2b3c4d"), "{").expect("corrupt");
        let e = PolicyRecord::read(&state, "shell-1a2b3c4d").expect_err("a broken record is an error");
        assert!(e.to_string().contains("is not a policy record"), "{e}");
    }
}
