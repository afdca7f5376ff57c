//! The Kubernetes backend's own commands, with no cluster: `bottle k8s
//! render` prints every object of a bottle (secrets as placeholders, and
//! nothing of the bottle left in the state folder), `bottle k8s rbac` the
//! Role, `bottle image push` without a registry says where to name one,
//! and `--backend k8s` without a cluster says how to configure one.

use crate::harness::{World, text, write};

/// The `kind:` of each top-level YAML document in `yaml`.
fn kinds(yaml: &str) -> Vec<&str> {
    yaml.lines().filter_map(|l| l.strip_prefix("kind: ")).collect()
}

#[test]
fn render_prints_every_object_with_secrets_as_placeholders_and_leaves_nothing() {
    let mut world = World::new();
    world.set_env("BOT_TEST_GH_TOKEN", "ghp_e2e_secret_value");
    let manifest = write(
        &world.path("work"),
        "k8s.yaml",
        "agents:\n  dev: { bottle: dev }\nbottles:\n  dev:\n    agent_provider: { template: shell }\n    egress:\n      \
         - host: api.github.com\n        ports: [443]\n        auth: { scheme: bearer, from_host: BOT_TEST_GH_TOKEN }\n\
         kubernetes:\n  namespace: agents\n  image_registry: registry.example.com/team\n",
    );
    let m = manifest.to_str().expect("utf8");
    let yaml = world.ok(&["--manifest", m, "k8s", "render", "dev"]);
    assert_eq!(
        kinds(&yaml),
        ["NetworkPolicy", "ConfigMap", "Secret", "NetworkPolicy", "NetworkPolicy", "Pod", "Pod"],
        "{yaml}"
    );
    assert!(yaml.contains("namespace: agents") && yaml.contains("image: registry.example.com/team/bot-bottle/shell:"));
    assert!(!yaml.contains("ghp_e2e_secret_value"), "no secret printed:\n{yaml}");
    assert!(yaml.contains("CLIENT-TOKEN"), "the token's place is shown");
    let sandbox = world.ok(&["--manifest", m, "k8s", "render", "dev", "--agent-sandbox"]);
    assert_eq!(kinds(&sandbox), ["NetworkPolicy", "Sandbox", "Secret", "NetworkPolicy", "NetworkPolicy", "Pod"]);
    let stopped = world.ok(&["list", "stopped"]);
    assert!(!stopped.contains("dev-"), "render leaves no bottle behind: {stopped}");
}

#[test]
fn rbac_prints_the_role_and_its_binding() {
    let world = World::new();
    let yaml = world.ok(&["k8s", "rbac", "--namespace", "team-a", "--user", "alice"]);
    assert_eq!(kinds(&yaml), ["Role", "RoleBinding"], "{yaml}");
    assert!(yaml.contains("namespace: team-a") && yaml.contains("name: alice"), "{yaml}");
    assert!(yaml.contains("pods/exec"), "{yaml}");
}

#[test]
fn without_a_registry_or_a_cluster_the_kubernetes_commands_say_what_to_set() {
    let world = World::new();
    let push = world.run(&["image", "push", "shell"]);
    assert_eq!(push.status.code(), Some(1));
    let err = text(&push.stderr);
    assert!(err.contains("kubernetes: { image_registry:"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let start =
        world.bottle(&["--backend", "k8s", "start", "shell", "--yes"]).env_remove("KUBECONFIG").output().expect("run");
    assert_ne!(start.status.code(), Some(0));
    let err = text(&start.stderr);
    assert!(err.contains("no Kubernetes cluster configured") && err.contains("KUBECONFIG"), "{err}");
}
