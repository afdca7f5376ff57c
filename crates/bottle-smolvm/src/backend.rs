//! [`SmolvmBackend`]: bottles as smolvm microVMs created from a `docker save`
//! archive with `--outbound-localhost-only`, beside `bottle sidecar`
//! processes on the host's loopback; found again by the machines' labels and
//! the sidecars' pid files in each bottle's state folder.
//!
//! The sidecars' ports are reserved when the plan is resolved (a listening
//! socket held by the plan, released just before the sidecar binds the same
//! address): so the plan is complete before launch — the summary shows the
//! real addresses, the guest's proxy variables go to `machine create`, and
//! the git gate's URL is known to provisioning, which runs on the plan as
//! resolved.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use bottle_core::backend::{Backend, BackendPlan, CleanupPlan, EGRESS_PORT, GATE_PORT, Liveness, Wiring};
use bottle_core::labels::{self, Labels, Verdict};
use bottle_core::sidecar::{Listen, Placement};
use bottle_core::{
    ActiveAgent, Bottle, CommonPlan, Error, ErrorKind, GuestUser, Result, Sidecar, StateRoot, sort_active,
};
use tokio::sync::OnceCell;

use crate::bottle::SmolvmBottle;
use crate::cli::{self, CreateSpec, Machine, Smolvm};
use crate::image;
use crate::network::{self, Isolation};
use crate::sidecar::{self, Bind};

/// A machine label naming the agent image's tag (the machine's own `image` is the archive path).
pub const IMAGE_LABEL: &str = "dev.bot-bottle.image-tag";

/// The smolvm backend.
#[derive(Debug, Default)]
pub struct SmolvmBackend {
    state: Option<StateRoot>,
}

impl SmolvmBackend {
    /// A backend that finds bottles' state under `$XDG_STATE_HOME/bot-bottle`
    /// (as the CLI does) and `smolvm` on `PATH`.
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend whose bottles' state lives under `root`.
    pub fn with_state_root(root: StateRoot) -> Self {
        SmolvmBackend { state: Some(root) }
    }

    fn state_root(&self) -> Result<StateRoot> {
        match &self.state {
            Some(root) => Ok(root.clone()),
            None => StateRoot::from_env(&|k| std::env::var(k).ok()),
        }
    }

