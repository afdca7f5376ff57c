//! What `prepare` resolves a [`BottleSpec`](crate::BottleSpec) into: the
//! backend-neutral [`CommonPlan`] with the agent's provisioning plan and the
//! (data-only, for now) sidecar plans. Backends turn it into their own plan.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::manifest::{EgressRoute, GitIdentity, GitUpstream};
use crate::owner::Owner;
use crate::sidecar::{EgressPolicy, GatePolicy};

/// How to build the agent's image: a Dockerfile and what goes in its context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecipe {
    /// Repository part of the tag, e.g. `bot-bottle/shell`; the backend appends a content hash.
    pub repository: String,
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// Where the Dockerfile came from (the bundled one, or the manifest's override path).
    pub dockerfile_origin: String,
    /// The build context directory (the override Dockerfile's folder); `None` for a bundled Dockerfile.
    pub context_dir: Option<PathBuf>,
    /// The host CA bundle to trust during the build (TLS-inspecting proxies), when enabled.
    pub host_ca_bundle: Option<PathBuf>,
    /// More files to put in the context.
    pub extra_files: Vec<ContextFile>,
    /// A prebuilt image archive (`docker save` output) that backends booting
    /// archives use instead of building (the manifest's `image_archive`).
    pub prebuilt_archive: Option<PathBuf>,
}

/// One more file of a build context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextFile {
    /// Its path inside the context (`/`-separated, relative).
    pub name: String,
    /// Where its content comes from.
    pub source: ContextSource,
    /// Its permission bits.
    pub mode: u32,
}

/// The content of a [`ContextFile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextSource {
    /// A host file, read when the context is packed.
    File(PathBuf),
    /// Bytes made on the host (a generated script).
    Bytes(Vec<u8>),
}

/// File name, inside every build context, of the host CA bundle (empty when disabled).
pub const HOST_CA_CONTEXT_FILE: &str = "bot-bottle-host-ca.pem";

/// A host file or directory and where it goes inside the bottle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyIn {
    /// Absolute host path.
    pub host: PathBuf,
    /// Absolute guest path.
    pub guest: String,
}

/// How the agent is provisioned inside its bottle; built by the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentProvisionPlan {
    /// Provider (template) name.
    pub provider: String,
    /// The image to build and run.
    pub image: ImageRecipe,
    /// The non-root user the agent runs as.
    pub guest_user: String,
    /// That user's home directory.
    pub guest_home: String,
    /// Working directory of the agent session (the workspace copy).
    pub workdir: String,
    /// Environment of the bottle: literal and copied values, placeholders for hidden ones.
    pub guest_env: BTreeMap<String, String>,
    /// Names whose values never enter the bottle (secrets and the provider's own).
    pub hidden_env: Vec<String>,
    /// The prompt file to copy in, when the agent has one.
    pub prompt: Option<CopyIn>,
    /// Skill directories to copy in.
    pub skills: Vec<CopyIn>,
    /// The agent's git identity.
    pub git_identity: Option<GitIdentity>,
    /// Guest paths (absolute) holding the agent's own state, saved at teardown for resume.
    pub resume_paths: Vec<String>,
    /// Arguments the provider adds to continue a conversation on resume (empty otherwise).
    pub continue_args: Vec<String>,
}

/// The egress proxy: the manifest's routes and the sidecar's resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPlan {
    /// Allowed routes, as the manifest lists them.
    pub routes: Vec<EgressRoute>,
    /// What the proxy enforces (credentials and the CA key inside: it goes
    /// only to the sidecar, placed by the backend's [`Wiring`](crate::wiring::Wiring)).
    pub policy: EgressPolicy,
    /// What the summary warns about the routes' credentials, one line each.
    pub warnings: Vec<String>,
}

impl EgressPlan {
    /// One line per route the proxy allows (the agent's own first):
    /// `host [methods] [paths] [ports P,…] [auth:scheme from SOURCE[, also over plain http]]`.
    /// Never a credential.
    pub fn route_lines(&self) -> Vec<String> {
        self.policy.rules.iter().map(crate::sidecar::EgressRule::line).collect()
    }
}

