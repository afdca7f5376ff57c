//! The rendered objects: golden files (compared as parsed JSON values) for
//! the default `shell` agent, a `claude` agent with egress routes and a git
//! upstream, and the agent-sandbox variant; every "restricted" field of the
//! agent Pod; NetworkPolicies that allow exactly the sidecar ports; each
//! object read back through its k8s-openapi type unchanged (a misspelt
//! field would be dropped); and no secret in what is printed.
//!
//! `BOT_BOTTLE_BLESS=1` rewrites the golden files from what is rendered.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bottle_core::backend::Owner;
use bottle_core::sidecar::ClientToken;
use bottle_core::{BottleSpec, CommonPlan, Host, Manifest, StateRoot};
use bottle_k8s::ImageTags;
use bottle_k8s::render::{self, Mode, Objects};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodSpec, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::Value;

/// The secret values the host holds, which no rendered text may contain.
pub(crate) const API_KEY: &str = "sk-ant-test-secret-1";
pub(crate) const GH_TOKEN: &str = "ghp_test_secret_2";
pub(crate) const DEPLOY_KEY: &str =
    "-----BEGIN OPENSSH PRIVATE KEY-----\ntest-deploy-key\n-----END OPENSSH PRIVATE KEY-----\n";

/// The claude bottle: egress routes (one to a private address) and a git upstream.
pub(crate) const CLAUDE: &str = r#"agents:
  coder: { bottle: dev }
bottles:
  dev:
    agent_provider: { template: claude, auth_token: ANTHROPIC_API_KEY }
    egress:
      - host: api.github.com
        methods: [GET]
        ports: [443]
        auth: { scheme: bearer, from_host: GH_TOKEN }
      - host: 10.1.2.3
        ports: [8443]
    git:
      - Name: project
        Host: github.com
        Repo: org/project.git
        IdentityFile: ./deploy_key
        push: { branches: ["agent/*"] }
kubernetes:
  namespace: agents
  runtime_class: gvisor
  image_registry: registry.example.com/team
  node_selector: { pool: sandboxes }
"#;

/// `agent` of `manifest` (the embedded default when `None`) prepared for
/// this backend in `dir`, with its random parts (slug, owner, token) fixed.
pub(crate) fn prepared(dir: &Path, manifest: Option<&str>, agent: &str) -> CommonPlan {
    let providers = agent_provider::builtin();
    let manifest = match manifest {
        Some(text) => {
            let file = dir.join("bot-bottle.yaml");
            std::fs::write(&file, text).expect("write the manifest");
            std::fs::write(dir.join("deploy_key"), DEPLOY_KEY).expect("write the key");
            Manifest::parse(text, &file, &providers.names()).unwrap_or_else(|e| panic!("{e}"))
        }
        None => Manifest::embedded_default(&providers.names()),
    };
    let home = dir.join("home");
    std::fs::create_dir_all(&home).expect("mkdir home");
    let env = [("ANTHROPIC_API_KEY", API_KEY), ("GH_TOKEN", GH_TOKEN), ("HOME", home.to_str().expect("utf-8"))];
    let host = Host {
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        home,
        state: StateRoot::at(dir.join("state")),
    };
    let mut spec = BottleSpec::new(Arc::new(manifest), agent, dir.join("work"));
    spec.host_ca = false;
    let mut common = bottle_core::prepare(&spec, &providers, &host, bottle_k8s::NAME).unwrap_or_else(|e| panic!("{e}"));
    common.slug = format!("{agent}-0123abcd");
    common.state_dir = host.state.bottle_dir(&common.slug);
    std::fs::create_dir_all(&common.state_dir).expect("mkdir state");
    common.owner = Owner { host: "host.example".into(), pid: 4242, pid_start: 7, created_ms: 1_700_000_000_000 };
    common.client_token = ClientToken::from_value("0123456789abcdef");
    common
}

/// Image tags with the hash fixed (it is the content's: checked apart).
pub(crate) fn tags(common: &CommonPlan) -> ImageTags {
    let repository = &common.provision.image.repository;
    ImageTags { agent: format!("{repository}:HASH"), sidecar: "bot-bottle/sidecar:HASH".into() }
}

