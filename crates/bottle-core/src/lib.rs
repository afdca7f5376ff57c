#![doc = include_str!("../README.md")]

pub mod agent_session;
mod audit;
pub mod backend;
mod blocking;
mod bottle;
mod build_progress;
mod bundle;
mod ca;
mod copy;
mod copy_path;
mod doctor;
mod error;
mod handle;
mod image;
pub mod labels;
mod manifest;
mod owner;
mod plan;
mod policy;
pub mod pool;
mod preflight;
mod prepare;
mod protocol;
pub mod provider;
mod registry;
mod resources;
pub mod session;
pub mod sidecar;
mod sidecar_config;
mod state;
pub mod supervise;
mod terminal;
mod timings;
mod wiring;

// Embedding: what a tool that runs bottles needs. Backend authors find the
// rest in `backend`, provider authors in `provider`, the sidecars' wire
// types in `sidecar`.
pub use audit::{EgressRecord, LogFormat, LogLines, LogSource, PushRecord, PushedRef, copy_log, human_line};
pub use backend::DynBackend;
pub use bottle::{ActiveAgent, Bottle, ExecResult, GuestUser, OwnerState, PoolState, Sidecar, sort_active};
pub use copy_path::{CopyEnd, CopySpec, resolve_guest_path};
pub use doctor::{Check, CheckStatus, Version, diagnose, host_checks};
pub use error::{Error, ErrorKind, Result};
pub use manifest::{
    AgentDef, AgentProviderDef, AuthScheme, BottleDef, DEFAULT_MANIFEST, DEFAULT_MAX_PUSH_MB, DEFAULT_NAMESPACE,
    EgressRoute, EnvValue, GitIdentity, GitUpstream, HostVarRef, HostVarUse, KubernetesDef, MAX_ENV_ENTRIES,
    MAX_ENV_ENTRY_BYTES, MAX_ENV_TOTAL_BYTES, MAX_MANIFEST_BYTES, MAX_POOL_SIZE, Manifest, ManifestError,
    ManifestErrors, ManifestSource, PoolDef, PushPolicy, RouteAuth, Supervise, discover_manifest,
};
pub use plan::{CommonPlan, EgressPlan, GitGatePlan, SupervisePlan};
pub use policy::PolicyRecord;
pub use preflight::{render as render_summary, summary};
pub use prepare::{BottleSpec, HOST_CA_ENV, Host, placeholder, prepare};
pub use provider::Providers;
pub use registry::{BACKEND_ENV, Registry};
pub use resources::{ByteSize, Cpus, Limits, Resources};
pub use session::{Ended, Running, Session};
pub use state::{
    BottleMetadata, METADATA_FILE, RESUME_DIR, SavedPath, StateRoot, StoppedBottle, parse_duration, prunable,
    validate_slug,
};
pub use timings::{Phase, Timings};
