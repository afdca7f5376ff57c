//! The backend traits: [`Backend`] with associated plan, bottle and cleanup
//! types, and its object-safe twin [`DynBackend`], implemented once for every
//! `Backend` so the registry can hold them behind `Arc<dyn DynBackend>`.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;

use crate::bottle::{ActiveAgent, Bottle};
use crate::plan::{BackendPlan, CommonPlan};
use crate::{Error, ErrorKind, Result};

/// A boxed, `Send` future: what the dynamic twin's methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What `prepare_cleanup` found: resources a killed or crashed run left behind.
pub trait CleanupPlan: Send + 'static {
    /// One line per resource that `cleanup` would remove.
    fn describe(&self) -> Vec<String>;
    /// Whether there is nothing to remove.
    fn is_empty(&self) -> bool {
        self.describe().is_empty()
    }
}

/// A runtime that runs bottles (Docker, smolvm, …).
pub trait Backend: Send + Sync + 'static {
    /// The name users select it by (`--backend NAME`).
    const NAME: &'static str;
    /// This backend's resolved plan.
    type Plan: BackendPlan;
    /// Its running-bottle handle.
    type Bottle: Bottle + 'static;
    /// What `prepare_cleanup` finds.
    type CleanupPlan: CleanupPlan;

    /// `Ok` when the engine answers; otherwise an [`ErrorKind::Unavailable`]
    /// error saying exactly what to install or start.
    fn is_available(&self) -> impl Future<Output = Result<()>> + Send;

    /// Turn the common plan into this backend's plan (names, runtime, image tag). No side effects.
    fn resolve_plan(&self, common: CommonPlan) -> impl Future<Output = Result<Self::Plan>> + Send;

    /// Create everything the plan names and return the running bottle. On
    /// error, whatever was created is removed before returning.
    fn launch(&self, plan: Self::Plan) -> impl Future<Output = Result<Self::Bottle>> + Send;

    /// A handle on a running bottle by slug (for `exec` and `stop`).
    fn attach(&self, slug: &str) -> impl Future<Output = Result<Self::Bottle>> + Send;

    /// Remove every resource labelled with `slug`, whatever state it is in. Idempotent.
    fn remove(&self, slug: &str) -> impl Future<Output = Result<()>> + Send;

    /// The bottles this backend runs now.
    fn enumerate_active(&self) -> impl Future<Output = Result<Vec<ActiveAgent>>> + Send;

    /// Find what killed or crashed runs left behind.
    fn prepare_cleanup(&self) -> impl Future<Output = Result<Self::CleanupPlan>> + Send;

    /// Remove what `prepare_cleanup` found; returns one line per removed resource.
    fn cleanup(&self, plan: Self::CleanupPlan) -> impl Future<Output = Result<Vec<String>>> + Send;
}

/// A backend plan with its type erased, carrying what the summary needs.
pub struct ErasedPlan {
    backend: &'static str,
    common: CommonPlan,
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
        &self.common
    }
    /// The backend's summary lines.
    pub fn summary_lines(&self) -> &[(String, String)] {
        &self.summary_lines
    }
}

impl std::fmt::Debug for ErasedPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErasedPlan").field("backend", &self.backend).field("slug", &self.common.slug).finish()
    }
}

/// A cleanup plan with its type erased.
pub struct ErasedCleanupPlan {
    backend: &'static str,
    lines: Vec<String>,
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
}

