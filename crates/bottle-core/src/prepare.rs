//! The host-side pipeline from a [`BottleSpec`] to a [`CommonPlan`]: validate
//! everything the manifest names, resolve the environment, mint (or reuse) the
//! slug and write its metadata. Safe to run before the operator's y/N: on
//! error it leaves nothing behind. An unset host variable is refused at the
//! place the manifest reads it; an environment that would not fit what Linux
//! lets a process exec with is refused by the names of its largest entries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::manifest::{EXEC_REASON, EnvSize, EnvValue, Excess, HostVarRef, Manifest};
use crate::owner::Owner;
use crate::plan::{CommonPlan, EgressPlan, GitGatePlan, SupervisePlan};
use crate::provider::{AgentProvider, Providers, ProvisionInput};
use crate::resources::Limits;
use crate::sidecar::ClientToken;
use crate::sidecar_config;
use crate::state::{BottleMetadata, StateRoot};
use crate::{Error, ErrorKind, Result};

/// The environment variable that turns off trusting the host CA bundle in image builds (`0`/`off`/`false`).
pub const HOST_CA_ENV: &str = "BOT_BOTTLE_HOST_CA";

/// What the operator asked for: which agent, from which manifest, and how.
#[derive(Debug, Clone)]
pub struct BottleSpec {
    /// The parsed manifest.
    pub manifest: Arc<Manifest>,
    /// The agent to run.
    pub agent: String,
    /// Copy the user's working directory into the bottle.
    pub copy_cwd: bool,
    /// The user's working directory.
    pub user_cwd: PathBuf,
    /// Resume this identity (a previous bottle's slug) instead of minting a new one.
    pub identity: Option<String>,
    /// Free-form label.
    pub label: Option<String>,
    /// Colour for listings.
    pub color: Option<String>,
    /// Leave the bottle running after `start` returns.
    pub detached: bool,
    /// Trust the host's CA bundle while building images (TLS-inspecting proxies).
    pub host_ca: bool,
    /// Extra arguments for the agent.
    pub agent_args: Vec<String>,
}

impl BottleSpec {
    /// A spec to start `agent` of `manifest` in a fresh bottle, owned by this
    /// process (not detached), with an empty workspace: set the other fields
    /// for more.
    pub fn new(manifest: Arc<Manifest>, agent: impl Into<String>, user_cwd: PathBuf) -> Self {
        BottleSpec {
            manifest,
            agent: agent.into(),
            copy_cwd: false,
            user_cwd,
            identity: None,
            label: None,
            color: None,
            detached: false,
            host_ca: true,
            agent_args: Vec::new(),
        }
    }
}

/// The host as `prepare` sees it: its environment, home and state root.
#[derive(Debug, Clone)]
pub struct Host {
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// The operator's home directory.
    pub home: PathBuf,
    /// Where bottles' state lives.
    pub state: StateRoot,
}

impl Host {
    /// The current process's environment.
    pub fn from_process() -> Result<Self> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let lookup = |k: &str| env.get(k).cloned();
        let state = StateRoot::from_env(&lookup)?;
        let home = PathBuf::from(lookup("HOME").unwrap_or_default());
        Ok(Host { env, home, state })
    }

    /// A variable's value, `None` when unset.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env.get(name).map(String::as_str)
    }

    /// The host CA bundle to trust in image builds: `SSL_CERT_FILE`, then
    /// `NODE_EXTRA_CA_CERTS`, when it names a readable file and
    /// [`HOST_CA_ENV`] does not turn it off.
    pub fn ca_bundle(&self) -> Option<PathBuf> {
        if matches!(self.var(HOST_CA_ENV).map(str::to_ascii_lowercase).as_deref(), Some("0" | "off" | "false" | "no")) {
            return None;
        }
        ["SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS"]
            .iter()
            .filter_map(|k| self.var(k))
            .map(PathBuf::from)
            .find(|p| p.is_file())
    }
}

/// The placeholder the bottle sees instead of a hidden variable's value.
pub fn placeholder(name: &str) -> String {
    format!("bot-bottle-hidden:{name}")
}

