//! The mirror's `pre-receive` hook: `bottle-sidecar git-gate --config
//! WORK/hooks/NAME.json` run with `BOTTLE_GIT_GATE_HOOK=pre-receive` by the
//! script the gate writes into each mirror. It checks every ref update
//! against the push policy, by ref and by what it changes (the `changes`
//! module), forwards an allowed push to the upstream before the mirror takes
//! it (from the quarantine: the pushed objects are reachable through the
//! hook's environment), holding the mirror's lock while it does, and leaves
//! one audit record in the spool file the gate named in
//! `BOTTLE_GIT_GATE_AUDIT`.
//!
//! What it prints on stderr reaches the agent's `git push` as `remote:`
//! lines: one line per refused update, or the upstream's own lines when the
//! upstream refuses.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

use bottle_core::PushPolicy;
use serde::{Deserialize, Serialize};

use super::audit::{PushRecord, rfc3339};
use super::changes;
use super::mirror::lock_mirror;
use super::policy::{self, RefUpdate};
use crate::audit::{MAX_FIELD, bounded};

/// The most refs one push's audit record lists.
const MAX_REFS: usize = 100;

/// The environment variable that puts `bottle-sidecar git-gate` in hook mode.
pub(crate) const HOOK_ENV: &str = "BOTTLE_GIT_GATE_HOOK";
/// The environment variable naming the spool file for this push's audit record.
pub(crate) const AUDIT_ENV: &str = "BOTTLE_GIT_GATE_AUDIT";

/// What the hook of one mirror needs to know; written by the gate next to
/// the mirrors. It names the key file, never holds the key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HookConfig {
    /// The bottle's slug.
    pub(crate) bottle: String,
    /// The upstream's name.
    pub(crate) upstream: String,
    /// The upstream, as git's scp-like `USER@HOST:REPO`.
    pub(crate) url: String,
    /// `GIT_SSH_COMMAND` for the upstream (key, port, known hosts).
    pub(crate) ssh_command: String,
    /// The mirror's lock file, held while the push is forwarded.
    pub(crate) lock: PathBuf,
    /// What pushes are allowed.
    pub(crate) policy: PushPolicy,
    /// The supervise queue's grants file, whose branch globs are allowed too.
    #[serde(default)]
    pub(crate) grants: Option<PathBuf>,
}

