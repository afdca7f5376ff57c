//! Launching a Docker bottle from its [`DockerPlan`]: the images built when
//! missing, the sidecars' network and socket volume, the sidecars and the
//! agent container started side by side, then the relay in the agent's
//! network namespace and the bottle's `resolv.conf` saying it has no
//! resolver. Whatever was created is removed when a step fails.

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest, VolumeCreateOptions};
use bollard::query_parameters::{CreateContainerOptions, StartContainerOptions};
use bottle_core::backend::{BackendPlan, Handle};
use bottle_core::{Error, ErrorKind, GuestUser, Result};

use crate::bottle::DockerBottle;
use crate::engine::{failed, labels_for};
use crate::plan::DockerPlan;
use crate::sidecar::{self, SidecarSpec};
use bottle_core::backend::SidecarProcess;
use bottle_core::supervise::Queue;

/// What the bottle's `/etc/resolv.conf` says: the engine copies the host's
/// resolvers there, none of which the bottle can reach.
const NO_RESOLVER: &str = "printf '# bot-bottle: this bottle has no network and no DNS resolver.\\n\
# Names are resolved by its egress proxy (HTTPS_PROXY), for the routes it allows.\\n' > /etc/resolv.conf";

/// The memory each sidecar container may use.
pub(crate) const SIDECAR_MEMORY: i64 = 256 << 20;
/// The processes each sidecar container may run.
pub(crate) const SIDECAR_PIDS: i64 = 512;
/// A container log file's size before the engine rotates it.
pub(crate) const LOG_MAX_SIZE: &str = "10m";
/// How many rotated container log files the engine keeps.
pub(crate) const LOG_MAX_FILES: &str = "3";

/// Container logs rotated by size, for every container of a bottle.
pub(crate) fn log_config() -> bollard::models::HostConfigLogConfig {
    bollard::models::HostConfigLogConfig {
        typ: Some("json-file".into()),
        config: Some(
            [("max-size".to_string(), LOG_MAX_SIZE.to_string()), ("max-file".to_string(), LOG_MAX_FILES.to_string())]
                .into(),
        ),
    }
}

/// The longest host name the kernel takes (a DNS label's 63 bytes).
const HOSTNAME_MAX: usize = 63;

/// The bottle's host name: its slug, so a prompt says which bottle it is
/// in; a slug longer than a host name may be keeps its start and its
/// distinguishing `-<8 hex>` end.
fn hostname(slug: &str) -> String {
    if slug.len() <= HOSTNAME_MAX {
        return slug.to_string();
    }
    let tail = slug.rfind('-').map_or("", |at| &slug[at..]);
    let head = slug[..HOSTNAME_MAX.saturating_sub(tail.len())].trim_end_matches('-');
    format!("{head}{tail}")
}

/// Create everything `plan` names and hand back the running bottle; on
/// error, remove what was created.
pub(crate) async fn launch(docker: &Docker, plan: DockerPlan) -> Result<DockerBottle> {
    let slug = plan.common().slug.clone();
    match create(docker, &plan).await {
        Ok(bottle) => Ok(bottle),
        Err(e) => {
            let _ = crate::cleanup::remove_slug(docker, &slug).await;
            Err(e.with_operation("launch").with_bottle(slug))
        }
    }
}

