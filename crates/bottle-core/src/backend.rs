//! The backend traits: [`Backend`] with associated plan, bottle and cleanup
//! types, and its object-safe twin [`DynBackend`] (methods suffixed `_dyn`),
//! implemented once for every `Backend` so the registry can hold them behind
//! `Arc<dyn DynBackend>` — which is itself a `Backend`, so generic code takes
//! either, and a caller with both traits in scope meets no ambiguous method.
//!
//! This module is the backend author's kit: with the traits come the
//! [`Wiring`] a backend hands back (in its [`WiredPlan`]), the bottle
//! [`Handle`] with the engine-neutral halves of the copies, the shared label
//! keys and the orphan rule ([`labels`](crate::labels): [`Leftovers`] judged
//! into [`Orphans`], the detached marker), the sidecar program
//! ([`SidecarProgram`]) and its start protocol ([`SidecarCommand`], the
//! readiness line of [`SidecarProcess`]), build contexts and the bounded
//! copy helpers, and the operator's terminal in raw mode ([`RawMode`]).

pub use crate::bottle::agent_ids;
pub use crate::build_progress::BuildProgress;
pub use crate::bundle::{BUNDLE_DIR, LAUNCHER, SELF_ENV, SIDECAR_ENV, SidecarProgram, sidecar_recipe};
pub use crate::copy::{CopyOut, guest_size, pack_tree, split_guest_path, tar_allowance, unpack_bounded};
pub use crate::handle::{Handle, Packed};
pub use crate::image::{BuildContext, DOCKERFILE_IN_CONTEXT, build_context, pack_context};
pub use crate::labels::{Leftovers, Orphans, is_detached};
pub use crate::owner::{Liveness, Owner, host_name, now_ms};
pub use crate::plan::{BackendPlan, WiredPlan};
pub use crate::protocol::{RelayPair, SidecarCommand, SidecarProcess};
pub use crate::sidecar::Placement;
pub use crate::sidecar_config::{EGRESS_PORT, GATE_PORT, SOCKET_DIR};
pub use crate::terminal::{RawMode, window_size};
pub use crate::wiring::{SuperviseWiring, Wiring};

use std::any::Any;
use std::future::Future;
use std::pin::Pin;

use crate::bottle::{ActiveAgent, Bottle};
use crate::doctor::Check;
use crate::plan::{CommonPlan, ImageRecipe};
use crate::{Error, ErrorKind, Result};

/// A boxed, `Send` future: what the dynamic twin's methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What `prepare_cleanup` found: resources a killed or crashed run left behind.
pub trait CleanupPlan: Send + 'static {
    /// One line per resource that `cleanup` would remove.
    fn describe(&self) -> Vec<String>;
    /// The slugs of the bottles whose resources `cleanup` would remove.
    fn slugs(&self) -> Vec<String>;
    /// Whether there is nothing to remove.
    fn is_empty(&self) -> bool {
        self.describe().is_empty()
    }
}

/// A runtime that runs bottles (Docker, smolvm, …).
pub trait Backend: Send + Sync + 'static {
    /// The name users select it by (`--backend NAME`).
    fn name(&self) -> &'static str;
    /// This backend's resolved plan.
    type Plan: BackendPlan;
    /// Its running-bottle handle.
    type Bottle: Bottle + 'static;
    /// What `prepare_cleanup` finds.
    type CleanupPlan: CleanupPlan;

    /// `Ok` when the engine answers; otherwise an [`ErrorKind::Unavailable`]
    /// error saying exactly what to install or start.
    fn is_available(&self) -> impl Future<Output = Result<()>> + Send;

    /// Turn the common plan into this backend's plan (names, runtime, image
    /// tag) and its [`Wiring`](crate::wiring::Wiring). No side effects.
    fn resolve_plan(&self, common: CommonPlan) -> impl Future<Output = Result<Self::Plan>> + Send;

    /// Create everything the plan names and return the running bottle. On
    /// error, whatever was created is removed before returning.
    fn launch(&self, plan: Self::Plan) -> impl Future<Output = Result<Self::Bottle>> + Send;

    /// A handle on a running bottle by slug (for `exec` and `stop`).
    fn attach(&self, slug: &str) -> impl Future<Output = Result<Self::Bottle>> + Send;

    /// A handle on bottle `slug`'s agent whatever state it is in, its
    /// container or VM started again when it had stopped (a daemon restart,
    /// an out-of-memory kill): so that `stop` and `cleanup` can still save
    /// the agent's state. `None` when the bottle has no agent left.
    fn revive(&self, slug: &str) -> impl Future<Output = Result<Option<Self::Bottle>>> + Send;

    /// Remove every resource labelled with `slug`, whatever state it is in. Idempotent.
    fn remove(&self, slug: &str) -> impl Future<Output = Result<()>> + Send;

    /// The bottles this backend runs now.
    fn enumerate_active(&self) -> impl Future<Output = Result<Vec<ActiveAgent>>> + Send;

    /// Find what killed or crashed runs left behind.
    fn prepare_cleanup(&self) -> impl Future<Output = Result<Self::CleanupPlan>> + Send;

    /// Remove what `prepare_cleanup` found; returns one line per removed resource.
    fn cleanup(&self, plan: Self::CleanupPlan) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// What `bottle doctor` says of this backend's engine, one [`Check`]
    /// each: whether it answers, what it runs bottles with, what it lacks.
    /// `agent_images` are the recipes of the images bottles would run (the
    /// bundled agents'), for a backend that can say which it has built.
    /// Never an error: what cannot be checked is a check that says so. None
    /// by default.
    fn diagnose(&self, agent_images: &[ImageRecipe]) -> impl Future<Output = Vec<Check>> + Send {
        let _ = agent_images;
        std::future::ready(Vec::new())
    }
}