    fn handle(&self, smolvm: Smolvm, machine: &Machine, state: &StateRoot, slug: &str) -> SmolvmBottle {
        let l = Labels(&machine.labels);
        SmolvmBottle {
            smolvm,
            machine: machine.name.clone(),
            slug: slug.to_string(),
            user: l.get(labels::USER).unwrap_or("root").to_string(),
            workdir: l.get(labels::WORKDIR).unwrap_or("/").to_string(),
            sidecars: sidecar::dir(&state.bottle_dir(slug)),
            children: Mutex::new(Vec::new()),
            ids: OnceCell::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// This backend's machines, optionally of one slug.
    async fn machines(&self, smolvm: &Smolvm, slug: Option<&str>) -> Result<Vec<Machine>> {
        Ok(smolvm
            .list()
            .await?
            .into_iter()
            .filter(|m| {
                let l = Labels(&m.labels);
                l.get(labels::BACKEND) == Some(crate::NAME) && slug.is_none_or(|s| l.get(labels::SLUG) == Some(s))
            })
            .collect())
    }

    async fn remove_slug(&self, smolvm: &Smolvm, slug: &str) -> Result<()> {
        bottle_core::validate_slug(slug)?;
        let state = self.state_root()?;
        let machines = self.machines(smolvm, Some(slug)).await?;
        let dir = sidecar::dir(&state.bottle_dir(slug));
        if machines.is_empty() {
            return SmolvmBottle::remove_everything(smolvm, None, &dir).await.map_err(|e| e.with_bottle(slug));
        }
        for m in &machines {
            SmolvmBottle::remove_everything(smolvm, Some(m), &dir).await.map_err(|e| e.with_bottle(slug))?;
        }
        Ok(())
    }

    async fn create(&self, smolvm: &Smolvm, plan: SmolvmPlan) -> Result<SmolvmBottle> {
        let common = &plan.common;
        let archive = match &common.provision.image.prebuilt_archive {
            Some(prebuilt) => prebuilt.clone(),
            None => {
                let id = match &plan.image_id {
                    Some(id) => id.clone(),
                    None => {
                        let context =
                            bottle_core::backend::BuildContext { tag: plan.image_tag.clone(), tar: plan.context };
                        image::build(&context).await?
                    }
                };
                image::archive(&plan.image_tag, &id, &plan.image_cache).await?
            }
        };
        let dir = sidecar::dir(&common.state_dir);
        let mut bottle = SmolvmBottle {
            smolvm: smolvm.clone(),
            machine: plan.machine.clone(),
            slug: common.slug.clone(),
            user: common.provision.guest_user.clone(),
            workdir: common.provision.workdir.clone(),
            sidecars: dir.clone(),
            children: Mutex::new(Vec::new()),
            ids: OnceCell::new(),
            closed: AtomicBool::new(false),
        };
        let encode =
            |e: serde_json::Error| Error::new(ErrorKind::Io, "encoding a sidecar configuration").with_source(e);
        let gate_json = serde_json::to_vec(&plan.wiring.gate_config(common)).map_err(encode)?;
        let egress_json = serde_json::to_vec(&plan.wiring.egress_config(common)).map_err(encode)?;
        let started: Vec<std::process::Child> = match plan.isolation {
            Isolation::Netns { name, sockets } => {
                network::create(&name, &sockets).await?;
                let mut pairs =
                    vec![format!("127.0.0.1:{EGRESS_PORT}={}", Isolation::socket(&sockets, Sidecar::Egress).display())];
                let mut started = Vec::new();
                if common.git_gate.is_needed() {
                    let socket = Isolation::socket(&sockets, Sidecar::GitGate);
                    pairs.push(format!("127.0.0.1:{GATE_PORT}={}", socket.display()));
                    started.push(sidecar::start(&dir, Sidecar::GitGate, Bind::Socket(socket), &gate_json).await?);
                }
                let socket = Isolation::socket(&sockets, Sidecar::Egress);
                started.push(sidecar::start(&dir, Sidecar::Egress, Bind::Socket(socket), &egress_json).await?);
                let netns = network::in_netns(&name)?;
                started.push(sidecar::start_relay(&dir, &netns, &pairs).await?);
                // The VM's sockets live where its process runs: in the namespace.
                let inside = smolvm.through(netns);
                self.boot(&inside, &plan.machine, &archive, &plan.labels, (common, &plan.wiring)).await?;
                started
            }
            Isolation::SharedLoopback { egress, gate } => {
                let mut started = Vec::new();
                if let Some(reserved) = gate {
                    started.push(sidecar::start(&dir, Sidecar::GitGate, Bind::Reserved(reserved), &gate_json).await?);
                }
                started.push(sidecar::start(&dir, Sidecar::Egress, Bind::Reserved(egress), &egress_json).await?);
                self.boot(smolvm, &plan.machine, &archive, &plan.labels, (common, &plan.wiring)).await?;
                started
            }
        };
        bottle.children.get_mut().unwrap_or_else(|e| e.into_inner()).extend(started);
        Ok(bottle)
    }

    /// `machine create` and `start` through `smolvm`, then the bottle's
    /// environment into the guest's env file (never on a command line).
    async fn boot(
        &self,
        smolvm: &Smolvm,
        machine: &str,
        archive: &std::path::Path,
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
}

/// The smolvm plan: machine, image and the sidecars' reserved addresses.
#[derive(Debug)]
pub struct SmolvmPlan {
    common: CommonPlan,
    wiring: Wiring,
    /// The machine's name (`bb-<slug>`).
    pub machine: String,
    /// Tag of the agent image (content-addressed, shared with the Docker backend).
    pub image_tag: String,
    image_id: Option<String>,
    image_cache: PathBuf,
    archive_cached: bool,
    context: Vec<u8>,
    /// The machine's labels.
    pub labels: BTreeMap<String, String>,
    isolation: Isolation,
}

impl BackendPlan for SmolvmPlan {
    fn common(&self) -> &CommonPlan {
        &self.common
    }

    fn wiring(&self) -> &Wiring {
        &self.wiring
    }

    fn summary_lines(&self) -> Vec<(String, String)> {
        let image = match (&self.image_id, self.archive_cached) {
            _ if self.common.provision.image.prebuilt_archive.is_some() => "the manifest's image_archive",
            (Some(_), true) => "cached archive",
            (Some(_), false) => "built; will be saved as an archive",
            (None, _) => "will be built and saved as an archive",
        };
        let sidecars = match &self.isolation {
            Isolation::Netns { sockets, .. } => format!("on unix sockets in {}", sockets.display()),
            Isolation::SharedLoopback { egress, gate } => {
                let mut on = vec![format!("egress on {}", egress.addr())];
                if let Some(gate) = gate {
                    on.push(format!("git gate on {}", gate.addr()));
                }
                on.join(", ")
            }
        };
        vec![
            ("image".into(), format!("{} ({image})", self.image_tag)),
            ("machine".into(), format!("{} (smolvm microVM, outbound to its loopback only)", self.machine)),
            ("limits".into(), {
                let l = &self.common.limits;
                format!(
                    "memory {}, {} CPUs (whole CPUs: smolvm's --cpus), saved state at most {}; processes and \
                     disk not limited (smolvm's CLI has no such setting)",
                    l.memory,
                    l.cpus.0.div_ceil(1000),
                    l.state
                )
            }),
            ("sidecars".into(), format!("`bottle sidecar` processes on the host, {sidecars}")),
        ]
    }
}

/// What a killed or crashed run left behind, by slug.
#[derive(Debug, Default)]
pub struct SmolvmCleanupPlan {
    orphans: BTreeMap<String, Vec<String>>,
}

impl CleanupPlan for SmolvmCleanupPlan {
    fn describe(&self) -> Vec<String> {
        self.orphans.iter().flat_map(|(slug, what)| what.iter().map(move |w| format!("{slug}: {w}"))).collect()
    }
}

/// What `prepare_cleanup` saw of one slug.
#[derive(Default)]
struct Found {
    machine: Option<Machine>,
    owner: Option<bottle_core::backend::Owner>,
    detached: bool,
    what: Vec<String>,
}

impl Backend for SmolvmBackend {
    fn name(&self) -> &'static str {
        crate::NAME
    }

    type Plan = SmolvmPlan;
    type Bottle = SmolvmBottle;
    type CleanupPlan = SmolvmCleanupPlan;

    async fn is_available(&self) -> Result<()> {
        Smolvm::locate().map(|_| ())
    }

    async fn resolve_plan(&self, common: CommonPlan) -> Result<SmolvmPlan> {
        Smolvm::locate()?;
        bottle_core::backend::SidecarProgram::locate()?;
        let image_cache = image::cache_dir(&|k| std::env::var(k).ok())?;
        let (context, image_id, archive_cached) = match &common.provision.image.prebuilt_archive {
            // The manifest's archive: no Docker needed.
            Some(prebuilt) => {
                let tag = format!("prebuilt:{}", prebuilt.display());
                (bottle_core::backend::BuildContext { tag, tar: Vec::new() }, None, true)
            }
            None => {
                image::require_docker().await?;
                let recipe = common.provision.image.clone();
                let context = tokio::task::spawn_blocking(move || bottle_core::backend::build_context(&recipe))
                    .await
                    .map_err(|e| Error::new(ErrorKind::Io, format!("packing the build context: {e}")))??;
                let image_id = image::image_id(&context.tag).await?;
                let cached = image_id.as_ref().is_some_and(|id| image::archive_path(&image_cache, id).is_file());
                (context, image_id, cached)
            }
        };

        let dir = sidecar::dir(&common.state_dir);
        let isolation = Isolation::choose(&common.slug, common.git_gate.is_needed())?;
        let (proxy, gate, listen): (String, String, [Listen; 2]) = match &isolation {
            Isolation::Netns { sockets, .. } => {
                let socket = |kind| Listen::Unix(Isolation::socket(sockets, kind).display().to_string());
                (
                    format!("127.0.0.1:{EGRESS_PORT}"),
                    format!("127.0.0.1:{GATE_PORT}"),
                    [socket(Sidecar::Egress), socket(Sidecar::GitGate)],
                )
            }
            Isolation::SharedLoopback { egress, gate } => {
                let gate = gate.as_ref().map(|g| g.addr().to_string()).unwrap_or_default();
                (egress.addr().to_string(), gate.clone(), [Listen::Tcp(egress.addr().to_string()), Listen::Tcp(gate)])
            }
        };
        let [egress_listen, gate_listen] = listen;
        // The git gate is on 127.0.0.1 too, which NO_PROXY names.
        let wiring = Wiring {
            proxy,
            gate: common.git_gate.is_needed().then(|| format!("http://{gate}")),
            egress: Placement {
                listen: egress_listen,
                audit_log: sidecar::audit_path(&dir, Sidecar::Egress).display().to_string(),
                work_dir: dir.display().to_string(),
            },
            git_gate: common.git_gate.is_needed().then(|| Placement {
                listen: gate_listen,
                audit_log: sidecar::audit_path(&dir, Sidecar::GitGate).display().to_string(),
                work_dir: sidecar::gate_work_dir(&dir).display().to_string(),
            }),
            install_ca: true,
            isolation: isolation.describe(),
        };
        let mut labels: BTreeMap<String, String> =
            labels::for_plan(&common, crate::NAME, labels::ROLE_AGENT).into_iter().collect();
        labels.insert(IMAGE_LABEL.into(), context.tag.clone());
        Ok(SmolvmPlan {
            machine: format!("bb-{}", common.slug),
            wiring,
            image_tag: context.tag,
            image_id,
            image_cache,
            archive_cached,
            context: context.tar,
            labels,
            isolation,
            common,
        })
    }

    async fn launch(&self, plan: SmolvmPlan) -> Result<SmolvmBottle> {
        let smolvm = Smolvm::locate()?;
        let slug = plan.common.slug.clone();
        match self.create(&smolvm, plan).await {
            Ok(bottle) => Ok(bottle),
            Err(e) => {
                let _ = self.remove_slug(&smolvm, &slug).await;
                Err(e.with_operation("launch").with_bottle(slug))
            }
        }
    }

    async fn attach(&self, slug: &str) -> Result<SmolvmBottle> {
        bottle_core::validate_slug(slug)?;
        let smolvm = Smolvm::locate()?;
        let state = self.state_root()?;
        let found = self.machines(&smolvm, Some(slug)).await?.into_iter().find(Machine::is_running);
        let Some(machine) = found else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no running bottle `{slug}` on {}; `bottle list active` shows the running ones", crate::NAME),
            )
            .with_backend(crate::NAME));
        };
        Ok(self.handle(smolvm, &machine, &state, slug))
    }

    async fn remove(&self, slug: &str) -> Result<()> {
        self.remove_slug(&Smolvm::locate()?, slug).await
    }

    async fn enumerate_active(&self) -> Result<Vec<ActiveAgent>> {
        let smolvm = Smolvm::locate()?;
        let mut agents: Vec<ActiveAgent> = self
            .machines(&smolvm, None)
            .await?
            .into_iter()
            .filter_map(|m| {
                let l = Labels(&m.labels);
                Some(ActiveAgent {
                    slug: l.get(labels::SLUG)?.to_string(),
                    agent: l.get(labels::AGENT).unwrap_or_default().to_string(),
                    backend: crate::NAME.to_string(),
                    started_at_ms: l.created_ms(),
                    status: if m.state.is_empty() { "unknown".into() } else { m.state.clone() },
                    image: l.get(IMAGE_LABEL).map(str::to_string).or(m.image.clone()).unwrap_or_default(),
                    label: l.get(labels::LABEL).map(str::to_string),
                    color: l.get(labels::COLOR).map(str::to_string),
                })
            })
            .collect();
        sort_active(&mut agents);
        Ok(agents)
    }

    async fn prepare_cleanup(&self) -> Result<SmolvmCleanupPlan> {
        let smolvm = Smolvm::locate()?;
        let state = self.state_root()?;
        let mut slugs: HashMap<String, Found> = HashMap::new();
        for m in self.machines(&smolvm, None).await? {
            let l = Labels(&m.labels);
            let Some(slug) = l.get(labels::SLUG).map(str::to_string) else { continue };
            let found = slugs.entry(slug).or_default();
            found.what.push(format!("machine {} ({})", m.name, if m.is_running() { "running" } else { &m.state }));
            found.owner = l.owner();
            found.detached = l.detached();
            found.machine = Some(m);
        }
        // Sidecars outlive a killed launcher, and may run before (or without) a machine.
        for meta in state.list().into_iter().filter(|meta| meta.backend == crate::NAME) {
            let dir = sidecar::dir(&state.bottle_dir(&meta.slug));
            let mut running: Vec<String> = sidecar::ROLES
                .into_iter()
                .filter_map(|role| {
                    sidecar::running(&dir, role).map(|pid| format!("{} sidecar (pid {pid})", role.name()))
                })
                .collect();
            let netns = network::netns_name(&meta.slug);
            if network::netns_exists(&netns) {
                running.push(format!("network namespace {netns}"));
            }
            if running.is_empty() && !dir.exists() {
                continue;
            }
            let found = slugs.entry(meta.slug.clone()).or_default();
            if running.is_empty() && found.machine.is_none() {
                found.what.push(format!("sidecar files {}", dir.display()));
            }
            found.what.extend(running);
            if found.owner.is_none() {
                found.owner = Some(meta.owner.clone());
                found.detached = meta.detached;
            }
        }
        let mut plan = SmolvmCleanupPlan::default();
        for (slug, found) in slugs {
            if found.what.is_empty() {
                continue;
            }
            let running = found.machine.as_ref().is_some_and(Machine::is_running);
            let liveness: Option<Liveness> = found.owner.as_ref().map(bottle_core::backend::Owner::liveness);
            let orphan = match labels::judge(liveness, running, found.detached) {
                Verdict::Keep => false,
                Verdict::Remove => true,
                Verdict::RemoveUnlessReady => match &found.machine {
                    Some(m) => {
                        let bottle = self.handle(smolvm.clone(), m, &state, &slug);
                        let check = format!("test -e {}", bottle_core::session::READY_MARKER);
                        !bottle.exec(&check, GuestUser::Root).await.is_ok_and(|r| r.success())
                    }
                    None => true,
                },
            };
            if orphan {
                plan.orphans.insert(slug, found.what);
            }
        }
        Ok(plan)
    }

    async fn cleanup(&self, plan: SmolvmCleanupPlan) -> Result<Vec<String>> {
        let smolvm = Smolvm::locate()?;
        for slug in plan.orphans.keys() {
            self.remove_slug(&smolvm, slug).await?;
        }
        Ok(plan.describe())
    }
}
