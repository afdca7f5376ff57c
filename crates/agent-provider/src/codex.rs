//! The `codex` provider: OpenAI's Codex CLI as user `node`; the prompt becomes
//! its global `AGENTS.md` and resume runs `codex resume --last`.

use async_trait::async_trait;
use bottle_core::AgentProvider;

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
    fn prompt_guest_path(&self) -> String {
        format!("{}/.codex/AGENTS.md", self.guest_home())
    }
}
