//! The real agent CLIs in real bottles (their images built from the bundled
//! Dockerfiles, installed from npm), with `supervise: true`: Claude Code
//! finds the supervise server in `~/.claude.json` and `claude mcp list`
//! reports it connected; Codex finds it in `~/.codex/config.toml` with its
//! token read from the environment. No model credential is needed: these
//! commands talk to no model.

use crate::harness::{World, require_docker, text, write};

#[test]
fn claude_code_sees_the_supervise_server_connected() {
    require_docker();
    let world = World::new();
    let slug = start_supervised(&world, "claude", "claude");

    let listed = world.run(&["exec", &slug, "--", "claude", "mcp", "list"]);
    let listed = text(&listed.stdout) + &text(&listed.stderr);
    let line = listed.lines().find(|l| l.starts_with("bot-bottle-supervise:")).unwrap_or_else(|| panic!("{listed}"));
    assert!(line.contains("http://127.0.0.1:8765/mcp") && line.contains("Connected"), "{listed}");
    let config = world.ok(&["exec", &slug, "--", "sh", "-c", "cat ~/.claude.json"]);
    let config: serde_json::Value = serde_json::from_str(&config).expect("~/.claude.json is JSON");
    assert_eq!(config["mcpServers"]["bot-bottle-supervise"]["type"], "http");
    assert_eq!(config["hasCompletedOnboarding"], true, "the provider's own set-up is kept");
    world.ok(&["stop", &slug]);
}

/// `bottle start AGENT --detach` of a bottle with `template` and
/// `supervise: true`, its credential variable set to a fake; the slug.
fn start_supervised(world: &World, agent: &str, template: &str) -> String {
    let yaml = format!(
        "agents:\n  {agent}:\n    bottle: c\nbottles:\n  c:\n    agent_provider:\n      template: {template}\n      \
         auth_token: E2E_FAKE_MODEL_KEY\n    supervise: true\n"
    );
    let manifest = write(&world.path("work"), "bot-bottle.yaml", &yaml);
    let manifest = manifest.to_str().expect("utf8");
    let mut start = world.bottle(&["--manifest", manifest, "start", agent, "--yes", "--detach"]);
    let out = start.env("E2E_FAKE_MODEL_KEY", "sk-e2e-not-a-key").output().expect("run bottle start");
    assert!(out.status.success(), "start (the first builds the {template} image): {}", text(&out.stderr));
    let slug = text(&out.stdout).trim().to_string();
    world.track(&slug);
    slug
}

#[test]
fn codex_finds_the_supervise_server_with_its_token_from_the_environment() {
    require_docker();
    let world = World::new();
    let slug = start_supervised(&world, "codex", "codex");
    let listed = world.ok(&["exec", &slug, "--", "codex", "mcp", "list"]);
    let line = listed.lines().find(|l| l.starts_with("bot-bottle-supervise ")).unwrap_or_else(|| panic!("{listed}"));
    for field in ["http://127.0.0.1:8765/mcp", "BOT_BOTTLE_SUPERVISE_TOKEN", "enabled"] {
        assert!(line.contains(field), "{field} in: {listed}");
    }
    let config = world.ok(&["exec", &slug, "--", "sh", "-c", "cat ~/.codex/config.toml"]);
    let token = world.ok(&["exec", &slug, "--", "sh", "-c", "printf %s \"$BOT_BOTTLE_SUPERVISE_TOKEN\""]);
    assert_eq!(token.len(), 64, "the token is in the environment");
    assert!(!config.contains(&token), "and not in the file: {config}");
    world.ok(&["stop", &slug]);
}
