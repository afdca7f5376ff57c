#![doc = include_str!("../README.md")]

mod claude;
mod codex;
mod credentials;
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
    use bottle_core::provider::{AgentProvider, ProvisionInput};

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
            image_archive: None,
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
            assert!(
                dockerfile.contains(bottle_core::provider::HOST_CA_CONTEXT_FILE),
                "{name}: takes the host CA bundle"
            );
            assert!(dockerfile.contains("FROM debian:bookworm-slim"), "{name}: builds from the offline base");
            assert!(
                dockerfile.split_whitespace().any(|w| w.trim_end_matches(';') == "tmux"),
                "{name}: installs tmux, which runs the agent's session"
            );
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
    }

    fn host(home: &std::path::Path, env: &[(&str, &str)]) -> bottle_core::Host {
        bottle_core::Host {
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            home: home.to_path_buf(),
            state: bottle_core::StateRoot::at(home.join("state")),
        }
    }

    fn def(forward: bool, auth_token: Option<&str>) -> bottle_core::AgentProviderDef {
        bottle_core::AgentProviderDef {
            template: "claude".into(),
            dockerfile: None,
            image_archive: None,
            forward_host_credentials: forward,
            auth_token: auth_token.map(str::to_string),
        }
    }

    #[test]
    fn agent_credentials_go_to_the_proxy_and_the_agent_sees_a_sentinel() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let with_key = host(tmp.path(), &[("MY_KEY", "sk-ant-123")]);
        let routes = Claude.agent_routes(&def(false, Some("MY_KEY")), &with_key).expect("routes");
        let rule = &routes.rules[0];
        assert_eq!(rule.host, "api.anthropic.com");
        let inject = rule.inject.as_ref().expect("injects");
        assert_eq!(
            (inject.name.as_str(), inject.value.expose(), inject.source.as_str()),
            ("x-api-key", "sk-ant-123", "$MY_KEY")
        );
        assert_eq!(inject.credential.expose(), "sk-ant-123");
        assert_eq!(inject.sentinels, ["bot-bottle-hidden:ANTHROPIC_API_KEY"], "the sentinel the agent sees");
        assert!(rule.ports.is_empty() && !rule.insecure_http, "TLS to 443 only");
        assert_eq!(routes.hidden_env, ["ANTHROPIC_API_KEY"]);
        let missing = Claude.agent_routes(&def(false, Some("NOPE")), &with_key).expect_err("unset");
        assert!(missing.to_string().contains("NOPE"), "{missing}");
        let open = Claude.agent_routes(&def(false, None), &with_key).expect("routes");
        assert!(open.rules[0].inject.is_none() && open.hidden_env.is_empty());

        let err = Claude.agent_routes(&def(true, None), &with_key).expect_err("no login file");
        assert!(err.to_string().contains("claude login"), "{err}");
        std::fs::create_dir_all(tmp.path().join(".claude")).expect("mkdir");
        std::fs::write(tmp.path().join(".claude/.credentials.json"), r#"{"claudeAiOauth":{"accessToken":"oat-9"}}"#)
            .expect("write");
        let routes = Claude.agent_routes(&def(true, None), &with_key).expect("routes");
        let inject = routes.rules[0].inject.as_ref().expect("injects");
        assert_eq!((inject.name.as_str(), inject.value.expose()), ("authorization", "Bearer oat-9"));
        assert_eq!(
            (inject.credential.expose(), inject.sentinels.as_slice()),
            ("oat-9", &["bot-bottle-hidden:CLAUDE_CODE_OAUTH_TOKEN".to_string()][..])
        );
        assert_eq!(routes.hidden_env, ["CLAUDE_CODE_OAUTH_TOKEN"]);

        std::fs::create_dir_all(tmp.path().join(".codex")).expect("mkdir");
        std::fs::write(tmp.path().join(".codex/auth.json"), r#"{"OPENAI_API_KEY":"sk-oa-1"}"#).expect("write");
        let routes = Codex.agent_routes(&def(true, None), &with_key).expect("routes");
        let inject = routes.rules[0].inject.as_ref().expect("injects");
        assert_eq!((routes.rules[0].host.as_str(), inject.value.expose()), ("api.openai.com", "Bearer sk-oa-1"));
        assert_eq!(inject.sentinels, ["bot-bottle-hidden:OPENAI_API_KEY"]);
        assert_eq!(routes.hidden_env, ["OPENAI_API_KEY"]);
        assert!(Shell.agent_routes(&def(true, None), &with_key).expect("none").rules.is_empty());
    }
}
