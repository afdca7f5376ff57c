//! The sidecars' audit logs read back: the typed lines of the egress proxy
//! ([`EgressRecord`], one per request) and of the git gate
//! ([`PushRecord`], one per push), the short human format a terminal
//! shows ([`human_line`], streamed by [`LogLines`]), and [`copy_log`],
//! which finds a bottle's log where it is: the running sidecar's, or the
//! copy its state folder keeps once the bottle stopped.

use std::io::Write;

use serde::Deserialize;

use crate::backend::DynBackend;
use crate::bottle::Sidecar;
use crate::state::StateRoot;
use crate::{Error, ErrorKind, Result};

/// One line of the egress proxy's audit log: one request, allowed or denied.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EgressRecord {
    /// When the request started, RFC 3339 in UTC.
    pub time: String,
    /// The bottle's slug.
    pub bottle: String,
    /// The HTTP method.
    pub method: String,
    /// The host asked for.
    pub host: String,
    /// The path, without the query.
    pub path: String,
    /// The status the bottle got (0 when none was sent).
    pub status: u16,
    /// Request body bytes sent upstream.
    pub bytes_up: u64,
    /// Response body bytes delivered.
    pub bytes_down: u64,
    /// The route that matched, if one did.
    pub rule: Option<String>,
    /// `allow` or `deny`.
    pub decision: String,
    /// Why it was denied or failed.
    pub reason: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
}

/// One line of the git gate's audit log: one push.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PushRecord {
    /// When the push started, RFC 3339 in UTC.
    pub time: String,
    /// The bottle's slug.
    pub bottle: String,
    /// The upstream's name.
    pub upstream: String,
    /// The ref updates asked for.
    pub refs: Vec<PushedRef>,
    /// `allow` or `deny`.
    pub verdict: String,
    /// Why it was denied, or what was forwarded.
    pub reason: String,
    /// `ok`, the upstream's error, or `None` when nothing was sent upstream.
    pub upstream_result: Option<String>,
    /// How long it took, the upstream push included.
    pub duration_ms: u64,
}

/// One ref update of a push.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PushedRef {
    /// The ref's full name (`refs/heads/agent/x`).
    #[serde(rename = "ref")]
    pub name: String,
    /// The object it pointed to (all zeros when created).
    pub old: String,
    /// The object it is to point to (all zeros when deleted).
    pub new: String,
}

/// What the human format prints of a record: its time, its cells, and why
/// it did not simply go through (when there is something to say).
trait HumanRecord {
    fn time(&self) -> &str;
    fn cells(&self) -> Vec<String>;
    fn why(&self) -> Option<&str>;
}

impl HumanRecord for EgressRecord {
    fn time(&self) -> &str {
        &self.time
    }
    fn cells(&self) -> Vec<String> {
        vec![
            format!("{:<5}", self.decision),
            self.method.clone(),
            self.host.clone(),
            self.path.clone(),
            self.status.to_string(),
        ]
    }
    fn why(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

impl HumanRecord for PushRecord {
    fn time(&self) -> &str {
        &self.time
    }
    fn cells(&self) -> Vec<String> {
        let refs: Vec<&str> = self.refs.iter().map(|r| r.name.strip_prefix("refs/heads/").unwrap_or(&r.name)).collect();
        let refs = if refs.is_empty() { "-".to_string() } else { refs.join(",") };
        vec![format!("{:<5}", self.verdict), self.upstream.clone(), refs]
    }
    fn why(&self) -> Option<&str> {
        match (self.verdict.as_str(), self.upstream_result.as_deref()) {
            // Allowed: only an upstream that refused it is worth a word.
            ("allow", None | Some("ok")) => None,
            ("allow", Some(result)) => Some(result),
            _ => Some(&self.reason),
        }
    }
}

/// How `egress log` and `gate log` print lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// The JSON lines as the sidecar wrote them.
    Json,
    /// One short line per entry ([`human_line`]).
    Human,
}

/// `line` of `sidecar`'s audit log in the human format: egress
/// `HH:MM:SS DECISION METHOD HOST PATH STATUS [(REASON)]`, gate
/// `HH:MM:SS VERDICT UPSTREAM REFS [(REASON)]`, the time in UTC. A line
/// that is not such a record is returned as it is.
pub fn human_line(sidecar: Sidecar, line: &str) -> String {
    fn render(record: &dyn HumanRecord) -> String {
        let mut out = clock(record.time()).to_string();
        for cell in record.cells() {
            out.push(' ');
            // An empty cell (a CONNECT has no path) keeps its place.
            out.push_str(if cell.is_empty() { "-" } else { &cell });
        }
        if let Some(why) = record.why().filter(|why| !why.trim().is_empty()) {
            out.push_str(&format!(" ({why})"));
        }
        printable(&out)
    }
    let parsed: Option<Box<dyn HumanRecord>> = match sidecar {
        Sidecar::Egress => serde_json::from_str::<EgressRecord>(line).ok().map(|r| Box::new(r) as _),
        Sidecar::GitGate => serde_json::from_str::<PushRecord>(line).ok().map(|r| Box::new(r) as _),
    };
    parsed.map_or_else(|| line.to_string(), |record| render(record.as_ref()))
}

/// `HH:MM:SS` of an RFC 3339 time (`2026-05-01T12:00:00.123Z`), or the
/// time as it is when it is not one.
fn clock(time: &str) -> &str {
    match time.get(10..19) {
        Some(rest) if rest.starts_with('T') && rest[1..].bytes().all(|b| b.is_ascii_digit() || b == b':') => &rest[1..],
        _ => time,
    }
}

/// `text` with control characters (an agent's path may hold a terminal
/// escape) written as escapes, so a line prints as one line and nothing else.
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// A sink that prints each whole line written to it in `format`: the lines
/// as they are, or [`human_line`]s of `sidecar`. [`LogLines::finish`]
/// prints a last line that has no newline.
pub struct LogLines<W: Write> {
    sidecar: Sidecar,
    format: LogFormat,
    out: W,
    partial: Vec<u8>,
}

impl<W: Write> LogLines<W> {
    /// Lines of `sidecar`'s log in `format`, to `out`.
    pub fn new(sidecar: Sidecar, format: LogFormat, out: W) -> Self {
        LogLines { sidecar, format, out, partial: Vec::new() }
    }

