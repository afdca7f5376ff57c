//! [`DockerBackend`]: bottles as containers on a per-bottle bridge network,
//! found again by their labels (no compose files, no local registry of ours).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest, VolumeCreateOptions};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions,
    RemoveVolumeOptions, StartContainerOptions,
};
use bottle_core::backend::{Backend, BackendPlan, CleanupPlan, Wiring};
use bottle_core::sidecar::{Listen, Placement};
use bottle_core::{ActiveAgent, Bottle, ByteSize, CommonPlan, Error, ErrorKind, GuestUser, Result, sort_active};
use tokio::sync::OnceCell;

use crate::bottle::DockerBottle;
use crate::engine::{Engine, failed, is_not_found};
use crate::image;
use crate::labels::{self, Labels};
use crate::sidecar::{self, Kind};

/// Environment variable naming the OCI runtime to use (`runc`, `runsc`); by
/// default `runsc` (gVisor) when the daemon offers it, else the daemon's default.
pub const RUNTIME_ENV: &str = "BOT_BOTTLE_DOCKER_RUNTIME";

/// What the bottle's `/etc/resolv.conf` says: the engine copies the host's
/// resolvers there, none of which the bottle can reach.
const NO_RESOLVER: &str = "printf '# bot-bottle: this bottle has no network and no DNS resolver.\\n\
# Names are resolved by its egress proxy (HTTPS_PROXY), for the routes it allows.\\n' > /etc/resolv.conf";

/// The Docker backend.
#[derive(Debug, Default)]
pub struct DockerBackend {
    engine: Engine,
}

impl DockerBackend {
    /// A backend that connects to the local engine (`DOCKER_HOST` or the
    /// default socket) on first use.
    pub fn new() -> Self {
        Self::default()
    }

    async fn docker(&self) -> Result<&Docker> {
        self.engine.client().await
    }
}

/// The Docker plan: names, image and runtime resolved.
#[derive(Debug)]
pub struct DockerPlan {
    common: CommonPlan,
    wiring: Wiring,
    /// Tag of the agent image (content-addressed).
    pub image_tag: String,
    /// Whether the engine has that image already.
    pub image_cached: bool,
    context: Vec<u8>,
    /// The sidecars' network with outside access (the bottle has none).
    pub outside: String,
    /// The volume holding the sidecars' unix sockets (sidecars and relay only).
    pub sockets: String,
    /// The agent container's name.
    pub container: String,
    /// Tag of the sidecar image (content-addressed).
    pub sidecar_tag: String,
    sidecar_cached: bool,
    sidecar_context: Vec<u8>,
    /// OCI runtime, when not the daemon's default.
    pub runtime: Option<String>,
    /// Why the engine cannot limit the bottle's disk, or `None` when it can.
    disk_quota: std::result::Result<(), String>,
}

impl BackendPlan for DockerPlan {
    fn common(&self) -> &CommonPlan {
        &self.common
    }

    fn wiring(&self) -> &Wiring {
        &self.wiring
    }

    fn summary_lines(&self) -> Vec<(String, String)> {
        vec![
            (
                "image".into(),
                format!("{} ({})", self.image_tag, if self.image_cached { "cached" } else { "will be built" }),
            ),
            ("runtime".into(), self.runtime.clone().unwrap_or_else(|| "runc (daemon default)".into())),
            ("limits".into(), self.limits_line()),
            (
                "sidecars".into(),
                format!("{} ({})", self.sidecar_tag, if self.sidecar_cached { "cached" } else { "will be built" }),
            ),
        ]
    }
}

