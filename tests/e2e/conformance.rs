//! The backend under test: the same behaviour tests (egress, git gate) run
//! against every backend through this one seam — start a bottle, kill its
//! egress proxy, and check nothing of it is left.

use std::path::Path;

use crate::harness::{World, containers_of, networks_of, require_docker};
use crate::smolvm::Smol;

/// What the behaviour tests need from a backend.
pub(crate) trait Under {
    /// The test's world (its `bottle` commands reach this backend's bottles).
    fn world(&self) -> &World;
    /// `bottle --manifest M start shell --yes --detach` on this backend; (slug, summary).
    fn start(&self, manifest: &Path, env: &[(&str, &str)]) -> (String, String);
    /// Kill the bottle's egress proxy (not through `bottle`).
    fn kill_proxy(&self, slug: &str);
    /// Assert that nothing of the bottle is left.
    fn assert_gone(&self, slug: &str);
}

/// The Docker backend.
pub(crate) struct Docker(World);

impl Docker {
    pub(crate) fn new() -> Self {
        require_docker();
        Docker(World::new())
    }
}

impl Under for Docker {
    fn world(&self) -> &World {
        &self.0
    }
    fn start(&self, manifest: &Path, env: &[(&str, &str)]) -> (String, String) {
        self.0.start_manifest(manifest, env)
    }
    fn kill_proxy(&self, slug: &str) {
        let out = std::process::Command::new("docker").args(["kill", &format!("bb-{slug}-egress")]).output();
        assert!(out.expect("docker kill").status.success(), "killing the proxy container");
    }
    fn assert_gone(&self, slug: &str) {
        assert!(containers_of(slug).is_empty(), "no container left (sidecars included)");
        assert!(networks_of(slug).is_empty(), "no network left");
        assert!(crate::harness::volumes_of(slug).is_empty(), "no volume left");
    }
}

impl Under for Smol {
    fn world(&self) -> &World {
        &self.world
    }
    fn start(&self, manifest: &Path, env: &[(&str, &str)]) -> (String, String) {
        Smol::start(self, Some(manifest), &[], env)
    }
    fn kill_proxy(&self, slug: &str) {
        let egress: Vec<String> = self.sidecars_of(slug).into_iter().filter(|l| l.contains("egress")).collect();
        assert!(!egress.is_empty(), "no egress process of {slug} found");
        for line in egress {
            let pid = line.split_whitespace().next().expect("pid");
            assert!(std::process::Command::new("kill").args(["-KILL", pid]).status().expect("kill").success());
        }
    }
    fn assert_gone(&self, slug: &str) {
        Smol::assert_gone(self, slug)
    }
}

/// One `#[test]` per backend for a behaviour `body`.
macro_rules! for_each_backend {
    ($body:ident: $docker:ident, $smolvm:ident) => {
        #[test]
        fn $docker() {
            $body(&crate::conformance::Docker::new());
        }
        #[test]
        fn $smolvm() {
            $body(&crate::smolvm::Smol::new());
        }
    };
}
pub(crate) use for_each_backend;