/// The object-safe twin of [`Backend`]; every `Backend` implements it.
pub trait DynBackend: Send + Sync {
    /// The backend's name.
    fn name(&self) -> &'static str;
    /// See [`Backend::is_available`].
    fn is_available(&self) -> BoxFuture<'_, Result<()>>;
    /// See [`Backend::resolve_plan`].
    fn resolve_plan(&self, common: CommonPlan) -> BoxFuture<'_, Result<ErasedPlan>>;
    /// See [`Backend::launch`]; a plan from another backend is an [`ErrorKind::PlanMismatch`] error.
    fn launch(&self, plan: ErasedPlan) -> BoxFuture<'_, Result<Box<dyn Bottle>>>;
    /// See [`Backend::attach`].
    fn attach<'a>(&'a self, slug: &'a str) -> BoxFuture<'a, Result<Box<dyn Bottle>>>;
    /// See [`Backend::remove`].
    fn remove<'a>(&'a self, slug: &'a str) -> BoxFuture<'a, Result<()>>;
    /// See [`Backend::enumerate_active`].
    fn enumerate_active(&self) -> BoxFuture<'_, Result<Vec<ActiveAgent>>>;
    /// See [`Backend::prepare_cleanup`].
    fn prepare_cleanup(&self) -> BoxFuture<'_, Result<ErasedCleanupPlan>>;
    /// See [`Backend::cleanup`]; a plan from another backend is an [`ErrorKind::PlanMismatch`] error.
    fn cleanup(&self, plan: ErasedCleanupPlan) -> BoxFuture<'_, Result<Vec<String>>>;
}

fn mismatch(expected: &'static str, got: &'static str, what: &str) -> Error {
    Error::new(
        ErrorKind::PlanMismatch,
        format!("a {what} made by backend `{got}` was handed to backend `{expected}`; resolve it with the backend that launches it"),
    )
    .with_backend(expected)
}

impl<B: Backend> DynBackend for B {
    fn name(&self) -> &'static str {
        B::NAME
    }

    fn is_available(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Backend::is_available(self))
    }

    fn resolve_plan(&self, common: CommonPlan) -> BoxFuture<'_, Result<ErasedPlan>> {
        Box::pin(async move {
            let plan = Backend::resolve_plan(self, common).await?;
            Ok(ErasedPlan {
                backend: B::NAME,
                common: plan.common().clone(),
                summary_lines: plan.summary_lines(),
                inner: Box::new(plan),
            })
        })
    }

    fn launch(&self, plan: ErasedPlan) -> BoxFuture<'_, Result<Box<dyn Bottle>>> {
        Box::pin(async move {
            if plan.backend != B::NAME {
                return Err(mismatch(B::NAME, plan.backend, "plan"));
            }
            let inner = plan.inner.downcast::<B::Plan>().map_err(|_| mismatch(B::NAME, plan.backend, "plan"))?;
            let bottle = Backend::launch(self, *inner).await?;
            Ok(Box::new(bottle) as Box<dyn Bottle>)
        })
    }

    fn attach<'a>(&'a self, slug: &'a str) -> BoxFuture<'a, Result<Box<dyn Bottle>>> {
        Box::pin(async move { Ok(Box::new(Backend::attach(self, slug).await?) as Box<dyn Bottle>) })
    }

    fn remove<'a>(&'a self, slug: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(Backend::remove(self, slug))
    }

    fn enumerate_active(&self) -> BoxFuture<'_, Result<Vec<ActiveAgent>>> {
        Box::pin(Backend::enumerate_active(self))
    }

    fn prepare_cleanup(&self) -> BoxFuture<'_, Result<ErasedCleanupPlan>> {
        Box::pin(async move {
            let plan = Backend::prepare_cleanup(self).await?;
            Ok(ErasedCleanupPlan { backend: B::NAME, lines: plan.describe(), inner: Box::new(plan) })
        })
    }

    fn cleanup(&self, plan: ErasedCleanupPlan) -> BoxFuture<'_, Result<Vec<String>>> {
        Box::pin(async move {
            if plan.backend != B::NAME {
                return Err(mismatch(B::NAME, plan.backend, "cleanup plan"));
            }
            let inner =
                plan.inner.downcast::<B::CleanupPlan>().map_err(|_| mismatch(B::NAME, plan.backend, "cleanup plan"))?;
            Backend::cleanup(self, *inner).await
        })
    }
}
