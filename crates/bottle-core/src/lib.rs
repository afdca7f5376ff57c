#![doc = include_str!("../README.md")]

mod backend;
mod bottle;
mod error;
mod manifest;
mod owner;
mod plan;
mod preflight;
mod prepare;
mod provider;
mod registry;
mod sidecar;
pub mod session;
mod state;

pub use backend::{Backend, BoxFuture, CleanupPlan, DynBackend, ErasedCleanupPlan, ErasedPlan};
pub use bottle::{ActiveAgent, Bottle, ExecResult, GuestUser, sort_active};
pub use error::{Error, ErrorKind, Result};
pub use manifest::*;
pub use owner::{Liveness, Owner, host_name, now_ms};
pub use plan::{
    AgentProvisionPlan, BackendPlan, CommonPlan, CopyIn, EgressPlan, GitGatePlan, HOST_CA_CONTEXT_FILE, ImageRecipe,
    SupervisePlan,
};
pub use preflight::{render as render_summary, summary};
pub use prepare::{BottleSpec, HOST_CA_ENV, Host, placeholder, prepare};
pub use provider::{AgentProvider, Providers, ProvisionInput, run_checked, shell_quote};
pub use registry::{BACKEND_ENV, DEFAULT_BACKEND, Registry};
pub use sidecar::{EgressConfig, EgressRule, GateUpstream, GitGateConfig, InjectedHeader, Secret};
pub use state::{BottleMetadata, METADATA_FILE, RESUME_DIR, StateRoot, validate_slug};
