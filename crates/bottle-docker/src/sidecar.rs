//! The sidecar containers beside a Docker bottle. The bottle itself has no
//! network; each sidecar listens on a unix socket in the bottle's socket
//! volume, never on an address:
//!
//! - `egress` (the proxy) and `gate` (the git gate) sit on the bottle's
//!   network with a way out; each gets its JSON configuration uploaded into
//!   its own container before it starts — never into the bottle;
//! - `supervise` (for a bottle whose manifest says `supervise: true`) has
//!   no network at all: it serves the bottle on its socket and writes the
//!   requests into the bottle's supervise queue, bind-mounted from the
//!   operator's state folder (the egress proxy reads the queue's grants
//!   from the same folder, read-only);
//! - `relay` shares the bottle's network namespace (its loopback, nothing
//!   else) and the socket volume, and carries the bottle's connections to
//!   `127.0.0.1:3128` and `:8080` to the sidecars' sockets.
//!
//! Each is waited for until it says it listens.

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, LogsOptions, StartContainerOptions, UploadToContainerOptions};
use bottle_core::backend::{LAUNCHER, RelayPair, SidecarCommand, SidecarProcess};
use bottle_core::provider::ImageRecipe;
use bottle_core::{CommonPlan, Error, ErrorKind, Result};
use futures_util::StreamExt;

use crate::engine::{failed, labels_for};
use crate::launch::{SIDECAR_MEMORY, SIDECAR_PIDS, log_config};

/// Which sidecar; its name is its role label, network alias and container-name suffix.
pub(crate) use bottle_core::Sidecar as Kind;

/// The bottle's socket of sidecar `process`, in the socket volume.
pub(crate) fn socket(process: SidecarProcess) -> String {
    format!("{}/{}.sock", bottle_core::backend::SOCKET_DIR, process.name())
}

/// Where the bottle's supervise queue folder is mounted in the supervise
/// sidecar (read-write) and the egress sidecar (read-only).
pub(crate) const QUEUE_MOUNT: &str = "/var/lib/bot-bottle-supervise";

/// What the least-privileged sidecar containers share: no capabilities, no
/// new privileges, an init, small fixed limits, rotated logs and the socket
/// volume.
fn host_config(network_mode: String, sockets: &str, read_only: bool, extra_binds: &[String]) -> HostConfig {
    HostConfig {
        network_mode: Some(network_mode),
        init: Some(true),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        memory: Some(SIDECAR_MEMORY),
        memory_swap: Some(SIDECAR_MEMORY),
        nano_cpus: Some(1_000_000_000),
        pids_limit: Some(SIDECAR_PIDS),
        log_config: Some(log_config()),
        binds: Some(
            std::iter::once(format!(
                "{sockets}:{}:{}",
                bottle_core::backend::SOCKET_DIR,
                if read_only { "ro" } else { "rw" }
            ))
            .chain(extra_binds.iter().cloned())
            .collect(),
        ),
        ..Default::default()
    }
}

/// The sidecar image recipe (shared with the other backends that build it).
pub(crate) fn recipe(host_ca_bundle: Option<std::path::PathBuf>) -> Result<ImageRecipe> {
    bottle_core::backend::sidecar_recipe(host_ca_bundle)
}

/// The container name of bottle `slug`'s sidecar (or relay) `process`.
pub(crate) fn container_name(slug: &str, process: SidecarProcess) -> String {
    format!("{}-{}", crate::plan::container_name(slug), process.name())
}

/// `command` run by the image's launcher.
fn launcher_cmd(command: &SidecarCommand) -> Vec<String> {
    std::iter::once(LAUNCHER.to_string()).chain(command.args()).collect()
}

/// One sidecar to start: which, on which network (`none` for supervise),
/// with which configuration and folders of the host's.
pub(crate) struct SidecarSpec {
    pub(crate) process: SidecarProcess,
    pub(crate) network: String,
    pub(crate) config_json: Vec<u8>,
    pub(crate) binds: Vec<String>,
}

/// Create, configure and start one sidecar with the `sockets` volume, and
/// wait until it listens.
pub(crate) async fn launch(
    docker: &Docker,
    plan: &CommonPlan,
    spec: SidecarSpec,
    image: &str,
    sockets: &str,
) -> Result<()> {
    let SidecarSpec { process, network, config_json, binds } = spec;
    let name = container_name(&plan.slug, process);
    let config = format!("/etc/bot-bottle/{}.json", process.name());
    let command = match process.sidecar() {
        Some(kind) => SidecarCommand::configured(kind, config),
        None => SidecarCommand::Supervise { config },
    };
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(launcher_cmd(&command)),
        labels: Some(labels_for(plan, process.name())),
        host_config: Some(host_config(network, sockets, false, &binds)),
        ..Default::default()
    };
    docker
        .create_container(Some(CreateContainerOptions { name: Some(name.clone()), platform: String::new() }), body)
        .await
        .map_err(failed("create a sidecar container"))?;
    let tar = config_tar(&format!("{}.json", process.name()), &config_json)?;
    let options = UploadToContainerOptions { path: "/etc/bot-bottle".into(), ..Default::default() };
    docker
        .upload_to_container(&name, Some(options), bollard::body_full(tar.into()))
        .await
        .map_err(failed("configure a sidecar"))?;
    docker.start_container(&name, None::<StartContainerOptions>).await.map_err(failed("start a sidecar"))?;
    wait_until_listening(docker, &name, process).await
}

