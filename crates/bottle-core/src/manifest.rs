//! The manifest: which agents exist, which bottle each one runs in, and what
//! each bottle may reach (env, egress routes, git upstreams, supervision).
//!
//! Parsing is two passes over the same text. `serde_yaml` turns it into a
//! [`serde_yaml::Value`] (and reports YAML syntax errors with their position);
//! yaml-rust2's marked event stream builds a position index from node paths
//! to the line and column of each key and value ([`spans`]). One validating
//! walker ([`validate`]) then visits the value, builds the typed structs below
//! and collects *every* problem as a [`ManifestError`] pointing at the
//! offending key or value, with a hint on how to fix it.
//!
//! The typed structs also derive `Serialize`, `Deserialize` and `JsonSchema`
//! in the same YAML shape, so [`Manifest::to_yaml`] re-parses to an equal
//! manifest and [`Manifest::json_schema`] describes what users write.
//!
//! Parsing also enforces the [`limits`]: the file's size, and what a bottle's
//! `env` may hold so that its environment fits what Linux lets a process exec
//! with. And it keeps where each host variable is read ([`HostVarRef`]), so
//! that an unset one can be pointed at before and when a bottle starts.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod limits;
mod spans;
#[cfg(test)]
mod tests;
mod validate;

pub(crate) use limits::{EXEC_REASON, EnvSize, Excess};
pub use limits::{MAX_ENV_ENTRIES, MAX_ENV_ENTRY_BYTES, MAX_ENV_TOTAL_BYTES, MAX_MANIFEST_BYTES};

/// The built-in manifest used when no manifest file is found: one `shell`
/// agent in a `shell` bottle with no env, egress or git access.
pub const DEFAULT_MANIFEST: &str = include_str!("default_manifest.yaml");

/// The pattern agent, bottle and git upstream names must match.
const NAME_PATTERN: &str = "^[a-z0-9][a-z0-9-]{0,62}$";
/// The pattern environment variable names must match.
const ENV_NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]*$";
/// The file name reported for errors in [`DEFAULT_MANIFEST`].
const EMBEDDED_FILE: &str = "<embedded default manifest>";

/// A parsed and validated manifest.
///
/// Two manifests are equal when they say the same thing: where they say it
/// (the positions in [`Manifest::host_vars`]) is not compared, so a manifest
/// re-parsed from [`Manifest::to_yaml`] equals the original.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The agents that can be started, by name. At least one is required.
    #[schemars(extend("propertyNames" = { "pattern": NAME_PATTERN }, "minProperties" = 1))]
    pub agents: BTreeMap<String, AgentDef>,
    /// The bottles agents run in, by name. Unused bottles are allowed.
    #[schemars(extend("propertyNames" = { "pattern": NAME_PATTERN }))]
    pub bottles: BTreeMap<String, BottleDef>,
    /// Where and how bottles run on a Kubernetes cluster (the `kubernetes`
    /// backend); other backends ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesDef>,
    /// Where this manifest came from (not part of the file).
    #[serde(skip)]
    pub source: ManifestSource,
    /// Where the file reads host variables, in file order (found by parsing;
    /// not part of the file's format).
    #[serde(skip)]
    #[schemars(skip)]
    host_vars: Vec<HostVarRef>,
}

impl PartialEq for Manifest {
    fn eq(&self, other: &Self) -> bool {
        // Destructured so that a new field has to be decided on here.
        let Manifest { agents, bottles, kubernetes, source, host_vars: _ } = self;
        (agents, bottles, kubernetes, source) == (&other.agents, &other.bottles, &other.kubernetes, &other.source)
    }
}

impl Eq for Manifest {}

/// Where a manifest reads a host environment variable: an `env` entry's
/// `from_host` (secret or not) or an egress route's `auth.from_host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVarRef {
    /// The host variable's name.
    pub name: String,
    /// The manifest file.
    pub file: PathBuf,
    /// The 1-based line of the `from_host` value.
    pub line: usize,
    /// The 1-based column (in characters).
    pub column: usize,
    /// What reads the variable.
    pub used_by: HostVarUse,
}

