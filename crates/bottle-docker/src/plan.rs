//! [`DockerPlan`]: what `resolve_plan` makes of the common plan on Docker —
//! the bottle's resource names (`bb-<slug>`, `-out`, `-sockets`), the agent
//! and sidecar images (content-addressed, cached or to build), the OCI
//! runtime, whether the engine can limit the disk, and the [`Wiring`]:
//! the bottle reaches its sidecars on its own loopback, through the relay.

use bollard::Docker;
use bottle_core::backend::SuperviseWiring;
use bottle_core::backend::{BackendPlan, BuildContext, SidecarProcess, WiredPlan, Wiring, pack_context};
use bottle_core::sidecar::{Listen, Placement};
use bottle_core::supervise::{GRANTS_FILE, MCP_PATH, SUPERVISE_PORT};
use bottle_core::{ByteSize, CommonPlan, Result};

use crate::engine::failed;
use crate::image;
use crate::launch::{LOG_MAX_FILES, LOG_MAX_SIZE, SIDECAR_MEMORY, SIDECAR_PIDS};
use crate::sidecar::{self, Kind};

/// Environment variable naming the OCI runtime to use (`runc`, `runsc`); by
/// default `runsc` (gVisor) when the daemon offers it, else the daemon's default.
pub const RUNTIME_ENV: &str = "BOT_BOTTLE_DOCKER_RUNTIME";

/// The Docker plan: names, images and runtime resolved.
#[derive(Debug)]
pub struct DockerPlan {
    pub(crate) wired: WiredPlan,
    /// The agent container's name (`bb-<slug>`).
    pub container: String,
    /// The sidecars' network with outside access (the bottle has none).
    pub outside: String,
    /// The volume holding the sidecars' unix sockets (sidecars and relay only).
    pub sockets: String,
    pub(crate) agent_image: ImagePlan,
    pub(crate) sidecar_image: ImagePlan,
    /// OCI runtime, when not the daemon's default.
    pub runtime: Option<String>,
    /// Why the engine cannot limit the bottle's disk, or `Ok` when it can.
    pub(crate) disk_quota: std::result::Result<(), String>,
}

/// An image the bottle runs: its build context (and content-addressed tag)
/// and whether the engine had it when the plan was resolved.
#[derive(Debug)]
pub(crate) struct ImagePlan {
    pub(crate) context: BuildContext,
    pub(crate) cached: bool,
}

impl ImagePlan {
    async fn resolve(docker: &Docker, context: BuildContext) -> Result<Self> {
        Ok(ImagePlan { cached: image::exists(docker, &context.tag).await?, context })
    }

    /// The image's tag.
    pub(crate) fn tag(&self) -> &str {
        &self.context.tag
    }

    /// Built unless it was cached or the engine has it by now.
    pub(crate) async fn ensure(&self, docker: &Docker) -> Result<()> {
        if self.cached || image::exists(docker, self.tag()).await? {
            return Ok(());
        }
        image::build(docker, &self.context).await
    }

    fn summary(&self) -> String {
        format!("{} ({})", self.tag(), if self.cached { "cached" } else { "will be built" })
    }
}

impl BackendPlan for DockerPlan {
    fn wired(&self) -> &WiredPlan {
        &self.wired
    }

    fn summary_lines(&self) -> Vec<(String, String)> {
        vec![
            ("image".into(), self.agent_image.summary()),
            ("runtime".into(), self.runtime.clone().unwrap_or_else(|| "runc (daemon default)".into())),
            ("limits".into(), self.limits_line()),
            ("sidecars".into(), self.sidecar_image.summary()),
        ]
    }
}

impl DockerPlan {
    /// The agent image's tag (content-addressed).
    pub fn image_tag(&self) -> &str {
        self.agent_image.tag()
    }

    /// The sidecar image's tag (content-addressed).
    pub fn sidecar_tag(&self) -> &str {
        self.sidecar_image.tag()
    }

