//! The push audit: one JSON line per push. The `pre-receive` hook, which
//! makes the decision, writes its record to a spool file the gate named for
//! that request; the gate appends it to the audit log (a file, or stdout for
//! `-`) once the push is over, so one writer owns the log.

use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::GateError;
use super::policy::RefUpdate;

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

/// Where audit lines go.
pub(crate) struct AuditLog {
    sink: Mutex<Sink>,
}

enum Sink {
    Stdout,
    File(std::fs::File),
}

impl AuditLog {
    /// Opens the audit log `target` for appending: a path, or `-` for stdout.
    pub(crate) fn open(target: &str) -> Result<Self, GateError> {
        let sink = if target == "-" {
            Sink::Stdout
        } else {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(target)
                .map_err(|source| GateError::io(format!("opening the audit log {target}"), source))?;
            Sink::File(file)
        };
        Ok(Self { sink: Mutex::new(sink) })
    }

    /// Appends one line (a newline is added).
    pub(crate) fn write_line(&self, line: &str) {
        let mut sink = self.sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let line = format!("{}\n", line.trim_end());
        let written = match &mut *sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line.as_bytes()).and_then(|()| out.flush())
            }
            Sink::File(file) => file.write_all(line.as_bytes()),
        };
        if let Err(err) = written {
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

/// `time` as RFC 3339 in UTC with milliseconds, e.g. `2025-01-31T12:00:00.000Z`.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's algorithm.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let check = |secs: u64, millis: u64, expect: &str| {
            let time = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis);
            assert_eq!(rfc3339(time), expect);
        };
        check(0, 0, "1970-01-01T00:00:00.000Z");
        check(951_782_400, 5, "2000-02-29T00:00:00.005Z");
        check(1_735_689_599, 999, "2024-12-31T23:59:59.999Z");
        check(4_107_542_400, 0, "2100-03-01T00:00:00.000Z");
    }
}
