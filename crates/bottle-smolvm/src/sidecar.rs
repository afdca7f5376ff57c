//! The sidecars of a smolvm bottle: `bottle sidecar egress` and `git-gate`
//! as processes on the host, bound to 127.0.0.1 (the only host the machine
//! reaches with `--outbound-localhost-only`), owned by the bottle through
//! files in its state folder (`<state>/<slug>/sidecars/`, mode 0700):
//!
//! - `NAME.json` — the configuration (secrets inside, mode 0600), removed as
//!   soon as the sidecar says it listens: it has read it by then;
//! - `NAME.pid` — the process id; the process is in its own process group so
//!   it outlives `bottle start --detach` and a terminal's Ctrl-C, and is
//!   stopped with its children (the gate's git processes) by signalling the
//!   group;
//! - `NAME.log` — its stdout and stderr; `NAME-audit.jsonl` — its audit log;
//! - `gate/` — the git gate's work folder (mirrors, the push keys).
//!
//! The folder is also the sidecars' `HOME`; they start with a clean
//! environment, as in a container (only `PATH` and the `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` trust settings are kept): the operator's variables stay out.
//!
//! A pid file alone proves nothing (pids are reused): a process counts as the
//! sidecar only while its command line names that sidecar's configuration
//! path, which holds the bottle's slug.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use bottle_core::backend::{RelayPair, SidecarCommand, SidecarProgram};
use bottle_core::{Error, ErrorKind, Result, Sidecar};
use rustix::process::{Pid, Signal};

/// The sidecars' folder inside a bottle's state folder.
pub(crate) fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("sidecars")
}

/// A process beside a smolvm bottle: one of its sidecars, or the relay
/// that carries its namespace's loopback to the sidecars' sockets; its
/// name names its pid and log files.
pub(crate) use bottle_core::backend::SidecarProcess as Role;

/// Where a sidecar listens: a reserved port on the host's loopback, or a unix socket.
#[derive(Debug)]
pub(crate) enum Bind {
    /// The port held since the plan was resolved.
    Reserved(Reservation),
    /// A socket path (in a folder only root reaches).
    Socket(PathBuf),
}

/// How long a sidecar may take to say it listens (the gate fetches its mirrors first).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a sidecar may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The configuration file of `kind` in the sidecars' folder `dir`.
pub(crate) fn config_path(dir: &Path, kind: Sidecar) -> PathBuf {
    dir.join(format!("{}.json", kind.name()))
}

/// The audit log of `kind`.
pub(crate) fn audit_path(dir: &Path, kind: Sidecar) -> PathBuf {
    dir.join(format!("{}-audit.jsonl", kind.name()))
}

fn log_path(dir: &Path, role: Role) -> PathBuf {
    dir.join(format!("{}.log", role.name()))
}

fn pid_path(dir: &Path, role: Role) -> PathBuf {
    dir.join(format!("{}.pid", role.name()))
}

/// The gate's work folder (mirrors, the push keys).
pub(crate) fn gate_work_dir(dir: &Path) -> PathBuf {
    dir.join("gate")
}

/// A loopback port held for a sidecar from `resolve_plan` until it starts,
/// so the plan (and the summary, and the guest's proxy and git settings) can
/// name the address the sidecar will listen on.
#[derive(Debug)]
pub(crate) struct Reservation {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Reservation {
    /// Reserve a free port on 127.0.0.1.
    pub(crate) fn new() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("reserving a port on 127.0.0.1", e))?;
        let addr = listener.local_addr().map_err(|e| Error::io("reading a reserved port", e))?;
        Ok(Reservation { listener, addr })
    }

    /// The reserved address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn mkdir_private(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    file.write_all(data).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Start `kind` with `config_json` (whose `listen` is `bind`'s), releasing
/// a reserved port just before; wait until it says it listens there.
pub(crate) async fn start(dir: &Path, kind: Sidecar, bind: Bind, config_json: &[u8]) -> Result<Child> {
    let program = SidecarProgram::locate()?;
    mkdir_private(dir)?;
    let config = config_path(dir, kind);
    write_private(&config, config_json)?;
    let expected = match bind {
        Bind::Reserved(reserved) => {
            let addr = reserved.addr.to_string();
            drop(reserved.listener);
            addr
        }
        Bind::Socket(path) => format!("unix:{}", path.display()),
    };
    let mut command = std::process::Command::new(program.exe());
    command.args(SidecarCommand::configured(kind, config.to_string_lossy()).args());
    let started = spawn(dir, kind.into(), command).await;
    let _ = std::fs::remove_file(&config);
    let (mut child, addr) = started?;
    if addr == expected {
        return Ok(child);
    }
    stop_child(dir, kind.into(), &mut child).await;
    Err(role_error(kind.into(), format!("listens on {addr}, not on {expected}")))
}