impl HostVarRef {
    /// `FILE:LINE:COL: host variable `NAME` is not set (used by …)`: what to
    /// say when the variable is missing on the host.
    pub fn not_set_message(&self) -> String {
        format!(
            "{}:{}:{}: host variable `{}` is not set (used by {})",
            self.file.display(),
            self.line,
            self.column,
            self.name,
            self.used_by
        )
    }
}

/// What reads a host variable. Displays as `bottle dev, env API_KEY` or
/// `bottle dev, egress route api.example.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostVarUse {
    /// An `env` entry's `from_host`.
    Env {
        /// The bottle.
        bottle: String,
        /// The entry's name (the variable the bottle sees).
        name: String,
    },
    /// An egress route's `auth.from_host`.
    Route {
        /// The bottle.
        bottle: String,
        /// The route's place in the bottle's `egress` list.
        index: usize,
        /// The route's host.
        host: String,
    },
}

impl HostVarUse {
    /// The bottle whose entry or route reads the variable.
    pub fn bottle(&self) -> &str {
        match self {
            HostVarUse::Env { bottle, .. } | HostVarUse::Route { bottle, .. } => bottle,
        }
    }
}

impl fmt::Display for HostVarUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostVarUse::Env { bottle, name } => write!(f, "bottle {bottle}, env {name}"),
            HostVarUse::Route { bottle, host, .. } => write!(f, "bottle {bottle}, egress route {host}"),
        }
    }
}

/// Where a [`Manifest`] was read from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ManifestSource {
    /// A manifest file on the host.
    File(PathBuf),
    /// The built-in [`DEFAULT_MANIFEST`].
    #[default]
    Embedded,
}

impl fmt::Display for ManifestSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestSource::File(path) => write!(f, "{}", path.display()),
            ManifestSource::Embedded => f.write_str("the embedded default manifest"),
        }
    }
}

/// An agent: what to run, in which bottle, with which skills and prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentDef {
    /// The name of the bottle (under `bottles`) this agent runs in.
    #[schemars(pattern(NAME_PATTERN))]
    pub bottle: String,
    /// Skills to copy in: names of directories under `~/.claude/skills/` on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<String>,
    /// A system prompt file; relative paths are relative to the manifest's folder.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "lossy_path::opt")]
    pub prompt: Option<PathBuf>,
    /// The git author and committer identity inside the bottle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_identity: Option<GitIdentity>,
    /// A warm pool of ready bottles for this agent (`bottle pool fill`),
    /// one of which `bottle start` hands out at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolDef>,
}

/// The `kubernetes` section: where the `kubernetes` backend runs bottles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesDef {
    /// The namespace every object of a bottle is made in (a DNS label).
    #[serde(default = "default_namespace")]
    #[schemars(pattern(DNS_LABEL_PATTERN))]
    pub namespace: String,
    /// The RuntimeClass the agent Pod runs with (e.g. `gvisor`, `kata-qemu`);
    /// none: the cluster's default runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class: Option<String>,
    /// The registry (and path) the cluster pulls the agent and sidecar images
    /// from, e.g. `registry.example.com/team`; `bottle image push` pushes there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_registry: Option<String>,
    /// Node labels the Pods must be scheduled on (`nodeSelector`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Run bottles even where the cluster's network plugin does not enforce
    /// NetworkPolicy (the agent then reaches the cluster's network).
    #[serde(default, skip_serializing_if = "is_false")]
    pub unenforced_ok: bool,
}

/// The namespace the `kubernetes` section names when it names none.
pub const DEFAULT_NAMESPACE: &str = "bot-bottle";

/// A DNS-1123 label: what a namespace name must match.
const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}

impl Default for KubernetesDef {
    /// Namespace [`DEFAULT_NAMESPACE`], the cluster's default runtime, no
    /// registry, any node, NetworkPolicy enforcement required.
    fn default() -> Self {
        KubernetesDef {
            namespace: default_namespace(),
            runtime_class: None,
            image_registry: None,
            node_selector: BTreeMap::new(),
            unenforced_ok: false,
        }
    }
}

