#![doc = include_str!("../README.md")]

mod backend;
mod bottle;
mod cleanup;
pub mod cluster;
mod image;
mod launch;
pub mod plan;
mod probe;
pub mod render;
pub mod wait;

use std::sync::Arc;

use bottle_core::Registry;

pub use backend::{K8sBackend, K8sCleanupPlan};
pub use bottle::{K8sBottle, exit_code};
pub use cluster::Cluster;
pub use launch::Timeouts;
pub use plan::{ImageTags, K8sPlan, build_images, push_agent, render_agent, render_yaml};
pub use probe::script as probe_script;
pub use render::{Mode, Objects, Spec, rbac_yaml};

/// The name this backend registers under (`--backend kubernetes`).
pub const NAME: &str = "kubernetes";

/// Another name it answers to (`--backend k8s`).
pub const ALIAS: &str = "k8s";

/// Register the Kubernetes backend in `registry`, as [`NAME`] and [`ALIAS`].
pub fn register(registry: &mut Registry) {
    registry.register(Arc::new(K8sBackend::new()));
    registry.alias(ALIAS, NAME);
}
