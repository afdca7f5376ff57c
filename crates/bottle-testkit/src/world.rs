//! A case's world, in the case's own process: its private folders, host
//! and providers, the backend under test (from the target's registry), the
//! bottles it starts through the library, the helper processes it starts,
//! and what it keeps running until it ends.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};

use bottle_core::{BottleSpec, DynBackend, Host, Manifest, Providers, Running, Session, StateRoot};

use crate::Target;
use crate::case::{Helper, Role};

/// One case's world.
pub struct World {
    dir: PathBuf,
    target: &'static dyn Target,
    host: Host,
    providers: Providers,
    backend: Arc<dyn DynBackend>,
    kept: Mutex<Vec<Child>>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").field("dir", &self.dir).field("backend", &self.target.name()).finish()
    }
}

impl World {
    /// The world of the case folder `dir`, in the case's process (whose
    /// environment points `HOME` and `XDG_STATE_HOME` into it).
    pub(crate) fn open(target: &'static dyn Target, dir: &Path) -> World {
        let host = Host::from_process().expect("the case's host environment");
        assert!(host.state.dir().starts_with(dir), "the case's state lives in its folder: {:?}", host.state);
        let backend = target.registry(&host.state).get(target.name()).expect("the registry holds the backend");
        World {
            dir: dir.to_path_buf(),
            target,
            host,
            providers: agent_provider::builtin(),
            backend,
            kept: Mutex::new(Vec::new()),
        }
    }

    /// The backend's test target.
    pub fn target(&self) -> &'static dyn Target {
        self.target
    }

    /// Whether the backend has `capability` (a case checks a part of itself
    /// that needs it only where it does).
    pub fn can(&self, capability: crate::Capability) -> bool {
        self.target.lacks().iter().all(|(lacked, _)| *lacked != capability)
    }

    /// The backend under test.
    pub fn backend(&self) -> &Arc<dyn DynBackend> {
        &self.backend
    }

    /// The case's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `sub` in the case's folder (`state`, `home`, `work`, `config`, or the backend's own).
    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.join(sub)
    }

    /// Where the case's bottles keep their state.
    pub fn state(&self) -> &StateRoot {
        &self.host.state
    }

    /// The host as `prepare` sees it.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The built-in agent providers.
    pub fn providers(&self) -> &Providers {
        &self.providers
    }

    /// The manifest `yaml`, written to the work folder as `name` and loaded.
    pub fn manifest(&self, name: &str, yaml: &str) -> Arc<Manifest> {
        let path = crate::fixtures::write(&self.path("work"), name, yaml);
        match Manifest::load(&path, &self.providers.names()) {
            Ok(manifest) => Arc::new(manifest),
            Err(errors) => panic!("{name} is not a valid manifest: {errors}\n{yaml}"),
        }
    }

    /// A manifest with one agent, `shell`, of the `shell` template, whose
    /// bottle has `extra` (YAML lines indented under the bottle, if any).
    pub fn shell_manifest(&self, name: &str, extra: &str) -> Arc<Manifest> {
        let yaml = format!(
            "agents:\n  shell:\n    bottle: b\nbottles:\n  b:\n    agent_provider:\n      template: shell\n{extra}"
        );
        self.manifest(name, &yaml)
    }

    /// The embedded default manifest (what `bottle start shell` uses without one).
    pub fn default_manifest(&self) -> Arc<Manifest> {
        Arc::new(Manifest::embedded_default(&self.providers.names()))
    }

    /// A spec for the `shell` agent of `manifest`, in the work folder.
    pub fn spec(&self, manifest: Arc<Manifest>) -> BottleSpec {
        BottleSpec::new(manifest, "shell", self.path("work"))
    }

    /// The host with `env` set on top of the case's environment.
    pub fn host_with(&self, env: &[(&str, &str)]) -> Host {
        let mut host = self.host.clone();
        host.env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        host
    }

    /// `Session::prepare` of `spec` on the backend, with host variables `env`.
    pub async fn prepare(&self, spec: &BottleSpec, env: &[(&str, &str)]) -> Session {
        match Session::prepare(spec, &self.providers, &self.host_with(env), Arc::clone(&self.backend)).await {
            Ok(session) => session,
            Err(e) => panic!("prepare failed: {e}"),
        }
    }

    /// Prepares and launches `spec`.
    pub async fn start(&self, spec: &BottleSpec, env: &[(&str, &str)]) -> Running {
        let session = self.prepare(spec, env).await;
        let slug = session.slug().to_string();
        match session.launch(std::future::pending()).await {
            Ok(running) => running,
            Err(e) => panic!("launching {slug} failed: {e}"),
        }
    }

    /// Prepares and launches a detached bottle of the default manifest, in
    /// this process.
    pub async fn start_detached(&self) -> Running {
        let mut spec = self.spec(self.default_manifest());
        spec.detached = true;
        self.start(&spec, &[]).await
    }

    /// [`Target::resources`] of `slug`, sorted.
    pub fn resources(&self, slug: &str) -> Vec<String> {
        let mut found = self.target.resources(self, slug);
        found.sort();
        found
    }

    /// [`Target::running_resources`] of `slug`, sorted.
    pub fn running_resources(&self, slug: &str) -> Vec<String> {
        let mut expected = self.target.running_resources(self, slug);
        expected.sort();
        expected
    }

    /// Keeps `child` running until the case ends, then kills it.
    pub fn keep(&self, child: Child) {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).push(child);
    }

    /// Starts a detached bottle of the default manifest in a process of its
    /// own, which then exits: a live detached bottle whose launcher is gone.
    pub fn launch_detached(&self) -> String {
        let mut helper = Helper::start(Role::LaunchDetached, &[]);
        let slug = helper.slug();
        let status = helper.child.wait().expect("waiting for the launcher");
        assert!(status.success(), "the detached launcher failed: {status}");
        slug
    }

    /// Starts a bottle of the default manifest in a process of its own,
    /// attached and running `sleep 600`; returns the process (to kill) once
    /// the bottle is launched.
    pub fn launch_attached(&self) -> (Helper, String) {
        let mut helper = Helper::start(Role::LaunchAttached, &[]);
        let slug = helper.slug();
        (helper, slug)
    }

    /// Stops bottle `slug` (`session::stop`) in a process of its own.
    pub fn stop_elsewhere(&self, slug: &str) -> Helper {
        Helper::stop(slug)
    }

    /// Removes every bottle of the case (its state folder names them) and
    /// kills what it kept: what runs after every case, passed or failed.
    pub(crate) async fn sweep(&self) {
        for child in std::mem::take(&mut *self.kept.lock().unwrap_or_else(|e| e.into_inner())).iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let slugs = std::fs::read_dir(self.state().dir()).into_iter().flatten().flatten();
        for slug in slugs.map(|e| e.file_name().to_string_lossy().into_owned()) {
            if let Err(e) = self.backend.remove_dyn(&slug).await {
                eprintln!("removing what is left of {slug}: {e}");
            }
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for child in self.kept.get_mut().unwrap_or_else(|e| e.into_inner()).iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