/// Run the prepare pipeline for `backend`. Validation happens before
/// anything is written; the new state directory is removed again on error.
pub fn prepare(spec: &BottleSpec, providers: &Providers, host: &Host, backend: &str) -> Result<CommonPlan> {
    prepare_member(spec, providers, host, backend, None)
}

/// What `prepare` resolves before it mints anything: the agent and its
/// bottle, the provider, and what the provider builds its plan from. The
/// same for every bottle of one agent while the manifest and the host stay
/// as they are: a warm pool's key is made of it ([`crate::pool`]).
pub(crate) struct Resolved<'m> {
    pub(crate) agent: &'m crate::manifest::AgentDef,
    pub(crate) bottle: &'m crate::manifest::BottleDef,
    pub(crate) provider: Arc<dyn AgentProvider>,
    pub(crate) skills: Vec<(String, PathBuf)>,
    pub(crate) dockerfile_override: Option<(String, PathBuf)>,
    pub(crate) guest_env: BTreeMap<String, String>,
    pub(crate) hidden_env: Vec<String>,
    pub(crate) agent_routes: crate::provider::AgentRoutes,
    pub(crate) limits: Limits,
    pub(crate) host_ca_bundle: Option<PathBuf>,
}

impl Resolved<'_> {
    /// The provider's input for bottle `slug`.
    pub(crate) fn provision_input(&self, slug: &str, resumed: bool) -> ProvisionInput {
        ProvisionInput {
            slug: slug.to_string(),
            guest_env: self.guest_env.clone(),
            hidden_env: self.hidden_env.clone(),
            prompt: self.agent.prompt.clone(),
            skills: self.skills.clone(),
            git_identity: self.agent.git_identity.clone(),
            dockerfile_override: self.dockerfile_override.clone(),
            host_ca_bundle: self.host_ca_bundle.clone(),
            image_archive: self.bottle.agent_provider.image_archive.clone(),
            resumed,
        }
    }
}

/// Everything of `prepare` short of minting: validate what the manifest
/// names for `spec`'s agent and resolve its environment. Writes nothing.
pub(crate) fn resolve<'m>(spec: &'m BottleSpec, providers: &Providers, host: &Host) -> Result<Resolved<'m>> {
    let manifest = &spec.manifest;
    let agent = manifest.agents.get(&spec.agent).ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            format!(
                "no agent `{}` in the manifest ({}); defined agents: {}",
                spec.agent,
                manifest.source,
                manifest.agents.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    let bottle = manifest.bottles.get(&agent.bottle).ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            format!("agent `{}` names bottle `{}`, which the manifest lacks", spec.agent, agent.bottle),
        )
    })?;
    let provider = providers.get(&bottle.agent_provider.template)?;

    let skills = agent
        .skills
        .iter()
        .map(|name| {
            let dir = host.home.join(".claude/skills").join(name);
            if dir.is_dir() {
                Ok((name.clone(), dir))
            } else {
                Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "agent `{}` lists skill `{name}`, but {} is not a directory; create it or remove the skill",
                        spec.agent,
                        dir.display()
                    ),
                ))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    for upstream in &bottle.git {
        require_file(&upstream.identity_file, &format!("git upstream `{}`'s IdentityFile", upstream.name))?;
    }
    if let Some(prompt) = &agent.prompt {
        require_file(prompt, &format!("agent `{}`'s prompt", spec.agent))?;
    }
    let dockerfile_override = match &bottle.agent_provider.dockerfile {
        Some(path) => {
            require_file(path, &format!("bottle `{}`'s dockerfile", agent.bottle))?;
            let text =
                std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            Some((text, path.clone()))
        }
        None => None,
    };
    if let Some(archive) = &bottle.agent_provider.image_archive {
        require_file(archive, &format!("bottle `{}`'s image_archive", agent.bottle))?;
    }
    require_host_vars(manifest, &agent.bottle, host)?;
    let (mut guest_env, mut hidden_env) = resolve_env(&bottle.env, provider.as_ref(), host)?;
    let agent_routes = provider.agent_routes(&bottle.agent_provider, host)?;
    guest_env.extend(agent_routes.env.clone());
    for name in &agent_routes.hidden_env {
        guest_env.insert(name.clone(), placeholder(name));
        if !hidden_env.contains(name) {
            hidden_env.push(name.clone());
        }
    }
    require_env_fits(&agent.bottle, &guest_env)?;
    if spec.copy_cwd && !spec.user_cwd.is_dir() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("--copy-cwd: {} is not a directory", spec.user_cwd.display()),
        ));
    }
    let limits =
        Limits::resolve(&bottle.resources, std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get));
    Ok(Resolved {
        agent,
        bottle,
        provider,
        skills,
        dockerfile_override,
        guest_env,
        hidden_env,
        agent_routes,
        limits,
        host_ca_bundle: if spec.host_ca { host.ca_bundle() } else { None },
    })
}