/// The error of `attach` for a slug the backend runs no bottle of.
pub fn not_running(slug: &str, backend: &'static str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!(
            "no running bottle `{slug}` on {backend}; `bottle list active` shows the running ones, \
             `bottle list stopped` the stopped ones `bottle resume` starts again"
        ),
    )
    .with_backend(backend)
}

/// A backend plan with its type erased, carrying what the summary needs.
pub struct ErasedPlan {
    backend: &'static str,
    wired: WiredPlan,
    summary_lines: Vec<(String, String)>,
    inner: Box<dyn Any + Send>,
}

impl ErasedPlan {
    /// Which backend made it.
    pub fn backend(&self) -> &'static str {
        self.backend
    }
    /// The common plan.
    pub fn common(&self) -> &CommonPlan {
        &self.wired.common
    }
    /// How the backend wires the bottle to its sidecars.
    pub fn wiring(&self) -> &crate::wiring::Wiring {
        &self.wired.wiring
    }
    /// The backend's summary lines.
    pub fn summary_lines(&self) -> &[(String, String)] {
        &self.summary_lines
    }
}

impl BackendPlan for ErasedPlan {
    fn wired(&self) -> &WiredPlan {
        &self.wired
    }
    fn summary_lines(&self) -> Vec<(String, String)> {
        self.summary_lines.clone()
    }
}

impl CleanupPlan for ErasedCleanupPlan {
    fn describe(&self) -> Vec<String> {
        self.lines.clone()
    }
    fn slugs(&self) -> Vec<String> {
        self.slugs.clone()
    }
}

impl std::fmt::Debug for ErasedPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErasedPlan").field("backend", &self.backend).field("slug", &self.wired.common.slug).finish()
    }
}

/// A cleanup plan with its type erased.
pub struct ErasedCleanupPlan {
    backend: &'static str,
    lines: Vec<String>,
    slugs: Vec<String>,
    inner: Box<dyn Any + Send>,
}

impl ErasedCleanupPlan {
    /// Which backend made it.
    pub fn backend(&self) -> &'static str {
        self.backend
    }
    /// One line per resource to remove.
    pub fn describe(&self) -> &[String] {
        &self.lines
    }
    /// The slugs of the bottles whose resources it removes.
    pub fn slugs(&self) -> &[String] {
        &self.slugs
    }
}

