//! The fake's state, under the folder named by `$SMOLVM_FAKE_STATE`:
//! `calls.jsonl` (every invocation's arguments, one JSON array per line) and
//! `machines/NAME.json` (one record per machine; creating it with
//! `create_new` is what makes a name taken).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Fail;

/// The environment variable naming the state folder.
pub(crate) const STATE_ENV: &str = "SMOLVM_FAKE_STATE";

/// The network a machine gets, from `create`'s flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub(crate) enum Network {
    /// No network (the default).
    None,
    /// Full outbound (`--net`).
    Net,
    /// Only the host's loopback (`--outbound-localhost-only`).
    OutboundLocalhostOnly,
    /// Only these hosts and ranges (`--allow-host`, `--allow-cidr`).
    Allow {
        /// Host names, resolved when the machine starts.
        hosts: Vec<String>,
        /// Address ranges.
        cidrs: Vec<String>,
    },
}

impl Network {
    /// How `machine ls` names it.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Network::None => "none",
            Network::Net => "net",
            Network::OutboundLocalhostOnly => "outbound-localhost-only",
            Network::Allow { .. } => "allow-list",
        }
    }
}

/// One machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) name: String,
    /// `--image` as given.
    pub(crate) image: String,
    /// The Docker image it runs (loaded from the archive, or the reference).
    pub(crate) docker_image: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) env: Vec<String>,
    pub(crate) volumes: Vec<String>,
    pub(crate) cpus: Option<String>,
    pub(crate) memory_mib: Option<u64>,
    pub(crate) network: Network,
    /// RFC 3339, UTC.
    pub(crate) created_at: String,
    /// The Docker container that is this machine.
    pub(crate) container: String,
    /// The firewall rules in force while it runs: each an `iptables`/`ip6tables` argv that inserts it.
    #[serde(default)]
    pub(crate) rules: Vec<Vec<String>>,
    /// The named network namespace (`/run/netns/NAME`) the machine was made
    /// in, when not the host's: its guest's sockets live there (smolvm's
    /// socket impersonation), so it sees that namespace's loopback only.
    #[serde(default)]
    pub(crate) netns: Option<String>,
}

/// The state folder.
pub(crate) struct Store {
    dir: PathBuf,
}

impl Store {
    /// The folder named by [`STATE_ENV`], which must be set.
    pub(crate) fn from_env() -> Result<Self, Fail> {
        let dir = std::env::var_os(STATE_ENV)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Fail::new(format!("{STATE_ENV} is not set: the fake smolvm keeps its state there")))?;
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(dir.join("machines"))
            .map_err(|e| Fail::new(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Store { dir })
    }

    /// The state folder itself.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Append one invocation's arguments to `calls.jsonl`.
    pub(crate) fn record_call(&self, args: &[String]) -> Result<(), Fail> {
        let path = self.dir.join("calls.jsonl");
        let mut line = serde_json::to_vec(args).map_err(|e| Fail::new(format!("encoding the call: {e}")))?;
        line.push(b'\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&line))
            .map_err(|e| Fail::new(format!("cannot append to {}: {e}", path.display())))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join("machines").join(format!("{name}.json"))
    }

    /// Take `record.name` and store the record; an existing machine of that name is an error.
    pub(crate) fn create(&self, record: &Record) -> Result<(), Fail> {
        let path = self.path(&record.name);
        let json = serde_json::to_vec_pretty(record).map_err(|e| Fail::new(format!("encoding a machine: {e}")))?;
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => file.write_all(&json).map_err(|e| Fail::new(format!("writing {}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Fail::new(format!("machine '{}' already exists", record.name)))
            }
            Err(e) => Err(Fail::new(format!("creating {}: {e}", path.display()))),
        }
    }

    /// Replace a machine's record (atomically).
    pub(crate) fn save(&self, record: &Record) -> Result<(), Fail> {
        let path = self.path(&record.name);
        let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
        let json = serde_json::to_vec_pretty(record).map_err(|e| Fail::new(format!("encoding a machine: {e}")))?;
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| Fail::new(format!("writing {}: {e}", path.display())))
    }

    /// A machine's record; an unknown name is an error (exit 1).
    pub(crate) fn get(&self, name: &str) -> Result<Record, Fail> {
        self.find(name)?.ok_or_else(|| Fail::new(format!("machine '{name}' not found")))
    }

    /// A machine's record, `None` when there is no such machine.
    pub(crate) fn find(&self, name: &str) -> Result<Option<Record>, Fail> {
        if !valid_name(name) {
            return Ok(None);
        }
        let path = self.path(name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Fail::new(format!("{} is not a machine record: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Fail::new(format!("reading {}: {e}", path.display()))),
        }
    }

    /// Forget a machine.
    pub(crate) fn remove(&self, name: &str) -> Result<(), Fail> {
        match std::fs::remove_file(self.path(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Fail::new(format!("removing machine '{name}': {e}"))),
        }
    }

    /// Every machine, by name.
    pub(crate) fn all(&self) -> Result<Vec<Record>, Fail> {
        let dir = self.dir.join("machines");
        let entries = std::fs::read_dir(&dir).map_err(|e| Fail::new(format!("reading {}: {e}", dir.display())))?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".json")).map(str::to_string))
            .collect();
        names.sort();
        let mut records = Vec::new();
        for name in names {
            if let Some(record) = self.find(&name)? {
                records.push(record);
            }
        }
        Ok(records)
    }
}

/// Machine names: what a Docker container name allows (we prefix it), so a name never escapes the folder.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.len() <= 100
}

/// `secs` since the Unix epoch as RFC 3339 (UTC).
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_names() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_786_000_000), "2026-08-06T07:06:40Z");
        assert!(valid_name("bb-shell-1a2b") && valid_name("a.b_c"));
        assert!(!valid_name("") && !valid_name("../x") && !valid_name("-x") && !valid_name("a/b"));
    }
}
