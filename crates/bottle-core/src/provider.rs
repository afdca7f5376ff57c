//! The [`AgentProvider`] trait: what an agent (claude, codex, shell) needs in a
//! bottle. The provided methods are the shared behaviour; a provider overrides
//! the steps where its agent differs.

pub use crate::plan::{AgentProvisionPlan, ContextFile, ContextSource, CopyIn, HOST_CA_CONTEXT_FILE, ImageRecipe};
pub use crate::sidecar_config::{GUEST_CA_BUNDLE, GUEST_CA_FILE, upstream_url_forms};

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::bottle::{Bottle, GuestUser};
use crate::plan::CommonPlan;
use crate::prepare::Host;
use crate::sidecar::EgressRule;
use crate::{AgentProviderDef, Error, ErrorKind, GitIdentity, Result};

/// What `prepare` resolved for the provider to build its plan from.
#[derive(Debug, Clone)]
pub struct ProvisionInput {
    /// The bottle's slug.
    pub slug: String,
    /// The guest environment (placeholders for hidden names already in place).
    pub guest_env: BTreeMap<String, String>,
    /// Names whose values never enter the bottle.
    pub hidden_env: Vec<String>,
    /// The prompt file on the host, if the agent has one.
    pub prompt: Option<std::path::PathBuf>,
    /// Skill directories on the host, by skill name.
    pub skills: Vec<(String, std::path::PathBuf)>,
    /// The agent's git identity.
    pub git_identity: Option<GitIdentity>,
    /// The manifest's Dockerfile override: (text, path).
    pub dockerfile_override: Option<(String, std::path::PathBuf)>,
    /// The host CA bundle to trust while building, when enabled.
    pub host_ca_bundle: Option<std::path::PathBuf>,
    /// The manifest's prebuilt image archive, if any.
    pub image_archive: Option<std::path::PathBuf>,
    /// Whether this run resumes an earlier one.
    pub resumed: bool,
}

/// What an agent needs of the egress proxy for itself: its API's routes
/// (with the credential the proxy injects), and the variables the agent sees
/// (sentinels in place of the credentials, settings).
#[derive(Debug, Clone, Default)]
pub struct AgentRoutes {
    /// Routes to the agent's own API, enforced before the manifest's.
    pub rules: Vec<EgressRule>,
    /// Variables whose real value stays on the host; the agent sees a sentinel.
    pub hidden_env: Vec<String>,
    /// Plain variables for the agent (settings).
    pub env: BTreeMap<String, String>,
}

/// Quote `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// An agent that bot-bottle can run.
#[async_trait]
pub trait AgentProvider: Send + Sync {
    /// Its template name in manifests (`claude`, `codex`, `shell`).
    fn name(&self) -> &'static str;

    /// The bundled Dockerfile (used unless the manifest overrides it).
    fn bundled_dockerfile(&self) -> &'static str;

    /// The non-root user the agent runs as.
    fn guest_user(&self) -> &'static str;

    /// That user's home directory.
    fn guest_home(&self) -> &'static str;

    /// The command that starts the agent.
    fn base_argv(&self) -> Vec<String>;

