//! The `claude` provider: Claude Code as user `node`, with the prompt appended
//! to its system prompt and `--continue` on resume.

use async_trait::async_trait;
use bottle_core::{AgentProvider, AgentProvisionPlan, Bottle, GuestUser, Result, run_checked};

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
}