impl DockerPlan {
    /// The limits the engine applies, and what it cannot.
    fn limits_line(&self) -> String {
        let l = &self.common.limits;
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

/// The agent container's name; its sidecars' are `NAME-ROLE`.
pub(crate) fn container_name(slug: &str) -> String {
    format!("bb-{slug}")
}

/// A Docker bottle's wiring: the bottle reaches its sidecars on its own
/// loopback, through the relay; they listen on unix sockets in the socket
/// volume and log to stdout (the container log).
fn wiring() -> Wiring {
    let placement = |kind: Kind, work_dir: &str| Placement {
        listen: Listen::Unix(sidecar::socket(kind)),
        audit_log: "-".into(),
        work_dir: work_dir.into(),
    };
    Wiring {
        proxy: format!("127.0.0.1:{}", bottle_core::backend::EGRESS_PORT),
        gate: Some(format!("http://127.0.0.1:{}", bottle_core::backend::GATE_PORT)),
        egress: placement(Kind::Egress, "/var/lib/bot-bottle"),
        git_gate: Some(placement(Kind::GitGate, "/var/lib/bot-bottle/gate")),
        install_ca: true,
        isolation: "no network in the bottle (no route, no gateway, no DNS); its only way out is a relay on its \
                    loopback to its own sidecars' unix sockets"
            .into(),
    }
}

/// What a killed or crashed run left behind, by slug.
#[derive(Debug, Default)]
pub struct DockerCleanupPlan {
    orphans: BTreeMap<String, Vec<String>>,
}

impl CleanupPlan for DockerCleanupPlan {
    fn describe(&self) -> Vec<String> {
        self.orphans.iter().flat_map(|(slug, what)| what.iter().map(move |w| format!("{slug}: {w}"))).collect()
    }
}

/// Remove every container and network labelled with `slug`. Idempotent.
pub(crate) async fn remove_slug(docker: &Docker, slug: &str) -> Result<()> {
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(labels::filter(Some(slug))),
            ..Default::default()
        }))
        .await
        .map_err(failed("list containers"))?;
    for c in containers {
        let Some(id) = c.id else { continue };
        let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match docker.remove_container(&id, Some(options)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {} // removal already in progress
            Err(e) => return Err(failed("remove a container")(e).with_bottle(slug)),
        }
    }
    let networks = docker
        .list_networks(Some(ListNetworksOptions { filters: Some(labels::filter(Some(slug))) }))
        .await
        .map_err(failed("list networks"))?;
    for n in networks {
        let Some(id) = n.id else { continue };
        match docker.remove_network(&id).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(failed("remove a network")(e).with_bottle(slug)),
        }
    }
    for volume in volumes_of(docker, Some(slug)).await? {
        match docker.remove_volume(&volume, None::<RemoveVolumeOptions>).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(failed("remove a volume")(e).with_bottle(slug)),
        }
    }
    Ok(())
}

/// The names of this backend's volumes (of one slug, or all), with their labels.
async fn volumes_of(docker: &Docker, slug: Option<&str>) -> Result<Vec<String>> {
    Ok(labelled_volumes(docker, slug).await?.into_iter().map(|(name, _)| name).collect())
}

async fn labelled_volumes(docker: &Docker, slug: Option<&str>) -> Result<Vec<(String, HashMap<String, String>)>> {
    let listed = docker
        .list_volumes(Some(ListVolumesOptions { filters: Some(labels::filter(slug)) }))
        .await
        .map_err(failed("list volumes"))?;
    Ok(listed.volumes.unwrap_or_default().into_iter().map(|v| (v.name, v.labels)).collect())
}