/// An agent's warm pool: how many ready bottles `bottle pool fill` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolDef {
    /// How many ready bottles to keep (each runs, and uses memory, until
    /// it is claimed).
    #[schemars(range(min = 1, max = MAX_POOL_SIZE))]
    pub size: u32,
}

/// The largest `pool.size` an agent may have.
pub const MAX_POOL_SIZE: u32 = 16;

/// A git author/committer identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitIdentity {
    /// The `user.name` git uses.
    pub name: String,
    /// The `user.email` git uses.
    pub email: String,
}

/// A bottle: the container or VM an agent runs in and everything it may reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BottleDef {
    /// Which agent program the bottle runs and how it is built.
    pub agent_provider: AgentProviderDef,
    /// Environment variables set inside the bottle (or, when secret, only
    /// used on the host side), by name.
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "pattern": ENV_NAME_PATTERN }))]
    pub env: BTreeMap<String, EnvValue>,
    /// The hosts the bottle may reach through the egress proxy; everything
    /// else is denied.
    #[serde(default)]
    pub egress: Vec<EgressRoute>,
    /// The git upstreams reachable through the git gate.
    #[serde(default)]
    pub git: Vec<GitUpstream>,
    /// Whether the supervise sidecar (ask the operator for things) runs:
    /// `true`, or `{ timeout: 30m }` to say how long a request waits.
    #[serde(default, skip_serializing_if = "Supervise::is_off")]
    #[schemars(with = "SuperviseForm")]
    pub supervise: Supervise,
    /// What the bottle may use of the host (memory, CPUs, processes, disk,
    /// saved state); defaults protect the host.
    #[serde(default, skip_serializing_if = "crate::resources::Resources::is_default")]
    pub resources: crate::resources::Resources,
}

/// A bottle's `supervise`: on or off, and how long a request waits for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "SuperviseForm", into = "SuperviseForm")]
pub struct Supervise {
    /// Whether the supervise sidecar runs.
    pub enabled: bool,
    /// How long a request waits before it counts as denied, as written
    /// (`30m`, `2h`); `None`: ten minutes.
    pub timeout: Option<String>,
}

impl Supervise {
    /// Supervise on, with the default deadline.
    pub fn on() -> Self {
        Supervise { enabled: true, timeout: None }
    }

    fn is_off(&self) -> bool {
        !self.enabled
    }

    /// How long a request waits (the manifest's `timeout`, checked when it
    /// was read, else [`DEFAULT_TIMEOUT`](crate::supervise::DEFAULT_TIMEOUT)).
    pub fn wait(&self) -> std::time::Duration {
        self.timeout
            .as_deref()
            .and_then(|t| crate::state::parse_duration(t).ok())
            .unwrap_or(crate::supervise::DEFAULT_TIMEOUT)
    }
}

/// How `supervise` is written: `true`/`false`, or a mapping (which turns it on).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
enum SuperviseForm {
    /// `supervise: true`.
    Flag(bool),
    /// `supervise: { timeout: 30m }`.
    Options {
        /// How long a request waits for the operator before it counts as
        /// denied: a whole number and a unit (`90s`, `30m`, `2h`); ten minutes by default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
    },
}

impl From<SuperviseForm> for Supervise {
    fn from(form: SuperviseForm) -> Self {
        match form {
            SuperviseForm::Flag(enabled) => Supervise { enabled, timeout: None },
            SuperviseForm::Options { timeout } => Supervise { enabled: true, timeout },
        }
    }
}

impl From<Supervise> for SuperviseForm {
    fn from(supervise: Supervise) -> Self {
        match supervise.timeout {
            Some(timeout) if supervise.enabled => SuperviseForm::Options { timeout: Some(timeout) },
            _ => SuperviseForm::Flag(supervise.enabled),
        }
    }
}

