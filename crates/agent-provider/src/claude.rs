//! The `claude` provider: Claude Code as user `node`, with the prompt appended
//! to its system prompt and `--continue` on resume.

use async_trait::async_trait;
use bottle_core::provider::{
    AgentProvider, AgentProvisionPlan, AgentRoutes, run_checked, shell_quote, write_supervise_mcp,
};
use bottle_core::{AgentProviderDef, Bottle, CommonPlan, Error, ErrorKind, GuestUser, Host, Result};

use crate::credentials::{Api, api_key_route, json_string, key_rule};

/// Anthropic's API, as Claude Code uses it with an API key.
const API: Api = Api { host: "api.anthropic.com", key_header: ("x-api-key", "{}"), key_env: "ANTHROPIC_API_KEY" };
/// The same API with the operator's OAuth token (`claude login`).
const OAUTH: Api =
    Api { host: "api.anthropic.com", key_header: ("authorization", "Bearer {}"), key_env: "CLAUDE_CODE_OAUTH_TOKEN" };

/// Anthropic's Claude Code CLI.
#[derive(Debug, Clone, Copy, Default)]
pub struct Claude;

#[async_trait]
impl AgentProvider for Claude {
    fn name(&self) -> &'static str {
        "claude"
    }
    fn bundled_dockerfile(&self) -> &'static str {
        include_str!("../dockerfiles/claude.Dockerfile")
    }
    fn guest_user(&self) -> &'static str {
        "node"
    }
    fn guest_home(&self) -> &'static str {
        "/home/node"
    }
    fn base_argv(&self) -> Vec<String> {
        vec!["claude".into()]
    }
    fn hidden_env(&self) -> &'static [&'static str] {
        &["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"]
    }
    fn resume_paths(&self) -> &'static [&'static str] {
        &[".claude", ".claude.json"]
    }
    fn continue_args(&self) -> &'static [&'static str] {
        &["--continue"]
    }

    /// `api.anthropic.com`, with the operator's OAuth token (`claude login`,
    /// `~/.claude/.credentials.json`) under `forward_host_credentials`, or the
    /// API key from `auth_token`'s variable. Non-essential traffic is off.
    fn agent_routes(&self, def: &AgentProviderDef, host: &Host) -> Result<AgentRoutes> {
        let mut routes = AgentRoutes::default();
        routes.env.insert("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(), "1".into());
        if !def.forward_host_credentials {
            api_key_route(&API, def, host, &mut routes)?;
            return Ok(routes);
        }
        let file = host.home.join(".claude/.credentials.json");
        let token = json_string(&file, "/claudeAiOauth/accessToken").ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "forward_host_credentials: {} holds no Claude login (claudeAiOauth.accessToken); run `claude login` \
                     on the host (on macOS the login is in the Keychain: use auth_token with an API key instead)",
                    file.display()
                ),
            )
        })?;
        routes.rules.push(key_rule(&OAUTH, &token, "~/.claude/.credentials.json".into()));
        routes.hidden_env.push(OAUTH.key_env.into());
        Ok(routes)
    }

    fn agent_argv(&self, plan: &AgentProvisionPlan, extra: &[String]) -> Vec<String> {
        let mut argv = self.base_argv();
        if let Some(prompt) = &plan.prompt {
            argv.extend(["--append-system-prompt-file".to_string(), prompt.guest.clone()]);
        }
        argv.extend(plan.continue_args.iter().cloned());
        argv.extend(extra.iter().cloned());
        argv
    }

    /// Mark onboarding done (unless resumed state brought its own file) so the
    /// first session opens straight into the conversation.
    async fn apply(&self, bottle: &dyn Bottle, plan: &AgentProvisionPlan) -> Result<()> {
        let script = format!(
            "test -e {home}/.claude.json || printf '%s\\n' '{{\"hasCompletedOnboarding\": true}}' > {home}/.claude.json",
            home = plan.guest_home
        );
        run_checked(bottle, &script, GuestUser::Agent, "writing ~/.claude.json").await
    }

    /// Register the supervise server in `~/.claude.json`'s `mcpServers`
    /// (user scope, type `http`), merged by Node (which Claude Code runs
    /// on) from the JSON file that holds the token.
    async fn provision_supervise(&self, bottle: &dyn Bottle, plan: &CommonPlan, url: &str) -> Result<()> {
        let file = write_supervise_mcp(bottle, plan, url).await?;
        let script = format!(
            "node -e {}",
            shell_quote(&format!(
                "const fs = require('fs'); const f = {claude:?}; let c = {{}}; \
                 try {{ c = JSON.parse(fs.readFileSync(f, 'utf8')); }} catch (e) {{}} \
                 c.mcpServers = c.mcpServers || {{}}; \
                 c.mcpServers[{name:?}] = JSON.parse(fs.readFileSync({file:?}, 'utf8')); \
                 fs.writeFileSync(f, JSON.stringify(c, null, 2));",
                claude = format!("{}/.claude.json", plan.provision.guest_home),
                name = bottle_core::supervise::SERVER_NAME,
            ))
        );
        run_checked(bottle, &script, GuestUser::Agent, "registering the supervise MCP server in ~/.claude.json").await
    }
}