/// The objects of `common`'s bottle in `mode` as printed (secrets as
/// placeholders), the image fixed (its tag is the bundled Dockerfile's
/// hash, checked apart) and an anchor UID and sidecar IP set, as at launch.
pub(crate) fn objects(common: &CommonPlan, mode: Mode) -> Objects {
    let wiring = bottle_k8s::plan::wiring(common.git_gate.is_needed());
    let mut spec = bottle_k8s::plan::spec(common, &wiring, mode, true, &tags(common)).unwrap_or_else(|e| panic!("{e}"));
    spec.anchor_uid = Some("00000000-0000-4000-8000-000000000001".into());
    spec.sidecar_ip = Some("10.244.0.7".into());
    render::render(&spec)
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.yaml"))
}

/// `objects` against golden file `name`, as parsed values.
#[track_caller]
fn golden(name: &str, objects: &Objects) {
    let rendered = objects.to_yaml();
    let path = golden_path(name);
    if std::env::var_os("BOT_BOTTLE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("a folder")).expect("mkdir");
        std::fs::write(&path, &rendered).expect("write the golden file");
    }
    let parse = |text: &str| -> Vec<Value> {
        serde_yaml::Deserializer::from_str(text)
            .map(|doc| serde::Deserialize::deserialize(doc).expect("YAML"))
            .collect()
    };
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with BOT_BOTTLE_BLESS=1 to write it", path.display()));
    let (got, want) = (parse(&rendered), parse(&expected));
    assert_eq!(got.len(), want.len(), "number of objects in {}", path.display());
    for (got, want) in got.iter().zip(&want) {
        assert_eq!(
            got,
            want,
            "{} differs from {} (BOT_BOTTLE_BLESS=1 rewrites it):\n{}",
            got["metadata"]["name"],
            path.display(),
            serde_yaml::to_string(got).unwrap_or_default()
        );
    }
}

#[test]
fn the_default_shell_agent_renders_as_its_golden_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let common = prepared(dir.path(), None, "shell");
    golden("shell", &objects(&common, Mode::Native));
}

#[test]
fn a_claude_agent_with_routes_and_a_git_upstream_renders_as_its_golden_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let common = prepared(dir.path(), Some(CLAUDE), "coder");
    let objects = objects(&common, Mode::Native);
    golden("claude", &objects);
    // The private address a route names is let through, and only it.
    let to = &objects.sidecar_policy["spec"]["egress"][0]["to"];
    assert_eq!(to[2]["ipBlock"]["cidr"], "10.1.2.3/32", "{to}");
    assert_eq!(to.as_array().map(Vec::len), Some(3), "{to}");
}

#[test]
fn the_agent_sandbox_variant_renders_as_its_golden_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let common = prepared(dir.path(), None, "shell");
    let objects = objects(&common, Mode::AgentSandbox);
    golden("shell-agent-sandbox", &objects);
    assert!(objects.agent_pod.is_none(), "the Sandbox holds the agent Pod");
    assert_eq!(objects.anchor["kind"], "Sandbox");
    assert_eq!(objects.sidecar_pod["metadata"]["ownerReferences"][0]["kind"], "Sandbox");
    let template_labels = &objects.anchor["spec"]["podTemplate"]["metadata"]["labels"];
    assert_eq!(template_labels[render::ROLE], render::ROLE_AGENT, "the controller copies these to the Pod");
    assert!(
        template_labels.as_object().is_some_and(|l| l.keys().all(|k| !k.starts_with("agents.x-k8s.io/"))),
        "no label the controller strips"
    );
}

