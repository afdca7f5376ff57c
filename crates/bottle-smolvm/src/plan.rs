//! [`SmolvmPlan`]: what `resolve_plan` makes of the common plan on smolvm —
//! the machine's name and labels, the image (the manifest's archive, or a
//! Docker build saved as an archive and cached), the network isolation
//! (a namespace of its own, or the shared loopback with the sidecars' ports
//! reserved now) and the [`Wiring`] that follows from it.
//!
//! The sidecars' ports are reserved when the plan is resolved (a listening
//! socket held by the plan, released just before the sidecar binds the same
//! address): so the plan is complete before launch — the summary shows the
//! real addresses, the guest's proxy variables go to the guest's env file,
//! and the git gate's URL is known to provisioning, which runs on the plan
//! as resolved.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bottle_core::backend::{
    BackendPlan, BuildContext, EGRESS_PORT, GATE_PORT, SidecarProcess, SuperviseWiring, WiredPlan, Wiring, pack_context,
};
use bottle_core::labels;
use bottle_core::sidecar::{Listen, Placement};
use bottle_core::supervise::{MCP_PATH, Queue, SUPERVISE_PORT};
use bottle_core::{CommonPlan, Result, Sidecar};

use crate::image;
use crate::network::Isolation;
use crate::sidecar;

/// A machine label naming the agent image's tag (the machine's own `image` is the archive path).
pub const IMAGE_LABEL: &str = "dev.bot-bottle.image-tag";

/// The smolvm plan: machine, image and the sidecars' reserved addresses.
#[derive(Debug)]
pub struct SmolvmPlan {
    pub(crate) wired: WiredPlan,
    /// The machine's name (`bb-<slug>`).
    pub machine: String,
    /// The machine's labels.
    pub labels: BTreeMap<String, String>,
    pub(crate) isolation: Isolation,
    /// The agent image's build context (its tag shared with the Docker backend).
    pub(crate) image: BuildContext,
    /// The engine's id of that image, when it has it.
    pub(crate) image_id: Option<String>,
    /// Where the saved archives are kept, by image id.
    pub(crate) image_cache: PathBuf,
    archive_cached: bool,
}

impl SmolvmPlan {
    /// The agent image's tag (content-addressed, shared with the Docker backend).
    pub fn image_tag(&self) -> &str {
        &self.image.tag
    }
}

impl BackendPlan for SmolvmPlan {
    fn wired(&self) -> &WiredPlan {
        &self.wired
    }

    fn summary_lines(&self) -> Vec<(String, String)> {
        let image = match (&self.image_id, self.archive_cached) {
            _ if self.common().provision.image.prebuilt_archive.is_some() => "the manifest's image_archive",
            (Some(_), true) => "cached archive",
            (Some(_), false) => "built; will be saved as an archive",
            (None, _) => "will be built and saved as an archive",
        };
        let sidecars = match &self.isolation {
            Isolation::Netns { sockets, .. } => format!("on unix sockets in {}", sockets.display()),
            Isolation::SharedLoopback { egress, gate, supervise } => {
                let mut on = vec![format!("egress on {}", egress.addr())];
                if let Some(gate) = gate {
                    on.push(format!("git gate on {}", gate.addr()));
                }
                if let Some(supervise) = supervise {
                    on.push(format!("supervise on {}", supervise.addr()));
                }
                on.join(", ")
            }
        };
        let l = &self.common().limits;
        vec![
            ("image".into(), format!("{} ({image})", self.image.tag)),
            ("machine".into(), format!("{} (smolvm microVM, outbound to its loopback only)", self.machine)),
            (
                "limits".into(),
                format!(
                    "memory {}, {} CPUs (whole CPUs: smolvm's --cpus), saved state at most {}; processes and \
                     disk not limited (smolvm's CLI has no such setting)",
                    l.memory,
                    l.cpus.0.div_ceil(1000),
                    l.state
                ),
            ),
            ("sidecars".into(), format!("`bottle sidecar` processes on the host, {sidecars}")),
        ]
    }
}

/// The machine's name for bottle `slug`.
pub(crate) fn machine_name(slug: &str) -> String {
    format!("bb-{slug}")
}