/// The agent program a bottle runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentProviderDef {
    /// The provider template: one of the known templates (`claude`, `codex`, `shell`).
    pub template: String,
    /// A Dockerfile replacing the template's; relative paths are relative to
    /// the manifest's folder.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "lossy_path::opt")]
    pub dockerfile: Option<PathBuf>,
    /// A prebuilt image archive (`docker save` output) to boot instead of
    /// building one: how the smolmachines backend runs without Docker.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "lossy_path::opt")]
    pub image_archive: Option<PathBuf>,
    /// Whether the host's agent login is copied into the bottle.
    #[serde(default)]
    pub forward_host_credentials: bool,
    /// The name of a host environment variable holding the agent's API token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(ENV_NAME_PATTERN))]
    pub auth_token: Option<String>,
}

/// The value of one environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum EnvValue {
    /// A literal value (YAML numbers and booleans are kept as written).
    Literal(#[schemars(extend("type" = ["string", "number", "boolean"]))] String),
    /// A value read from the host's environment.
    FromHost {
        /// The host environment variable to read.
        #[schemars(pattern(ENV_NAME_PATTERN))]
        from_host: String,
        /// When true the value never enters the bottle (it is only used by
        /// the sidecars, e.g. for credential injection).
        #[serde(default)]
        secret: bool,
    },
}

/// One host the egress proxy lets the bottle reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressRoute {
    /// A lower-case DNS name or IP literal; a leading `*.` matches any subdomain.
    pub host: String,
    /// Allowed HTTP methods (upper case); empty allows every method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Allowed path prefixes, each starting with `/`; empty allows every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// The ports the route may reach (1–65535); its credential goes over TLS
    /// to these. Empty allows every port, with the credential only to 443.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("minItems" = 1, "items" = { "type": "integer", "minimum": 1, "maximum": 65535 }))]
    pub ports: Vec<u16>,
    /// A credential the proxy injects into requests to this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RouteAuth>,
    /// Whether `auth` is also sent over plain `http://` (in clear), to port
    /// 80 or to `ports`; without it the credential goes only over TLS.
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure_http: bool,
    /// Whether `auth` may go to every host a `*.` wildcard matches.
    #[serde(default, skip_serializing_if = "is_false")]
    pub wildcard_auth: bool,
}

fn is_false(flag: &bool) -> bool {
    !flag
}

/// A credential injected by the egress proxy; the secret stays on the host.
///
/// In YAML: `{ scheme: bearer | x-api-key | basic | header, from_host: NAME }`,
/// plus `user: NAME` for `basic` and `header: Header-Name` for `header`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(from = "RouteAuthWire", into = "RouteAuthWire")]
pub struct RouteAuth {
    /// How the credential is put into the request.
    pub scheme: AuthScheme,
    /// The host environment variable holding the token (the password for `basic`).
    pub from_host: String,
}

/// How an injected credential is put into a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "scheme", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AuthScheme {
    /// `Authorization: Bearer TOKEN`.
    Bearer,
    /// `x-api-key: TOKEN`.
    XApiKey,
    /// `Authorization: Basic base64(user:TOKEN)`.
    Basic {
        /// The user name.
        user: String,
    },
    /// `Header-Name: TOKEN`.
    Header {
        /// The header the token goes in.
        #[serde(rename = "header")]
        name: String,
    },
}

/// The YAML shape of [`RouteAuth`]: the scheme tag and its fields side by side.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(tag = "scheme", rename_all = "kebab-case", deny_unknown_fields)]
enum RouteAuthWire {
    /// `Authorization: Bearer TOKEN`.
    Bearer {
        /// The host environment variable holding the token.
        #[schemars(pattern(ENV_NAME_PATTERN))]
        from_host: String,
    },
    /// `x-api-key: TOKEN`.
    XApiKey {
        /// The host environment variable holding the token.
        #[schemars(pattern(ENV_NAME_PATTERN))]
        from_host: String,
    },
    /// `Authorization: Basic base64(user:TOKEN)`.
    Basic {
        /// The user name.
        user: String,
        /// The host environment variable holding the password.
        #[schemars(pattern(ENV_NAME_PATTERN))]
        from_host: String,
    },
    /// `Header-Name: TOKEN`.
    Header {
        /// The header the token goes in.
        header: String,
        /// The host environment variable holding the token.
        #[schemars(pattern(ENV_NAME_PATTERN))]
        from_host: String,
    },
}