#[tokio::test]
async fn the_images_are_the_content_hashed_tags_under_the_manifests_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let common = prepared(dir.path(), Some(CLAUDE), "coder");
    let (agent, sidecar) = bottle_k8s::plan::contexts(&common).await.expect("contexts");
    let tag = bottle_core::backend::build_context(&common.provision.image).expect("context").tag;
    assert_eq!(agent.tag, tag, "the agent's tag is the Docker backend's");
    let recipe = bottle_core::backend::sidecar_recipe(None).expect("recipe");
    assert_eq!(sidecar.tag, bottle_core::backend::build_context(&recipe).expect("context").tag, "and the sidecar's");
    assert!(sidecar.tag.starts_with("bot-bottle/sidecar:"), "{}", sidecar.tag);
    let wiring = bottle_k8s::plan::wiring(true);
    let tags = ImageTags { agent: agent.tag.clone(), sidecar: sidecar.tag.clone() };
    let spec = bottle_k8s::plan::spec(&common, &wiring, Mode::Native, false, &tags).expect("spec");
    assert_eq!(spec.agent_image, format!("registry.example.com/team/{}", agent.tag));
    assert_eq!(spec.sidecar_image, format!("registry.example.com/team/{}", sidecar.tag));
}

/// The agent Pod's spec in each mode, typed.
fn agent_specs(objects: &Objects) -> Vec<PodSpec> {
    let value = match &objects.agent_pod {
        Some(pod) => pod["spec"].clone(),
        None => objects.anchor["spec"]["podTemplate"]["spec"].clone(),
    };
    vec![serde_json::from_value(value).expect("a PodSpec")]
}

#[test]
fn the_agent_pod_meets_every_restricted_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let claude = prepared(dir.path(), Some(CLAUDE), "coder");
    let other = tempfile::tempdir().expect("tempdir");
    let shell = prepared(other.path(), None, "shell");
    let all = [objects(&claude, Mode::Native), objects(&shell, Mode::Native), objects(&shell, Mode::AgentSandbox)];
    for objects in &all {
        for spec in agent_specs(objects) {
            let pod = spec.security_context.as_ref().expect("a pod securityContext");
            assert_eq!(pod.run_as_non_root, Some(true));
            assert!(pod.run_as_user.is_some_and(|uid| uid != 0), "runAsUser non-zero");
            let seccomp = pod.seccomp_profile.as_ref().expect("seccomp");
            assert_eq!(seccomp.type_, "RuntimeDefault");
            assert_eq!(spec.automount_service_account_token, Some(false), "no service-account token");
            assert_eq!(spec.enable_service_links, Some(false), "no service-link variables");
            assert_eq!(spec.dns_policy.as_deref(), Some("None"), "no cluster DNS");
            for flag in [spec.host_network, spec.host_pid, spec.host_ipc, spec.share_process_namespace] {
                assert_ne!(flag, Some(true), "no host namespaces");
            }
            let containers = spec.containers.iter().chain(spec.init_containers.iter().flatten());
            for container in containers {
                let sc = container.security_context.as_ref().expect("a container securityContext");
                assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", container.name);
                assert_ne!(sc.privileged, Some(true), "{}", container.name);
                let caps = sc.capabilities.as_ref().expect("capabilities");
                assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]), "{}", container.name);
                assert!(caps.add.as_ref().is_none_or(Vec::is_empty), "{}", container.name);
                assert_ne!(sc.run_as_user, Some(0), "{}", container.name);
                assert!(container.ports.as_ref().is_none_or(|p| p.iter().all(|p| p.host_port.is_none())));
                assert!(container.env_from.is_none(), "no env from a Secret or ConfigMap");
                for env in container.env.iter().flatten() {
                    assert!(env.value_from.is_none(), "{} reads nothing from the API", env.name);
                }
            }
            let agent = &spec.containers[0];
            let limits = agent.resources.as_ref().and_then(|r| r.limits.as_ref()).expect("limits");
            assert!(limits.contains_key("cpu") && limits.contains_key("memory"), "{limits:?}");
            for volume in spec.volumes.iter().flatten() {
                assert!(volume.empty_dir.is_some(), "only emptyDirs in the agent Pod: {}", volume.name);
                assert!(volume.secret.is_none() && volume.host_path.is_none(), "{}", volume.name);
            }
        }
    }
    let claude_spec = &agent_specs(&all[0])[0];
    assert_eq!(claude_spec.runtime_class_name.as_deref(), Some("gvisor"), "the manifest's runtime class");
    assert_eq!(claude_spec.node_selector.as_ref().and_then(|n| n.get("pool")).map(String::as_str), Some("sandboxes"));
    let memory =
        &claude_spec.containers[0].resources.as_ref().and_then(|r| r.limits.as_ref()).expect("limits")["memory"];
    assert_eq!(memory.0, claude.limits.memory.0.to_string(), "the manifest's memory");
}

