//! Where the sidecars' audit lines go, bounded: stdout (the container's log,
//! which the engine rotates) or a file, rotated once it passes
//! [`MAX_FILE_BYTES`] (the previous file kept as `PATH.1`); each line
//! written whole, with a newline. [`bounded`] cuts a field an agent controls
//! (a path, a ref name, a reason quoting them) to a length, saying so, so
//! that no request can make a line large.
//!
//! [`AuditWriter`] takes the writes off the request path: a thread of its
//! own writes each line as soon as it comes, together with every line that
//! queued while it was writing (a group commit: no line waits for a timer,
//! so a log read right after a request holds its line); dropping the writer (the last request gone, at shutdown) waits
//! until every line sent is written, so none is lost on exit.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Size past which an audit file is rotated.
pub(crate) const MAX_FILE_BYTES: u64 = 10 << 20;

/// The longest a field from the agent may be in an audit line, in bytes.
pub(crate) const MAX_FIELD: usize = 512;

/// An open audit log.
pub(crate) enum AuditSink {
    /// Standard output.
    Stdout,
    /// A file, with its path and how much it holds.
    File {
        /// Its path.
        path: PathBuf,
        /// The open file and its size.
        open: Mutex<(File, u64)>,
    },
}

impl AuditSink {
    /// Opens `target` for appending; `-` is stdout.
    pub(crate) fn open(target: &str) -> std::io::Result<Self> {
        if target == "-" {
            return Ok(AuditSink::Stdout);
        }
        let file = OpenOptions::new().create(true).append(true).open(target)?;
        let size = file.metadata()?.len();
        Ok(AuditSink::File { path: PathBuf::from(target), open: Mutex::new((file, size)) })
    }

    /// Appends `line` (a newline added) in one write and flushes; a file past
    /// [`MAX_FILE_BYTES`] is rotated first.
    pub(crate) fn write_line(&self, line: &[u8]) -> std::io::Result<()> {
        let mut whole = Vec::with_capacity(line.len() + 1);
        whole.extend_from_slice(line.strip_suffix(b"\n").unwrap_or(line));
        whole.push(b'\n');
        self.write_lines(&whole)
    }

    /// Appends `whole` (lines, each ending in a newline) in one write and
    /// flushes; a file past [`MAX_FILE_BYTES`] is rotated first.
    fn write_lines(&self, whole: &[u8]) -> std::io::Result<()> {
        match self {
            AuditSink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(whole).and_then(|()| out.flush())
            }
            AuditSink::File { path, open } => {
                let mut open = open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if open.1 + whole.len() as u64 > MAX_FILE_BYTES && open.1 > 0 {
                    let mut old = path.clone().into_os_string();
                    old.push(".1");
                    std::fs::rename(path, &old)?;
                    *open = (OpenOptions::new().create(true).append(true).open(path)?, 0);
                }
                open.0.write_all(whole)?;
                open.1 += whole.len() as u64;
                open.0.flush()
            }
        }
    }
}

/// The most bytes of queued lines written in one go.
const BATCH_BYTES: usize = 256 << 10;

/// An [`AuditSink`] written by a thread of its own (see the module doc).
pub(crate) struct AuditWriter {
    lines: Option<mpsc::Sender<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl AuditWriter {
    /// Starts writing to `sink`; `name` prefixes the line a failed write prints.
    pub(crate) fn start(sink: AuditSink, name: &'static str) -> std::io::Result<Self> {
        let (lines, received) = mpsc::channel::<Vec<u8>>();
        let thread = std::thread::Builder::new().name(format!("{name}-audit")).spawn(move || {
            let mut batch = Vec::new();
            while let Ok(first) = received.recv() {
                append(&mut batch, &first);
                while batch.len() < BATCH_BYTES {
                    match received.try_recv() {
                        Ok(line) => append(&mut batch, &line),
                        Err(_) => break,
                    }
                }
                if let Err(err) = sink.write_lines(&batch) {
                    eprintln!("{name}: cannot write the audit log: {err}");
                }
                batch.clear();
            }
        })?;
        Ok(AuditWriter { lines: Some(lines), thread: Some(thread) })
    }

    /// Hands `line` (without its newline) to the writer thread.
    pub(crate) fn send(&self, line: Vec<u8>) {
        if let Some(lines) = &self.lines {
            // The thread ends only once this sender is gone.
            let _ = lines.send(line);
        }
    }
}

impl Drop for AuditWriter {
    /// Waits until every line sent is written.
    fn drop(&mut self) {
        drop(self.lines.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Appends `line` and its newline to `batch`.
fn append(batch: &mut Vec<u8>, line: &[u8]) {
    batch.extend_from_slice(line.strip_suffix(b"\n").unwrap_or(line));
    batch.push(b'\n');
}

/// `text` cut to at most `max` bytes (at a character boundary), ending in
/// `…[cut N bytes]` when it was longer.
pub(crate) fn bounded(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…[cut {} bytes]", &text[..end], text.len() - end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_fields_are_cut_and_say_so() {
        assert_eq!(bounded("short", 10), "short");
        assert_eq!(bounded(&"a".repeat(20), 8), format!("{}…[cut 12 bytes]", "a".repeat(8)));
        assert_eq!(bounded("ééé", 3), "é…[cut 4 bytes]", "never inside a character");
    }

    #[test]
    fn a_full_file_is_rotated_and_every_line_stays_whole() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("audit.jsonl");
        std::fs::write(&path, vec![b'x'; (MAX_FILE_BYTES - 10) as usize]).expect("nearly full");
        let sink = AuditSink::open(path.to_str().expect("utf8")).expect("open");
        sink.write_line(b"{\"n\":1}").expect("write");
        sink.write_line(b"{\"n\":2}").expect("write");
        // The first line fits; the second would not, so the file moves aside first.
        let rotated = std::fs::read(tmp.path().join("audit.jsonl.1")).expect("the old file");
        assert_eq!(rotated.len() as u64, MAX_FILE_BYTES - 2);
        assert!(rotated.ends_with(b"{\"n\":1}\n"));
        assert_eq!(std::fs::read_to_string(&path).expect("the new file"), "{\"n\":2}\n");
    }

    #[test]
    fn the_writer_thread_writes_every_line_before_it_is_dropped() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("audit.jsonl");
        let writer = AuditWriter::start(AuditSink::open(path.to_str().expect("utf8")).expect("open"), "test")
            .expect("writer thread");
        for n in 0..1000 {
            writer.send(format!("{{\"n\":{n}}}").into_bytes());
        }
        drop(writer);
        let text = std::fs::read_to_string(&path).expect("the log");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000, "every line sent is written by the time the writer is dropped");
        assert!(lines.iter().enumerate().all(|(n, line)| *line == format!("{{\"n\":{n}}}")), "in order, whole");
    }
}
