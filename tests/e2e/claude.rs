//! The real Claude Code CLI in a real `claude` bottle (its image built from
//! the bundled Dockerfile, Claude Code installed from npm): with
//! `supervise: true`, provisioning registers the supervise server in
//! `~/.claude.json` and `claude mcp list` reports it connected. No
//! Anthropic credential is needed: `mcp list` talks only to the server.

use crate::harness::{World, require_docker, text, write};

#[test]
fn claude_code_sees_the_supervise_server_connected() {
    require_docker();
    let world = World::new();
    let manifest = write(
        &world.path("work"),
        "bot-bottle.yaml",
        "agents:\n  claude:\n    bottle: c\nbottles:\n  c:\n    agent_provider:\n      template: claude\n      \
         auth_token: E2E_FAKE_ANTHROPIC_KEY\n    supervise: true\n",
    );
    let manifest = manifest.to_str().expect("utf8");
    let mut start = world.bottle(&["--manifest", manifest, "start", "claude", "--yes", "--detach"]);
    let out = start.env("E2E_FAKE_ANTHROPIC_KEY", "sk-ant-e2e-not-a-key").output().expect("run bottle start");
    assert!(out.status.success(), "start (the first builds the claude image): {}", text(&out.stderr));
    let slug = text(&out.stdout).trim().to_string();
    world.track(&slug);

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