/// The set of (protocol, port) a policy rule's `ports` list holds.
fn ports(rule: &Value) -> BTreeSet<(String, u64)> {
    rule["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| (p["protocol"].as_str().expect("protocol").to_string(), p["port"].as_u64().expect("a port number")))
        .collect()
}

#[test]
fn the_network_policies_allow_exactly_the_sidecar_ports() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (manifest, agent, sidecar_ports) in [(Some(CLAUDE), "coder", vec![3128, 8080]), (None, "shell", vec![3128])] {
        let common = prepared(dir.path(), manifest, agent);
        let objects = objects(&common, Mode::Native);
        let expected: BTreeSet<(String, u64)> = sidecar_ports.iter().map(|p| ("TCP".to_string(), *p)).collect();
        let served: BTreeSet<(String, u64)> = objects.sidecar_pod["spec"]["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .map(|p| ("TCP".to_string(), p["containerPort"].as_u64().expect("port")))
            .collect();
        assert_eq!(served, expected, "the sidecar Pod serves these");
        let agent_policy = &objects.agent_policy["spec"];
        assert_eq!(agent_policy["policyTypes"], serde_json::json!(["Ingress", "Egress"]));
        assert_eq!(agent_policy["ingress"], serde_json::json!([]), "nothing may connect to the agent");
        let egress = agent_policy["egress"].as_array().expect("egress");
        assert_eq!(egress.len(), 1, "one way out: {egress:?}");
        assert_eq!(ports(&egress[0]), expected, "exactly the sidecar ports (so no DNS)");
        assert_eq!(
            egress[0]["to"],
            serde_json::json!([{ "podSelector": { "matchLabels": {
                render::SANDBOX: common.slug, render::ROLE: render::ROLE_SIDECAR } } }]),
            "to the sidecar Pod only"
        );
        let sidecar_policy = &objects.sidecar_policy["spec"];
        let ingress = sidecar_policy["ingress"].as_array().expect("ingress");
        assert_eq!(ingress.len(), 1);
        assert_eq!(ports(&ingress[0]), expected, "the sidecar Pod takes its ports only");
        assert_eq!(
            ingress[0]["from"],
            serde_json::json!([{ "podSelector": { "matchLabels": {
                render::SANDBOX: common.slug, render::ROLE: render::ROLE_AGENT } } }]),
        );
        let egress = sidecar_policy["egress"].as_array().expect("egress");
        if agent == "shell" {
            // No route: nothing out but DNS (an empty `ports` list would allow every port).
            assert_eq!(egress.len(), 1, "{egress:?}");
            assert_eq!(egress[0]["ports"][0]["port"], 53, "{egress:?}");
        } else {
            let except = &egress[0]["to"][0]["ipBlock"]["except"];
            for range in ["169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] {
                assert!(
                    except.as_array().is_some_and(|e| e.contains(&Value::from(range))),
                    "{range} kept off: {except}"
                );
            }
            assert!(egress[0]["ports"].as_array().is_none_or(|p| !p.is_empty()), "never an empty ports list");
        }
        assert_eq!(
            objects.default_deny["spec"],
            serde_json::json!({ "podSelector": {}, "policyTypes": ["Ingress", "Egress"] })
        );
    }
}

#[test]
fn every_object_reads_back_through_its_api_type_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let common = prepared(dir.path(), Some(CLAUDE), "coder");
    let objects = objects(&common, Mode::Native);
    fn same<T: serde::de::DeserializeOwned + serde::Serialize>(value: &Value) {
        let typed: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{e}: {value}"));
        let back = serde_json::to_value(&typed).expect("serialize");
        assert_eq!(&back, value, "a field the API type does not know was dropped");
    }
    same::<NetworkPolicy>(&objects.default_deny);
    same::<ConfigMap>(&objects.anchor);
    same::<Secret>(&objects.secret);
    same::<NetworkPolicy>(&objects.agent_policy);
    same::<NetworkPolicy>(&objects.sidecar_policy);
    same::<Pod>(&objects.sidecar_pod);
    same::<Pod>(objects.agent_pod.as_ref().expect("native"));
    let sandbox = objects_sandbox(&common);
    same::<PodSpec>(&sandbox.anchor["spec"]["podTemplate"]["spec"]);
}

