//! The push audit: one JSON line per push. The `pre-receive` hook, which
//! makes the decision, writes its record to a spool file the gate named for
//! that request; the gate appends it to the audit log (a file, or stdout for
//! `-`) once the push is over, so one writer owns the log.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::GateError;
use super::policy::RefUpdate;
use crate::audit::AuditSink;
pub(crate) use crate::time::rfc3339;

/// One push, as the audit log records it. It never holds the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PushRecord {
    /// When the hook started, RFC 3339 in UTC.
    pub(crate) time: String,
    /// The bottle's slug.
    pub(crate) bottle: String,
    /// The upstream's name.
    pub(crate) upstream: String,
    /// The ref updates asked for.
    pub(crate) refs: Vec<RefUpdate>,
    /// `allow` or `deny`.
    pub(crate) verdict: String,
    /// Why it was denied (the refusal lines), or what was forwarded.
    pub(crate) reason: String,
    /// `ok`, the upstream's error, or `null` when nothing was sent upstream.
    pub(crate) upstream_result: Option<String>,
    /// From the hook's start to its verdict, the upstream push included.
    pub(crate) duration_ms: u64,
}

/// Where audit lines go (rotated: see [`crate::audit`]).
pub(crate) struct AuditLog(AuditSink);

impl AuditLog {
    /// Opens the audit log `target` for appending: a path, or `-` for stdout.
    pub(crate) fn open(target: &str) -> Result<Self, GateError> {
        AuditSink::open(target)
            .map(AuditLog)
            .map_err(|source| GateError::io(format!("opening the audit log {target}"), source))
    }

    /// Appends one line (a newline is added).
    pub(crate) fn write_line(&self, line: &str) {
        if let Err(err) = self.0.write_line(line.trim_end().as_bytes()) {
            eprintln!("git-gate: warning: could not write the audit log: {err}");
        }
    }

    /// Moves the record the hook left in `spool` (if any) into the log.
    pub(crate) fn drain(&self, spool: &Path) {
        match std::fs::read_to_string(spool) {
            Ok(record) => {
                self.write_line(&record);
                let _ = std::fs::remove_file(spool);
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => eprintln!("git-gate: warning: could not read the audit record {}: {err}", spool.display()),
        }
    }
}