/// The object-safe twin of [`Backend`]; every `Backend` implements it.
pub trait DynBackend: Send + Sync {
    /// See [`Backend::name`].
    fn name_dyn(&self) -> &'static str;
    /// See [`Backend::is_available`].
    fn is_available_dyn(&self) -> BoxFuture<'_, Result<()>>;
    /// See [`Backend::resolve_plan`].
    fn resolve_plan_dyn(&self, common: CommonPlan) -> BoxFuture<'_, Result<ErasedPlan>>;
    /// See [`Backend::launch`]; a plan from another backend is an [`ErrorKind::PlanMismatch`] error.
    fn launch_dyn(&self, plan: ErasedPlan) -> BoxFuture<'_, Result<Box<dyn Bottle>>>;
    /// See [`Backend::attach`].
    fn attach_dyn<'a>(&'a self, slug: &'a str) -> BoxFuture<'a, Result<Box<dyn Bottle>>>;
    /// See [`Backend::revive`].
    fn revive_dyn<'a>(&'a self, slug: &'a str) -> BoxFuture<'a, Result<Option<Box<dyn Bottle>>>>;
    /// See [`Backend::remove`].
    fn remove_dyn<'a>(&'a self, slug: &'a str) -> BoxFuture<'a, Result<()>>;
    /// See [`Backend::enumerate_active`].
    fn enumerate_active_dyn(&self) -> BoxFuture<'_, Result<Vec<ActiveAgent>>>;
    /// See [`Backend::prepare_cleanup`].
    fn prepare_cleanup_dyn(&self) -> BoxFuture<'_, Result<ErasedCleanupPlan>>;
    /// See [`Backend::cleanup`]; a plan from another backend is an [`ErrorKind::PlanMismatch`] error.
    fn cleanup_dyn(&self, plan: ErasedCleanupPlan) -> BoxFuture<'_, Result<Vec<String>>>;
    /// See [`Backend::diagnose`].
    fn diagnose_dyn<'a>(&'a self, agent_images: &'a [ImageRecipe]) -> BoxFuture<'a, Vec<Check>>;
}

/// A registry's backend is a `Backend` too: generic code takes either. (It
/// calls through to the erased backend: `(**self)`, not the blanket impl
/// that `Arc<dyn DynBackend>` also has, which would call back here.)
impl Backend for std::sync::Arc<dyn DynBackend> {
    type Plan = ErasedPlan;
    type Bottle = Box<dyn Bottle>;
    type CleanupPlan = ErasedCleanupPlan;

    fn name(&self) -> &'static str {
        (**self).name_dyn()
    }
    fn is_available(&self) -> impl Future<Output = Result<()>> + Send {
        (**self).is_available_dyn()
    }
    fn resolve_plan(&self, common: CommonPlan) -> impl Future<Output = Result<ErasedPlan>> + Send {
        (**self).resolve_plan_dyn(common)
    }
    fn launch(&self, plan: ErasedPlan) -> impl Future<Output = Result<Box<dyn Bottle>>> + Send {
        (**self).launch_dyn(plan)
    }
    fn attach(&self, slug: &str) -> impl Future<Output = Result<Box<dyn Bottle>>> + Send {
        let slug = slug.to_string();
        async move { (**self).attach_dyn(&slug).await }
    }
    fn revive(&self, slug: &str) -> impl Future<Output = Result<Option<Box<dyn Bottle>>>> + Send {
        let slug = slug.to_string();
        async move { (**self).revive_dyn(&slug).await }
    }
    fn remove(&self, slug: &str) -> impl Future<Output = Result<()>> + Send {
        let slug = slug.to_string();
        async move { (**self).remove_dyn(&slug).await }
    }
    fn enumerate_active(&self) -> impl Future<Output = Result<Vec<ActiveAgent>>> + Send {
        (**self).enumerate_active_dyn()
    }
    fn prepare_cleanup(&self) -> impl Future<Output = Result<ErasedCleanupPlan>> + Send {
        (**self).prepare_cleanup_dyn()
    }
    fn cleanup(&self, plan: ErasedCleanupPlan) -> impl Future<Output = Result<Vec<String>>> + Send {
        (**self).cleanup_dyn(plan)
    }
    fn diagnose(&self, agent_images: &[ImageRecipe]) -> impl Future<Output = Vec<Check>> + Send {
        let agent_images = agent_images.to_vec();
        async move { (**self).diagnose_dyn(&agent_images).await }
    }
}

fn mismatch(expected: &'static str, got: &'static str, what: &str) -> Error {
    Error::new(
        ErrorKind::PlanMismatch,
        format!("a {what} made by backend `{got}` was handed to backend `{expected}`; resolve it with the backend that launches it"),
    )
    .with_backend(expected)
}