impl From<RouteAuthWire> for RouteAuth {
    fn from(wire: RouteAuthWire) -> Self {
        let (scheme, from_host) = match wire {
            RouteAuthWire::Bearer { from_host } => (AuthScheme::Bearer, from_host),
            RouteAuthWire::XApiKey { from_host } => (AuthScheme::XApiKey, from_host),
            RouteAuthWire::Basic { user, from_host } => (AuthScheme::Basic { user }, from_host),
            RouteAuthWire::Header { header, from_host } => (AuthScheme::Header { name: header }, from_host),
        };
        RouteAuth { scheme, from_host }
    }
}

impl From<RouteAuth> for RouteAuthWire {
    fn from(auth: RouteAuth) -> Self {
        let from_host = auth.from_host;
        match auth.scheme {
            AuthScheme::Bearer => RouteAuthWire::Bearer { from_host },
            AuthScheme::XApiKey => RouteAuthWire::XApiKey { from_host },
            AuthScheme::Basic { user } => RouteAuthWire::Basic { user, from_host },
            AuthScheme::Header { name } => RouteAuthWire::Header { header: name, from_host },
        }
    }
}

/// A git upstream reachable through the git gate (keys capitalised like ssh_config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitUpstream {
    /// The upstream's name, unique within the bottle.
    #[serde(rename = "Name")]
    #[schemars(pattern(NAME_PATTERN))]
    pub name: String,
    /// The SSH host name or IP address (no scheme, path or port).
    #[serde(rename = "Host")]
    pub host: String,
    /// The SSH port.
    #[serde(rename = "Port", default = "default_port")]
    #[schemars(range(min = 1))]
    pub port: u16,
    /// The SSH user.
    #[serde(rename = "User", default = "default_user")]
    pub user: String,
    /// The repository path on the host, e.g. `org/project.git`.
    #[serde(rename = "Repo")]
    pub repo: String,
    /// The SSH private key the gate pushes with (`~/` is expanded; relative
    /// paths are relative to the manifest's folder). It never enters the bottle.
    #[serde(rename = "IdentityFile", serialize_with = "lossy_path::path")]
    pub identity_file: PathBuf,
    /// What the agent may push.
    #[serde(default)]
    pub push: PushPolicy,
}

fn default_port() -> u16 {
    22
}

fn default_user() -> String {
    "git".to_string()
}

/// What pushes the git gate lets through to an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PushPolicy {
    /// Branch patterns (`*` wildcards) the agent may push to; empty allows none.
    #[serde(default)]
    pub branches: Vec<String>,
    /// Whether non-fast-forward pushes are allowed.
    #[serde(default)]
    pub force: bool,
    /// Whether deleting a branch is allowed.
    #[serde(default)]
    pub delete: bool,
    /// Whether pushing tags is allowed.
    #[serde(default)]
    pub tags: bool,
    /// Whether a push may add, change or delete a CI definition
    /// (`.github/workflows/`, `.gitlab-ci.yml`, `Jenkinsfile`, …), which a
    /// hosted CI runs on push with the repository's secrets.
    #[serde(default)]
    pub ci: bool,
    /// More paths a push may not add, change or delete: globs from the
    /// repository's top (`*` within a path component, `**` across them); a
    /// pattern that names a directory covers everything under it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths_deny: Vec<String>,
    /// The largest push, in MiB of the pack the agent sends.
    #[serde(default = "default_max_push_mb")]
    #[schemars(range(min = 1, max = MAX_PUSH_MB_LIMIT))]
    pub max_push_mb: u64,
}

/// What `push.max_push_mb` is when the manifest does not say.
pub const DEFAULT_MAX_PUSH_MB: u64 = 1024;
/// The largest `push.max_push_mb` (1 TiB).
const MAX_PUSH_MB_LIMIT: u64 = 1 << 20;

