//! The audit log: one JSON line per request, appended and flushed as the
//! request ends. A line holds what was asked (method, host, path without the
//! query), what the policy decided and why, the status, byte counts and
//! duration — never a header value. Fields the agent controls are cut to
//! [`MAX_FIELD`] bytes (the line says so), and a log file rotates
//! (see [`crate::audit`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use super::EgressError;
use crate::audit::{AuditSink, MAX_FIELD, bounded};
use crate::time::rfc3339;

/// Where audit lines go.
pub(crate) struct AuditLog(AuditSink);

impl AuditLog {
    /// Opens `target` for appending; `-` is stdout.
    pub(crate) fn open(target: &str) -> Result<Self, EgressError> {
        AuditSink::open(target)
            .map(AuditLog)
            .map_err(|source| EgressError::AuditLog { path: target.to_owned(), source })
    }

    /// Appends `line` and a newline in one write, and flushes.
    fn write_line(&self, line: Vec<u8>) {
        if let Err(err) = self.0.write_line(&line) {
            eprintln!("egress: cannot write the audit log: {err}");
        }
    }
}

/// The decision on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Decision {
    Allow,
    Deny,
}

/// One request in flight; [`Entry::finish`] writes its line.
pub(crate) struct Entry {
    log: Arc<AuditLog>,
    bottle: Arc<str>,
    time: SystemTime,
    start: Instant,
    method: String,
    host: String,
    path: String,
    status: u16,
    rule: Option<String>,
    decision: Decision,
    reason: Option<String>,
    /// Request body bytes sent upstream so far (shared with the request body).
    bytes_up: Arc<AtomicU64>,
}

/// The line as written.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    bottle: &'a str,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    status: u16,
    bytes_up: u64,
    bytes_down: u64,
    rule: Option<&'a str>,
    decision: Decision,
    reason: Option<&'a str>,
    duration_ms: u64,
}

impl Entry {
    /// Starts the entry for a request now; `path` must not carry the query.
    pub(crate) fn start(log: Arc<AuditLog>, bottle: Arc<str>, method: &str, host: &str, path: &str) -> Self {
        Entry {
            log,
            bottle,
            time: SystemTime::now(),
            start: Instant::now(),
            method: bounded(method, MAX_FIELD).into_owned(),
            host: bounded(host, MAX_FIELD).into_owned(),
            path: bounded(path, MAX_FIELD).into_owned(),
            status: 0,
            rule: None,
            decision: Decision::Allow,
            reason: None,
            bytes_up: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The counter of request body bytes, for the body that forwards it.
    pub(crate) fn bytes_up(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.bytes_up)
    }

    pub(crate) fn set_rule(&mut self, rule: Option<&str>) {
        self.rule = rule.map(str::to_owned);
    }

    pub(crate) fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    /// Marks the request denied (or failed, for upstream errors) with `reason`.
    pub(crate) fn set_reason(&mut self, decision: Decision, reason: &str) {
        self.decision = decision;
        self.reason = Some(bounded(reason, 2 * MAX_FIELD).into_owned());
    }

    /// Writes the line, with `bytes_down` response body bytes delivered.
    pub(crate) fn finish(self, bytes_down: u64) {
        let line = Line {
            time: rfc3339(self.time),
            bottle: &self.bottle,
            method: &self.method,
            host: &self.host,
            path: &self.path,
            status: self.status,
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down,
            rule: self.rule.as_deref(),
            decision: self.decision,
            reason: self.reason.as_deref(),
            duration_ms: u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        match serde_json::to_vec(&line) {
            Ok(json) => self.log.write_line(json),
            Err(err) => eprintln!("egress: cannot encode an audit line: {err}"),
        }
    }
}