fn objects_sandbox(common: &CommonPlan) -> Objects {
    objects(common, Mode::AgentSandbox)
}

#[tokio::test]
async fn only_the_sidecar_pod_mounts_the_secret_and_the_printed_yaml_holds_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let common = prepared(dir.path(), Some(CLAUDE), "coder");
    let yaml = bottle_k8s::render_yaml(&common, Mode::Native).await.expect("render");
    for secret in [API_KEY, GH_TOKEN, "test-deploy-key", common.client_token.expose(), "PRIVATE KEY"] {
        assert!(!yaml.contains(secret), "`{secret}` printed");
    }
    assert!(yaml.contains(bottle_k8s::plan::TOKEN_PLACEHOLDER), "the token's place is shown");
    let objects = objects(&common, Mode::Native);
    let secret_name = render::secret_name(&common.slug);
    let mounts = |pod: &Value| {
        pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["secret"]["secretName"] == secret_name.as_str())
    };
    assert!(mounts(&objects.sidecar_pod), "the sidecar Pod mounts it");
    assert!(!mounts(objects.agent_pod.as_ref().expect("native")), "the agent Pod does not");
    assert!(!objects.agent_pod.as_ref().expect("native").to_string().contains(&secret_name), "nor names it");
    let files = objects.secret["stringData"].as_object().expect("files");
    assert_eq!(files.keys().collect::<Vec<_>>(), ["egress.json", "git-gate.json"]);
    // Unprinted, the Secret holds the real configurations.
    let wiring = bottle_k8s::plan::wiring(true);
    let real = bottle_k8s::plan::spec(&common, &wiring, Mode::Native, false, &tags(&common)).expect("spec");
    assert!(real.secret_files["egress.json"].contains(GH_TOKEN), "the proxy's credential");
    assert!(real.secret_files["git-gate.json"].contains("test-deploy-key"), "the gate's key");
    assert!(real.env.values().any(|v| v.contains(common.client_token.expose())), "the agent's proxy token");
}

#[test]
fn debug_output_holds_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let common = prepared(dir.path(), Some(CLAUDE), "coder");
    let wiring = bottle_k8s::plan::wiring(true);
    let spec = bottle_k8s::plan::spec(&common, &wiring, Mode::Native, false, &tags(&common)).expect("spec");
    let printed = format!("{spec:?} {:?}", render::render(&spec));
    for secret in [GH_TOKEN, "test-deploy-key", common.client_token.expose(), "PRIVATE KEY"] {
        assert!(!printed.contains(secret), "`{secret}` in {printed}");
    }
    assert!(printed.contains("Secret/bb-coder-0123abcd-creds"), "{printed}");
}

#[test]
fn a_bottle_asking_for_supervise_is_refused_not_run_without_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = "agents:\n  shell:\n    bottle: b\nbottles:\n  b:\n    agent_provider:\n      template: shell\n    supervise: true\n";
    let common = prepared(dir.path(), Some(manifest), "shell");
    let wiring = bottle_k8s::plan::wiring(false);
    let e = bottle_k8s::plan::spec(&common, &wiring, Mode::Native, true, &tags(&common)).expect_err("refused");
    assert_eq!(e.kind(), bottle_core::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("does not run yet") && e.to_string().contains("--backend docker"), "{e}");
}
