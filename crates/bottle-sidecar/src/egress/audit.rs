//! The audit log: one JSON line per request, handed to the audit writer
//! thread as the request ends (written as soon as that thread is free, and
//! every one before the proxy exits). A line holds what was asked (method, host, path without the
//! query), what the policy decided and why, the status, byte counts and
//! duration — never a header value. Fields the agent controls are cut to
//! [`MAX_FIELD`] bytes (the line says so), and a log file rotates
//! (see [`crate::audit`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use super::EgressError;
use crate::audit::{AuditSink, AuditWriter, MAX_FIELD, bounded};
use crate::time::rfc3339;

/// Where audit lines go: the writer thread, which appends them to the log.
pub(crate) struct AuditLog(AuditWriter);

impl AuditLog {
    /// Opens `target` for appending (`-` is stdout) and starts its writer thread.
    pub(crate) fn open(target: &str) -> Result<Self, EgressError> {
        AuditSink::open(target)
            .and_then(|sink| AuditWriter::start(sink, "egress"))
            .map(AuditLog)
            .map_err(|source| EgressError::AuditLog { path: target.to_owned(), source })
    }

    /// Hands `line` to the writer thread.
    fn write_line(&self, line: Vec<u8>) {
        self.0.send(line);
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
        self.log.write_line(line.to_json());
    }
}

impl Line<'_> {
    /// The line as JSON, byte for byte what `serde_json` writes for it
    /// (see the test), written by hand: serde's generic path cost more per
    /// request than the rest of the audit line.
    fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"time\":");
        json_str(&mut out, &self.time);
        for (key, value) in [("bottle", self.bottle), ("method", self.method), ("host", self.host), ("path", self.path)]
        {
            json_key(&mut out, key);
            json_str(&mut out, value);
        }
        for (key, value) in
            [("status", u64::from(self.status)), ("bytes_up", self.bytes_up), ("bytes_down", self.bytes_down)]
        {
            json_key(&mut out, key);
            json_u64(&mut out, value);
        }
        json_key(&mut out, "rule");
        json_opt(&mut out, self.rule);
        json_key(&mut out, "decision");
        json_str(&mut out, if self.decision == Decision::Allow { "allow" } else { "deny" });
        json_key(&mut out, "reason");
        json_opt(&mut out, self.reason);
        json_key(&mut out, "duration_ms");
        json_u64(&mut out, self.duration_ms);
        out.push(b'}');
        out
    }
}

/// `,"key":`
fn json_key(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

fn json_opt(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => json_str(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// `value` as a JSON string, escaped as `serde_json` escapes it.
fn json_str(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    let bytes = value.as_bytes();
    let mut start = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..at]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]);
        } else {
            out.extend_from_slice(escape);
        }
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn json_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hand_written_line_is_what_serde_json_writes() {
        let check = |text: &str, reason: Option<&str>, numbers: u64| {
            let line = Line {
                time: "2026-05-01T12:00:00.123Z".to_owned(),
                bottle: "b",
                method: "GET",
                host: text,
                path: text,
                status: 403,
                bytes_up: numbers,
                bytes_down: 0,
                rule: if reason.is_some() { None } else { Some(text) },
                decision: if reason.is_some() { Decision::Deny } else { Decision::Allow },
                reason,
                duration_ms: u64::MAX,
            };
            assert_eq!(
                String::from_utf8(line.to_json()).expect("UTF-8"),
                serde_json::to_string(&line).expect("serde_json"),
                "{text:?}"
            );
        };
        check("/plain/path", None, 0);
        check("quote\" back\\ nl\n cr\r tab\t bs\u{8} ff\u{c} nul\0 esc\u{1b} del\u{7f} é ✓", Some("why \"x\""), 9);
        check("", Some(""), 1234567890123);
    }
}
