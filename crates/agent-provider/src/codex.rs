//! The `codex` provider: OpenAI's Codex CLI as user `node`; the prompt becomes
//! its global `AGENTS.md` and resume runs `codex resume --last`.

use async_trait::async_trait;
use bottle_core::provider::{AgentProvider, AgentRoutes, run_checked, shell_quote, write_supervise_mcp};
use bottle_core::{AgentProviderDef, Bottle, CommonPlan, Error, ErrorKind, GuestUser, Host, Result};

use crate::credentials::{Api, api_key_route, json_string, key_rule};

/// OpenAI's API, as Codex uses it with an API key.
const API: Api = Api { host: "api.openai.com", key_header: ("authorization", "Bearer {}"), key_env: "OPENAI_API_KEY" };

/// OpenAI's Codex CLI.
#[derive(Debug, Clone, Copy, Default)]
pub struct Codex;

#[async_trait]
impl AgentProvider for Codex {
    fn name(&self) -> &'static str {
        "codex"
    }
    fn bundled_dockerfile(&self) -> &'static str {
        include_str!("../dockerfiles/codex.Dockerfile")
    }
    fn guest_user(&self) -> &'static str {
        "node"
    }
    fn guest_home(&self) -> &'static str {
        "/home/node"
    }
    fn base_argv(&self) -> Vec<String> {
        vec!["codex".into()]
    }
    fn hidden_env(&self) -> &'static [&'static str] {
        &["OPENAI_API_KEY", "CODEX_API_KEY"]
    }
    fn resume_paths(&self) -> &'static [&'static str] {
        &[".codex"]
    }
    fn continue_args(&self) -> &'static [&'static str] {
        &["resume", "--last"]
    }
    /// `api.openai.com`, with the API key from `auth_token`'s variable, or
    /// under `forward_host_credentials` the key of the operator's
    /// `codex login --api-key` (`~/.codex/auth.json`).
    fn agent_routes(&self, def: &AgentProviderDef, host: &Host) -> Result<AgentRoutes> {
        let mut routes = AgentRoutes::default();
        if !def.forward_host_credentials {
            api_key_route(&API, def, host, &mut routes)?;
            return Ok(routes);
        }
        let file = host.home.join(".codex/auth.json");
        let key = json_string(&file, "/OPENAI_API_KEY").ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "forward_host_credentials: {} holds no API key login; run `codex login --api-key` on the host \
                     (ChatGPT logins cannot be forwarded yet), or use auth_token",
                    file.display()
                ),
            )
        })?;
        routes.rules.push(key_rule(&API, &key, "~/.codex/auth.json".into()));
        routes.hidden_env.push(API.key_env.into());
        Ok(routes)
    }

    fn prompt_guest_path(&self) -> String {
        format!("{}/.codex/AGENTS.md", self.guest_home())
    }

    /// Register the supervise server in `~/.codex/config.toml`'s
    /// `mcp_servers` (streamable HTTP, the token read from
    /// `BOT_BOTTLE_SUPERVISE_TOKEN`, never written in the file).
    async fn provision_supervise(&self, bottle: &dyn Bottle, plan: &CommonPlan, url: &str) -> Result<()> {
        write_supervise_mcp(bottle, plan, url).await?;
        let toml = format!(
            "\n# The bottle's supervise server (written by bot-bottle).\n[mcp_servers.{}]\nurl = {url:?}\n\
             bearer_token_env_var = \"{}\"\n",
            bottle_core::supervise::SERVER_NAME,
            bottle_core::supervise::TOKEN_ENV,
        );
        let home = &plan.provision.guest_home;
        let script =
            format!("mkdir -p {home}/.codex && printf '%s' {} >> {home}/.codex/config.toml", shell_quote(&toml));
        run_checked(bottle, &script, GuestUser::Agent, "registering the supervise MCP server in ~/.codex/config.toml")
            .await
    }
}