impl<B: Backend> DynBackend for B {
    fn name_dyn(&self) -> &'static str {
        Backend::name(self)
    }

    fn is_available_dyn(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Backend::is_available(self))
    }

    fn resolve_plan_dyn(&self, common: CommonPlan) -> BoxFuture<'_, Result<ErasedPlan>> {
        Box::pin(async move {
            let plan = Backend::resolve_plan(self, common).await?;
            let (wired, summary_lines) = (plan.wired().clone(), plan.summary_lines());
            // Erased once only: `Arc<dyn DynBackend>` is a `Backend` whose plan is already erased.
            let plan: Box<dyn Any + Send> = Box::new(plan);
            match plan.downcast::<ErasedPlan>() {
                Ok(erased) => Ok(*erased),
                Err(inner) => Ok(ErasedPlan { backend: Backend::name(self), wired, summary_lines, inner }),
            }
        })
    }

    fn launch_dyn(&self, plan: ErasedPlan) -> BoxFuture<'_, Result<Box<dyn Bottle>>> {
        Box::pin(async move {
            let bottle = Backend::launch(self, unerase::<B::Plan>(plan, Backend::name(self), "plan")?).await?;
            Ok(Box::new(bottle) as Box<dyn Bottle>)
        })
    }

    fn attach_dyn<'a>(&'a self, slug: &'a str) -> BoxFuture<'a, Result<Box<dyn Bottle>>> {
        Box::pin(async move { Ok(Box::new(Backend::attach(self, slug).await?) as Box<dyn Bottle>) })
    }

    fn revive_dyn<'a>(&'a self, slug: &'a str) -> BoxFuture<'a, Result<Option<Box<dyn Bottle>>>> {
        Box::pin(
            async move { Ok(Backend::revive(self, slug).await?.map(|bottle| Box::new(bottle) as Box<dyn Bottle>)) },
        )
    }

    fn remove_dyn<'a>(&'a self, slug: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(Backend::remove(self, slug))
    }

    fn enumerate_active_dyn(&self) -> BoxFuture<'_, Result<Vec<ActiveAgent>>> {
        Box::pin(Backend::enumerate_active(self))
    }

    fn prepare_cleanup_dyn(&self) -> BoxFuture<'_, Result<ErasedCleanupPlan>> {
        Box::pin(async move {
            let plan = Backend::prepare_cleanup(self).await?;
            let (lines, slugs) = (plan.describe(), plan.slugs());
            let plan: Box<dyn Any + Send> = Box::new(plan);
            match plan.downcast::<ErasedCleanupPlan>() {
                Ok(erased) => Ok(*erased),
                Err(inner) => Ok(ErasedCleanupPlan { backend: Backend::name(self), lines, slugs, inner }),
            }
        })
    }

    fn cleanup_dyn(&self, plan: ErasedCleanupPlan) -> BoxFuture<'_, Result<Vec<String>>> {
        Box::pin(async move {
            let name = Backend::name(self);
            let plan: Box<dyn Any + Send> = Box::new(plan);
            let plan = match plan.downcast::<B::CleanupPlan>() {
                Ok(plan) => *plan,
                Err(plan) => {
                    let erased =
                        plan.downcast::<ErasedCleanupPlan>().map_err(|_| mismatch(name, "?", "cleanup plan"))?;
                    if erased.backend != name {
                        return Err(mismatch(name, erased.backend, "cleanup plan"));
                    }
                    let backend = erased.backend;
                    *erased.inner.downcast::<B::CleanupPlan>().map_err(|_| mismatch(name, backend, "cleanup plan"))?
                }
            };
            Backend::cleanup(self, plan).await
        })
    }

    fn diagnose_dyn<'a>(&'a self, agent_images: &'a [ImageRecipe]) -> BoxFuture<'a, Vec<Check>> {
        Box::pin(Backend::diagnose(self, agent_images))
    }
}

/// `plan` as backend `name`'s own plan type `P`: the erased plan itself when
/// `P` is [`ErasedPlan`] (the backend is an `Arc<dyn DynBackend>`), else what
/// it erased, which must be that backend's.
fn unerase<P: 'static>(plan: ErasedPlan, name: &'static str, what: &str) -> Result<P> {
    let plan: Box<dyn Any + Send> = Box::new(plan);
    match plan.downcast::<P>() {
        Ok(plan) => Ok(*plan),
        Err(plan) => {
            let erased = plan.downcast::<ErasedPlan>().map_err(|_| mismatch(name, "?", what))?;
            if erased.backend != name {
                return Err(mismatch(name, erased.backend, what));
            }
            let backend = erased.backend;
            erased.inner.downcast::<P>().map(|plan| *plan).map_err(|_| mismatch(name, backend, what))
        }
    }
}
