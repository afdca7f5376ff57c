//! [`DockerBackend`]: bottles as containers without a network, beside
//! sidecar containers on a per-bottle network, found again by their labels
//! (no compose files, no local registry of ours). Each step lives in its
//! own file: [`plan`](crate::plan), [`launch`](crate::launch),
//! [`cleanup`](crate::cleanup), [`diagnose`](crate::diagnose); this one is
//! the engine connection and the [`Backend`] impl that calls them.

use bollard::Docker;
use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::StartContainerOptions;
use bottle_core::backend::SidecarProcess;
use bottle_core::backend::{Backend, CleanupPlan, Handle, Orphans, not_running};
use bottle_core::labels::{Labels, ROLE, ROLE_AGENT, SLUG};
use bottle_core::provider::ImageRecipe;
use bottle_core::{ActiveAgent, Check, CommonPlan, Result, sort_active};

use crate::bottle::DockerBottle;
use crate::engine::{Engine, container_name, containers, failed};
use crate::plan::DockerPlan;

/// The Docker backend.
#[derive(Debug, Default)]
pub struct DockerBackend {
    engine: Engine,
}

/// What a killed or crashed run left behind, by slug.
pub type DockerCleanupPlan = Orphans;

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

impl Backend for DockerBackend {
    type Plan = DockerPlan;
    type Bottle = DockerBottle;
    type CleanupPlan = Orphans;

    fn name(&self) -> &'static str {
        crate::NAME
    }

    async fn is_available(&self) -> Result<()> {
        let docker = self.docker().await?;
        docker.ping().await.map(|_| ()).map_err(failed("answer a ping"))
    }

    async fn resolve_plan(&self, common: CommonPlan) -> Result<DockerPlan> {
        crate::plan::resolve(self.docker().await?, common).await
    }

    async fn launch(&self, plan: DockerPlan) -> Result<DockerBottle> {
        crate::launch::launch(self.docker().await?, plan).await
    }

    async fn attach(&self, slug: &str) -> Result<DockerBottle> {
        let docker = self.docker().await?;
        let found = containers(docker, false, Some(slug), true).await?;
        let Some(c) = found.into_iter().next() else {
            return Err(not_running(slug, crate::NAME));
        };
        let handle = Handle::from_labels(slug, &c.labels.clone().unwrap_or_default());
        Ok(DockerBottle::new(docker, container_name(&c).or(c.id).unwrap_or_default(), handle))
    }

    async fn revive(&self, slug: &str) -> Result<Option<DockerBottle>> {
        let docker = self.docker().await?;
        let Some(c) = containers(docker, true, Some(slug), true).await?.into_iter().next() else {
            return Ok(None);
        };
        let name = container_name(&c).or(c.id.clone()).unwrap_or_default();
        if c.state.map(|s| s.to_string()).as_deref() != Some("running") {
            // Its entrypoint only waits: starting it runs nothing of the agent's.
            docker
                .start_container(&name, None::<StartContainerOptions>)
                .await
                .map_err(|e| failed("start the stopped agent container again")(e).with_bottle(slug))?;
        }
        let handle = Handle::from_labels(slug, &c.labels.clone().unwrap_or_default());
        Ok(Some(DockerBottle::new(docker, name, handle)))
    }

    async fn remove(&self, slug: &str) -> Result<()> {
        crate::cleanup::remove_slug(self.docker().await?, slug).await
    }

    async fn enumerate_active(&self) -> Result<Vec<ActiveAgent>> {
        let docker = self.docker().await?;
        let all = containers(docker, true, None, false).await?;
        let mut agents: Vec<ActiveAgent> = all
            .iter()
            .filter(|c| role(c) == Some(ROLE_AGENT))
            .filter_map(|c| {
                let labels = c.labels.clone().unwrap_or_default();
                let status = c.state.map(|s| s.to_string()).unwrap_or_default();
                let slug = Labels(&labels).get(SLUG)?.to_string();
                let sidecars = sidecar_health(&all, &slug);
                Labels(&labels).active_agent(crate::NAME, status, c.image.clone().unwrap_or_default(), &sidecars)
            })
            .collect();
        sort_active(&mut agents);
        Ok(agents)
    }

    async fn prepare_cleanup(&self) -> Result<Orphans> {
        crate::cleanup::prepare(self.docker().await?).await
    }

    async fn cleanup(&self, plan: Orphans) -> Result<Vec<String>> {
        crate::cleanup::cleanup(self.docker().await?, &plan).await?;
        Ok(plan.describe())
    }

    async fn diagnose(&self, agent_images: &[ImageRecipe]) -> Vec<Check> {
        crate::diagnose::diagnose(&self.engine, agent_images).await
    }
}

/// A container's role label.
fn role(c: &ContainerSummary) -> Option<&str> {
    c.labels.as_ref()?.get(ROLE).map(String::as_str)
}

/// Whether each process beside bottle `slug` runs, from its containers in
/// `all`: the egress proxy and the relay every Docker bottle has, the git
/// gate and the supervise server when it has them. A missing container is one that does not run.
fn sidecar_health(all: &[ContainerSummary], slug: &str) -> Vec<(SidecarProcess, bool)> {
    let of = |process: SidecarProcess| {
        all.iter().find(|c| {
            c.labels.as_ref().and_then(|l| l.get(SLUG)).map(String::as_str) == Some(slug)
                && role(c) == Some(process.name())
        })
    };
    [SidecarProcess::Egress, SidecarProcess::GitGate, SidecarProcess::Supervise, SidecarProcess::Relay]
        .into_iter()
        .filter_map(|process| {
            let found = of(process);
            let optional = matches!(process, SidecarProcess::GitGate | SidecarProcess::Supervise);
            let expected = !optional || found.is_some();
            expected.then(|| (process, found.is_some_and(|c| c.state == Some(ContainerSummaryStateEnum::RUNNING))))
        })
        .collect()
}