async fn create(docker: &Docker, plan: &DockerPlan) -> Result<DockerBottle> {
    let (common, wiring) = (plan.common(), plan.wiring());
    let encode = |e: serde_json::Error| Error::new(ErrorKind::Io, "encoding a sidecar configuration").with_source(e);
    let spec = |process, network: &str, json: Vec<u8>, binds: Vec<String>| SidecarSpec {
        process,
        network: network.to_string(),
        config_json: json,
        binds,
    };
    let egress = wiring.egress_config(common);
    let supervise = wiring.supervise_config(common);
    // The supervise queue, bind-mounted from the operator's state folder:
    // read-write in the supervise sidecar, read-only in the proxy and the gate.
    let queue = supervise.is_some().then(|| Queue::of_dir(&common.state_dir));
    let queue_bind = |mode: &str| {
        queue.iter().map(|q| format!("{}:{}:{mode}", q.dir().display(), sidecar::QUEUE_MOUNT)).collect::<Vec<_>>()
    };
    if let Some(queue) = &queue {
        queue.open_for_launch()?;
    }
    let mut specs = vec![spec(
        SidecarProcess::Egress,
        &plan.outside,
        serde_json::to_vec(&egress).map_err(encode)?,
        queue_bind("ro"),
    )];
    if let Some(gate) = wiring.gate_config(common) {
        let json = serde_json::to_vec(&gate).map_err(encode)?;
        specs.push(spec(SidecarProcess::GitGate, &plan.outside, json, queue_bind("ro")));
    }
    if let Some(supervise) = &supervise {
        // No network at all: it only answers the bottle and writes the queue.
        let json = serde_json::to_vec(supervise).map_err(encode)?;
        specs.push(spec(SidecarProcess::Supervise, "none", json, queue_bind("rw")));
    }
    let processes: Vec<SidecarProcess> = specs.iter().map(|s| s.process).collect();
    let p = &common.provision;
    let handle = DockerBottle::new(
        docker,
        plan.container.clone(),
        Handle::new(common.slug.clone(), p.guest_user.clone(), p.workdir.clone()),
    );
    // Everything that does not wait for something else starts at once: the
    // sidecar image, network and socket volume, then the sidecars; beside
    // them the agent image and container. The relay (in the agent's
    // network namespace, on the socket volume) starts once both sides have
    // what it needs; the bottle needs the sidecars only once the relay
    // carries its first connection.
    let (base_done, mut base_ready) = tokio::sync::watch::channel(None::<bool>);
    let network = async {
        docker
            .create_network(NetworkCreateRequest {
                name: plan.outside.clone(),
                driver: Some("bridge".into()),
                internal: Some(false),
                labels: Some(labels_for(common, "network")),
                ..Default::default()
            })
            .await
            .map(drop)
            .map_err(failed("create the sidecars' network"))
    };
    let volume = async {
        docker
            .create_volume(VolumeCreateOptions {
                name: Some(plan.sockets.clone()),
                labels: Some(labels_for(common, "sockets")),
                ..Default::default()
            })
            .await
            .map(drop)
            .map_err(failed("create the sidecars' socket volume"))
    };
    let sidecars = async {
        let base = tokio::try_join!(plan.sidecar_image.ensure(docker), network, volume).map(drop);
        let _ = base_done.send(Some(base.is_ok()));
        base?;
        futures_util::future::try_join_all(
            specs.into_iter().map(|spec| sidecar::launch(docker, common, spec, plan.sidecar_tag(), &plan.sockets)),
        )
        .await
        .map(drop)
    };
    let bottle = async {
        plan.agent_image.ensure(docker).await?;
        create_agent(docker, plan).await?;
        // The relay is made while the agent starts; it starts once the agent runs.
        let relay = async {
            let base = base_ready.wait_for(Option::is_some).await.is_ok_and(|ready| *ready == Some(true));
            if !base {
                return Err(Error::new(ErrorKind::Backend, "the sidecars' image, network or volume failed")
                    .with_backend(crate::NAME));
            }
            sidecar::create_relay(docker, common, plan.sidecar_tag(), &plan.container, &plan.sockets, &processes).await
        };
        let agent = async {
            docker
                .start_container(&plan.container, None::<StartContainerOptions>)
                .await
                .map_err(failed("start the agent container"))
        };
        tokio::try_join!(relay, agent)?;
        let resolver =
            bottle_core::provider::run_checked(&handle, NO_RESOLVER, GuestUser::Root, "writing /etc/resolv.conf");
        tokio::try_join!(sidecar::start_relay(docker, &common.slug), resolver).map(drop)
    };
    tokio::try_join!(sidecars, bottle)?;
    Ok(handle)
}

/// The agent container, created (not started): least privilege and no network at all
/// (no route, no gateway, no DNS server); its only way out is the relay
/// on its loopback.
async fn create_agent(docker: &Docker, plan: &DockerPlan) -> Result<()> {
    let common = plan.common();
    let (p, limits) = (&common.provision, &common.limits);
    let body = ContainerCreateBody {
        image: Some(plan.image_tag().to_string()),
        user: Some(p.guest_user.clone()),
        hostname: Some(hostname(&common.slug)),
        env: Some(plan.wiring().guest_env(common).iter().map(|(k, v)| format!("{k}={v}")).collect()),
        entrypoint: Some(vec!["sleep".into()]),
        cmd: Some(vec!["infinity".into()]),
        labels: Some(labels_for(common, bottle_core::labels::ROLE_AGENT)),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            init: Some(true),
            privileged: Some(false),
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(
                ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID"].map(String::from).to_vec(),
            ),
            security_opt: Some(vec!["no-new-privileges".into()]),
            memory: i64::try_from(limits.memory.0).ok(),
            // The same as memory: no swap on top of it.
            memory_swap: i64::try_from(limits.memory.0).ok(),
            nano_cpus: Some(limits.cpus.nano()),
            pids_limit: Some(i64::from(limits.pids)),
            storage_opt: plan.disk_quota.is_ok().then(|| [("size".to_string(), limits.disk.0.to_string())].into()),
            log_config: Some(log_config()),
            runtime: plan.runtime.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptions { name: Some(plan.container.clone()), platform: String::new() }),
            body,
        )
        .await
        .map(drop)
        .map_err(failed("create the agent container"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_name_is_the_slug_cut_to_what_the_kernel_takes() {
        assert_eq!(hostname("shell-1a2b3c4d"), "shell-1a2b3c4d");
        let long = format!("{}-1a2b3c4d", "a".repeat(70));
        let name = hostname(&long);
        assert_eq!(name.len(), HOSTNAME_MAX);
        assert!(name.starts_with("aaaa") && name.ends_with("a-1a2b3c4d"), "{name}");
        let dashes = format!("{}-{}-1a2b3c4d", "a".repeat(53), "b".repeat(20));
        assert_eq!(hostname(&dashes), format!("{}-1a2b3c4d", "a".repeat(53)), "no dash doubled at the cut");
    }
}