/// Runs the hook with the configuration at `path`; returns its exit code
/// (non-zero refuses the whole push).
pub(crate) fn main(path: &str) -> i32 {
    let started = Instant::now();
    let time = rfc3339(SystemTime::now());
    let mut config: HookConfig = match std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
    {
        Ok(config) => config,
        Err(err) => {
            eprintln!("bot-bottle: push refused: the gate cannot read its hook configuration {path}: {err}");
            return 1;
        }
    };
    let mut input = String::new();
    if let Err(err) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("bot-bottle: push refused: the gate cannot read the ref updates: {err}");
        return 1;
    }
    let updates: Vec<RefUpdate> = input.lines().filter_map(RefUpdate::parse).collect();
    // The operator's live grants (supervise), read at each push.
    let supervised = config.grants.is_some();
    if let Some(grants) = &config.grants {
        config.policy.branches.extend(bottle_core::supervise::granted_branches(grants));
    }

    let mut refspecs = Vec::new();
    let mut refusals = Vec::new();
    for update in &updates {
        let verdict = policy::check(&config.policy, update, || is_ancestor(&update.old, &update.new))
            .and_then(|refspec| check_content(&config.policy, update).map(|()| refspec));
        match verdict {
            Ok(refspec) => refspecs.push(refspec),
            Err(reason) if supervised && reason.contains("branch not in [") => refusals.push(format!(
                "{reason}; or call the MCP tool request_push (server bot-bottle-supervise) with {{\"branches\": \
                 [\"{}\"], \"reason\": \"why the task needs it\"}} and push again once it returns approved",
                update.name.strip_prefix("refs/heads/").unwrap_or(&update.name)
            )),
            Err(reason) => refusals.push(reason),
        }
    }
    let (code, verdict, reason, upstream_result) = if !refusals.is_empty() {
        for reason in &refusals {
            eprintln!("bot-bottle: {reason}");
        }
        (1, "deny", refusals.join("; "), None)
    } else {
        let reason = format!("allowed: {}", refspecs.join(" "));
        match forward(&config, &refspecs) {
            Ok(remote_lines) => {
                for line in remote_lines {
                    eprintln!("{line}");
                }
                let names: Vec<&str> = updates.iter().map(|u| u.name.as_str()).collect();
                eprintln!("bot-bottle: pushed {} to upstream {}", names.join(", "), config.upstream);
                (0, "allow", reason, Some("ok".to_owned()))
            }
            Err(message) => {
                eprintln!("bot-bottle: upstream {} refused the push:", config.upstream);
                for line in message.lines() {
                    eprintln!("  {line}");
                }
                let summary = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
                (1, "allow", reason, Some(format!("error: {summary}")))
            }
        }
    };
    // What the agent named (refs, and the reasons quoting them) is cut to a
    // length, and at most MAX_REFS refs are listed, so no push makes a long line.
    let listed = updates.len().min(MAX_REFS);
    let mut reason = bounded(&reason, 4 * MAX_FIELD).into_owned();
    if updates.len() > listed {
        reason.push_str(&format!(" ({} more refs not listed)", updates.len() - listed));
    }
    let refs = updates
        .into_iter()
        .take(listed)
        .map(|update| RefUpdate { name: bounded(&update.name, MAX_FIELD).into_owned(), ..update })
        .collect();
    let record = PushRecord {
        time,
        bottle: config.bottle,
        upstream: config.upstream,
        refs,
        verdict: verdict.to_owned(),
        reason,
        upstream_result: upstream_result.map(|result| bounded(&result, 4 * MAX_FIELD).into_owned()),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    if let Some(spool) = std::env::var_os(AUDIT_ENV).map(PathBuf::from) {
        let written = serde_json::to_string(&record)
            .map_err(std::io::Error::other)
            .and_then(|line| std::fs::write(&spool, line + "\n"));
        if let Err(err) = written {
            eprintln!("bot-bottle: warning: the gate could not record this push: {err}");
        }
    }
    code
}

/// The content half of the policy for an update the ref half allowed: what
/// it changes must be no CI definition (unless allowed) and nothing
/// `paths_deny` names. Fails closed: what the gate cannot tell is refused.
fn check_content(policy: &PushPolicy, update: &RefUpdate) -> Result<(), String> {
    if update.deletes() || (policy.ci && policy.paths_deny.is_empty()) {
        return Ok(());
    }
    let changed = changes::changed_paths(update)
        .map_err(|err| format!("push refused: the gate cannot tell what {} changes: {err}", update.short_name()))?;
    policy::check_paths(policy, update, &changed)
}

/// Whether `new` descends from `old` (the objects of the push in progress
/// are visible: the hook runs inside receive-pack's quarantine).
fn is_ancestor(old: &str, new: &str) -> bool {
    Command::new("git")
        .args(["merge-base", "--is-ancestor", old, new])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Pushes `refspecs` to the upstream; on success returns the upstream's own
/// `remote:` lines (a pull-request link, say), on failure everything it said.
fn forward(config: &HookConfig, refspecs: &[String]) -> Result<Vec<String>, String> {
    // One forward at a time, and no fetch meanwhile; released on return.
    let _lock = lock_mirror(&config.lock)
        .map_err(|err| format!("the gate cannot take the mirror's lock {}: {err}", config.lock.display()))?;
    let mut cmd = Command::new("git");
    cmd.arg("push").arg("--no-verify");
    if refspecs.len() > 1 {
        // All or nothing, as the mirror's receive-pack takes the push.
        cmd.arg("--atomic");
    }
    // Pushing to the URL rather than a remote updates no tracking ref, which
    // the quarantine would forbid; the upstream must not see the quarantine.
    cmd.arg(&config.url)
        .args(refspecs)
        .env_remove("GIT_QUARANTINE_PATH")
        .env_remove("GIT_PROTOCOL")
        .env("GIT_SSH_COMMAND", &config.ssh_command)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    let out = cmd.output().map_err(|err| format!("could not run git push: {err}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(stderr.lines().filter(|line| line.starts_with("remote:")).map(str::to_owned).collect())
    } else {
        let message = stderr.trim_end();
        Err(if message.is_empty() { format!("git push failed ({})", out.status) } else { message.to_owned() })
    }
}