/// Start the relay inside the network namespace that `netns` (the command
/// prefix `ip netns exec NAME`) enters, carrying `pairs`; wait until it
/// listens.
pub(crate) async fn start_relay(dir: &Path, netns: &[String], pairs: Vec<RelayPair>) -> Result<Child> {
    let program = SidecarProgram::locate()?;
    mkdir_private(dir)?;
    let (first, rest) = netns.split_first().ok_or_else(|| role_error(Role::Relay, "has no namespace".into()))?;
    let mut command = std::process::Command::new(first);
    command.args(rest).arg(program.exe()).args(SidecarCommand::Relay { pairs }.args());
    spawn(dir, Role::Relay, command).await.map(|(child, _)| child)
}

/// Spawn `command` as `role`'s process: a clean environment, its own process
/// group, its log and pid file in `dir`; returns it and where it listens.
async fn spawn(dir: &Path, role: Role, mut command: std::process::Command) -> Result<(Child, String)> {
    let log_file = log_path(dir, role);
    let log = std::fs::File::create(&log_file).map_err(|e| Error::io(format!("creating {}", log_file.display()), e))?;
    let log_err = log.try_clone().map_err(|e| Error::io(format!("opening {}", log_file.display()), e))?;
    // A clean environment, as in a container: the operator's variables (and
    // credentials) stay out; the sidecars' own folder is their home.
    command.env_clear().env("HOME", dir);
    for kept in ["PATH", "SSL_CERT_FILE", "SSL_CERT_DIR"] {
        if let Some(value) = std::env::var_os(kept) {
            command.env(kept, value);
        }
    }
    let mut child = command
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .spawn()
        .map_err(|e| Error::io(format!("starting {}", command.get_program().to_string_lossy()), e))?;
    if let Err(e) = write_private(&pid_path(dir, role), format!("{}\n", child.id()).as_bytes()) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    match wait_until_listening(&mut child, &log_file, role).await {
        Ok(addr) => Ok((child, addr)),
        Err(e) => {
            stop_child(dir, role, &mut child).await;
            Err(e)
        }
    }
}

fn role_error(role: Role, message: String) -> Error {
    Error::new(ErrorKind::Backend, format!("the {} sidecar {message}", role.name()))
        .with_operation("start a sidecar")
        .with_backend(crate::NAME)
}

async fn wait_until_listening(child: &mut Child, log: &Path, role: Role) -> Result<String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = role.listening_on(&text) {
            return Ok(addr.trim().to_string());
        }
        let exited = child.try_wait().map_err(|e| Error::io("waiting for a sidecar", e))?;
        if exited.is_some() || Instant::now() > deadline {
            let why = match exited {
                Some(status) => format!("exited ({status}) at start-up"),
                None => format!("did not say it listens within {} s", READY_TIMEOUT.as_secs()),
            };
            return Err(role_error(role, format!("{why}: {}", text.trim())));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stop a process this process started, and reap it.
async fn stop_child(dir: &Path, role: Role, child: &mut Child) {
    let _ = stop(dir, role).await;
    let _ = child.kill();
    let _ = child.wait();
}

/// The pid of `role`'s process in `dir` while that process still runs: its
/// arguments name the sidecar's configuration, or (the relay) the bottle's
/// socket folder.
pub(crate) fn running(dir: &Path, role: Role) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_path(dir, role)).ok()?.trim().parse().ok()?;
    let marker = match role.sidecar() {
        Some(kind) => config_path(dir, kind),
        None => crate::network::socket_dir(&slug_of(dir)?),
    };
    let exact = role.sidecar().is_some();
    runs_with(pid, &marker, exact).then_some(pid)
}

/// Whether each process beside the bottle whose sidecars' folder is `dir`
/// runs: the egress proxy always; the git gate when the bottle has one
/// (`gate`) or its pid file says it was started; the relay when the
/// bottle has its own network namespace (`netns`) or the relay's pid file
/// says it was started. A crashed sidecar leaves its pid file: it shows down.
pub(crate) fn health(dir: &Path, gate: bool, netns: bool) -> Vec<(Role, bool)> {
    [(Role::Egress, true), (Role::GitGate, gate), (Role::Relay, netns)]
        .into_iter()
        .filter(|(role, expected)| *expected || pid_path(dir, *role).exists())
        .map(|(role, _)| (role, running(dir, role).is_some()))
        .collect()
}

/// The slug of the bottle whose sidecars' folder is `dir` (`<state>/<slug>/sidecars`).
fn slug_of(dir: &Path) -> Option<String> {
    Some(dir.parent()?.file_name()?.to_str()?.to_string())
}

/// Whether process `pid` is alive (not a zombie) and one of its arguments is
/// `marker` (or, unless `exact`, contains it).
#[cfg(target_os = "linux")]
fn runs_with(pid: u32, marker: &Path, exact: bool) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
    if matches!(state, None | Some("Z" | "X")) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let wanted = marker.as_os_str().as_encoded_bytes();
    cmdline
        .split(|b| *b == 0)
        .any(|arg| if exact { arg == wanted } else { arg.windows(wanted.len()).any(|w| w == wanted) })
}

/// Whether process `pid` is alive (not a zombie) and its arguments name `marker`.
#[cfg(not(target_os = "linux"))]
fn runs_with(pid: u32, marker: &Path, _exact: bool) -> bool {
    let Ok(out) = std::process::Command::new("ps").args(["-o", "stat=,command=", "-p", &pid.to_string()]).output()
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let text = text.trim();
    out.status.success() && !text.starts_with('Z') && text.contains(&*marker.to_string_lossy())
}