    fn print(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self.format {
            LogFormat::Json => {
                self.out.write_all(line)?;
                self.out.write_all(b"\n")
            }
            LogFormat::Human => writeln!(self.out, "{}", human_line(self.sidecar, &String::from_utf8_lossy(line))),
        }
    }

    /// Prints what is left of a last line without a newline, and flushes.
    pub fn finish(mut self) -> std::io::Result<W> {
        if !self.partial.is_empty() {
            let last = std::mem::take(&mut self.partial);
            self.print(&last)?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for LogLines<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.print(&line[..end])?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Where [`copy_log`] found a bottle's audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    /// The running sidecar's.
    Live,
    /// The copy the bottle's state folder keeps since it stopped.
    Saved,
    /// The bottle is stopped and its state folder keeps no such log (it
    /// never launched, or stopped before logs were kept).
    NothingSaved,
    /// The bottle has no git gate (its manifest lists no git upstreams):
    /// there is no gate log.
    NoGate,
}

/// `bottle egress log` / `bottle gate log`: copy bottle `slug`'s `sidecar`
/// audit log to `sink` in `format`. While the bottle runs on `backend`,
/// the running sidecar's log (with `follow`, until it stops); once it
/// stopped, the copy in its state folder ([`StateRoot::log_path`]), with
/// or without `follow`. A slug neither `backend` nor `state` knows is
/// [`ErrorKind::NotFound`].
pub async fn copy_log(
    backend: &dyn DynBackend,
    state: &StateRoot,
    slug: &str,
    sidecar: Sidecar,
    follow: bool,
    format: LogFormat,
    sink: &mut (dyn Write + Send),
) -> Result<LogSource> {
    crate::state::validate_slug(slug)?;
    let meta = state.read(slug);
    let saved = state.log_path(slug, sidecar);
    if sidecar == Sidecar::GitGate && meta.as_ref().is_ok_and(|m| !m.gate) && !saved.exists() {
        return Ok(LogSource::NoGate);
    }
    let mut lines = LogLines::new(sidecar, format, sink);
    let written = |e| Error::io("writing the log", e);
    match backend.attach_dyn(slug).await {
        Ok(bottle) => {
            bottle.sidecar_log(sidecar, follow, &mut lines).await?;
            lines.finish().map_err(written)?;
            return Ok(LogSource::Live);
        }
        // Not running (or its engine is gone): the saved copy, when there is a state folder.
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Unavailable) && meta.is_ok() => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(meta.err().unwrap_or(e)),
        Err(e) => return Err(e),
    }
    let mut file = match std::fs::File::open(&saved) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LogSource::NothingSaved),
        Err(e) => return Err(Error::io(format!("reading {}", saved.display()), e)),
    };
    std::io::copy(&mut file, &mut lines).map_err(|e| Error::io(format!("copying {}", saved.display()), e))?;
    lines.finish().map_err(written)?;
    Ok(LogSource::Saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOWED: &str = r#"{"time":"2026-05-01T12:00:01.123Z","bottle":"shell-1","method":"GET","host":"api.example.com","path":"/v1/x","status":200,"bytes_up":0,"bytes_down":17,"rule":"api.example.com","decision":"allow","reason":null,"duration_ms":12}"#;
    const DENIED: &str = r#"{"time":"2026-05-01T12:00:02.000Z","bottle":"shell-1","method":"CONNECT","host":"example.com","path":"","status":403,"bytes_up":0,"bytes_down":0,"rule":null,"decision":"deny","reason":"example.com is not in this bottle's egress routes","duration_ms":0}"#;
    const PUSHED: &str = r#"{"time":"2026-05-01T23:59:59.999Z","bottle":"shell-1","upstream":"project","refs":[{"ref":"refs/heads/agent/one","old":"0000","new":"abcd"},{"ref":"refs/tags/v1","old":"0000","new":"abcd"}],"verdict":"allow","reason":"allowed: abcd:refs/heads/agent/one","upstream_result":"ok","duration_ms":80}"#;
    const REFUSED: &str = r#"{"time":"2026-05-01T00:00:00.000Z","bottle":"shell-1","upstream":"project","refs":[{"ref":"refs/heads/main","old":"a","new":"b"}],"verdict":"deny","reason":"refs/heads/main is not an allowed branch","upstream_result":null,"duration_ms":3}"#;

    #[test]
    fn audit_lines_print_short_on_a_terminal() {
        let check = |sidecar, line: &str, expect: &str| assert_eq!(human_line(sidecar, line), expect, "{line}");
        check(Sidecar::Egress, ALLOWED, "12:00:01 allow GET api.example.com /v1/x 200");
        check(
            Sidecar::Egress,
            DENIED,
            "12:00:02 deny  CONNECT example.com - 403 (example.com is not in this bottle's egress routes)",
        );
        check(Sidecar::GitGate, PUSHED, "23:59:59 allow project agent/one,refs/tags/v1");
        check(Sidecar::GitGate, REFUSED, "00:00:00 deny  project main (refs/heads/main is not an allowed branch)");
        let upstream_refused = PUSHED.replace(r#""upstream_result":"ok""#, r#""upstream_result":"error: rejected""#);
        check(Sidecar::GitGate, &upstream_refused, "23:59:59 allow project agent/one,refs/tags/v1 (error: rejected)");
        // Not a record: as it is (a warning, a truncated line, the other sidecar's line).
        check(Sidecar::Egress, "egress: listening on unix:/x", "egress: listening on unix:/x");
        check(Sidecar::Egress, "{\"time\":", "{\"time\":");
        check(Sidecar::GitGate, ALLOWED, ALLOWED);
        // A field the agent controls cannot write to the terminal.
        let escape = ALLOWED.replace("/v1/x", "/\\u001b[2Jx");
        check(Sidecar::Egress, &escape, "12:00:01 allow GET api.example.com /\\u{1b}[2Jx 200");
        // A time that is not RFC 3339 is shown as it is.
        check(
            Sidecar::Egress,
            &ALLOWED.replace("2026-05-01T12:00:01.123Z", "soon"),
            "soon allow GET api.example.com /v1/x 200",
        );
    }

    #[test]
    fn a_log_sink_prints_whole_lines_in_its_format_and_the_last_one_at_the_end() {
        let chunks = format!("{ALLOWED}\nnot json\n{}", &DENIED[..40]);
        let mut human = LogLines::new(Sidecar::Egress, LogFormat::Human, Vec::new());
        for chunk in chunks.as_bytes().chunks(7) {
            human.write_all(chunk).expect("write");
        }
        human.write_all(&DENIED.as_bytes()[40..]).expect("write");
        let human = String::from_utf8(human.finish().expect("finish")).expect("utf8");
        assert_eq!(
            human.lines().collect::<Vec<_>>(),
            [human_line(Sidecar::Egress, ALLOWED), "not json".into(), human_line(Sidecar::Egress, DENIED)]
        );
        let mut json = LogLines::new(Sidecar::Egress, LogFormat::Json, Vec::new());
        json.write_all(chunks.as_bytes()).expect("write");
        let json = String::from_utf8(json.finish().expect("finish")).expect("utf8");
        assert_eq!(json, format!("{ALLOWED}\nnot json\n{}\n", &DENIED[..40]), "as written, whole lines");
    }
}
