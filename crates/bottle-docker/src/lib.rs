#![doc = include_str!("../README.md")]

mod backend;
mod bottle;
mod engine;
mod image;
mod labels;
mod sidecar;

use std::sync::Arc;

use bottle_core::Registry;

pub use backend::{DockerBackend, DockerCleanupPlan, DockerPlan, RUNTIME_ENV};
pub use bottle::DockerBottle;

/// The name this backend registers under.
pub const NAME: &str = "docker";

/// Register the Docker backend in `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(Arc::new(DockerBackend::new()));
}
