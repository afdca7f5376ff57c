//! The backend registry: name → `Arc<dyn DynBackend>`. Backend crates export a
//! `register` function and the binary calls each explicitly.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::backend::DynBackend;
use crate::{Error, ErrorKind, Result};

/// The environment variable that selects a backend when `--backend` is not given.
pub const BACKEND_ENV: &str = "BOT_BOTTLE_BACKEND";

/// Registered backends by name, other names for them, and the one used when
/// nothing selects another.
#[derive(Default, Clone)]
pub struct Registry {
    backends: BTreeMap<&'static str, Arc<dyn DynBackend>>,
    aliases: BTreeMap<&'static str, &'static str>,
    default: Option<&'static str>,
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

    /// Let `alias` select the backend called `name` too (`smolvm` for `smolmachines`).
    pub fn alias(&mut self, alias: &'static str, name: &'static str) {
        self.aliases.insert(alias, name);
    }

    /// The backend [`Registry::select`] picks when nothing names one.
    pub fn set_default(&mut self, name: &'static str) {
        self.default = Some(name);
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
        let name = self.aliases.get(name).copied().unwrap_or(name);
        self.backends.get(name).cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("unknown backend `{name}`; known backends: {}", self.names().join(", ")),
            )
        })
    }

    /// Select a backend: `explicit` (from `--backend`), then the value of
    /// [`BACKEND_ENV`] (`env`), then the default. Empty values count as absent.
    pub fn select(&self, explicit: Option<&str>, env: Option<&str>) -> Result<Arc<dyn DynBackend>> {
        let name = [explicit, env].into_iter().flatten().map(str::trim).find(|s| !s.is_empty()).or(self.default);
        match name {
            Some(name) => self.get(name),
            None => Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "no backend selected; pass --backend NAME or set {BACKEND_ENV}; known backends: {}",
                    self.names().join(", ")
                ),
            )),
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}