fn default_max_push_mb() -> u64 {
    DEFAULT_MAX_PUSH_MB
}

impl Default for PushPolicy {
    /// Nothing may be pushed; CI definitions refused; pushes up to [`DEFAULT_MAX_PUSH_MB`].
    fn default() -> Self {
        Self {
            branches: Vec::new(),
            force: false,
            delete: false,
            tags: false,
            ci: false,
            paths_deny: Vec::new(),
            max_push_mb: DEFAULT_MAX_PUSH_MB,
        }
    }
}

/// Paths serialize as text even when not UTF-8, so [`Manifest::to_yaml`] cannot fail.
mod lossy_path {
    use std::path::{Path, PathBuf};

    use serde::Serializer;

    pub(super) fn path<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&path.to_string_lossy())
    }

    pub(super) fn opt<S: Serializer>(path: &Option<PathBuf>, serializer: S) -> Result<S::Ok, S::Error> {
        match path {
            Some(path) => serializer.serialize_some(&path.to_string_lossy()),
            None => serializer.serialize_none(),
        }
    }
}

/// One problem in a manifest, with its position and a hint on how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}:{}: {}; {}", .file.display(), .line, .column, .message, .hint)]
pub struct ManifestError {
    /// The manifest file.
    pub file: PathBuf,
    /// The 1-based line.
    pub line: usize,
    /// The 1-based column (in characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

/// Every problem found in a manifest, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestErrors {}

impl Manifest {
    /// Parses and validates a manifest.
    ///
    /// `file` is used for error positions and to resolve relative paths (against
    /// its parent directory); `known_templates` are the agent provider templates
    /// `agent_provider.template` may name. A leading `~/` in a path expands
    /// with this process's `$HOME`. Every problem is reported.
    /// A text longer than [`MAX_MANIFEST_BYTES`] is refused unparsed.
    pub fn parse(text: &str, file: &Path, known_templates: &[&str]) -> Result<Manifest, ManifestErrors> {
        check_size(file, Some(text.len() as u64))?;
        let mut manifest = validate::parse(text, file, known_templates)?;
        manifest.source = ManifestSource::File(file.to_path_buf());
        Ok(manifest)
    }

    /// Reads and parses a manifest file (see [`Manifest::parse`]). A file
    /// longer than [`MAX_MANIFEST_BYTES`] is refused before it is read.
    pub fn load(file: &Path, known_templates: &[&str]) -> Result<Manifest, ManifestErrors> {
        let unreadable = |error: std::io::Error| {
            let hint = if error.kind() == std::io::ErrorKind::NotFound {
                "check the path (given with --manifest, $BOT_BOTTLE_MANIFEST, or found by discovery)"
            } else {
                "check that the file is readable"
            };
            ManifestErrors(vec![ManifestError {
                file: file.to_path_buf(),
                line: 1,
                column: 1,
                message: format!("cannot read the manifest: {error}"),
                hint: hint.to_string(),
            }])
        };
        let opened = std::fs::File::open(file).map_err(unreadable)?;
        // What the file system says (a pipe or device says 0), then what is read.
        check_size(file, opened.metadata().ok().filter(std::fs::Metadata::is_file).map(|meta| meta.len()))?;
        let mut text = Vec::new();
        opened.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut text).map_err(unreadable)?;
        if text.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(size_error(file, None));
        }
        let text = String::from_utf8(text).map_err(|error| {
            let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
            // `valid` is UTF-8 up to that point, so this never loses anything.
            let valid = String::from_utf8_lossy(valid);
            let line = valid.matches('\n').count() + 1;
            let column = valid.rsplit('\n').next().map_or(0, |last| last.chars().count()) + 1;
            ManifestErrors(vec![ManifestError {
                file: file.to_path_buf(),
                line,
                column,
                message: "the manifest is not valid UTF-8 text".to_string(),
                hint: "save the file as UTF-8".to_string(),
            }])
        })?;
        Manifest::parse(&text, file, known_templates)
    }

    /// The built-in [`DEFAULT_MANIFEST`], with [`ManifestSource::Embedded`].
    ///
    /// # Panics
    ///
    /// If the embedded text is invalid, which a test rules out, or if
    /// `known_templates` lacks `shell`, the template it uses.
    pub fn embedded_default(known_templates: &[&str]) -> Manifest {
        match validate::parse(DEFAULT_MANIFEST, Path::new(EMBEDDED_FILE), known_templates) {
            Ok(manifest) => manifest,
            Err(errors) => panic!("the embedded default manifest is invalid:\n{errors}"),
        }
    }

    /// Where the manifest reads host variables (env `from_host`, plain and
    /// secret, and egress routes' `auth.from_host`), in file order. Recorded
    /// by [`Manifest::parse`]; empty for a manifest built otherwise, and not
    /// updated when the fields are changed after parsing.
    pub fn host_vars(&self) -> &[HostVarRef] {
        &self.host_vars
    }

    /// The JSON schema of the manifest file format.
    pub fn json_schema() -> serde_json::Value {
        schemars::schema_for!(Manifest).to_value()
    }

    /// The manifest as YAML; [`Manifest::parse`] turns it back into an equal
    /// manifest (paths are absolute after parsing, so they stay the same).
    pub fn to_yaml(&self) -> String {
        // Every field serializes: string-keyed maps, strings, bools, integers,
        // and paths written lossily.
        serde_yaml::to_string(self).unwrap_or_else(|error| format!("# cannot serialize the manifest: {error}\n"))
    }
}

