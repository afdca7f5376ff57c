//! The backend registry: name → `Arc<dyn DynBackend>`. Backend crates export a
//! `register` function and the binary calls each explicitly.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::backend::DynBackend;
use crate::{Error, ErrorKind, Result};

/// The environment variable that selects a backend when `--backend` is not given.
pub const BACKEND_ENV: &str = "BOT_BOTTLE_BACKEND";

/// The backend used when neither `--backend` nor [`BACKEND_ENV`] names one.
pub const DEFAULT_BACKEND: &str = "docker";

/// Registered backends by name.
#[derive(Default, Clone)]
pub struct Registry {
    backends: BTreeMap<&'static str, Arc<dyn DynBackend>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a backend under its own name (replacing one of the same name).
    pub fn register(&mut self, backend: Arc<dyn DynBackend>) {
        self.backends.insert(backend.name_dyn(), backend);
    }

    /// Names of the registered backends, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.backends.keys().copied().collect()
    }

    /// Every registered backend, by name.
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn DynBackend>> {
        self.backends.values()
    }

    /// The backend called `name`; an unknown name's error lists the known ones.
    pub fn get(&self, name: &str) -> Result<Arc<dyn DynBackend>> {
        self.backends.get(name).cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("unknown backend `{name}`; known backends: {}", self.names().join(", ")),
            )
        })
    }

    /// Select a backend: `explicit` (from `--backend`), then the value of
    /// [`BACKEND_ENV`] (`env`), then [`DEFAULT_BACKEND`]. Empty values count as absent.
    pub fn select(&self, explicit: Option<&str>, env: Option<&str>) -> Result<Arc<dyn DynBackend>> {
        let name = [explicit, env].into_iter().flatten().find(|s| !s.trim().is_empty()).unwrap_or(DEFAULT_BACKEND);
        self.get(name.trim())
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}