    /// Host environment names this agent must never see the value of.
    fn hidden_env(&self) -> &'static [&'static str] {
        &[]
    }

    /// Paths relative to the guest home that hold the agent's own state.
    fn resume_paths(&self) -> &'static [&'static str] {
        &[]
    }

    /// Arguments that continue the last conversation on resume.
    fn continue_args(&self) -> &'static [&'static str] {
        &[]
    }

    /// The routes and credentials the agent itself needs (its API), from the
    /// manifest's `agent_provider` settings and the host. None by default.
    fn agent_routes(&self, _def: &AgentProviderDef, _host: &Host) -> Result<AgentRoutes> {
        Ok(AgentRoutes::default())
    }

    /// Where the prompt file goes inside the bottle.
    fn prompt_guest_path(&self) -> String {
        format!("{}/.bot-bottle/prompt.md", self.guest_home())
    }

    /// Build the provisioning plan from what `prepare` resolved.
    fn build_provision_plan(&self, input: ProvisionInput) -> Result<AgentProvisionPlan> {
        let home = self.guest_home();
        let (dockerfile, dockerfile_origin, context_dir) = match input.dockerfile_override {
            Some((text, path)) => {
                let origin = path.display().to_string();
                (text, origin, path.parent().map(std::path::Path::to_path_buf))
            }
            None => (self.bundled_dockerfile().to_string(), format!("bundled ({})", self.name()), None),
        };
        Ok(AgentProvisionPlan {
            provider: self.name().to_string(),
            image: ImageRecipe {
                repository: format!("bot-bottle/{}", self.name()),
                dockerfile,
                dockerfile_origin,
                context_dir,
                host_ca_bundle: input.host_ca_bundle,
                extra_files: Vec::new(),
                prebuilt_archive: input.image_archive,
            },
            guest_user: self.guest_user().to_string(),
            guest_home: home.to_string(),
            workdir: format!("{home}/workspace"),
            guest_env: input.guest_env,
            hidden_env: input.hidden_env,
            prompt: input.prompt.map(|host| CopyIn { host, guest: self.prompt_guest_path() }),
            skills: input
                .skills
                .into_iter()
                .map(|(name, host)| CopyIn { host, guest: format!("{home}/.claude/skills/{name}") })
                .collect(),
            git_identity: input.git_identity,
            resume_paths: self.resume_paths().iter().map(|p| format!("{home}/{p}")).collect(),
            continue_args: if input.resumed {
                self.continue_args().iter().map(|s| s.to_string()).collect()
            } else {
                vec![]
            },
        })
    }

    /// The argv of the agent session: the base command, continue arguments on resume, then `extra`.
    fn agent_argv(&self, plan: &AgentProvisionPlan, extra: &[String]) -> Vec<String> {
        let mut argv = self.base_argv();
        argv.extend(plan.continue_args.iter().cloned());
        argv.extend(extra.iter().cloned());
        argv
    }

    /// Copy the prompt file in.
    async fn provision_prompt(&self, bottle: &dyn Bottle, plan: &AgentProvisionPlan) -> Result<()> {
        match &plan.prompt {
            Some(copy) => bottle.cp_in(&copy.host, &copy.guest).await,
            None => Ok(()),
        }
    }

    /// Agent-specific set-up (settings files, onboarding state). Nothing by default.
    async fn apply(&self, _bottle: &dyn Bottle, _plan: &AgentProvisionPlan) -> Result<()> {
        Ok(())
    }

    /// Copy the skill directories in.
    async fn provision_skills(&self, bottle: &dyn Bottle, plan: &AgentProvisionPlan) -> Result<()> {
        for skill in &plan.skills {
            bottle.cp_in(&skill.host, &skill.guest).await?;
        }
        Ok(())
    }

    /// Write the agent's git identity, rewrite every upstream URL form to the
    /// git gate, and give git the gate's credentials (an `http.extraHeader`
    /// for the gate's URL only, in a file of its own: never on a command line).
    async fn provision_git(
        &self,
        bottle: &dyn Bottle,
        plan: &CommonPlan,
        wiring: &crate::wiring::Wiring,
    ) -> Result<()> {
        let mut script = Vec::new();
        if let Some(id) = &plan.provision.git_identity {
            script.push(format!("git config --global user.name {}", shell_quote(&id.name)));
            script.push(format!("git config --global user.email {}", shell_quote(&id.email)));
        }
        if let Some(gate) = wiring.gate.as_ref().filter(|_| plan.git_gate.is_needed()) {
            let credentials = crate::sidecar::gate_credentials_config(gate, &plan.client_token);
            let include = format!("{}/{GATE_GITCONFIG}", plan.provision.guest_home);
            write_guest_file(bottle, &plan.stage_dir, &include, credentials.as_bytes()).await?;
            script.push(format!("git config --global --add include.path {}", shell_quote(&include)));
            for upstream in &plan.git_gate.upstreams {
                let key = format!("url.{gate}/{}.git.insteadOf", upstream.name);
                for form in crate::sidecar_config::upstream_url_forms(upstream) {
                    script.push(format!("git config --global --add {} {}", shell_quote(&key), shell_quote(&form)));
                }
            }
        }
        if script.is_empty() {
            return Ok(());
        }
        run_checked(bottle, &script.join(" && "), GuestUser::Agent, "writing the git configuration").await
    }

    /// Register the supervise MCP server at `url` with the agent (last in
    /// the provision order). By default only [`SUPERVISE_MCP_JSON`] is
    /// written; the environment names the URL and token too
    /// (`BOT_BOTTLE_SUPERVISE_URL`, `BOT_BOTTLE_SUPERVISE_TOKEN`).
    async fn provision_supervise(&self, bottle: &dyn Bottle, plan: &CommonPlan, url: &str) -> Result<()> {
        write_supervise_mcp(bottle, plan, url).await.map(drop)
    }
}

