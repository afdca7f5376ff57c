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
    /// Whether it was made for a warm pool ([`crate::pool`]), and its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolMembership>,
}

/// A bottle made for a warm pool: the key of the plan it was made from,
/// and when `bottle start` claimed it (`None` while it waits in the pool).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolMembership {
    /// The pool key (a hash of everything its plan depends on).
    pub key: String,
    /// When it was claimed, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub claimed_ms: Option<u64>,
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
        write_json(&self.bottle_dir(&meta.slug).join(METADATA_FILE), meta)
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
        let shown = path.display().to_string();
        let file = crate::blocking::unblock(move || lock_file(&path))
            .await
            .map_err(|_| Error::new(ErrorKind::Io, format!("locking {shown} failed")))??;
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

/// A bottle that has a state folder and runs on no backend (as far as the
/// available ones tell): what `bottle list stopped` shows and `resume`
/// starts again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoppedBottle {
    /// What its `metadata.json` says (its `stopped_ms` is `None` when it
    /// never stopped: a launch that did not finish, a killed launcher).
    #[serde(flatten)]
    pub meta: BottleMetadata,
    /// The agent state saved for `resume`: each guest path and its bytes.
    pub saved: Vec<SavedPath>,
    /// The bytes of all of it.
    pub saved_bytes: crate::resources::ByteSize,
}

/// One guest path of a bottle's saved agent state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SavedPath {
    /// The path inside the bottle.
    pub path: String,
    /// The bytes of its files.
    pub bytes: crate::resources::ByteSize,
}

impl StoppedBottle {
    fn of(root: &StateRoot, meta: BottleMetadata) -> Self {
        let saved: Vec<SavedPath> = crate::session::saved_state(&root.bottle_dir(&meta.slug), &meta.resume_paths)
            .into_iter()
            .map(|(path, bytes)| SavedPath { path, bytes })
            .collect();
        StoppedBottle { saved_bytes: crate::resources::ByteSize(saved.iter().map(|s| s.bytes.0).sum()), saved, meta }
    }

    /// When it was last stopped, or created when it never was.
    pub fn last_ms(&self) -> u64 {
        self.meta.stopped_ms.unwrap_or(self.meta.owner.created_ms)
    }
}

impl StateRoot {
    /// Every bottle with a state folder that is not among `active` (what
    /// the available backends list), sorted as [`StateRoot::list`]. A
    /// bottle being started or resumed now (not ready yet, its launcher
    /// alive on this host) is not stopped, though no backend lists it yet.
    pub fn stopped(&self, active: &[crate::bottle::ActiveAgent]) -> Vec<StoppedBottle> {
        let launching = |meta: &BottleMetadata| !meta.ready && meta.owner.liveness() == crate::owner::Liveness::Alive;
        self.list()
            .into_iter()
            .filter(|meta| active.iter().all(|a| a.slug != meta.slug) && !launching(meta))
            .map(|meta| StoppedBottle::of(self, meta))
            .collect()
    }
}

/// `bottle prune`: those of `stopped` last stopped (or created, when never
/// stopped) more than `older_than` before `now_ms`.
pub fn prunable(stopped: Vec<StoppedBottle>, older_than: std::time::Duration, now_ms: u64) -> Vec<StoppedBottle> {
    let older_than = u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX);
    stopped.into_iter().filter(|b| now_ms.saturating_sub(b.last_ms()) >= older_than).collect()
}

/// Parses an age such as `90m`, `12h`, `7d`, `2w` (also `30s`; `0m` is no
/// time at all).
pub fn parse_duration(text: &str) -> Result<std::time::Duration> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidInput,
            format!("`{text}` is not a duration; write a whole number and a unit: 90m, 12h, 7d or 2w"),
        )
    };
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let seconds: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    let number: u64 = number.parse().map_err(|_| bad())?;
    number.checked_mul(seconds).map(std::time::Duration::from_secs).ok_or_else(bad)
}

/// Write `value` as JSON to `path` atomically: a temporary file beside it,
/// synced, then renamed over it, so a reader never sees half a file.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let json = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::new(ErrorKind::Io, format!("encoding {}", path.display())).with_source(e))?;
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&json)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Open (creating it) the lock file at `path` and wait for its exclusive
/// lock (`flock`), held while the file stays open. Blocks.
pub(crate) fn lock_file(path: &Path) -> Result<std::fs::File> {
    let file = open_lock(path)?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| Error::io(format!("locking {}", path.display()), e.into()))?;
    Ok(file)
}

