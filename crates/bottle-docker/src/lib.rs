#![doc = include_str!("../README.md")]

mod backend;
mod bottle;
mod cleanup;
mod diagnose;
mod engine;
mod image;
mod launch;
mod plan;
mod sidecar;

use std::sync::Arc;

use bottle_core::Registry;

pub use backend::{DockerBackend, DockerCleanupPlan};
pub use bottle::DockerBottle;
pub use plan::{DockerPlan, RUNTIME_ENV};

/// The name this backend registers under.
pub const NAME: &str = "docker";

/// Register the Docker backend in `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(Arc::new(DockerBackend::new()));
}
