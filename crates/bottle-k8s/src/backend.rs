//! [`K8sBackend`]: bottles as sealed Pods (or agent-sandbox Sandboxes) on
//! the cluster kubectl would use, found again by their labels. Each step
//! lives in its own file: [`plan`](crate::plan), [`launch`](crate::launch),
//! [`cleanup`](crate::cleanup), [`wait`](crate::wait); this one is the
//! [`Backend`] impl that calls them.

use std::collections::HashMap;

use kube::api::ListParams;
use tokio::sync::OnceCell;

use bottle_core::backend::{Backend, CleanupPlan, Handle, Orphans, not_running};
use bottle_core::labels::Labels;
use bottle_core::provider::ImageRecipe;
use bottle_core::{ActiveAgent, Check, CheckStatus, CommonPlan, Error, ErrorKind, Result, StateRoot, sort_active};

use crate::bottle::K8sBottle;
use crate::cluster::{Cluster, refused};
use crate::launch::Timeouts;
use crate::plan::K8sPlan;
use crate::render::{self, MANAGED_BY, MANAGER, ROLE, ROLE_AGENT, ROLE_SIDECAR, SANDBOX};

/// How long `is_available` waits for the API server.
const AVAILABLE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The Kubernetes backend.
#[derive(Debug, Default)]
pub struct K8sBackend {
    cluster: OnceCell<Cluster>,
    state: Option<StateRoot>,
    timeouts: Timeouts,
}

/// What a killed or crashed run left behind, by slug.
pub type K8sCleanupPlan = Orphans;

impl K8sBackend {
    /// A backend on the cluster kubectl would use (found when first needed),
    /// its bottles' state under `$XDG_STATE_HOME/bot-bottle`.
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend on `cluster`, its bottles' state under `state`, waiting as `timeouts` say.
    pub fn with_cluster(cluster: Cluster, state: StateRoot, timeouts: Timeouts) -> Self {
        K8sBackend { cluster: OnceCell::new_with(Some(cluster)), state: Some(state), timeouts }
    }

    async fn cluster(&self) -> Result<&Cluster> {
        self.cluster.get_or_try_init(Cluster::infer).await
    }

    fn state_root(&self) -> Result<StateRoot> {
        match &self.state {
            Some(root) => Ok(root.clone()),
            None => StateRoot::from_env(&|k| std::env::var(k).ok()),
        }
    }

    /// The running agent Pod of `slug` in its namespace, as a bottle.
    async fn find(&self, slug: &str) -> Result<Option<(K8sBottle, bool)>> {
        bottle_core::validate_slug(slug)?;
        let cluster = self.cluster().await?;
        let ns = crate::cleanup::namespace_of(&self.state_root()?, slug);
        let selector = format!("{},{ROLE}={ROLE_AGENT}", render::selector(slug));
        let pods = cluster
            .pods(&ns)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| refused(e, "list", "pods", &ns))?;
        let Some(pod) = pods.items.into_iter().next() else { return Ok(None) };
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        let annotations: HashMap<String, String> =
            pod.metadata.annotations.clone().unwrap_or_default().into_iter().collect();
        let handle = Handle::from_labels(slug, &annotations);
        let name = pod.metadata.name.unwrap_or_default();
        Ok(Some((K8sBottle::new(cluster.clone(), ns, name, handle), running)))
    }
}