fn signal(pid: u32, signal: Signal) {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else { return };
    if rustix::process::kill_process_group(pid, signal).is_err() {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Stop `role`'s process in `dir` (SIGTERM to its process group, SIGKILL
/// after [`STOP_TIMEOUT`]) and forget its pid; `Ok(true)` when one ran.
pub(crate) async fn stop(dir: &Path, role: Role) -> Result<bool> {
    let Some(pid) = running(dir, role) else {
        let _ = std::fs::remove_file(pid_path(dir, role));
        return Ok(false);
    };
    signal(pid, Signal::TERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while running(dir, role).is_some() {
        if Instant::now() > deadline {
            signal(pid, Signal::KILL);
            tokio::time::sleep(Duration::from_millis(100)).await;
            if running(dir, role).is_some() {
                return Err(role_error(role, format!("(pid {pid}) survived SIGKILL")));
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_file(pid_path(dir, role));
    Ok(true)
}

/// Stop every sidecar in `dir` and remove the folder (configurations, the
/// gate's keys and mirrors, logs). Returns one line per stopped process.
pub(crate) async fn remove_all(dir: &Path) -> Result<Vec<String>> {
    let mut stopped = Vec::new();
    for role in Role::STOP_ORDER {
        if stop(dir, role).await? {
            stopped.push(format!("{} sidecar", role.name()));
        }
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(stopped),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(stopped),
        Err(e) => Err(Error::io(format!("removing {}", dir.display()), e)),
    }
}

/// Copy `kind`'s audit log to `sink`; with `follow`, keep copying until the sidecar stops.
pub(crate) async fn copy_audit_log(
    dir: &Path,
    kind: Sidecar,
    follow: bool,
    sink: &mut (dyn std::io::Write + Send),
) -> Result<()> {
    let path = audit_path(dir, kind);
    let mut offset = 0usize;
    loop {
        let alive = follow && running(dir, kind.into()).is_some();
        let data = match std::fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        // Only whole lines: a line being written now is copied on the next round.
        let end = if alive { data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) } else { data.len() };
        if end > offset {
            sink.write_all(&data[offset..end])
                .and_then(|()| sink.flush())
                .map_err(|e| Error::io("writing the log", e))?;
            offset = end;
        }
        if !alive {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserved_port_is_held_until_released() {
        let reserved = Reservation::new().expect("reserve");
        assert!(reserved.addr().ip().is_loopback() && reserved.addr().port() != 0);
        assert!(TcpListener::bind(reserved.addr()).is_err(), "nobody else gets the port meanwhile");
        let addr = reserved.addr();
        drop(reserved.listener);
        TcpListener::bind(addr).expect("free again once released");
    }

    #[test]
    fn only_a_live_process_naming_the_configuration_counts_as_the_sidecar() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let config = config_path(dir, Sidecar::Egress);
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30", "sh"])
            .arg(&config)
            .spawn()
            .expect("spawn a stand-in");
        let (egress, gate) = (Role::Egress, Role::GitGate);
        std::fs::write(pid_path(dir, egress), format!("{}\n", child.id())).expect("pid file");
        // Right after spawn the child may not have exec'd yet (its command line is still ours).
        let deadline = Instant::now() + Duration::from_secs(5);
        while running(dir, egress).is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(running(dir, egress), Some(child.id()));
        assert_eq!(running(dir, gate), None, "no pid file");
        std::fs::write(pid_path(dir, gate), format!("{}\n", std::process::id())).expect("pid file");
        assert_eq!(running(dir, gate), None, "a live pid that is not the gate");
        child.kill().expect("kill");
        let deadline = Instant::now() + Duration::from_secs(5);
        while running(dir, egress).is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(running(dir, egress), None, "a zombie is not running");
        child.wait().expect("reap");
        assert_eq!(running(dir, egress), None, "a dead pid is not running");
    }

    #[test]
    fn health_lists_the_expected_sidecars_and_a_dead_one_as_down() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30", "sh"])
            .arg(config_path(dir, Sidecar::Egress))
            .spawn()
            .expect("spawn a stand-in");
        std::fs::write(pid_path(dir, Role::Egress), format!("{}\n", child.id())).expect("pid file");
        let deadline = Instant::now() + Duration::from_secs(5);
        while running(dir, Role::Egress).is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(health(dir, false, false), [(Role::Egress, true)], "no gate, no namespace: egress alone");
        assert_eq!(
            health(dir, true, false),
            [(Role::Egress, true), (Role::GitGate, false)],
            "a gate that never started"
        );
        // A relay that was started and died left its pid file.
        std::fs::write(pid_path(dir, Role::Relay), "999999999\n").expect("pid file");
        assert_eq!(health(dir, false, false), [(Role::Egress, true), (Role::Relay, false)]);
        child.kill().expect("kill");
        child.wait().expect("reap");
        assert_eq!(health(dir, false, true), [(Role::Egress, false), (Role::Relay, false)]);
    }
}
