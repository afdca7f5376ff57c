//! One upstream's side of the gate: its key and known hosts in the work
//! directory, the `GIT_SSH_COMMAND` that uses them, and the bare mirror the
//! agent clones from and pushes to, with the `pre-receive` hook that forwards
//! pushes upstream.
//!
//! Fetching is coalesced: at most one fetch of an upstream runs at a time,
//! and requests that arrive meanwhile wait for it and take its result. The
//! mirror's lock (a `flock` on `WORK/locks/NAME.lock`, which the hook takes
//! too) is held only while its refs change from the upstream's side: during
//! a fetch, and while the hook forwards a push, never while a client uploads
//! a pack, so a stalled push holds nothing. (receive-pack updates the
//! mirror's refs just after the hook lets go: a fetch landing in between can
//! only make that update fail, and the agent's next fetch sees the upstream.)
//!
//! Work directory layout:
//!
//! ```text
//! WORK/home/               HOME of every git and ssh the gate runs (no operator config)
//! WORK/ssh/NAME.key        the upstream's private key, mode 0600
//! WORK/ssh/NAME.known_hosts  the pinned host key, or the one trusted on first use
//! WORK/repos/NAME.git      the bare mirror, served as /NAME.git
//! WORK/hooks/NAME.json     what the mirror's pre-receive hook needs (no key)
//! WORK/spool/              audit records the hook leaves for the gate
//! WORK/locks/NAME.lock     the mirror's lock
//! ```

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};

use bottle_core::sidecar::GateUpstream;
use tokio::process::Command;
use tokio::sync::watch;

use super::GateError;
use super::hook::{HOOK_ENV, HookConfig};
use crate::Relaunch;

/// What fetches from the upstream into the mirror: branches and tags, as they are there.
const MIRROR_REFSPECS: [&str; 2] = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

/// The directories of the work directory, made by [`Layout::create`].
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// HOME for git and ssh.
    pub(crate) home: PathBuf,
    /// Keys and known hosts.
    ssh: PathBuf,
    /// `GIT_PROJECT_ROOT`: the mirrors.
    pub(crate) repos: PathBuf,
    /// Hook configurations.
    hooks: PathBuf,
    /// Audit records in transit.
    pub(crate) spool: PathBuf,
    /// The mirrors' lock files.
    locks: PathBuf,
}

impl Layout {
    /// Creates the work directory `work` (private to the gate's user) and its parts.
    pub(crate) fn create(work: &Path) -> Result<Self, GateError> {
        let work = std::path::absolute(work)
            .map_err(|source| GateError::io(format!("resolving the work directory {}", work.display()), source))?;
        let layout = Self {
            home: work.join("home"),
            ssh: work.join("ssh"),
            repos: work.join("repos"),
            hooks: work.join("hooks"),
            spool: work.join("spool"),
            locks: work.join("locks"),
        };
        for dir in [&work, &layout.home, &layout.ssh, &layout.repos, &layout.hooks, &layout.spool, &layout.locks] {
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
                .map_err(|source| GateError::io(format!("creating {}", dir.display()), source))?;
        }
        Ok(layout)
    }
}

/// One upstream's mirror.
#[derive(Debug)]
pub(crate) struct Mirror {
    /// The upstream's name (served as `/NAME.git`).
    pub(crate) name: String,
    /// The bare mirror.
    dir: PathBuf,
    /// The upstream in scp-like form, `USER@HOST:REPO`.
    url: String,
    /// `GIT_SSH_COMMAND` for the upstream.
    ssh_command: String,
    /// HOME for git and ssh.
    home: PathBuf,
    /// The mirror's lock file (see [`lock_mirror`]).
    lock: PathBuf,
    /// The fetch in flight, if any: done when it says `true`.
    fetching: Mutex<Option<watch::Receiver<bool>>>,
}