impl Backend for K8sBackend {
    fn name(&self) -> &'static str {
        crate::NAME
    }

    type Plan = K8sPlan;
    type Bottle = K8sBottle;
    type CleanupPlan = Orphans;

    async fn is_available(&self) -> Result<()> {
        let cluster = self.cluster().await?;
        let unavailable = |why: String| {
            Error::new(
                ErrorKind::Unavailable,
                format!("the Kubernetes cluster ({}, {}) does not answer: {why}", cluster.name, cluster.url),
            )
        };
        // Bounded: a kubeconfig naming a cluster that is gone must not stall `list` and `cleanup`.
        match tokio::time::timeout(AVAILABLE_WAIT, cluster.client.apiserver_version()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(unavailable(e.to_string())),
            Err(_) => Err(unavailable(format!("no answer in {} s", AVAILABLE_WAIT.as_secs()))),
        }
    }

    async fn resolve_plan(&self, common: CommonPlan) -> Result<K8sPlan> {
        if common.slug.len() > 63 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "bottle `{}` has a slug of {} characters, more than the 63 a Kubernetes label holds; give the \
                     agent a name of at most 54 characters",
                    common.slug,
                    common.slug.len()
                ),
            ));
        }
        let mut plan = crate::plan::resolve(common).await?;
        // The preflight names the cluster and whether agent-sandbox runs the agent.
        let cluster = self.cluster().await?;
        let mode = cluster.mode().await?;
        plan.spec.mode = mode;
        plan.cluster = Some((cluster.name.clone(), cluster.url.clone()));
        Ok(plan)
    }

    async fn launch(&self, plan: K8sPlan) -> Result<K8sBottle> {
        crate::launch::launch(self.cluster().await?, plan, self.timeouts).await
    }

    async fn attach(&self, slug: &str) -> Result<K8sBottle> {
        match self.find(slug).await? {
            Some((bottle, true)) => Ok(bottle),
            _ => Err(not_running(slug, crate::NAME)),
        }
    }

    async fn revive(&self, slug: &str) -> Result<Option<K8sBottle>> {
        // A Pod that stopped cannot start again (restartPolicy Never): its state is gone with it.
        Ok(self.find(slug).await?.and_then(|(bottle, running)| running.then_some(bottle)))
    }

    async fn remove(&self, slug: &str) -> Result<()> {
        bottle_core::validate_slug(slug)?;
        let ns = crate::cleanup::namespace_of(&self.state_root()?, slug);
        crate::cleanup::remove(self.cluster().await?, &ns, slug).await
    }

    async fn enumerate_active(&self) -> Result<Vec<ActiveAgent>> {
        let cluster = self.cluster().await?;
        let mut agents = Vec::new();
        for ns in crate::cleanup::namespaces(&self.state_root()?) {
            let managed = ListParams::default().labels(&format!("{MANAGED_BY}={MANAGER}"));
            let pods = match cluster.pods(&ns).list(&managed).await {
                Ok(pods) => pods,
                Err(e) if crate::cluster::out_of_reach(&e) => continue,
                Err(e) => return Err(refused(e, "list", "pods", &ns)),
            };
            let role = |p: &k8s_openapi::api::core::v1::Pod| {
                p.metadata.labels.as_ref().and_then(|l| l.get(ROLE)).cloned().unwrap_or_default()
            };
            let sidecars: HashMap<String, Vec<(bottle_core::backend::SidecarProcess, bool)>> = pods
                .items
                .iter()
                .filter(|p| role(p) == ROLE_SIDECAR)
                .filter_map(|p| {
                    let slug = p.metadata.labels.as_ref()?.get(SANDBOX)?.clone();
                    let statuses = p.status.as_ref()?.container_statuses.clone().unwrap_or_default();
                    let health = statuses
                        .iter()
                        .filter_map(|c| {
                            let process = match c.name.as_str() {
                                "egress" => bottle_core::backend::SidecarProcess::Egress,
                                "gate" => bottle_core::backend::SidecarProcess::GitGate,
                                _ => return None,
                            };
                            Some((process, c.ready))
                        })
                        .collect();
                    Some((slug, health))
                })
                .collect();
            for pod in pods.items.iter().filter(|p| role(p) == ROLE_AGENT) {
                let annotations: HashMap<String, String> =
                    pod.metadata.annotations.clone().unwrap_or_default().into_iter().collect();
                let status = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default().to_lowercase();
                let image = pod.spec.as_ref().and_then(|s| s.containers.first()).and_then(|c| c.image.clone());
                let slug = pod.metadata.labels.as_ref().and_then(|l| l.get(SANDBOX)).cloned().unwrap_or_default();
                let health = sidecars.get(&slug).cloned().unwrap_or_default();
                agents.extend(Labels(&annotations).active_agent(
                    crate::NAME,
                    status,
                    image.unwrap_or_default(),
                    &health,
                ));
            }
        }
        sort_active(&mut agents);
        Ok(agents)
    }

    async fn prepare_cleanup(&self) -> Result<Orphans> {
        let cluster = self.cluster().await?;
        let namespaces = crate::cleanup::namespaces(&self.state_root()?);
        crate::cleanup::prepare(cluster, &namespaces, |slug| async move {
            match self.find(&slug).await {
                Ok(Some((bottle, true))) => bottle_core::backend::is_detached(&bottle).await,
                _ => false,
            }
        })
        .await
    }

    async fn cleanup(&self, plan: Orphans) -> Result<Vec<String>> {
        let cluster = self.cluster().await?;
        let namespaces = crate::cleanup::namespaces(&self.state_root()?);
        for slug in plan.slugs() {
            for ns in &namespaces {
                crate::cleanup::remove(cluster, ns, slug).await?;
            }
        }
        Ok(plan.describe())
    }

    async fn diagnose(&self, _agent_images: &[ImageRecipe]) -> Vec<Check> {
        let check = |status, finding: String, fix: Option<&str>| Check {
            status,
            what: "kubernetes".into(),
            finding,
            fix: fix.map(str::to_string),
        };
        let cluster = match self.cluster().await {
            Ok(cluster) => cluster,
            Err(e) => return vec![check(CheckStatus::Info, e.message().to_string(), None)],
        };
        let mut checks = Vec::new();
        match cluster.client.apiserver_version().await {
            Ok(v) => checks.push(check(
                CheckStatus::Ok,
                format!("cluster {} ({}) answers, Kubernetes {}.{}", cluster.name, cluster.url, v.major, v.minor),
                None,
            )),
            Err(e) => checks.push(check(
                CheckStatus::Warn,
                format!("cluster {} ({}) does not answer: {e}", cluster.name, cluster.url),
                Some("check `kubectl cluster-info`"),
            )),
        }
        match cluster.mode().await {
            Ok(render::Mode::AgentSandbox) => {
                checks.push(check(CheckStatus::Ok, "agent-sandbox is installed: agents run as Sandboxes".into(), None))
            }
            Ok(render::Mode::Native) => checks.push(check(
                CheckStatus::Info,
                "agent-sandbox is not installed: agents run as plain Pods".into(),
                None,
            )),
            Err(e) => checks.push(check(CheckStatus::Warn, e.to_string(), None)),
        }
        checks.push(check(
            CheckStatus::Info,
            "NetworkPolicy must be enforced by the cluster's network plugin; each start probes it".into(),
            None,
        ));
        checks
    }
}
