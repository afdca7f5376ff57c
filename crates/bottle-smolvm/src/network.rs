//! How a machine's network is isolated. smolvm's `--outbound-localhost-only`
//! lets the guest reach the loopback of the network namespace its VM process
//! runs in (its sockets are impersonated there), so:
//!
//! - as root on Linux, each machine gets a network namespace of its own
//!   (`ip netns add bb-<slug>`, loopback only), `machine create` and `start`
//!   run inside it, and its loopback holds nothing but a relay
//!   (`bottle sidecar relay`) to its sidecars' unix sockets in
//!   `/run/bot-bottle/<slug>/` (mode 0700): the guest reaches no other host
//!   service, no other bottle and no resolver;
//! - otherwise the machine shares the host's loopback: its sidecars listen
//!   on reserved ports there and serve only clients with the bottle's token,
//!   but the guest can reach every other service the host binds on
//!   127.0.0.1 (and another bottle's sidecars, which refuse it). The summary
//!   says so.

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use bottle_core::backend::SidecarProcess;
use bottle_core::{Error, ErrorKind, Result};

use crate::sidecar::Reservation;

/// Where the sidecars' sockets of netns-isolated bottles live.
const SOCKET_ROOT: &str = "/run/bot-bottle";
/// Where `ip netns` keeps named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// A machine's network isolation, chosen when the plan is resolved.
#[derive(Debug)]
pub(crate) enum Isolation {
    /// The machine runs in network namespace `name`; its loopback holds only
    /// the relay to the sidecars' sockets in `sockets`.
    Netns {
        /// The namespace's name (`bb-<slug>`).
        name: String,
        /// The folder of the sidecars' sockets.
        sockets: PathBuf,
    },
    /// The machine shares the host's loopback; the sidecars listen on these
    /// reserved ports.
    SharedLoopback {
        /// The egress proxy's port.
        egress: Reservation,
        /// The git gate's port, when the bottle has upstreams.
        gate: Option<Reservation>,
        /// The supervise server's port, when the bottle has supervise.
        supervise: Option<Reservation>,
    },
}

impl Isolation {
    /// A namespace of its own when this process can make one (root, `ip`
    /// installed), else the shared loopback with ports reserved now.
    pub(crate) fn choose(slug: &str, needs_gate: bool, needs_supervise: bool) -> Result<Self> {
        if rustix::process::geteuid().is_root() && ip_program().is_some() {
            return Ok(Isolation::Netns { name: netns_name(slug), sockets: Path::new(SOCKET_ROOT).join(slug) });
        }
        Ok(Isolation::SharedLoopback {
            egress: Reservation::new()?,
            gate: if needs_gate { Some(Reservation::new()?) } else { None },
            supervise: if needs_supervise { Some(Reservation::new()?) } else { None },
        })
    }

    /// The summary line.
    pub(crate) fn describe(&self) -> String {
        match self {
            Isolation::Netns { name, .. } => format!(
                "network namespace {name} of its own: its loopback holds only a relay to its own sidecars \
                 (no other host service, no other bottle, no resolver)"
            ),
            Isolation::SharedLoopback { .. } => "the host's loopback, shared (not root, so no network namespace of \
                 its own): the machine can reach every service the host binds on 127.0.0.1; its sidecars serve \
                 only its token"
                .into(),
        }
    }

    /// The socket of sidecar `role` in a namespace-isolated bottle.
    pub(crate) fn socket(sockets: &Path, role: SidecarProcess) -> PathBuf {
        sockets.join(format!("{}.sock", role.name()))
    }
}

/// The name of a bottle's network namespace.
pub(crate) fn netns_name(slug: &str) -> String {
    format!("bb-{slug}")
}

/// The socket folder of a bottle isolated in a namespace.
pub(crate) fn socket_dir(slug: &str) -> PathBuf {
    Path::new(SOCKET_ROOT).join(slug)
}

/// Whether the bottle's namespace exists.
pub(crate) fn netns_exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

fn ip_program() -> Option<PathBuf> {
    which::which("ip").ok().or_else(|| {
        ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].into_iter().map(PathBuf::from).find(|p| p.is_file())
    })
}

/// `ip ARGS`, as root; a failure is an error naming the command and what it said.
async fn ip(args: &[&str], operation: &'static str) -> Result<()> {
    let program = ip_program().ok_or_else(|| {
        Error::new(ErrorKind::Unavailable, "`ip` is not installed; apt-get install iproute2").with_backend(crate::NAME)
    })?;
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| Error::io("running ip", e).with_operation(operation).with_backend(crate::NAME))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Backend,
        format!("`ip {}` failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim()),
    )
    .with_operation(operation)
    .with_backend(crate::NAME))
}

/// Make the namespace `name` with its loopback up, and the socket folder.
pub(crate) async fn create(name: &str, sockets: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(sockets)
        .map_err(|e| Error::io(format!("creating {}", sockets.display()), e))?;
    ip(&["netns", "add", name], "create the machine's network namespace").await?;
    ip(&["-n", name, "link", "set", "lo", "up"], "bring up the namespace's loopback").await
}

/// Remove the namespace `name` (if it is there) and the socket folder.
pub(crate) async fn remove(name: &str, sockets: &Path) -> Result<()> {
    if netns_exists(name) {
        ip(&["netns", "delete", name], "delete the machine's network namespace").await?;
    }
    match std::fs::remove_dir_all(sockets) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", sockets.display()), e)),
    }
}

/// The command prefix that runs a program inside the namespace `name`.
pub(crate) fn in_netns(name: &str) -> Result<Vec<String>> {
    let program = ip_program().ok_or_else(|| {
        Error::new(ErrorKind::Unavailable, "`ip` is not installed; apt-get install iproute2").with_backend(crate::NAME)
    })?;
    Ok(vec![program.display().to_string(), "netns".into(), "exec".into(), name.to_string()])
}
