//! Launching a smolvm bottle from its [`SmolvmPlan`]: the image archive
//! made when missing; in a namespace of its own, the namespace, the
//! sidecars on their sockets and the relay inside it, then the machine
//! created and started there; on the shared loopback, the sidecars on their
//! reserved ports, then the machine; last, the bottle's environment into
//! the guest's env file (never on a command line). Whatever was created is
//! removed when a step fails.

use std::collections::BTreeMap;
use std::path::Path;

use bottle_core::backend::{BackendPlan, EGRESS_PORT, GATE_PORT, Handle, RelayPair, Wiring};
use bottle_core::supervise::{Queue, SUPERVISE_PORT};
use bottle_core::{CommonPlan, Error, ErrorKind, Result};

use crate::bottle::SmolvmBottle;
use crate::cli::{self, CreateSpec, Smolvm};
use crate::image;
use crate::network::{self, Isolation};
use crate::plan::SmolvmPlan;
use crate::sidecar::{self, Bind, Role};

/// Create everything `plan` names and hand back the running bottle; on
/// error, remove what was created.
pub(crate) async fn launch(smolvm: &Smolvm, plan: SmolvmPlan, state: &bottle_core::StateRoot) -> Result<SmolvmBottle> {
    let slug = plan.common().slug.clone();
    match create(smolvm, plan).await {
        Ok(bottle) => Ok(bottle),
        Err(e) => {
            let _ = crate::cleanup::remove_slug(smolvm, state, &slug).await;
            Err(e.with_operation("launch").with_bottle(slug))
        }
    }
}

/// The archive the machine boots: the manifest's, or the image built (when
/// missing) and saved (when not cached).
async fn archive(plan: &SmolvmPlan) -> Result<std::path::PathBuf> {
    if let Some(prebuilt) = &plan.common().provision.image.prebuilt_archive {
        return Ok(prebuilt.clone());
    }
    let id = match &plan.image_id {
        Some(id) => id.clone(),
        None => image::build(&plan.image).await?,
    };
    image::archive(plan.image_tag(), &id, &plan.image_cache).await
}

async fn create(smolvm: &Smolvm, plan: SmolvmPlan) -> Result<SmolvmBottle> {
    let archive = archive(&plan).await?;
    let SmolvmPlan { wired, machine, labels, isolation, .. } = plan;
    let (common, wiring) = (&wired.common, &wired.wiring);
    let dir = sidecar::dir(&common.state_dir);
    let p = &common.provision;
    let mut bottle = SmolvmBottle::new(
        smolvm.clone(),
        machine.clone(),
        dir.clone(),
        Handle::new(common.slug.clone(), p.guest_user.clone(), p.workdir.clone()),
    );
    let encode = |e: serde_json::Error| Error::new(ErrorKind::Io, "encoding a sidecar configuration").with_source(e);
    let gate_json = serde_json::to_vec(&wiring.gate_config(common)).map_err(encode)?;
    let egress_json = serde_json::to_vec(&wiring.egress_config(common)).map_err(encode)?;
    let supervise = wiring.supervise_config(common);
    let supervise_json = supervise.as_ref().map(serde_json::to_vec).transpose().map_err(encode)?;
    if supervise.is_some() {
        Queue::of_dir(&common.state_dir).open_for_launch()?;
    }
    let started: Vec<std::process::Child> = match isolation {
        Isolation::Netns { name, sockets } => {
            network::create(&name, &sockets).await?;
            let socket = |role| Isolation::socket(&sockets, role);
            let pair = |port: u16, role| RelayPair { listen: ([127, 0, 0, 1], port).into(), socket: socket(role) };
            let mut pairs = vec![pair(EGRESS_PORT, Role::Egress)];
            let mut started = Vec::new();
            if common.git_gate.is_needed() {
                pairs.push(pair(GATE_PORT, Role::GitGate));
                let bind = Bind::Socket(socket(Role::GitGate));
                started.push(sidecar::start(&dir, Role::GitGate, bind, &gate_json).await?);
            }
            if let Some(json) = &supervise_json {
                pairs.push(pair(SUPERVISE_PORT, Role::Supervise));
                let bind = Bind::Socket(socket(Role::Supervise));
                started.push(sidecar::start(&dir, Role::Supervise, bind, json).await?);
            }
            let bind = Bind::Socket(socket(Role::Egress));
            started.push(sidecar::start(&dir, Role::Egress, bind, &egress_json).await?);
            let netns = network::in_netns(&name)?;
            started.push(sidecar::start_relay(&dir, &netns, pairs).await?);
            // The VM's sockets live where its process runs: in the namespace.
            boot(&smolvm.through(netns), &machine, &archive, &labels, (common, wiring)).await?;
            started
        }
        Isolation::SharedLoopback { egress, gate, supervise } => {
            let mut started = Vec::new();
            if let Some(reserved) = gate {
                started.push(sidecar::start(&dir, Role::GitGate, Bind::Reserved(reserved), &gate_json).await?);
            }
            if let (Some(reserved), Some(json)) = (supervise, &supervise_json) {
                started.push(sidecar::start(&dir, Role::Supervise, Bind::Reserved(reserved), json).await?);
            }
            started.push(sidecar::start(&dir, Role::Egress, Bind::Reserved(egress), &egress_json).await?);
            boot(smolvm, &machine, &archive, &labels, (common, wiring)).await?;
            started
        }
    };
    bottle.adopt(started);
    Ok(bottle)
}

/// `machine create` and `start` through `smolvm`, then the bottle's
/// environment into the guest's env file (never on a command line).
async fn boot(
    smolvm: &Smolvm,
    machine: &str,
    archive: &Path,
    labels: &BTreeMap<String, String>,
    (common, wiring): (&CommonPlan, &Wiring),
) -> Result<()> {
    let limits = &common.limits;
    let spec = CreateSpec {
        name: machine,
        image: archive,
        labels,
        cpus: limits.cpus.0.div_ceil(1000),
        memory_mib: limits.memory.0.div_ceil(1 << 20),
    };
    smolvm.checked(&cli::create_args(&spec), "create the machine").await?;
    smolvm.checked(&cli::lifecycle_args("start", machine), "start the machine").await?;
    let staged = tempfile::Builder::new()
        .prefix("guest-env")
        .tempfile_in(&common.stage_dir)
        .map_err(|e| Error::io(format!("creating a file in {}", common.stage_dir.display()), e))?;
    std::fs::write(staged.path(), cli::env_file(&wiring.guest_env(common)))
        .map_err(|e| Error::io(format!("writing {}", staged.path().display()), e))?;
    smolvm
        .checked(&cli::cp_in_args(machine, staged.path(), cli::GUEST_ENV_FILE, "644"), "write the bottle's env")
        .await?;
    Ok(())
}