impl DockerBackend {
    async fn create(&self, docker: &Docker, plan: &DockerPlan) -> Result<DockerBottle> {
        let common = &plan.common;
        let agent_image = async {
            if plan.image_cached || image::exists(docker, &plan.image_tag).await? {
                return Ok(());
            }
            image::build(
                docker,
                bottle_core::backend::BuildContext { tag: plan.image_tag.clone(), tar: plan.context.clone() },
            )
            .await
        };
        let sidecar_image = async {
            if plan.sidecar_cached || image::exists(docker, &plan.sidecar_tag).await? {
                return Ok(());
            }
            let context =
                bottle_core::backend::BuildContext { tag: plan.sidecar_tag.clone(), tar: plan.sidecar_context.clone() };
            image::build(docker, context).await
        };
        let (agent, sidecar) = tokio::join!(agent_image, sidecar_image);
        agent?;
        sidecar?;
        docker
            .create_network(NetworkCreateRequest {
                name: plan.outside.clone(),
                driver: Some("bridge".into()),
                internal: Some(false),
                labels: Some(labels::for_plan(common, "network")),
                ..Default::default()
            })
            .await
            .map_err(failed("create the sidecars' network"))?;
        docker
            .create_volume(VolumeCreateOptions {
                name: Some(plan.sockets.clone()),
                labels: Some(labels::for_plan(common, "sockets")),
                ..Default::default()
            })
            .await
            .map_err(failed("create the sidecars' socket volume"))?;
        let encode =
            |e: serde_json::Error| Error::new(ErrorKind::Io, "encoding a sidecar configuration").with_source(e);
        let mut configs = vec![(Kind::Egress, serde_json::to_vec(&plan.wiring.egress_config(common)).map_err(encode)?)];
        if let Some(gate) = plan.wiring.gate_config(common) {
            configs.push((Kind::GitGate, serde_json::to_vec(&gate).map_err(encode)?));
        }
        let kinds: Vec<Kind> = configs.iter().map(|(kind, _)| *kind).collect();
        // The sidecars and the bottle start side by side: the bottle needs
        // them only once the relay carries its first connection.
        let sidecars = futures_util::future::try_join_all(configs.into_iter().map(|(kind, json)| {
            sidecar::launch(docker, common, kind, &plan.sidecar_tag, &plan.outside, &plan.sockets, json)
        }));
        let p = &common.provision;
        let handle =
            self.handle(docker, plan.container.clone(), common.slug.clone(), p.guest_user.clone(), p.workdir.clone());
        let bottle = async {
            self.create_agent(docker, plan).await?;
            let relay =
                sidecar::launch_relay(docker, common, &plan.sidecar_tag, &plan.container, &plan.sockets, &kinds);
            let resolver =
                bottle_core::provider::run_checked(&handle, NO_RESOLVER, GuestUser::Root, "writing /etc/resolv.conf");
            tokio::try_join!(relay, resolver).map(|_| ())
        };
        tokio::try_join!(sidecars, bottle)?;
        Ok(handle)
    }

