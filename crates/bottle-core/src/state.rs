//! The state directory: `$XDG_STATE_HOME/bot-bottle/<slug>/` holds each
//! bottle's `metadata.json` (written atomically), its stage files and the
//! agent state saved for `resume`. Slugs are minted by creating the directory,
//! so two processes can never mint the same one.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::owner::Owner;
use crate::{Error, ErrorKind, Result};

/// The file in a bottle's state directory describing it.
pub const METADATA_FILE: &str = "metadata.json";
/// The folder in a bottle's state directory holding the agent state saved at teardown.
pub const RESUME_DIR: &str = "resume";

/// What `metadata.json` records about a bottle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BottleMetadata {
    /// The slug (and identity).
    pub slug: String,
    /// Agent name.
    pub agent: String,
    /// The backend actually used.
    pub backend: String,
    /// Provider (template) name.
    pub provider: String,
    /// Where the manifest came from.
    pub manifest: String,
    /// Who created it and when.
    pub owner: Owner,
    /// The agent's non-root user inside the bottle.
    pub guest_user: String,
    /// Guest paths holding the agent's own state, saved at teardown.
    pub resume_paths: Vec<String>,
    /// Operator's label.
    pub label: Option<String>,
    /// Operator's colour.
    pub color: Option<String>,
    /// Whether the bottle is detached (outlives `bottle start`).
    pub detached: bool,
    /// Set once launch and provisioning finished; a detached bottle whose
    /// owner is gone before this is set was left half-made.
    pub ready: bool,
    /// How many times it was resumed.
    pub resumes: u32,
    /// The most the agent's saved state may take (the manifest's
    /// `resources.state`; absent in metadata written before it existed).
    #[serde(default = "default_state_limit")]
    pub state_limit: crate::resources::ByteSize,
    /// The agent's working directory inside the bottle (the workspace).
    #[serde(default)]
    pub workdir: String,
    /// Whether the bottle has a git gate (its manifest lists upstreams).
    #[serde(default)]
    pub gate: bool,
    /// When it was last stopped, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub stopped_ms: Option<u64>,
}

fn default_state_limit() -> crate::resources::ByteSize {
    crate::resources::Limits::STATE
}

/// The folder in a bottle's state folder holding its sidecars' audit logs.
pub(crate) const LOGS_DIR: &str = "logs";

/// The lock file in a bottle's state folder (see [`StateRoot::lock`]).
const LOCK_FILE: &str = ".lock";

/// A held bottle lock: released when dropped (or when the process ends).
#[derive(Debug)]
pub struct SlugLock {
    _file: std::fs::File,
}

/// The root of all bottles' state directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRoot {
    dir: PathBuf,
}

impl StateRoot {
    /// `$XDG_STATE_HOME/bot-bottle`, or `$HOME/.local/state/bot-bottle`.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let base = match env("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => {
                let home = env("HOME").filter(|v| !v.is_empty()).ok_or_else(|| {
                    Error::new(ErrorKind::MissingHostEnv, "neither XDG_STATE_HOME nor HOME is set; set one of them")
                })?;
                Path::new(&home).join(".local/state")
            }
        };
        Ok(StateRoot { dir: base.join("bot-bottle") })
    }

    /// A state root at `dir` (tests, embedding tools).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        StateRoot { dir: dir.into() }
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The state directory of `slug`.
    pub fn bottle_dir(&self, slug: &str) -> PathBuf {
        self.dir.join(slug)
    }

    /// Where bottle `slug`'s audit log of `sidecar` is kept once the bottle
    /// stopped (JSON lines, each run's appended).
    pub fn log_path(&self, slug: &str, sidecar: crate::bottle::Sidecar) -> PathBuf {
        self.bottle_dir(slug).join(LOGS_DIR).join(format!("{}.jsonl", sidecar.name()))
    }

    /// Mint a new slug `<agent>-<8 hex>` by creating its directory; retries on collision.
    /// The folders are the operator's alone (mode 0700): they hold what came
    /// out of bottles.
    pub fn mint(&self, agent: &str) -> Result<(String, PathBuf)> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| Error::io(format!("creating {}", self.dir.display()), e))?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("making {} the operator's alone", self.dir.display()), e))?;
        for _ in 0..64 {
            let slug = format!("{agent}-{:08x}", random_u32());
            let dir = self.bottle_dir(&slug);
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok((slug, dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(format!("creating {}", dir.display()), e)),
            }
        }
        Err(Error::new(ErrorKind::Io, format!("could not mint a free slug under {}", self.dir.display())))
    }

    /// Read a bottle's metadata; a missing one is [`ErrorKind::NotFound`].
    pub fn read(&self, slug: &str) -> Result<BottleMetadata> {
        validate_slug(slug)?;
        let path = self.bottle_dir(slug).join(METADATA_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "no bottle `{slug}` in {}; `bottle list active` shows running ones, `bottle list stopped` the ones to resume",
                        self.dir.display()
                    ),
                )
            } else {
                Error::io(format!("reading {}", path.display()), e)
            }
        })?;
        serde_json::from_str(&text).map_err(|e| {
            Error::new(ErrorKind::Io, format!("{} is not valid bottle metadata; delete the folder", path.display()))
                .with_source(e)
        })
    }

    /// Write a bottle's metadata atomically (temporary file, then rename).
    pub fn write(&self, meta: &BottleMetadata) -> Result<()> {
        let dir = self.bottle_dir(&meta.slug);
        let path = dir.join(METADATA_FILE);
        let tmp = dir.join(format!(".{METADATA_FILE}.{}.tmp", std::process::id()));
        let json = serde_json::to_vec_pretty(meta)
            .map_err(|e| Error::new(ErrorKind::Io, "encoding metadata").with_source(e))?;
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }

    /// Update a bottle's metadata in place.
    pub fn update(&self, slug: &str, change: impl FnOnce(&mut BottleMetadata)) -> Result<BottleMetadata> {
        let mut meta = self.read(slug)?;
        change(&mut meta);
        self.write(&meta)?;
        Ok(meta)
    }

    /// Hold bottle `slug`'s lock until the guard drops, waiting while another
    /// process holds it: `stop`, teardown and `cleanup` of one bottle take
    /// turns, so two of them never remove the same resources at once.
    /// `None` when the bottle has no state folder (nothing to lock).
    pub async fn lock(&self, slug: &str) -> Result<Option<SlugLock>> {
        validate_slug(slug)?;
        let dir = self.bottle_dir(slug);
        if !dir.is_dir() {
            return Ok(None);
        }
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let locked = crate::blocking::unblock(move || {
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map(|()| file)
        })
        .await
        .map_err(|_| Error::new(ErrorKind::Io, format!("locking {} failed", path.display())))?;
        let file = locked.map_err(|e| Error::io(format!("locking {}", path.display()), e.into()))?;
        Ok(Some(SlugLock { _file: file }))
    }

    /// Delete a bottle's state directory (a run that never launched).
    pub fn discard(&self, slug: &str) -> Result<()> {
        let dir = self.bottle_dir(slug);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", dir.display()), e)),
        }
    }

    /// Every bottle's metadata, sorted by creation time then slug (unreadable folders are skipped).
    pub fn list(&self) -> Vec<BottleMetadata> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut all: Vec<BottleMetadata> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter_map(|slug| self.read(&slug).ok())
            .collect();
        all.sort_by(|a, b| (a.owner.created_ms, &a.slug).cmp(&(b.owner.created_ms, &b.slug)));
        all
    }
}

