#![doc = include_str!("../README.md")]

pub mod plan;
pub mod render;

pub use plan::{K8sPlan, render_agent, render_yaml};
pub use render::{Mode, Objects, Spec};

/// The name this backend registers under (`--backend kubernetes`).
pub const NAME: &str = "kubernetes";

/// Another name it answers to (`--backend k8s`).
pub const ALIAS: &str = "k8s";
