//! Where the sidecars' audit lines go, bounded: stdout (the container's log,
//! which the engine rotates) or a file, rotated once it passes
//! [`MAX_FILE_BYTES`] (the previous file kept as `PATH.1`); each line
//! written whole, with a newline. [`bounded`] cuts a field an agent controls
//! (a path, a ref name, a reason quoting them) to a length, saying so, so
//! that no request can make a line large.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

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
        match self {
            AuditSink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&whole).and_then(|()| out.flush())
            }
            AuditSink::File { path, open } => {
                let mut open = open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if open.1 + whole.len() as u64 > MAX_FILE_BYTES && open.1 > 0 {
                    let mut old = path.clone().into_os_string();
                    old.push(".1");
                    std::fs::rename(path, &old)?;
                    *open = (OpenOptions::new().create(true).append(true).open(path)?, 0);
                }
                open.0.write_all(&whole)?;
                open.1 += whole.len() as u64;
                open.0.flush()
            }
        }
    }
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
}