/// The lock file at `path`, opened (created when missing).
fn open_lock(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

/// Open (creating it) the lock file at `path` and take its exclusive lock
/// when no one holds it: `None` when someone does. Does not wait.
pub(crate) fn try_lock_file(path: &Path) -> Result<Option<std::fs::File>> {
    let file = open_lock(path)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(Error::io(format!("locking {}", path.display()), e.into())),
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
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The metadata of a detached shell bottle `slug`, created now, never stopped.
    pub(crate) fn sample(slug: &str) -> BottleMetadata {
        BottleMetadata {
            slug: slug.to_string(),
            agent: "shell".into(),
            backend: "docker".into(),
            provider: "shell".into(),
            manifest: "embedded".into(),
            owner: Owner::current(),
            guest_user: "agent".into(),
            resume_paths: vec![],
            label: None,
            color: None,
            detached: true,
            ready: false,
            resumes: 0,
            state_limit: crate::resources::ByteSize::mib(5),
            workdir: "/home/agent/workspace".into(),
            gate: false,
            stopped_ms: None,
            pool: None,
        }
    }

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
        let meta = BottleMetadata { label: Some("x".into()), stopped_ms: Some(7), ..sample(&slug) };
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

    #[test]
    fn durations_read_minutes_hours_days_and_weeks() {
        let check = |text: &str, secs: Option<u64>| {
            let parsed = parse_duration(text);
            match secs {
                Some(secs) => assert_eq!(parsed.expect(text), std::time::Duration::from_secs(secs), "{text}"),
                None => assert_eq!(parsed.expect_err(text).kind(), ErrorKind::InvalidInput, "{text}"),
            }
        };
        check("90m", Some(90 * 60));
        check("12h", Some(12 * 3600));
        check("7d", Some(7 * 86_400));
        check("2w", Some(14 * 86_400));
        check("30d", Some(30 * 86_400));
        check("45s", Some(45));
        check("0m", Some(0));
        for bad in ["", "d", "7", "7 d", "-1d", "1.5h", "7y", "7dd", "99999999999999999999w", "18446744073709551615w"] {
            check(bad, None);
        }
        assert!(parse_duration("7x").expect_err("unit").to_string().contains("90m, 12h, 7d or 2w"));
    }

    #[test]
    fn stopped_bottles_are_those_not_active_with_what_they_saved_and_old_ones_are_prunable() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = StateRoot::at(tmp.path());
        let mut slugs = Vec::new();
        // The second's launcher is gone (a killed `bottle start`); the fourth's runs (it is being started).
        let gone = Owner { pid: u32::MAX, ..Owner::current() };
        for (created, stopped, ready, owner) in [
            (1_000, Some(5_000), true, Owner::current()),
            (2_000, None, false, gone),
            (3_000, None, true, Owner::current()),
            (4_000, None, false, Owner::current()),
        ] {
            let (slug, dir) = root.mint("shell").expect("mint");
            let meta = BottleMetadata {
                owner: Owner { created_ms: created, ..owner },
                resume_paths: vec!["/home/agent/.bash_history".into(), "/home/agent/.config".into()],
                color: Some("red".into()),
                ready,
                stopped_ms: stopped,
                ..sample(&slug)
            };
            root.write(&meta).expect("write");
            if stopped.is_some() {
                std::fs::create_dir_all(dir.join("resume/home/agent")).expect("mkdir");
                std::fs::write(dir.join("resume/home/agent/.bash_history"), "ls\nexit\n").expect("write");
            }
            slugs.push(slug);
        }
        let running = crate::labels::Labels(&[(crate::labels::SLUG.to_string(), slugs[2].clone())].into())
            .active_agent("docker", "running".into(), "img".into(), &[])
            .expect("a slug");
        let stopped = root.stopped(&[running]);
        assert_eq!(stopped.iter().map(|b| b.meta.slug.as_str()).collect::<Vec<_>>(), [&slugs[0], &slugs[1]]);
        let (first, second) = (&stopped[0], &stopped[1]);
        let history = SavedPath { path: "/home/agent/.bash_history".into(), bytes: crate::resources::ByteSize(8) };
        assert_eq!((first.saved.clone(), first.saved_bytes.0, first.last_ms()), (vec![history], 8, 5_000));
        assert!(first.meta.ready && !second.meta.ready);
        assert_eq!((second.saved.len(), second.last_ms()), (0, 2_000), "never stopped: its creation counts");
        let json = serde_json::to_value(first).expect("json");
        assert_eq!((json["slug"].as_str(), json["agent"].as_str()), (Some(slugs[0].as_str()), Some("shell")));
        assert_eq!(json["saved"][0]["path"], "/home/agent/.bash_history");
        assert_eq!((json["saved_bytes"].as_u64(), json["stopped_ms"].as_u64()), (Some(8), Some(5_000)));
        let minute = std::time::Duration::from_secs(60);
        let old =
            |now: u64| prunable(stopped.clone(), minute, now).into_iter().map(|b| b.meta.slug).collect::<Vec<_>>();
        assert_eq!(old(62_000), [slugs[1].clone()], "only the one created more than a minute before");
        assert_eq!(old(65_000), [slugs[0].clone(), slugs[1].clone()]);
        assert_eq!(prunable(stopped.clone(), std::time::Duration::ZERO, 5_000).len(), 2, "0m: every stopped one");
    }
}
