//! Manifest commands: bad manifests exit 1 with `file:line:col` and a fix;
//! a good one prints its summary; the schema is JSON Schema. A bottle's env
//! too large to exec with is refused by `manifest check`; a host variable
//! that is not set is a warning there and a refusal at `start`, both at its line.

use std::time::{Duration, Instant};

use crate::harness::{World, text, write};

#[test]
fn bad_manifests_exit_1_with_positions_and_fixes() {
    let world = World::new();
    let path = write(
        &world.path("work"),
        "bad.yaml",
        "agents:\n  reviewer:\n    bottel: dev\nbottles:\n  dev:\n    agent_provider:\n      template: clod\n",
    );
    let p = path.to_str().expect("utf8");
    for args in [vec!["--manifest", p, "manifest", "check"], vec!["--manifest", p, "start", "reviewer", "--yes"]] {
        let out = world.run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(&format!("{p}:3:5")), "unknown key at its position: {err}");
        assert!(err.contains("bottle"), "suggests the right key: {err}");
        assert!(err.contains(&format!("{p}:7:17")), "bad template at its position: {err}");
        assert!(err.contains("claude") && err.contains("shell"), "lists the known templates: {err}");
    }
}

#[test]
fn good_manifest_check_prints_a_summary_and_schema_is_json() {
    let world = World::new();
    let out = world.ok(&["manifest", "check"]);
    assert!(out.contains("valid") && out.contains("shell"), "{out}");
    let schema: serde_json::Value = serde_json::from_str(&world.ok(&["manifest", "schema"])).expect("schema is JSON");
    assert!(schema["properties"]["agents"].is_object(), "{schema}");
    assert!(world.ok(&["list", "agents"]).contains("shell"));
    assert!(world.ok(&["completions", "bash"]).contains("bottle"));
}

#[test]
fn an_env_over_the_limit_is_refused_by_check_quickly_with_its_position() {
    let world = World::new();
    let entries: String = (0..5000).map(|i| format!("      VAR_{i}: value-{i}\n")).collect();
    let yaml = format!(
        "agents:\n  dev: {{ bottle: dev }}\nbottles:\n  dev:\n    agent_provider: {{ template: shell }}\n    env:\n{entries}"
    );
    let path = write(&world.path("work"), "big.yaml", &yaml);
    let p = path.to_str().expect("utf8");
    let started = Instant::now();
    let out = world.run(&["--manifest", p, "manifest", "check"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "stdout: {}", text(&out.stdout));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{p}:6:5: `bottles.dev.env` has 5000 entries, more than the 4096 a bottle may have")),
        "at the `env` key, with the limit: {err}"
    );
    assert!(err.contains("what Linux lets a process exec with"), "says why: {err}");
    assert!(err.lines().count() <= 2, "one error, not one per entry: {err}");
}

#[test]
fn an_unset_host_variable_warns_in_check_and_refuses_start_at_its_line() {
    const UNSET: &str = "BOT_BOTTLE_E2E_SURELY_UNSET";
    let world = World::new();
    let yaml = format!(
        "agents:\n  dev: {{ bottle: dev }}\nbottles:\n  dev:\n    agent_provider: {{ template: shell }}\n    env:\n      \
         API_KEY: {{ from_host: {UNSET}, secret: true }}\n    egress:\n      - host: api.example.com\n        \
         auth: {{ scheme: bearer, from_host: {UNSET} }}\n"
    );
    let path = write(&world.path("work"), "unset.yaml", &yaml);
    let p = path.to_str().expect("utf8");
    let env = format!("{p}:7:29: host variable `{UNSET}` is not set (used by bottle dev, env API_KEY)");
    let route =
        format!("{p}:10:44: host variable `{UNSET}` is not set (used by bottle dev, egress route api.example.com)");

    let mut check = world.bottle(&["--manifest", p, "manifest", "check"]);
    let out = check.env_remove(UNSET).output().expect("run bottle");
    assert_eq!(out.status.code(), Some(0), "the manifest is valid: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("valid"), "{}", text(&out.stdout));
    let warnings: Vec<String> = text(&out.stderr).lines().map(str::to_string).collect();
    let refuses = "; `bottle start` of an agent using it will refuse to start";
    assert_eq!(warnings, [format!("warning: {env}{refuses}"), format!("warning: {route}{refuses}")]);

    let mut start = world.bottle(&["--manifest", p, "start", "dev", "--yes"]);
    let out = start.env_remove(UNSET).output().expect("run bottle");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: ") && err.contains(&env) && err.contains(&route), "{err}");
}
