//! The git gate: holds the upstreams' SSH keys, mirrors each upstream and
//! serves the mirrors to the bottle over git's smart HTTP (`/NAME.git`), and
//! forwards a push upstream only when the push policy allows it.
//!
//! - Fetch and clone: the mirror is fetched from its upstream before each
//!   ref advertisement, so the agent sees fresh refs; an unreachable upstream
//!   leaves the mirror as it is, with a warning on stderr.
//! - Push: the mirror's `pre-receive` hook (this program again, in hook mode,
//!   see the `hook` module) checks each ref update against [`PushPolicy`]
//!   (the `policy` module documents the branch and path patterns): the
//!   branch, force, delete and tags, and what the update changes (no CI
//!   definition unless `push.ci`, nothing `push.paths_deny` names). It pushes
//!   the allowed updates to the upstream from the quarantine, and lets the
//!   mirror take them only when the upstream did. The mirror refuses a pack
//!   over `push.max_push_mb` and checks every object it receives. Each push
//!   leaves one JSON line in the audit log.
//! - Bounds: a connection that makes no progress for the configured idle
//!   timeout is cut (a push stalled mid-pack takes its quarantine with it),
//!   a request head must be whole 30 s after its first byte, at most 16
//!   requests are served at once (the rest get `503`), and one upstream
//!   fetch serves every request that arrives while it runs.
//!
//! `git` does the git work: `git http-backend` as a CGI, `git fetch` and
//! `git push` over `ssh`.
//!
//! [`PushPolicy`]: bottle_core::PushPolicy

mod audit;
mod changes;
mod hook;
mod http;
mod mirror;
mod policy;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::listen::Listener;
use bottle_core::sidecar::{GitGateConfig, SidecarProcess};

use self::audit::AuditLog;
use self::mirror::{Layout, Mirror};
use crate::Relaunch;

/// What went wrong starting the gate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GateError {
    /// The configuration cannot be used.
    #[error("invalid git gate configuration: {0}")]
    Config(String),
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the gate was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A git command failed.
    #[error("{context}: {stderr}")]
    Git {
        /// What the gate was doing.
        context: String,
        /// What git said.
        stderr: String,
    },
}

impl GateError {
    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }
}

/// The running gate: its mirrors by name and where it writes.
struct Gate {
    bottle: String,
    /// Checks the bottle's client token (`401` without it).
    client_token: bottle_core::sidecar::TokenDigest,
    layout: Layout,
    /// `git-http-backend`, in git's exec path.
    http_backend: std::path::PathBuf,
    mirrors: BTreeMap<String, Arc<Mirror>>,
    audit: AuditLog,
    /// Pushes so far, to name each one's audit spool file.
    pushes: AtomicU64,
    /// A permit for each request being served (see `http::MAX_REQUESTS`).
    requests: Arc<tokio::sync::Semaphore>,
    /// How long a connection may make no progress.
    idle_timeout: Duration,
}

impl Gate {
    /// Prepares the work directory and every mirror (fetching each upstream).
    async fn prepare(config: GitGateConfig, relaunch: &Relaunch) -> Result<Self, GateError> {
        let mut seen = std::collections::BTreeSet::new();
        for upstream in &config.policy.upstreams {
            let name = &upstream.name;
            let valid = !name.is_empty()
                && !name.starts_with('.')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err(GateError::Config(format!(
                    "upstream name `{name}` is not usable in a URL path; use letters, digits, `-`, `_` and `.`"
                )));
            }
            if !seen.insert(name.clone()) {
                return Err(GateError::Config(format!("upstream name `{name}` appears twice")));
            }
        }
        if config.policy.idle_timeout_secs == 0 {
            return Err(GateError::Config("idle_timeout_secs is 0; give the clients at least a second".into()));
        }
        let layout = Layout::create(Path::new(&config.work_dir))?;
        let audit = AuditLog::open(&config.audit_log)?;
        let exec_path = mirror::git_command(&layout.home, "git")
            .arg("--exec-path")
            .output()
            .await
            .map_err(|source| GateError::io("running git --exec-path", source))?;
        if !exec_path.status.success() {
            return Err(GateError::Git {
                context: "finding git's exec path".into(),
                stderr: String::from_utf8_lossy(&exec_path.stderr).trim().to_owned(),
            });
        }
        let http_backend = Path::new(String::from_utf8_lossy(&exec_path.stdout).trim()).join("git-http-backend");
        let idle_timeout = Duration::from_secs(config.policy.idle_timeout_secs);
        let mut mirrors = BTreeMap::new();
        for upstream in &config.policy.upstreams {
            let grants = config.grants.as_deref().map(Path::new);
            let mirror =
                Mirror::prepare(&layout, &config.policy.bottle, upstream, relaunch, idle_timeout, grants).await?;
            mirrors.insert(upstream.name.clone(), Arc::new(mirror));
        }
        Ok(Self {
            bottle: config.policy.bottle,
            client_token: config.policy.client_token,
            layout,
            http_backend,
            mirrors,
            audit,
            pushes: AtomicU64::new(0),
            requests: Arc::new(tokio::sync::Semaphore::new(http::MAX_REQUESTS)),
            idle_timeout,
        })
    }
}

/// Serves the gate described by `config` on `listener` until the future is
/// dropped: prepares the work directory and the mirrors first (a client that
/// connects meanwhile waits), then answers git's smart HTTP.
///
/// The mirrors' `pre-receive` hook runs `relaunch` in hook mode.
pub async fn serve(config: GitGateConfig, listener: Listener, relaunch: &Relaunch) -> Result<(), GateError> {
    let gate = Gate::prepare(config, relaunch).await?;
    http::run(Arc::new(gate), listener).await;
    Ok(())
}

/// Runs the git gate with the configuration at `path`; returns the exit code.
///
/// With `BOTTLE_GIT_GATE_HOOK=pre-receive` in the environment this is the
/// mirrors' `pre-receive` hook instead, and `path` is the hook's own
/// configuration (`WORK/hooks/NAME.json`).
pub fn main(path: &str, relaunch: &Relaunch) -> i32 {
    if std::env::var_os(hook::HOOK_ENV).is_some_and(|mode| mode == "pre-receive") {
        return hook::main(path);
    }
    crate::program::main("git-gate", path, crate::program::Workers::UpTo(4), |config| run(config, relaunch))
}

/// Binds, prepares, says where it listens, serves until SIGTERM or SIGINT.
async fn run(config: GitGateConfig, relaunch: &Relaunch) -> Result<(), GateError> {
    let listen = config.listen.to_string();
    let listener = Listener::bind(&config.listen)
        .await
        .map_err(|source| GateError::io(format!("listening on {listen}"), source))?;
    let addr = listener.local_addr().map_err(|source| GateError::io("reading the listening address", source))?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| GateError::io("installing the SIGTERM handler", source))?;
    let gate = Gate::prepare(config, relaunch).await?;
    eprintln!("{}", SidecarProcess::GitGate.ready_line(&addr.to_string()));
    tokio::select! {
        () = http::run(Arc::new(gate), listener) => {}
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