impl Mirror {
    /// Writes the upstream's key and known hosts, creates the mirror with its
    /// hook (running `relaunch`), and fetches it from the upstream; an
    /// unreachable upstream is a warning, not an error. `idle_timeout` is
    /// how long the gate lets a client connection be silent.
    pub(crate) async fn prepare(
        layout: &Layout,
        bottle: &str,
        upstream: &GateUpstream,
        relaunch: &Relaunch,
        idle_timeout: std::time::Duration,
        grants: Option<&Path>,
    ) -> Result<Self, GateError> {
        let name = &upstream.name;
        let key = layout.ssh.join(format!("{name}.key"));
        let mut key_text = upstream.identity_key.expose().replace("\r\n", "\n");
        if !key_text.ends_with('\n') {
            // OpenSSH refuses a private key without its final newline.
            key_text.push('\n');
        }
        write_private(&key, key_text.as_bytes())?;
        let known_hosts = layout.ssh.join(format!("{name}.known_hosts"));
        let strict = match &upstream.known_hosts {
            Some(lines) => {
                write_private(&known_hosts, lines.as_bytes())?;
                "yes"
            }
            None => {
                // Trust on first use; what was trusted before a restart stays trusted.
                if !known_hosts.exists() {
                    write_private(&known_hosts, b"")?;
                }
                "accept-new"
            }
        };
        let ssh_command = format!(
            "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o IdentityAgent=none -o UserKnownHostsFile={} \
             -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking={strict} -o BatchMode=yes \
             -o ConnectTimeout=15 -o ServerAliveInterval=15 -o ServerAliveCountMax=4 -p {}",
            shell_quote(&key.to_string_lossy()),
            shell_quote(&known_hosts.to_string_lossy()),
            upstream.port
        );
        let host = if upstream.host.contains(':') { format!("[{}]", upstream.host) } else { upstream.host.clone() };
        let mirror = Self {
            name: name.clone(),
            dir: layout.repos.join(format!("{name}.git")),
            url: format!("{}@{host}:{}", upstream.user, upstream.repo),
            ssh_command,
            home: layout.home.clone(),
            lock: layout.locks.join(format!("{name}.lock")),
            fetching: Mutex::new(None),
        };

        let hook_config = HookConfig {
            bottle: bottle.to_owned(),
            upstream: name.clone(),
            url: mirror.url.clone(),
            ssh_command: mirror.ssh_command.clone(),
            lock: mirror.lock.clone(),
            policy: upstream.push.clone(),
            grants: grants.map(Path::to_path_buf),
        };
        let hook_config_path = layout.hooks.join(format!("{name}.json"));
        let json = serde_json::to_vec_pretty(&hook_config)
            .map_err(|e| GateError::io(format!("encoding {}", hook_config_path.display()), std::io::Error::other(e)))?;
        write_private(&hook_config_path, &json)?;

        mirror
            .git_ok("creating the mirror", |git| {
                git.args(["init", "--quiet", "--bare", "--template="]).arg(&mirror.dir);
            })
            .await?;
        let max_input_size = upstream.push.max_push_mb.saturating_mul(1 << 20).to_string();
        // git's keepalives (5 s by default) while it works before answering:
        // often enough that the idle timeout never cuts a client waiting on it.
        let keepalive = (idle_timeout.as_secs() / 2).clamp(1, 5).to_string();
        for (key, value) in [
            // http-backend serves receive-pack only when told to.
            ("http.receivepack", "true"),
            // Partial clones (`--filter`) for agents who want them.
            ("uploadpack.allowFilter", "true"),
            // Keep what arrives (a push, a fetch) as the pack it came in, so
            // forwarding it reuses its compressed objects as they are...
            ("transfer.unpackLimit", "1"),
            // ...and its deltas, without searching for new ones: the agent's
            // git or the upstream already did. It keeps a 50 MB push through
            // the gate within seconds of a direct one.
            ("pack.window", "0"),
            // Check every object a push brings (index-pack --strict)...
            ("receive.fsckObjects", "true"),
            // ...and refuse a pack larger than the policy allows.
            ("receive.maxInputSize", &max_input_size),
            // (See `keepalive` above.)
            ("receive.keepAlive", &keepalive),
            ("uploadpack.keepAlive", &keepalive),
        ] {
            mirror
                .git_ok("configuring the mirror", |git| {
                    git.arg("--git-dir").arg(&mirror.dir).args(["config", key, value]);
                })
                .await?;
        }
        let hooks = mirror.dir.join("hooks");
        let script = format!(
            "#!/bin/sh\n# Written by the bot-bottle git gate: checks the push policy and forwards the push upstream.\n\
             {HOOK_ENV}=pre-receive\nexport {HOOK_ENV}\nexec {} git-gate --config {}\n",
            std::iter::once(relaunch.program.to_string_lossy().into_owned())
                .chain(relaunch.args.iter().cloned())
                .map(|word| shell_quote(&word))
                .collect::<Vec<_>>()
                .join(" "),
            shell_quote(&hook_config_path.to_string_lossy())
        );
        let hook = hooks.join("pre-receive");
        std::fs::create_dir_all(&hooks)
            .and_then(|()| std::fs::write(&hook, script))
            .and_then(|()| std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)))
            .map_err(|source| GateError::io(format!("writing {}", hook.display()), source))?;

        // Nobody else sees the mirror yet: no need for its lock.
        match mirror.remote_head().await {
            Ok(Some(head)) => {
                mirror
                    .git_ok("pointing the mirror's HEAD at the upstream's", |git| {
                        git.arg("--git-dir").arg(&mirror.dir).args(["symbolic-ref", "HEAD", &head]);
                    })
                    .await?;
            }
            Ok(None) => {}
            Err(err) => mirror.warn(&err),
        }
        if let Err(err) = mirror.fetch().await {
            mirror.warn(&err);
        }
        Ok(mirror)
    }

    /// Fetches the upstream into the mirror, so the agent sees fresh refs; if
    /// the upstream cannot be reached the mirror stays as it is, with a warning.
    ///
    /// A fetch already in flight is waited for and taken instead of starting
    /// another. The fetch runs on its own task: a request that goes away
    /// while waiting stops nothing.
    pub(crate) async fn refresh(self: &Arc<Self>) {
        let mut fetched = {
            let mut in_flight = self.fetching.lock().unwrap_or_else(PoisonError::into_inner);
            match &*in_flight {
                // (A fetch task that went away without saying is no fetch in flight.)
                Some(fetched) if fetched.has_changed().is_ok() => fetched.clone(),
                _ => {
                    let (done, fetched) = watch::channel(false);
                    *in_flight = Some(fetched.clone());
                    let mirror = Arc::clone(self);
                    tokio::spawn(async move {
                        mirror.fetch_locked().await;
                        // Requests from now on start a fetch of their own.
                        *mirror.fetching.lock().unwrap_or_else(PoisonError::into_inner) = None;
                        let _ = done.send(true);
                    });
                    fetched
                }
            }
        };
        // An error means the fetch task is gone: there is nothing more to wait for.
        let _ = fetched.wait_for(|done| *done).await;
    }

    /// [`Mirror::fetch`] under the mirror's lock; failures are warnings.
    async fn fetch_locked(&self) {
        let lock = self.lock.clone();
        let held = match tokio::task::spawn_blocking(move || lock_mirror(&lock)).await {
            Ok(Ok(held)) => held,
            Ok(Err(err)) => return self.warn(&format!("cannot take the mirror's lock: {err}")),
            Err(err) => return self.warn(&format!("cannot take the mirror's lock: {err}")),
        };
        if let Err(err) = self.fetch().await {
            self.warn(&err);
        }
        drop(held);
    }

    fn warn(&self, err: &str) {
        eprintln!(
            "git-gate: warning: could not fetch {} from its upstream, serving the mirror as it is: {}",
            self.name,
            err.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
        );
    }

    /// `git fetch --prune` of the upstream's branches and tags (the caller holds the lock).
    async fn fetch(&self) -> Result<(), String> {
        self.git_output(|git| {
            git.arg("--git-dir")
                .arg(&self.dir)
                .args(["fetch", "--quiet", "--prune", "--no-tags", "--no-write-fetch-head", &self.url])
                .args(MIRROR_REFSPECS);
        })
        .await
        .map(drop)
    }

    /// The branch the upstream's HEAD points to, if it says.
    async fn remote_head(&self) -> Result<Option<String>, String> {
        let listing = self
            .git_output(|git| {
                git.arg("--git-dir").arg(&self.dir).args(["ls-remote", "--symref", &self.url, "HEAD"]);
            })
            .await?;
        Ok(listing.lines().find_map(|line| {
            let target = line.strip_prefix("ref: ")?.strip_suffix("\tHEAD")?;
            target.starts_with("refs/heads/").then(|| target.to_owned())
        }))
    }

    /// Runs git as the gate runs it (see [`git_command`]) with the upstream's
    /// ssh command; returns its stdout, or its stderr as the error.
    async fn git_output(&self, args: impl FnOnce(&mut Command)) -> Result<String, String> {
        let mut git = git_command(&self.home, "git");
        git.env("GIT_SSH_COMMAND", &self.ssh_command);
        args(&mut git);
        let out = git.output().await.map_err(|err| format!("could not run git: {err}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            Err(if stderr.is_empty() { format!("git failed ({})", out.status) } else { stderr })
        }
    }

    async fn git_ok(&self, doing: &str, args: impl FnOnce(&mut Command)) -> Result<(), GateError> {
        self.git_output(args).await.map(drop).map_err(|stderr| GateError::Git {
            context: format!("{doing} for {} ({})", self.name, self.dir.display()),
            stderr,
        })
    }
}

/// Takes the mirror's lock at `path` (waiting for whoever holds it): an
/// exclusive `flock`, released when the returned file is dropped or the
/// process ends, however it ends.
pub(crate) fn lock_mirror(path: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new().create(true).write(true).truncate(false).mode(0o600).open(path)?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
    Ok(file)
}

/// `git` (or another `program` of git's) with a clean environment: `PATH`,
/// `HOME` = `home` (so no operator configuration and no ssh agent leak in),
/// C locale, no prompts.
pub(crate) fn git_command(home: &Path, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut git = Command::new(program);
    git.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()))
        .env("HOME", home)
        .env("LC_ALL", "C")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    git
}

/// Writes `data` to `path`, readable by the gate's user only (also when it existed).
fn write_private(path: &Path, data: &[u8]) -> Result<(), GateError> {
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(data)
    };
    write().map_err(|source| GateError::io(format!("writing {}", path.display()), source))
}

/// `text` quoted for `sh`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