/// A slug names a folder: reject anything that could escape the state root.
pub fn validate_slug(slug: &str) -> Result<()> {
    let ok = !slug.is_empty()
        && slug.len() <= 80
        && slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "`{slug}` is not a bottle slug (lower-case letters, digits and '-'); `bottle list active` shows them"
            ),
        ))
    }
}

fn random_u32() -> u32 {
    // RandomState is seeded from the OS per process and varies per instance.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.write_u32(std::process::id());
    hasher.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn concurrent_minting_never_collides() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = StateRoot::at(tmp.path());
        let slugs: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| (0..200).map(|_| root.mint("agent").expect("mint").0).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("thread")).collect()
        });
        let unique: BTreeSet<_> = slugs.iter().collect();
        assert_eq!(unique.len(), 1600, "every minted slug is distinct");
        assert_eq!(std::fs::read_dir(tmp.path()).expect("read").count(), 1600, "one folder per slug");
        for slug in &slugs {
            validate_slug(slug).expect("minted slugs are valid");
        }
    }

    #[test]
    fn metadata_round_trips_and_bad_slugs_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = StateRoot::at(tmp.path());
        let (slug, _) = root.mint("shell").expect("mint");
        let meta = BottleMetadata {
            slug: slug.clone(),
            agent: "shell".into(),
            backend: "docker".into(),
            provider: "shell".into(),
            manifest: "embedded".into(),
            owner: Owner::current(),
            guest_user: "agent".into(),
            resume_paths: vec![],
            label: Some("x".into()),
            color: None,
            detached: true,
            ready: false,
            resumes: 0,
            state_limit: crate::resources::ByteSize::mib(5),
            workdir: "/home/agent/workspace".into(),
            gate: false,
            stopped_ms: Some(7),
        };
        root.write(&meta).expect("write");
        use std::os::unix::fs::PermissionsExt as _;
        for dir in [root.dir().to_path_buf(), root.bottle_dir(&slug)] {
            let mode = std::fs::metadata(&dir).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{} is the operator's alone", dir.display());
        }
        assert_eq!(root.read(&slug).expect("read"), meta);
        let updated = root.update(&slug, |m| m.ready = true).expect("update");
        assert!(updated.ready && root.read(&slug).expect("read").ready);
        assert_eq!(root.list(), vec![updated]);
        for bad in ["../etc", "a/b", "", "UPPER", "-x"] {
            assert_eq!(root.read(bad).expect_err(bad).kind(), ErrorKind::InvalidInput);
        }
        assert_eq!(root.read("missing-1").expect_err("missing").kind(), ErrorKind::NotFound);
        root.discard(&slug).expect("discard");
        assert!(root.list().is_empty());
    }

    #[tokio::test]
    async fn a_bottle_lock_makes_a_second_holder_wait_and_an_unknown_bottle_has_none() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = StateRoot::at(tmp.path());
        let (slug, _) = root.mint("shell").expect("mint");
        assert!(root.lock("shell-00000000").await.expect("lock").is_none(), "no folder, no lock");
        let first = root.lock(&slug).await.expect("lock").expect("a folder");
        let (root2, slug2) = (root.clone(), slug.clone());
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&order);
        let second = tokio::spawn(async move {
            let _held = root2.lock(&slug2).await.expect("lock").expect("a folder");
            seen.lock().expect("order").push("second");
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        order.lock().expect("order").push("first released");
        drop(first);
        second.await.expect("join");
        assert_eq!(*order.lock().expect("order"), ["first released", "second"], "the second waited");
    }
}