    /// The agent container, started: least privilege and no network at all
    /// (no route, no gateway, no DNS server); its only way out is the relay
    /// on its loopback.
    async fn create_agent(&self, docker: &Docker, plan: &DockerPlan) -> Result<()> {
        let common = &plan.common;
        let p = &common.provision;
        let body = ContainerCreateBody {
            image: Some(plan.image_tag.clone()),
            user: Some(p.guest_user.clone()),
            hostname: Some(common.agent.clone()),
            env: Some(plan.wiring.guest_env(common).iter().map(|(k, v)| format!("{k}={v}")).collect()),
            entrypoint: Some(vec!["sleep".into()]),
            cmd: Some(vec!["infinity".into()]),
            labels: Some(labels::for_plan(common, labels::ROLE_AGENT)),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                init: Some(true),
                privileged: Some(false),
                cap_drop: Some(vec!["ALL".into()]),
                cap_add: Some(
                    ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID"]
                        .map(String::from)
                        .to_vec(),
                ),
                security_opt: Some(vec!["no-new-privileges".into()]),
                memory: i64::try_from(common.limits.memory.0).ok(),
                // The same as memory: no swap on top of it.
                memory_swap: i64::try_from(common.limits.memory.0).ok(),
                nano_cpus: Some(common.limits.cpus.nano()),
                pids_limit: Some(i64::from(common.limits.pids)),
                storage_opt: plan
                    .disk_quota
                    .is_ok()
                    .then(|| [("size".to_string(), common.limits.disk.0.to_string())].into()),
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
            .map_err(failed("create the agent container"))?;
        docker
            .start_container(&plan.container, None::<StartContainerOptions>)
            .await
            .map_err(failed("start the agent container"))
    }

    async fn is_ready(&self, docker: &Docker, container: &str, slug: &str) -> bool {
        let bottle = self.handle(docker, container.to_string(), slug.to_string(), "root".into(), "/".into());
        let check = format!("test -e {}", bottle_core::session::READY_MARKER);
        bottle.exec(&check, GuestUser::Root).await.is_ok_and(|r| r.success())
    }

    fn handle(&self, docker: &Docker, container: String, slug: String, user: String, workdir: String) -> DockerBottle {
        DockerBottle {
            docker: docker.clone(),
            container,
            slug,
            user,
            workdir,
            ids: OnceCell::new(),
            closed: AtomicBool::new(false),
        }
    }

    async fn agent_containers(
        &self,
        docker: &Docker,
        all: bool,
        slug: Option<&str>,
    ) -> Result<Vec<bollard::models::ContainerSummary>> {
        let mut filters = labels::filter(slug);
        filters.entry("label".into()).or_default().push(format!("{}={}", labels::ROLE, labels::ROLE_AGENT));
        docker
            .list_containers(Some(ListContainersOptions { all, filters: Some(filters), ..Default::default() }))
            .await
            .map_err(failed("list containers"))
    }
}

impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        crate::NAME
    }

    type Plan = DockerPlan;
    type Bottle = DockerBottle;
    type CleanupPlan = DockerCleanupPlan;

    async fn is_available(&self) -> Result<()> {
        let docker = self.docker().await?;
        docker.ping().await.map(|_| ()).map_err(failed("answer a ping"))
    }

    async fn resolve_plan(&self, common: CommonPlan) -> Result<DockerPlan> {
        let docker = self.docker().await?;
        let recipe = common.provision.image.clone();
        let context = tokio::task::spawn_blocking(move || bottle_core::backend::build_context(&recipe))
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("packing the build context: {e}")))??;
        let image_cached = image::exists(docker, &context.tag).await?;
        let info = docker.info().await.map_err(failed("describe itself"))?;
        let runtime = match std::env::var(RUNTIME_ENV).ok().filter(|v| !v.is_empty()) {
            Some(explicit) => Some(explicit),
            None => info.runtimes.as_ref().is_some_and(|r| r.contains_key("runsc")).then(|| "runsc".to_string()),
        };
        let disk_quota = disk_quota(&info);
        let sidecar_recipe = sidecar::recipe(common.provision.image.host_ca_bundle.clone())?;
        let sidecar_context = tokio::task::spawn_blocking(move || bottle_core::backend::build_context(&sidecar_recipe))
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("packing the sidecar build context: {e}")))??;
        let sidecar_cached = image::exists(docker, &sidecar_context.tag).await?;
        let name = container_name(&common.slug);
        Ok(DockerPlan {
            wiring: wiring(),
            image_tag: context.tag,
            image_cached,
            context: context.tar,
            outside: format!("{name}-out"),
            sockets: format!("{name}-sockets"),
            container: name,
            sidecar_tag: sidecar_context.tag,
            sidecar_cached,
            sidecar_context: sidecar_context.tar,
            runtime,
            disk_quota,
            common,
        })
    }

    async fn launch(&self, plan: DockerPlan) -> Result<DockerBottle> {
        let docker = self.docker().await?;
        let slug = plan.common.slug.clone();
        match self.create(docker, &plan).await {
            Ok(bottle) => Ok(bottle),
            Err(e) => {
                let _ = remove_slug(docker, &slug).await;
                Err(e.with_operation("launch").with_bottle(slug))
            }
        }
    }

    async fn attach(&self, slug: &str) -> Result<DockerBottle> {
        let docker = self.docker().await?;
        let found = self.agent_containers(docker, false, Some(slug)).await?;
        let Some(c) = found.into_iter().next() else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no running bottle `{slug}` on docker; `bottle list active` shows the running ones"),
            )
            .with_backend(crate::NAME));
        };
        let labels = c.labels.unwrap_or_default();
        let l = Labels(&labels);
        let name = c.names.and_then(|n| n.into_iter().next()).map(|n| n.trim_start_matches('/').to_string());
        Ok(self.handle(
            docker,
            name.or(c.id).unwrap_or_default(),
            slug.to_string(),
            l.get(labels::USER).unwrap_or("root").to_string(),
            l.get(labels::WORKDIR).unwrap_or("/").to_string(),
        ))
    }

    async fn remove(&self, slug: &str) -> Result<()> {
        remove_slug(self.docker().await?, slug).await
    }

    async fn enumerate_active(&self) -> Result<Vec<ActiveAgent>> {
        let docker = self.docker().await?;
        let mut agents: Vec<ActiveAgent> = self
            .agent_containers(docker, true, None)
            .await?
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                let l = Labels(&labels);
                Some(ActiveAgent {
                    slug: l.get(labels::SLUG)?.to_string(),
                    agent: l.get(labels::AGENT).unwrap_or_default().to_string(),
                    backend: crate::NAME.to_string(),
                    started_at_ms: l.created_ms(),
                    status: c.state.map(|s| s.to_string()).unwrap_or_else(|| "unknown".into()),
                    image: c.image.unwrap_or_default(),
                    label: l.get(labels::LABEL).map(str::to_string),
                    color: l.get(labels::COLOR).map(str::to_string),
                })
            })
            .collect();
        sort_active(&mut agents);
        Ok(agents)
    }

    async fn prepare_cleanup(&self) -> Result<DockerCleanupPlan> {
        let docker = self.docker().await?;
        let containers = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(labels::filter(None)),
                ..Default::default()
            }))
            .await
            .map_err(failed("list containers"))?;
        let networks = docker
            .list_networks(Some(ListNetworksOptions { filters: Some(labels::filter(None)) }))
            .await
            .map_err(failed("list networks"))?;
        // Every slug's resources, as seen through their labels.
        #[derive(Default)]
        struct Found {
            labels: HashMap<String, String>,
            running_agent: Option<String>,
            what: Vec<String>,
        }
        let mut slugs: HashMap<String, Found> = HashMap::new();
        for c in containers {
            let labels = c.labels.unwrap_or_default();
            let Some(slug) = labels.get(labels::SLUG).cloned() else { continue };
            let running = c.state.map(|s| s.to_string()) == Some("running".into());
            let is_agent = labels.get(labels::ROLE).map(String::as_str) == Some(labels::ROLE_AGENT);
            let name = c.names.and_then(|n| n.into_iter().next()).unwrap_or_default();
            let found = slugs.entry(slug).or_default();
            if is_agent && running {
                found.running_agent = c.id;
            }
            found.what.push(format!(
                "container {} ({})",
                name.trim_start_matches('/'),
                if running { "running" } else { "stopped" }
            ));
            found.labels = labels;
        }
        for n in networks {
            let labels = n.labels.unwrap_or_default();
            let Some(slug) = labels.get(labels::SLUG).cloned() else { continue };
            let found = slugs.entry(slug).or_default();
            found.what.push(format!("network {}", n.name.unwrap_or_default()));
            if found.labels.is_empty() {
                found.labels = labels;
            }
        }
        for (name, labels) in labelled_volumes(docker, None).await? {
            let Some(slug) = labels.get(labels::SLUG).cloned() else { continue };
            let found = slugs.entry(slug).or_default();
            found.what.push(format!("volume {name}"));
            if found.labels.is_empty() {
                found.labels = labels;
            }
        }
        let mut plan = DockerCleanupPlan::default();
        for (slug, found) in slugs {
            let l = Labels(&found.labels);
            let running = found.running_agent.is_some();
            let orphan = match labels::judge(l.owner().map(|o| o.liveness()), running, l.detached()) {
                labels::Verdict::Keep => false,
                labels::Verdict::Remove => true,
                labels::Verdict::RemoveUnlessReady => match &found.running_agent {
                    Some(container) => !self.is_ready(docker, container, &slug).await,
                    None => true,
                },
            };
            if orphan {
                plan.orphans.insert(slug, found.what);
            }
        }
        Ok(plan)
    }

    async fn cleanup(&self, plan: DockerCleanupPlan) -> Result<Vec<String>> {
        let docker = self.docker().await?;
        for slug in plan.orphans.keys() {
            remove_slug(docker, slug).await?;
        }
        Ok(plan.describe())
    }
}
