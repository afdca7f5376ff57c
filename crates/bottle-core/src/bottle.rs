//! A running bottle: the handle a backend returns from `launch` or `attach`,
//! and the facts `list active` shows about it.

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::owner::Liveness;

/// Output of a non-interactive command run inside a bottle.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecResult {
    /// Exit code of the command.
    pub exit_code: i64,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl ExecResult {
    /// Whether the command exited 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// Which user a command runs as inside the bottle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestUser {
    /// The agent's own non-root user.
    Agent,
    /// root, for provisioning steps that need it.
    Root,
    /// Any other user by name.
    Named(String),
}

impl GuestUser {
    /// The user's name, given the agent's.
    pub fn name(self, agent: &str) -> String {
        match self {
            GuestUser::Agent => agent.to_string(),
            GuestUser::Root => "root".into(),
            GuestUser::Named(name) => name,
        }
    }
}

/// The agent user's numeric uid and gid, asked inside the bottle.
pub async fn agent_ids(bottle: &dyn Bottle) -> Result<(u64, u64)> {
    let out = bottle.exec("id -u && id -g", GuestUser::Agent).await?;
    let mut nums = out.stdout.split_whitespace().filter_map(|n| n.parse().ok());
    match (out.success(), nums.next(), nums.next()) {
        (true, Some(uid), Some(gid)) => Ok((uid, gid)),
        _ => Err(crate::Error::new(
            crate::ErrorKind::Provision,
            format!("cannot read the ids of user `{}`: {}", bottle.agent_user(), out.stderr.trim()),
        )
        .with_bottle(bottle.slug())),
    }
}

/// The sidecars beside a bottle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sidecar {
    /// The egress proxy.
    Egress,
    /// The git gate.
    GitGate,
}

impl Sidecar {
    /// Its short name (`egress`, `gate`): role label, DNS alias, log name.
    pub fn name(self) -> &'static str {
        match self {
            Sidecar::Egress => "egress",
            Sidecar::GitGate => "gate",
        }
    }

    /// The `bottle sidecar` subcommand that runs it (`egress`, `git-gate`).
    pub fn subcommand(self) -> &'static str {
        match self {
            Sidecar::Egress => "egress",
            Sidecar::GitGate => "git-gate",
        }
    }
}

/// A bottle that is running: commands, copies in and out, the agent session and teardown.
#[async_trait]
pub trait Bottle: Send + Sync {
    /// The bottle's slug.
    fn slug(&self) -> &str;

    /// The agent's user inside the bottle.
    fn agent_user(&self) -> &str;

    /// Run `script` with `sh -c` as `user`, capturing its output.
    async fn exec(&self, script: &str, user: GuestUser) -> Result<ExecResult>;

    /// Copy a host file or directory to `guest` (its full destination path),
    /// owned by the agent's user.
    async fn cp_in(&self, host: &Path, guest: &str) -> Result<()>;

    /// Copy `guest` (file or directory) out to `host` (which must not exist),
    /// keeping at most `limit` bytes and only what [`unpack_bounded`]
    /// keeps; never more than [`tar_allowance`] of it in flight, never all
    /// of it in memory.
    ///
    /// [`unpack_bounded`]: crate::copy::unpack_bounded
    /// [`tar_allowance`]: crate::copy::tar_allowance
    async fn cp_out(&self, guest: &str, host: &Path, limit: crate::resources::ByteSize)
    -> Result<crate::copy::CopyOut>;

    /// Run `argv` in the bottle attached to this process's stdio (a TTY when
    /// stdin is one), in the agent's workdir, and return its exit code.
    async fn exec_attached(&self, argv: &[String], user: GuestUser) -> Result<i32>;

    /// The host command that runs `argv` in the bottle as `user`, in the
    /// agent's workdir, on the terminal it is started on: what a terminal
    /// multiplexer's pane runs to show the agent's session. `None` when the
    /// backend has no such command.
    fn host_argv(&self, argv: &[String], user: GuestUser) -> Option<Vec<String>> {
        let _ = (argv, user);
        None
    }

    /// Copy a sidecar's audit log (one JSON line per request or push) to
    /// `sink`; with `follow`, keep copying until the sidecar stops.
    async fn sidecar_log(&self, sidecar: Sidecar, follow: bool, sink: &mut (dyn std::io::Write + Send)) -> Result<()>;

    /// Remove the bottle and everything it owns. Idempotent.
    async fn close(&self) -> Result<()>;
}

