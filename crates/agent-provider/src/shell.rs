//! The `shell` provider: a login bash as a non-root user, for humans and tests.

use async_trait::async_trait;
use bottle_core::provider::AgentProvider;

/// A plain bash shell.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shell;

#[async_trait]
impl AgentProvider for Shell {
    fn name(&self) -> &'static str {
        "shell"
    }
    fn bundled_dockerfile(&self) -> &'static str {
        include_str!("../dockerfiles/shell.Dockerfile")
    }
    fn guest_user(&self) -> &'static str {
        "agent"
    }
    fn guest_home(&self) -> &'static str {
        "/home/agent"
    }
    fn base_argv(&self) -> Vec<String> {
        vec!["bash".into(), "-l".into()]
    }
    fn resume_paths(&self) -> &'static [&'static str] {
        &[".bash_history"]
    }
}
