#![doc = include_str!("../README.md")]

mod backend;
mod bottle;
mod cleanup;
mod cli;
mod diagnose;
mod image;
mod launch;
mod network;
mod plan;
mod sidecar;

use std::sync::Arc;

use bottle_core::Registry;

pub use backend::{SmolvmBackend, SmolvmCleanupPlan};
pub use bottle::SmolvmBottle;
pub use plan::{IMAGE_LABEL, SmolvmPlan};

/// The name this backend registers under (`--backend smolmachines`, `BOT_BOTTLE_BACKEND=smolmachines`).
pub const NAME: &str = "smolmachines";

/// Another name it answers to (`--backend smolvm`).
pub const ALIAS: &str = "smolvm";

/// Register the smolvm backend in `registry`, as [`NAME`] and [`ALIAS`].
pub fn register(registry: &mut Registry) {
    registry.register(Arc::new(SmolvmBackend::new()));
    registry.alias(ALIAS, NAME);
}
