//! Manifest commands: bad manifests exit 1 with `file:line:col` and a fix;
//! a good one prints its summary; the schema is JSON Schema.

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
