//! `bottle image push` with the real Docker Engine: the agent image (built
//! when the engine lacks it) tagged under the manifest's registry, and a
//! registry that does not answer reported on one line naming it.

use std::process::Command;
use std::sync::Arc;

use bottle_core::{BottleSpec, Host, Manifest, StateRoot};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushing_to_a_registry_that_does_not_answer_is_one_line_naming_it() {
    bottle_testkit::fixtures::require_docker();
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = format!("127.0.0.1:9/bb-push-test-{}", std::process::id());
    let text = format!(
        "agents:\n  shell: {{ bottle: shell }}\nbottles:\n  shell:\n    agent_provider: {{ template: shell }}\n\
         kubernetes:\n  image_registry: {registry}\n"
    );
    let file = dir.path().join("bot-bottle.yaml");
    std::fs::write(&file, &text).expect("write the manifest");
    let providers = agent_provider::builtin();
    let manifest = Manifest::parse(&text, &file, &providers.names()).unwrap_or_else(|e| panic!("{e}"));
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("mkdir");
    let host = Host {
        env: [("HOME".to_string(), home.display().to_string())].into(),
        home,
        state: StateRoot::at(dir.path().join("state")),
    };
    let mut spec = BottleSpec::new(Arc::new(manifest), "shell", dir.path().join("work"));
    spec.host_ca = false;
    let error = bottle_k8s::push_agent(&spec, &providers, &host).await.expect_err("nothing answers").to_string();
    // The tag this test made, removed (the image itself is the shared one).
    let tagged = Command::new("docker")
        .args(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])
        .output()
        .expect("docker image ls");
    for tag in String::from_utf8_lossy(&tagged.stdout).lines().filter(|t| t.starts_with(&registry)) {
        let _ = Command::new("docker").args(["image", "rm", tag]).output();
    }
    assert!(!error.contains('\n'), "one line: {error}");
    assert!(error.contains(&format!("pushing {registry}/bot-bottle/shell:")), "{error}");
    assert!(error.contains("check that registry 127.0.0.1:9 answers"), "{error}");
}