/// [`prepare`], for a warm pool's member when `pool` names its pool key:
/// the bottle is labelled with it, and its metadata says it is a member.
pub(crate) fn prepare_member(
    spec: &BottleSpec,
    providers: &Providers,
    host: &Host,
    backend: &str,
    pool: Option<&str>,
) -> Result<CommonPlan> {
    let manifest = &spec.manifest;
    let resolved = resolve(spec, providers, host)?;
    let (agent, bottle, provider) = (resolved.agent, resolved.bottle, &resolved.provider);
    let (slug, state_dir, resumes) = match &spec.identity {
        Some(identity) => {
            let previous = host.state.read(identity)?;
            if previous.agent != spec.agent {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("identity `{identity}` belongs to agent `{}`, not `{}`", previous.agent, spec.agent),
                ));
            }
            (identity.clone(), host.state.bottle_dir(identity), previous.resumes + 1)
        }
        None => {
            let (slug, dir) = host.state.mint(&spec.agent)?;
            (slug, dir, 0)
        }
    };
    let minted = spec.identity.is_none();
    let limits = resolved.limits;
    let built = (|| -> Result<CommonPlan> {
        let provision = provider.build_provision_plan(resolved.provision_input(&slug, !minted))?;
        let client_token = ClientToken::mint()?;
        let egress = sidecar_config::egress_config(
            &slug,
            resolved.agent_routes.rules.clone(),
            &bottle.egress,
            &bottle.env,
            &provision.hidden_env,
            client_token.digest(),
            host,
        )?;
        let gate = sidecar_config::gate_config(&slug, &bottle.git, client_token.digest(), host)?;
        let warnings = crate::preflight::credential_warnings(bottle, &provision.hidden_env);
        let stage_dir = state_dir.join("stage");
        std::fs::create_dir_all(&stage_dir).map_err(|e| Error::io(format!("creating {}", stage_dir.display()), e))?;
        let owner = Owner::current();
        host.state.write(&BottleMetadata {
            slug: slug.clone(),
            agent: spec.agent.clone(),
            backend: backend.to_string(),
            provider: provider.name().to_string(),
            manifest: manifest.source.to_string(),
            owner: owner.clone(),
            guest_user: provision.guest_user.clone(),
            resume_paths: provision.resume_paths.clone(),
            label: spec.label.clone(),
            color: spec.color.clone(),
            detached: spec.detached,
            ready: false,
            resumes,
            state_limit: limits.state,
            workdir: provision.workdir.clone(),
            gate: !bottle.git.is_empty(),
            stopped_ms: None,
            pool: pool.map(|key| crate::state::PoolMembership { key: key.to_string(), claimed_ms: None }),
        })?;
        Ok(CommonPlan {
            slug: slug.clone(),
            agent: spec.agent.clone(),
            bottle: agent.bottle.clone(),
            resumed: !minted,
            stage_dir,
            state_dir: state_dir.clone(),
            manifest_source: manifest.source.to_string(),
            provision,
            egress: EgressPlan { routes: bottle.egress.clone(), policy: egress, warnings },
            git_gate: GitGatePlan { upstreams: bottle.git.clone(), policy: gate },
            supervise: SupervisePlan { enabled: bottle.supervise.enabled, timeout: bottle.supervise.wait() },
            copy_cwd: spec.copy_cwd.then(|| spec.user_cwd.clone()),
            label: spec.label.clone(),
            color: spec.color.clone(),
            detached: spec.detached,
            owner,
            agent_args: spec.agent_args.clone(),
            client_token,
            limits,
            kubernetes: manifest.kubernetes.clone().unwrap_or_default(),
            pool: pool.map(str::to_string),
        })
    })();
    if built.is_err() && minted {
        let _ = host.state.discard(&slug);
    }
    built
}