/// A bottle behind a box is a bottle (what the dynamic backends hand out).
#[async_trait]
impl Bottle for Box<dyn Bottle> {
    fn slug(&self) -> &str {
        (**self).slug()
    }
    fn agent_user(&self) -> &str {
        (**self).agent_user()
    }
    async fn exec(&self, script: &str, user: GuestUser) -> Result<ExecResult> {
        (**self).exec(script, user).await
    }
    async fn cp_in(&self, host: &Path, guest: &str) -> Result<()> {
        (**self).cp_in(host, guest).await
    }
    async fn cp_out(
        &self,
        guest: &str,
        host: &Path,
        limit: crate::resources::ByteSize,
    ) -> Result<crate::copy::CopyOut> {
        (**self).cp_out(guest, host, limit).await
    }
    async fn exec_attached(&self, argv: &[String], user: GuestUser) -> Result<i32> {
        (**self).exec_attached(argv, user).await
    }
    fn host_argv(&self, argv: &[String], user: GuestUser) -> Option<Vec<String>> {
        (**self).host_argv(argv, user)
    }
    async fn sidecar_log(&self, sidecar: Sidecar, follow: bool, sink: &mut (dyn std::io::Write + Send)) -> Result<()> {
        (**self).sidecar_log(sidecar, follow, sink).await
    }
    async fn close(&self) -> Result<()> {
        (**self).close().await
    }
}

/// A running bottle as `list active` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveAgent {
    /// The bottle's slug (also its identity for `resume`).
    pub slug: String,
    /// Agent name.
    pub agent: String,
    /// Backend that runs it.
    pub backend: String,
    /// Start time, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// Backend-reported state (`running`, `exited`, …).
    pub status: String,
    /// Image the agent runs.
    pub image: String,
    /// Operator's label, if any.
    pub label: Option<String>,
    /// Operator's colour, if any.
    pub color: Option<String>,
    /// Whether the `bottle` process that started it still runs.
    #[serde(default)]
    pub owner: OwnerState,
    /// Each process beside it (`egress`, `gate` when it has a git gate, and
    /// `relay` where the backend runs one) and whether it runs.
    #[serde(default)]
    pub sidecars: BTreeMap<String, bool>,
    /// Whether it was made for a warm pool, and whether it waits there or
    /// was claimed (`None`: an ordinary bottle). Backends say only that it
    /// is a member; [`pool::settle`](crate::pool::settle) tells which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolState>,
}

/// Where a bottle made for a warm pool stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolState {
    /// It waits to be claimed by `bottle start`.
    Waiting,
    /// `bottle start` handed it out: it is an operator's bottle now.
    Claimed,
}

impl ActiveAgent {
    /// The processes beside it that do not run, by name.
    pub fn sidecars_down(&self) -> Vec<&str> {
        self.sidecars.iter().filter(|(_, up)| !**up).map(|(name, _)| name.as_str()).collect()
    }
}

/// Whether a running bottle's launcher (the process that started it, its
/// [`Owner`](crate::backend::Owner)) still runs, as `list active` shows it. A
/// detached bottle's launcher has exited: `gone` is its normal state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OwnerState {
    /// It runs on this host.
    Alive,
    /// It has exited.
    Gone,
    /// It runs (or ran) on another host; nothing can be said from here.
    OtherHost,
    /// The bottle's labels do not say who started it.
    #[default]
    Unknown,
}

impl OwnerState {
    /// Its name in `list active` (`alive`, `gone`, `other-host`, `unknown`).
    pub fn name(self) -> &'static str {
        match self {
            OwnerState::Alive => "alive",
            OwnerState::Gone => "gone",
            OwnerState::OtherHost => "other-host",
            OwnerState::Unknown => "unknown",
        }
    }
}

impl From<Option<Liveness>> for OwnerState {
    fn from(liveness: Option<Liveness>) -> Self {
        match liveness {
            Some(Liveness::Alive) => OwnerState::Alive,
            Some(Liveness::Gone) => OwnerState::Gone,
            Some(Liveness::OtherHost) => OwnerState::OtherHost,
            None => OwnerState::Unknown,
        }
    }
}

/// Sort active agents the way every listing shows them: by start time, then slug.
pub fn sort_active(agents: &mut [ActiveAgent]) {
    agents.sort_by(|a, b| (a.started_at_ms, &a.slug).cmp(&(b.started_at_ms, &b.slug)));
}
