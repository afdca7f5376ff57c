#![doc = include_str!("../README.md")]

mod claude;
mod codex;
mod shell;

use std::sync::Arc;

use bottle_core::Providers;

pub use claude::Claude;
pub use codex::Codex;
pub use shell::Shell;

/// Every built-in provider, ready for `prepare`.
pub fn builtin() -> Providers {
    let mut providers = Providers::new();
    providers.register(Arc::new(Claude));
    providers.register(Arc::new(Codex));
    providers.register(Arc::new(Shell));
    providers
}

/// The built-in template names (for manifest validation).
pub const TEMPLATES: &[&str] = &["claude", "codex", "shell"];

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_core::{AgentProvider, ProvisionInput};

    fn input(resumed: bool, prompt: bool) -> ProvisionInput {
        ProvisionInput {
            slug: "a-1".into(),
            guest_env: Default::default(),
            hidden_env: vec![],
            prompt: prompt.then(|| "/host/prompt.md".into()),
            skills: vec![("review".into(), "/host/skills/review".into())],
            git_identity: None,
            dockerfile_override: None,
            host_ca_bundle: None,
            resumed,
        }
    }

    #[test]
    fn registry_matches_templates_and_bundled_images_use_the_declared_user() {
        let providers = builtin();
        assert_eq!(providers.names(), TEMPLATES);
        for name in TEMPLATES {
            let p = providers.get(name).expect("registered");
            let dockerfile = p.bundled_dockerfile();
            assert!(dockerfile.contains(&format!("USER {}", p.guest_user())), "{name}: USER line");
            assert!(dockerfile.contains(&format!("WORKDIR {}", p.guest_home())), "{name}: WORKDIR line");
            assert!(dockerfile.contains(bottle_core::HOST_CA_CONTEXT_FILE), "{name}: takes the host CA bundle");
            assert!(dockerfile.contains("FROM debian:bookworm-slim"), "{name}: builds from the offline base");
            assert_ne!(p.guest_user(), "root");
        }
    }

    #[test]
    fn argv_per_provider() {
        let claude = Claude.build_provision_plan(input(true, true)).expect("plan");
        assert_eq!(
            Claude.agent_argv(&claude, &["-p".into(), "hi".into()]),
            ["claude", "--append-system-prompt-file", "/home/node/.bot-bottle/prompt.md", "--continue", "-p", "hi"]
        );
        assert_eq!(claude.resume_paths, ["/home/node/.claude", "/home/node/.claude.json"]);
        assert_eq!(claude.skills[0].guest, "/home/node/.claude/skills/review");
        let fresh = Claude.build_provision_plan(input(false, false)).expect("plan");
        assert_eq!(Claude.agent_argv(&fresh, &[]), ["claude"]);
        let codex = Codex.build_provision_plan(input(true, true)).expect("plan");
        assert_eq!(Codex.agent_argv(&codex, &[]), ["codex", "resume", "--last"]);
        assert_eq!(codex.prompt.expect("prompt").guest, "/home/node/.codex/AGENTS.md");
        let shell = Shell.build_provision_plan(input(false, false)).expect("plan");
        assert_eq!(Shell.agent_argv(&shell, &["-c".into(), "id".into()]), ["bash", "-l", "-c", "id"]);
        assert_eq!(shell.workdir, "/home/agent/workspace");
        assert_eq!(shell.instance_name, "bb-a-1");
    }
}