fn require_file(path: &Path, what: &str) -> Result<()> {
    if path.is_file() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::NotFound,
            format!("{what} {} does not exist or is not a file; fix the path in the manifest", path.display()),
        ))
    }
}

/// Refuses, on one line, when a host variable bottle `bottle` reads (an env
/// entry's `from_host`, a route's `auth.from_host`) is unset, naming where the
/// manifest reads it. A manifest without recorded positions (not from
/// [`Manifest::parse`]) is still refused, without them, by [`resolve_env`] and
/// the egress configuration.
fn require_host_vars(manifest: &Manifest, bottle: &str, host: &Host) -> Result<()> {
    let unset: Vec<String> = manifest
        .host_vars()
        .iter()
        .filter(|reference| reference.used_by.bottle() == bottle && host.var(&reference.name).is_none())
        .map(HostVarRef::not_set_message)
        .collect();
    if unset.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::MissingHostEnv,
        format!("{}; export it on the host or remove it from the manifest", unset.join("; ")),
    ))
}

/// Refuses bottle `bottle` when its environment `env` (host values and the
/// provider's entries included) would not fit what Linux lets a process exec
/// with, naming the largest entries (never a value: it may be a secret).
fn require_env_fits(bottle: &str, env: &BTreeMap<String, String>) -> Result<()> {
    let size = EnvSize::measure(env.iter().map(|(name, value)| (name.as_str(), value.as_str())));
    let excesses: Vec<String> = size
        .excesses()
        .iter()
        .map(|excess| match excess {
            Excess::Entry { .. } => format!("entry {excess}"),
            Excess::Total { .. } => format!("its {} entries are {excess}", env.len()),
        })
        .collect();
    if excesses.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::InvalidInput,
        format!(
            "the environment of bottle `{bottle}` is too large ({EXEC_REASON}): {}; the largest entries are {}: \
             shorten them (values copied from the host included) or pass the data in a file the agent reads",
            excesses.join("; "),
            size.largest(3)
        ),
    ))
}

/// Resolve the bottle's env: literals as written, `from_host` copied, secrets
/// and the provider's hidden names replaced by a placeholder.
fn resolve_env(
    env: &BTreeMap<String, EnvValue>,
    provider: &dyn AgentProvider,
    host: &Host,
) -> Result<(BTreeMap<String, String>, Vec<String>)> {
    let mut guest = BTreeMap::new();
    let mut hidden = Vec::new();
    let mut missing = Vec::new();
    for (name, value) in env {
        let (value, secret) = match value {
            EnvValue::Literal(v) => (v.as_str(), false),
            EnvValue::FromHost { from_host, secret } => match host.var(from_host) {
                Some(v) => (v, *secret),
                None => {
                    missing.push(format!("env `{name}` copies host variable `{from_host}`"));
                    continue;
                }
            },
        };
        if secret || provider.hidden_env().contains(&name.as_str()) {
            guest.insert(name.clone(), placeholder(name));
            hidden.push(name.clone());
        } else {
            guest.insert(name.clone(), value.to_string());
        }
    }
    if !missing.is_empty() {
        return Err(Error::new(
            ErrorKind::MissingHostEnv,
            format!("{}, which is not set; export it or remove the entry from the manifest", missing.join("; ")),
        ));
    }
    Ok((guest, hidden))
}