/// Refuses a manifest of `size` bytes over [`MAX_MANIFEST_BYTES`].
fn check_size(file: &Path, size: Option<u64>) -> Result<(), ManifestErrors> {
    match size {
        Some(size) if size > MAX_MANIFEST_BYTES => Err(size_error(file, Some(size))),
        _ => Ok(()),
    }
}

/// The error for a manifest over [`MAX_MANIFEST_BYTES`] (of `size` bytes, when known).
fn size_error(file: &Path, size: Option<u64>) -> ManifestErrors {
    let size = size.map_or_else(|| format!("more than {MAX_MANIFEST_BYTES}"), |size| size.to_string());
    ManifestErrors(vec![ManifestError {
        file: file.to_path_buf(),
        line: 1,
        column: 1,
        message: format!(
            "the manifest is {size} bytes, more than the {MAX_MANIFEST_BYTES} (1 MiB) a manifest may be, so that \
             checking and starting stay fast"
        ),
        hint: "a manifest names agents, bottles and what they may reach: keep bulk data in files (a prompt, a \
               skill, the copied working directory) rather than in `env`"
            .to_string(),
    }])
}

/// Finds the manifest file to use.
///
/// In order: `explicit` (e.g. `--manifest`), then `$BOT_BOTTLE_MANIFEST`
/// (both relative to `cwd`, and returned even if missing so loading reports
/// it), then `./bot-bottle.yaml` in `cwd`, then
/// `$XDG_CONFIG_HOME/bot-bottle/manifest.yaml` (`XDG_CONFIG_HOME` defaulting
/// to `$HOME/.config`), if they exist. `None` means: use the embedded default.
/// `env` reads an environment variable.
pub fn discover_manifest(explicit: Option<&Path>, env: &dyn Fn(&str) -> Option<String>, cwd: &Path) -> Option<PathBuf> {
    let non_empty = |name: &str| env(name).filter(|value| !value.is_empty());
    if let Some(explicit) = explicit {
        return Some(cwd.join(explicit));
    }
    if let Some(path) = non_empty("BOT_BOTTLE_MANIFEST") {
        return Some(cwd.join(path));
    }
    let local = cwd.join("bot-bottle.yaml");
    if local.is_file() {
        return Some(local);
    }
    let config_home = non_empty("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| non_empty("HOME").map(|home| Path::new(&home).join(".config")))?;
    let user = config_home.join("bot-bottle").join("manifest.yaml");
    user.is_file().then_some(user)
}
