//! [`SmolvmBackend`]: bottles as smolvm microVMs created from a `docker save`
//! archive with `--outbound-localhost-only`, beside `bottle sidecar`
//! processes on the host; found again by the machines' labels and the
//! sidecars' pid files in each bottle's state folder. Each step lives in its
//! own file: [`plan`](crate::plan), [`launch`](crate::launch),
//! [`cleanup`](crate::cleanup), [`diagnose`](crate::diagnose); this one is
//! the [`Backend`] impl that calls them.

use bottle_core::backend::{Backend, CleanupPlan, Handle, Orphans, not_running};
use bottle_core::labels::{Labels, SLUG};
use bottle_core::provider::ImageRecipe;
use bottle_core::{ActiveAgent, Check, CommonPlan, Result, StateRoot, sort_active};

use crate::bottle::SmolvmBottle;
use crate::cleanup::machines;
use crate::cli::{Machine, Smolvm};
use crate::plan::{IMAGE_LABEL, SmolvmPlan};
use crate::sidecar;

/// The smolvm backend.
#[derive(Debug, Default)]
pub struct SmolvmBackend {
    state: Option<StateRoot>,
}

/// What a killed or crashed run left behind, by slug.
pub type SmolvmCleanupPlan = Orphans;

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
}

impl Backend for SmolvmBackend {
    fn name(&self) -> &'static str {
        crate::NAME
    }

    type Plan = SmolvmPlan;
    type Bottle = SmolvmBottle;
    type CleanupPlan = Orphans;

    async fn is_available(&self) -> Result<()> {
        Smolvm::locate().map(|_| ())
    }

    async fn resolve_plan(&self, common: CommonPlan) -> Result<SmolvmPlan> {
        Smolvm::locate()?;
        bottle_core::backend::SidecarProgram::locate()?;
        crate::plan::resolve(common).await
    }

    async fn launch(&self, plan: SmolvmPlan) -> Result<SmolvmBottle> {
        crate::launch::launch(&Smolvm::locate()?, plan, &self.state_root()?).await
    }

    async fn attach(&self, slug: &str) -> Result<SmolvmBottle> {
        bottle_core::validate_slug(slug)?;
        let smolvm = Smolvm::locate()?;
        let state = self.state_root()?;
        let found = machines(&smolvm, Some(slug)).await?.into_iter().find(Machine::is_running);
        let Some(machine) = found else {
            return Err(not_running(slug, crate::NAME));
        };
        let handle = Handle::from_labels(slug, &machine.labels);
        Ok(SmolvmBottle::new(smolvm, machine.name, sidecar::dir(&state.bottle_dir(slug)), handle))
    }

    async fn revive(&self, slug: &str) -> Result<Option<SmolvmBottle>> {
        bottle_core::validate_slug(slug)?;
        let smolvm = Smolvm::locate()?;
        let state = self.state_root()?;
        let Some(machine) = machines(&smolvm, Some(slug)).await?.into_iter().next() else {
            return Ok(None);
        };
        if !machine.is_running() {
            // In its network namespace when it has one: its loopback is there.
            let netns = crate::network::netns_name(slug);
            let starter = if crate::network::netns_exists(&netns) {
                smolvm.through(crate::network::in_netns(&netns)?)
            } else {
                smolvm.clone()
            };
            starter
                .checked(&crate::cli::lifecycle_args("start", &machine.name), "start the stopped machine again")
                .await
                .map_err(|e| e.with_bottle(slug))?;
        }
        let handle = Handle::from_labels(slug, &machine.labels);
        Ok(Some(SmolvmBottle::new(smolvm, machine.name, sidecar::dir(&state.bottle_dir(slug)), handle)))
    }

    async fn remove(&self, slug: &str) -> Result<()> {
        crate::cleanup::remove_slug(&Smolvm::locate()?, &self.state_root()?, slug).await
    }

    async fn enumerate_active(&self) -> Result<Vec<ActiveAgent>> {
        let smolvm = Smolvm::locate()?;
        let state = self.state_root()?;
        let mut agents: Vec<ActiveAgent> = machines(&smolvm, None)
            .await?
            .into_iter()
            .filter_map(|m| {
                let l = Labels(&m.labels);
                let image = l.get(IMAGE_LABEL).map(str::to_string).or(m.image.clone()).unwrap_or_default();
                let slug = l.get(SLUG)?;
                let gate = state.read(slug).is_ok_and(|meta| meta.gate);
                let netns = crate::network::netns_exists(&crate::network::netns_name(slug));
                let health = sidecar::health(&sidecar::dir(&state.bottle_dir(slug)), gate, netns);
                l.active_agent(crate::NAME, m.state.clone(), image, &health)
            })
            .collect();
        sort_active(&mut agents);
        Ok(agents)
    }

    async fn prepare_cleanup(&self) -> Result<Orphans> {
        crate::cleanup::prepare(&Smolvm::locate()?, &self.state_root()?).await
    }

    async fn cleanup(&self, plan: Orphans) -> Result<Vec<String>> {
        crate::cleanup::cleanup(&Smolvm::locate()?, &self.state_root()?, &plan).await?;
        Ok(plan.describe())
    }

    async fn diagnose(&self, _agent_images: &[ImageRecipe]) -> Vec<Check> {
        crate::diagnose::diagnose()
    }
}