/// The loopback port the bottle reaches sidecar `process` at (none for the relay).
pub(crate) fn port(process: SidecarProcess) -> Option<u16> {
    match process {
        SidecarProcess::Egress => Some(bottle_core::backend::EGRESS_PORT),
        SidecarProcess::GitGate => Some(bottle_core::backend::GATE_PORT),
        SidecarProcess::Supervise => Some(bottle_core::supervise::SUPERVISE_PORT),
        SidecarProcess::Relay => None,
    }
}

/// Create the relay in the network namespace of the bottle's `agent`
/// container (created, not necessarily started yet), carrying its loopback
/// ports to the sidecars of `processes`; [`start_relay`] starts it.
pub(crate) async fn create_relay(
    docker: &Docker,
    plan: &CommonPlan,
    image: &str,
    agent: &str,
    sockets: &str,
    processes: &[SidecarProcess],
) -> Result<()> {
    let relay = SidecarProcess::Relay;
    let name = container_name(&plan.slug, relay);
    let pairs = processes
        .iter()
        .filter_map(|&process| {
            let port = port(process)?;
            Some(RelayPair { listen: ([127, 0, 0, 1], port).into(), socket: socket(process).into() })
        })
        .collect();
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(launcher_cmd(&SidecarCommand::Relay { pairs })),
        labels: Some(labels_for(plan, relay.name())),
        host_config: Some(host_config(format!("container:{agent}"), sockets, true, &[])),
        ..Default::default()
    };
    docker
        .create_container(Some(CreateContainerOptions { name: Some(name), platform: String::new() }), body)
        .await
        .map(drop)
        .map_err(failed("create the relay container"))
}

/// Start bottle `slug`'s relay (its agent container runs) and wait until it listens.
pub(crate) async fn start_relay(docker: &Docker, slug: &str) -> Result<()> {
    let name = container_name(slug, SidecarProcess::Relay);
    docker.start_container(&name, None::<StartContainerOptions>).await.map_err(failed("start the relay"))?;
    wait_until_listening(docker, &name, SidecarProcess::Relay).await
}

/// A tar holding the configuration file, readable by the sidecar's user only.
fn config_tar(name: &str, data: &[u8]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o600);
    header.set_uid(1500);
    header.set_gid(1500);
    header.set_cksum();
    builder.append_data(&mut header, name, data).map_err(|e| Error::io("packing a sidecar configuration", e))?;
    builder.into_inner().map_err(|e| Error::io("packing a sidecar configuration", e))
}

/// Wait until the container `name` running `process` says it listens.
async fn wait_until_listening(docker: &Docker, name: &str, process: SidecarProcess) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let role = process.name();
    loop {
        let logs = read_logs(docker, name, false, true).await?;
        if process.listening_on(&logs).is_some() {
            return Ok(());
        }
        let running = docker
            .inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .map_err(failed("inspect a sidecar"))?
            .state
            .and_then(|s| s.running)
            .unwrap_or(false);
        if !running || Instant::now() > deadline {
            return Err(Error::new(
                ErrorKind::Backend,
                format!(
                    "the {role} sidecar {} at start-up: {}",
                    if running { "did not say it listens within 20 s" } else { "exited" },
                    logs.trim()
                ),
            )
            .with_backend(crate::NAME));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A container's log so far (stdout and/or stderr) as text.
async fn read_logs(docker: &Docker, name: &str, stdout: bool, stderr: bool) -> Result<String> {
    let options = LogsOptions { stdout, stderr, follow: false, tail: "all".into(), ..Default::default() };
    let mut stream = docker.logs(name, Some(options));
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(failed("read a sidecar's log"))?;
        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    Ok(text)
}

/// Copy a sidecar's audit log (its stdout) to `sink`, following it when asked.
pub(crate) async fn audit_log(
    docker: &Docker,
    name: &str,
    follow: bool,
    sink: &mut (dyn std::io::Write + Send),
) -> Result<()> {
    let options = LogsOptions { stdout: true, stderr: false, follow, tail: "all".into(), ..Default::default() };
    let mut stream = docker.logs(name, Some(options));
    while let Some(chunk) = stream.next().await {
        match chunk.map_err(failed("read a sidecar's log"))? {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                sink.write_all(&message).and_then(|()| sink.flush()).map_err(|e| Error::io("writing the log", e))?;
            }
            _ => {}
        }
    }
    Ok(())
}
