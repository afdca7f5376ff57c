#![doc = include_str!("../README.md")]

mod backend;
mod bottle;
mod bundle;
mod ca;
mod copy;
mod error;
mod image;
pub mod labels;
mod manifest;
mod owner;
mod plan;
mod preflight;
mod prepare;
mod provider;
mod registry;
mod resources;
pub mod session;
pub use session::{Ended, Running, Session};
mod sidecar;
mod sidecar_config;
mod state;
mod wiring;

pub use backend::{Backend, BoxFuture, CleanupPlan, DynBackend, ErasedCleanupPlan, ErasedPlan};
pub use bottle::{ActiveAgent, Bottle, ExecResult, GuestUser, Sidecar, agent_ids, sort_active};
pub use bundle::{BUNDLE_DIR, LAUNCHER, SELF_ENV, SIDECAR_ENV, SidecarProgram};
pub use ca::mint_ca;
pub use copy::{CopyOut, guest_size, pack_tree, split_guest_path, tar_allowance, unpack_bounded};
pub use error::{Error, ErrorKind, Result};
pub use image::{BuildContext, DOCKERFILE_IN_CONTEXT, build_context};
pub use manifest::*;
pub use owner::{Liveness, Owner, host_name, now_ms};
pub use plan::{
    AgentProvisionPlan, BackendPlan, CommonPlan, ContextFile, ContextSource, CopyIn, EgressPlan, GitGatePlan,
    HOST_CA_CONTEXT_FILE, ImageRecipe, SupervisePlan,
};
pub use preflight::{render as render_summary, summary};
pub use prepare::{BottleSpec, HOST_CA_ENV, Host, placeholder, prepare};
pub use provider::{
    AgentProvider, AgentRoutes, GATE_GITCONFIG, Providers, ProvisionInput, run_checked, shell_quote, write_guest_file,
};
pub use registry::{BACKEND_ENV, DEFAULT_BACKEND, Registry};
pub use resources::{ByteSize, Cpus, Limits, Resources};
pub use sidecar::{
    ClientToken, EgressConfig, EgressPolicy, EgressRule, GatePolicy, GateUpstream, GitGateConfig, InjectedHeader,
    Listen, Placement, Secret, TOKEN_USER, TokenDigest,
};
pub use sidecar_config::{
    EGRESS_PORT, GATE_PORT, GUEST_CA_BUNDLE, GUEST_CA_FILE, HostKeyCheck, SOCKET_DIR, UPSTREAM_CA_ENV, proxy_env,
    upstream_url_forms,
};
pub use state::{BottleMetadata, METADATA_FILE, RESUME_DIR, StateRoot, validate_slug};
pub use wiring::Wiring;
