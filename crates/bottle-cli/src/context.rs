//! What every command needs: the host, the manifest (discovered or named),
//! the providers and the backend registry.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use bot_bottle::{BottleMetadata, DynBackend, Host, Manifest, Providers, Registry, discover_manifest};

/// The loaded world of one `bottle` invocation.
pub(crate) struct Context {
    pub(crate) host: Host,
    pub(crate) providers: Providers,
    pub(crate) registry: Registry,
    manifest_path: Option<std::path::PathBuf>,
    /// Whether the operator named the manifest (`--manifest`, `$BOT_BOTTLE_MANIFEST`).
    manifest_named: bool,
    explicit_backend: Option<String>,
}

impl Context {
    pub(crate) fn new(manifest: Option<&Path>, backend: Option<String>) -> Result<Self> {
        let host = Host::from_process().context("while reading the host environment")?;
        let cwd = std::env::current_dir().context("while reading the current directory")?;
        let lookup = |k: &str| host.var(k).map(str::to_string);
        let manifest_path = discover_manifest(manifest, &lookup, &cwd);
        let manifest_named = manifest.is_some() || lookup("BOT_BOTTLE_MANIFEST").is_some_and(|m| !m.is_empty());
        let registry = bot_bottle::default_registry();
        // Every command refuses a backend it does not know, not only `start`.
        let named = backend.as_deref().or(host.var(bot_bottle::BACKEND_ENV)).map(str::trim).filter(|n| !n.is_empty());
        if let Some(name) = named {
            registry.get(name)?;
        }
        Ok(Context {
            providers: bot_bottle::builtin_providers(),
            registry,
            host,
            manifest_path,
            manifest_named,
            explicit_backend: backend,
        })
    }

    /// The global options a `bottle` run from this one needs to see the
    /// same manifest and backend (the dashboard's starts): the manifest
    /// when the operator named it, the backend when `--backend` did.
    pub(crate) fn global_args(&self) -> Vec<std::ffi::OsString> {
        let mut args = Vec::new();
        if let Some(path) = self.manifest_path.as_ref().filter(|_| self.manifest_named) {
            args.extend(["--manifest".into(), path.clone().into_os_string()]);
        }
        if let Some(backend) = &self.explicit_backend {
            args.extend(["--backend".into(), backend.into()]);
        }
        args
    }

    /// Parse and validate the manifest (the embedded default when none was found).
    pub(crate) fn manifest(&self) -> Result<Arc<Manifest>> {
        let templates = self.providers.names();
        let manifest = match &self.manifest_path {
            Some(path) => Manifest::load(path, &templates)?,
            None => Manifest::embedded_default(&templates),
        };
        Ok(Arc::new(manifest))
    }

    /// The manifest to resume bottle `meta` with: the one the operator names
    /// now, else the one it was started with (recorded in its metadata);
    /// with a line saying which, when that is not the discovered one.
    pub(crate) fn manifest_for_resume(&self, meta: &BottleMetadata) -> Result<(Arc<Manifest>, Option<String>)> {
        let recorded = Path::new(&meta.manifest);
        if self.manifest_named {
            let note = self.manifest_path.as_deref().filter(|now| *now != recorded).map(|now| {
                format!(
                    "resuming with {} (named now; bottle {} was started with {})",
                    now.display(),
                    meta.slug,
                    meta.manifest
                )
            });
            return Ok((self.manifest()?, note));
        }
        let templates = self.providers.names();
        if !recorded.is_absolute() {
            // The embedded default, recorded by its description.
            return Ok((Arc::new(Manifest::embedded_default(&templates)), None));
        }
        if !recorded.is_file() {
            anyhow::bail!(
                "bottle {} was started with the manifest {}, which is gone; pass --manifest PATH to resume it with another",
                meta.slug,
                meta.manifest
            );
        }
        let note = (self.manifest_path.as_deref() != Some(recorded))
            .then(|| format!("resuming with {}, the manifest bottle {} was started with", meta.manifest, meta.slug));
        Ok((Arc::new(Manifest::load(recorded, &templates)?), note))
    }

    /// The selected backend: `--backend`, then `$BOT_BOTTLE_BACKEND`, then docker.
    pub(crate) fn backend(&self) -> Result<Arc<dyn DynBackend>> {
        Ok(self.registry.select(self.explicit_backend.as_deref(), self.host.var(bot_bottle::BACKEND_ENV))?)
    }

    /// The backend the operator named (`--backend`, `$BOT_BOTTLE_BACKEND`), if any.
    pub(crate) fn named_backend(&self) -> Option<Arc<dyn DynBackend>> {
        let named = self.explicit_backend.as_deref().or(self.host.var(bot_bottle::BACKEND_ENV));
        self.registry.get(named.map(str::trim).filter(|n| !n.is_empty())?).ok()
    }

    /// The backend that runs bottle `slug` (from its metadata), else the selected one.
    pub(crate) fn backend_of(&self, slug: &str) -> Result<Arc<dyn DynBackend>> {
        match self.host.state.read(slug) {
            Ok(meta) => Ok(self.registry.get(&meta.backend)?),
            Err(_) => self.backend(),
        }
    }
}