/// The wiring that `isolation` gives the bottle whose state folder is
/// `state_dir` (its sidecars keep their files in its `sidecars/`): on the
/// namespace's own loopback through the relay, or on
/// the reserved host ports. The git gate is on 127.0.0.1 too, which
/// `NO_PROXY` names.
fn wiring(isolation: &Isolation, state_dir: &std::path::Path, needs_gate: bool) -> Wiring {
    let dir = &sidecar::dir(state_dir);
    let (proxy, gate, [egress_listen, gate_listen]): (String, String, [Listen; 2]) = match isolation {
        Isolation::Netns { sockets, .. } => {
            let socket = |kind: Sidecar| Listen::Unix(Isolation::socket(sockets, kind.into()).display().to_string());
            (
                format!("127.0.0.1:{EGRESS_PORT}"),
                format!("127.0.0.1:{GATE_PORT}"),
                [socket(Sidecar::Egress), socket(Sidecar::GitGate)],
            )
        }
        Isolation::SharedLoopback { egress, gate, .. } => {
            let gate = gate.as_ref().map(|g| g.addr().to_string()).unwrap_or_default();
            (egress.addr().to_string(), gate.clone(), [Listen::Tcp(egress.addr().to_string()), Listen::Tcp(gate)])
        }
    };
    Wiring {
        proxy,
        gate: needs_gate.then(|| format!("http://{gate}")),
        egress: Placement {
            listen: egress_listen,
            audit_log: sidecar::audit_path(dir, Sidecar::Egress).display().to_string(),
            work_dir: dir.display().to_string(),
        },
        git_gate: needs_gate.then(|| Placement {
            listen: gate_listen,
            audit_log: sidecar::audit_path(dir, Sidecar::GitGate).display().to_string(),
            work_dir: sidecar::gate_work_dir(dir).display().to_string(),
        }),
        supervise: supervise_wiring(isolation, state_dir),
        install_ca: true,
        isolation: isolation.describe(),
    }
}

/// Where a bottle's supervise server listens and the bottle reaches it: on
/// its socket through the relay's `127.0.0.1:8765`, or on its reserved host
/// port; the server, the proxy and the gate are host processes, so they
/// all read the queue in the bottle's state folder itself. `None` when the
/// bottle has no supervise (no port reserved, not in a namespace).
fn supervise_wiring(isolation: &Isolation, state_dir: &std::path::Path) -> Option<SuperviseWiring> {
    let (url, listen) = match isolation {
        Isolation::Netns { sockets, .. } => (
            format!("http://127.0.0.1:{SUPERVISE_PORT}{MCP_PATH}"),
            Listen::Unix(Isolation::socket(sockets, SidecarProcess::Supervise).display().to_string()),
        ),
        Isolation::SharedLoopback { supervise, .. } => {
            let addr = supervise.as_ref()?.addr();
            (format!("http://{addr}{MCP_PATH}"), Listen::Tcp(addr.to_string()))
        }
    };
    let queue = Queue::of_dir(state_dir);
    let grants = queue.grants_path().display().to_string();
    Some(SuperviseWiring {
        url,
        listen,
        queue_dir: queue.dir().display().to_string(),
        egress_grants: grants.clone(),
        gate_grants: grants,
    })
}

/// Resolve `common`: the image looked up (built later, at launch), the
/// isolation chosen and its ports reserved. Nothing is created.
pub(crate) async fn resolve(common: CommonPlan) -> Result<SmolvmPlan> {
    let image_cache = image::cache_dir(&|k| std::env::var(k).ok())?;
    let (context, image_id, archive_cached) = match &common.provision.image.prebuilt_archive {
        // The manifest's archive: no Docker needed.
        Some(prebuilt) => {
            let tag = format!("prebuilt:{}", prebuilt.display());
            (BuildContext::prebuilt(tag), None, true)
        }
        None => {
            image::require_docker().await?;
            let context = pack_context(common.provision.image.clone(), "agent").await?;
            let image_id = image::image_id(&context.tag).await?;
            let cached = image_id.as_ref().is_some_and(|id| image::archive_path(&image_cache, id).is_file());
            (context, image_id, cached)
        }
    };
    let needs_gate = common.git_gate.is_needed();
    let isolation = Isolation::choose(&common.slug, needs_gate, common.supervise.enabled)?;
    let wiring = wiring(&isolation, &common.state_dir, needs_gate);
    let mut labels: BTreeMap<String, String> =
        labels::for_plan(&common, crate::NAME, labels::ROLE_AGENT).into_iter().collect();
    labels.insert(IMAGE_LABEL.into(), context.tag.clone());
    Ok(SmolvmPlan {
        machine: machine_name(&common.slug),
        labels,
        isolation,
        image: context,
        image_id,
        image_cache,
        archive_cached,
        wired: WiredPlan { common, wiring },
    })
}