/// The file in the agent's home that describes the supervise MCP server
/// (its URL and the header with the bottle's token) as JSON, for providers
/// that merge it into their agent's settings.
pub const SUPERVISE_MCP_JSON: &str = ".config/bot-bottle/supervise-mcp.json";

/// The supervise server as an MCP client's settings describe an HTTP
/// server: `{"type": "http", "url": URL, "headers": {"Authorization": "Bearer TOKEN"}}`.
pub fn supervise_mcp_json(url: &str, token: &crate::sidecar::ClientToken) -> String {
    serde_json::json!({
        "type": "http",
        "url": url,
        "headers": { "Authorization": format!("Bearer {}", token.expose()) },
    })
    .to_string()
}

/// Write [`SUPERVISE_MCP_JSON`] for the server at `url` into the agent's
/// home (never on a command line: it holds the bottle's token); returns its
/// guest path.
pub async fn write_supervise_mcp(bottle: &dyn Bottle, plan: &CommonPlan, url: &str) -> Result<String> {
    let json = supervise_mcp_json(url, &plan.client_token);
    let guest = format!("{}/{SUPERVISE_MCP_JSON}", plan.provision.guest_home);
    write_guest_file(bottle, &plan.stage_dir, &guest, json.as_bytes()).await?;
    Ok(guest)
}

/// The file in the agent's home that holds git's credentials for the gate.
pub const GATE_GITCONFIG: &str = ".config/bot-bottle/gate.gitconfig";

/// Write `contents` to `guest` (owned by the agent's user) through a file in
/// the host's private `stage` folder, so that it never stands on a command
/// line inside the bottle.
pub async fn write_guest_file(
    bottle: &dyn Bottle,
    stage: &std::path::Path,
    guest: &str,
    contents: &[u8],
) -> Result<()> {
    let staged = tempfile::Builder::new()
        .prefix("guest-file")
        .tempfile_in(stage)
        .map_err(|e| Error::io(format!("creating a file in {}", stage.display()), e))?;
    std::fs::write(staged.path(), contents)
        .map_err(|e| Error::io(format!("writing {}", staged.path().display()), e))?;
    bottle.cp_in(staged.path(), guest).await
}

/// Run `script` in the bottle and turn a non-zero exit into an [`ErrorKind::Provision`] error.
pub async fn run_checked(bottle: &dyn Bottle, script: &str, user: GuestUser, what: &str) -> Result<()> {
    let out = bottle.exec(script, user).await?;
    if out.success() {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::Provision, format!("{what} exited {}: {}", out.exit_code, out.stderr.trim()))
            .with_bottle(bottle.slug()))
    }
}

/// Providers by template name.
#[derive(Clone, Default)]
pub struct Providers {
    by_name: BTreeMap<&'static str, Arc<dyn AgentProvider>>,
}

impl Providers {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a provider under its name.
    pub fn register(&mut self, provider: Arc<dyn AgentProvider>) {
        self.by_name.insert(provider.name(), provider);
    }

    /// Template names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.by_name.keys().copied().collect()
    }

    /// The provider for `template`; an unknown one lists the known ones.
    pub fn get(&self, template: &str) -> Result<Arc<dyn AgentProvider>> {
        self.by_name.get(template).cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("unknown agent template `{template}`; known templates: {}", self.names().join(", ")),
            )
        })
    }
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}