    /// The limits the engine applies, and what it cannot.
    fn limits_line(&self) -> String {
        let l = &self.wired.common.limits;
        let disk = match &self.disk_quota {
            Ok(()) => format!("disk {}", l.disk),
            Err(why) => format!("disk not limited ({why})"),
        };
        format!(
            "memory {} (no swap), {} CPUs, {} processes, {disk}; saved state at most {}; \
             sidecars: {} each, 1 CPU, {SIDECAR_PIDS} processes; logs rotated at {LOG_MAX_SIZE} × {LOG_MAX_FILES}",
            l.memory,
            l.cpus,
            l.pids,
            l.state,
            ByteSize(SIDECAR_MEMORY as u64),
        )
    }
}

/// Whether the engine's storage driver can limit a container's disk
/// (`--storage-opt size=`): overlay2 only on xfs with project quotas,
/// btrfs, zfs; not overlay2 on ext4, the common case.
fn disk_quota(info: &bollard::models::SystemInfo) -> std::result::Result<(), String> {
    let driver = info.driver.clone().unwrap_or_default();
    let backing = info
        .driver_status
        .iter()
        .flatten()
        .find(|pair| pair.first().map(String::as_str) == Some("Backing Filesystem"))
        .and_then(|pair| pair.get(1).cloned())
        .unwrap_or_default();
    match (driver.as_str(), backing.as_str()) {
        ("overlay2", "xfs") | ("btrfs", _) | ("zfs", _) => Ok(()),
        _ => Err(format!("the engine's {driver} storage on {backing} has no per-container quota")),
    }
}

/// The agent container's name; its sidecars' are `NAME-ROLE`.
pub(crate) fn container_name(slug: &str) -> String {
    format!("bb-{slug}")
}

/// A Docker bottle's wiring: the bottle reaches its sidecars on its own
/// loopback, through the relay; they listen on unix sockets in the socket
/// volume and log to stdout (the container log).
fn wiring() -> Wiring {
    let placement = |kind: Kind, work_dir: &str| Placement {
        listen: Listen::Unix(sidecar::socket(kind.into())),
        audit_log: "-".into(),
        work_dir: work_dir.into(),
    };
    Wiring {
        proxy: format!("127.0.0.1:{}", bottle_core::backend::EGRESS_PORT),
        gate: Some(format!("http://127.0.0.1:{}", bottle_core::backend::GATE_PORT)),
        egress: placement(Kind::Egress, "/var/lib/bot-bottle"),
        git_gate: Some(placement(Kind::GitGate, "/var/lib/bot-bottle/gate")),
        supervise: Some(SuperviseWiring {
            url: format!("http://127.0.0.1:{SUPERVISE_PORT}{MCP_PATH}"),
            listen: Listen::Unix(sidecar::socket(SidecarProcess::Supervise)),
            queue_dir: sidecar::QUEUE_MOUNT.into(),
            egress_grants: format!("{}/{GRANTS_FILE}", sidecar::QUEUE_MOUNT),
        }),
        install_ca: true,
        isolation: "no network in the bottle (no route, no gateway, no DNS); its only way out is a relay on its \
                    loopback to its own sidecars' unix sockets"
            .into(),
    }
}

/// Resolve `common` on `docker`: no side effects.
pub(crate) async fn resolve(docker: &Docker, common: CommonPlan) -> Result<DockerPlan> {
    let agent = pack_context(common.provision.image.clone(), "agent").await?;
    let sidecar = pack_context(sidecar::recipe(common.provision.image.host_ca_bundle.clone())?, "sidecar").await?;
    let info = docker.info().await.map_err(failed("describe itself"))?;
    let runtime = match std::env::var(RUNTIME_ENV).ok().filter(|v| !v.is_empty()) {
        Some(explicit) => Some(explicit),
        None => info.runtimes.as_ref().is_some_and(|r| r.contains_key("runsc")).then(|| "runsc".to_string()),
    };
    let name = container_name(&common.slug);
    Ok(DockerPlan {
        outside: format!("{name}-out"),
        sockets: format!("{name}-sockets"),
        container: name,
        agent_image: ImagePlan::resolve(docker, agent).await?,
        sidecar_image: ImagePlan::resolve(docker, sidecar).await?,
        runtime,
        disk_quota: disk_quota(&info),
        wired: WiredPlan { common, wiring: wiring() },
    })
}