/// The git gate: the manifest's upstreams and the sidecar's resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitGatePlan {
    /// Upstreams, as the manifest lists them.
    pub upstreams: Vec<GitUpstream>,
    /// What the gate enforces (the push keys inside: it goes only to the
    /// sidecar, placed by the backend's [`Wiring`](crate::wiring::Wiring)).
    pub policy: GatePolicy,
}

impl GitGatePlan {
    /// Whether the bottle has any upstream (and so needs a gate).
    pub fn is_needed(&self) -> bool {
        !self.upstreams.is_empty()
    }
}

/// Whether the supervise MCP server runs for this bottle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SupervisePlan {
    /// The manifest's `supervise` flag.
    pub enabled: bool,
    /// How long a request waits for the operator before it is denied.
    pub timeout: std::time::Duration,
}

/// Everything a backend needs to launch one bottle, resolved and validated.
#[derive(Debug, Clone)]
pub struct CommonPlan {
    /// The bottle's slug (also its identity for `resume`).
    pub slug: String,
    /// Agent name from the manifest.
    pub agent: String,
    /// Bottle name from the manifest.
    pub bottle: String,
    /// Whether this run resumes a previous one (state copied back in).
    pub resumed: bool,
    /// `$XDG_STATE_HOME/bot-bottle/<slug>`.
    pub state_dir: PathBuf,
    /// Scratch files for this run (inside the state dir).
    pub stage_dir: PathBuf,
    /// Where the manifest came from, for the summary.
    pub manifest_source: String,
    /// The agent's provisioning plan.
    pub provision: AgentProvisionPlan,
    /// Egress routes.
    pub egress: EgressPlan,
    /// Git gate upstreams.
    pub git_gate: GitGatePlan,
    /// Supervise sidecar.
    pub supervise: SupervisePlan,
    /// The user's working directory, copied into the workdir when asked.
    pub copy_cwd: Option<PathBuf>,
    /// Free-form label shown by `list active`.
    pub label: Option<String>,
    /// Colour shown by `list active` and the dashboard.
    pub color: Option<String>,
    /// Whether the bottle outlives the `bottle start` process.
    pub detached: bool,
    /// The process that owns the bottle's resources.
    pub owner: Owner,
    /// Extra arguments for the agent (after `--`).
    pub agent_args: Vec<String>,
    /// The token by which the bottle's sidecars know its clients (the
    /// sidecars' configurations hold only its digest).
    pub client_token: crate::sidecar::ClientToken,
    /// What the bottle may use of the host.
    pub limits: crate::resources::Limits,
    /// The manifest's `kubernetes` section (its defaults when it has none),
    /// for the backend that runs bottles on a cluster.
    pub kubernetes: crate::manifest::KubernetesDef,
    /// The warm pool's key when the bottle is made for a pool
    /// ([`crate::pool`]): it waits, provisioned, to be claimed.
    pub pool: Option<String>,
}

/// The part of every backend's plan that core reads: the common plan it
/// was resolved from and how the backend wires the bottle to its sidecars.
#[derive(Debug, Clone)]
pub struct WiredPlan {
    /// The backend-neutral plan.
    pub common: CommonPlan,
    /// How the bottle reaches its sidecars, and where they listen.
    pub wiring: crate::wiring::Wiring,
}

/// A backend's plan: the common part, how the backend wires the bottle to
/// its sidecars ([`WiredPlan`]), and the lines it adds to the summary.
pub trait BackendPlan: Send + 'static {
    /// The common plan and the wiring.
    fn wired(&self) -> &WiredPlan;
    /// The backend-neutral plan it was resolved from.
    fn common(&self) -> &CommonPlan {
        &self.wired().common
    }
    /// How the bottle reaches its sidecars, and where they listen.
    fn wiring(&self) -> &crate::wiring::Wiring {
        &self.wired().wiring
    }
    /// Backend-specific lines for the preflight summary, as (label, value).
    fn summary_lines(&self) -> Vec<(String, String)>;
}
