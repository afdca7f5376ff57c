//! The backend against the fake API server (`fake.rs`): a launch creates
//! the objects in order, each owned by the anchor; agent-sandbox found by
//! discovery makes the agent a Sandbox; `list active`, `remove` and
//! `cleanup` go by labels; and the error paths — a 403 on create, an image
//! the cluster cannot pull, a Pod that never becomes ready, a watch that
//! drops — each give one clear line and leave nothing behind.
//!
//! The fake cannot upgrade a connection to a WebSocket, so these launches
//! say `unenforced_ok: true` (the NetworkPolicy probe runs over exec).

use std::collections::HashMap;
use std::time::Duration;

use bottle_core::backend::Backend as _;
use bottle_core::{CommonPlan, StateRoot};
use bottle_k8s::{Cluster, K8sBackend, Timeouts};

use crate::fake::{Fake, Faults};
use crate::render::prepared;

/// A shell bottle in namespace `bb`, probe skipped (see above).
const SHELL: &str = "agents:\n  shell: { bottle: shell }\nbottles:\n  shell:\n    agent_provider: { template: shell }\n\
kubernetes:\n  namespace: bb\n  image_registry: registry.example.com/team\n  unenforced_ok: true\n";

struct Setup {
    _dir: tempfile::TempDir,
    backend: K8sBackend,
    fake: Fake,
    common: CommonPlan,
}

fn setup(faults: Faults, ready: Duration) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let common = prepared(dir.path(), Some(SHELL), "shell");
    let (client, fake) = Fake::start(faults);
    let backend = K8sBackend::with_cluster(
        Cluster::with_client(client, "fake"),
        StateRoot::at(dir.path().join("state")),
        Timeouts { ready },
    );
    Setup { _dir: dir, backend, fake, common }
}

/// The requests that change something, as `METHOD collection-or-object`.
fn writes(fake: &Fake) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| !r.starts_with("GET"))
        .map(|r| r.split('?').next().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn a_launch_creates_the_objects_in_order_each_owned_by_the_anchor_and_remove_takes_them_all() {
    let Setup { backend, fake, common, _dir } = setup(Faults::default(), Duration::from_secs(30));
    let slug = common.slug.clone();
    let plan = backend.resolve_plan(common).await.expect("plan");
    let bottle = backend.launch(plan).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bottle.pod(), format!("bb-{slug}-agent"));
    assert_eq!(
        writes(&fake),
        [
            "POST /apis/networking.k8s.io/v1/namespaces/bb/networkpolicies",
            "POST /api/v1/namespaces/bb/configmaps",
            "POST /api/v1/namespaces/bb/secrets",
            "POST /apis/networking.k8s.io/v1/namespaces/bb/networkpolicies",
            "POST /apis/networking.k8s.io/v1/namespaces/bb/networkpolicies",
            "POST /api/v1/namespaces/bb/pods",
            "POST /api/v1/namespaces/bb/pods",
        ],
        "backstop, anchor, what it owns, sidecar Pod, agent Pod"
    );
    let requests = fake.requests();
    assert_eq!(requests[0], "GET /apis/agents.x-k8s.io/v1beta1", "discovery first");
    let anchor = fake.object("bb", "configmaps", &format!("bb-{slug}")).expect("the anchor");
    let uid = anchor["metadata"]["uid"].clone();
    for (plural, name) in [
        ("secrets", format!("bb-{slug}-creds")),
        ("networkpolicies", format!("bb-{slug}-agent")),
        ("networkpolicies", format!("bb-{slug}-sidecar")),
        ("pods", format!("bb-{slug}-sidecar")),
        ("pods", format!("bb-{slug}-agent")),
    ] {
        let object = fake.object("bb", plural, &name).unwrap_or_else(|| panic!("{plural}/{name}"));
        assert_eq!(object["metadata"]["ownerReferences"][0]["uid"], uid, "{plural}/{name} owned by the anchor");
    }
    // The agent reaches its sidecars at the sidecar Pod's IP.
    let sidecar = fake.object("bb", "pods", &format!("bb-{slug}-sidecar")).expect("sidecar");
    let agent = fake.object("bb", "pods", &format!("bb-{slug}-agent")).expect("agent");
    assert_eq!(agent["spec"]["hostAliases"][0]["ip"], sidecar["status"]["podIP"]);
    // The Secret holds the real configuration (the proxy's CA key), never placeholders.
    let secret = fake.object("bb", "secrets", &format!("bb-{slug}-creds")).expect("secret");
    let egress = secret["stringData"]["egress.json"].as_str().unwrap_or_default();
    assert!(egress.contains("PRIVATE KEY"), "the CA key is in the Secret");

    let active = backend.enumerate_active().await.expect("list");
    let listed: Vec<_> = active.iter().map(|a| (a.slug.as_str(), a.status.as_str(), a.backend.as_str())).collect();
    assert_eq!(listed, [(slug.as_str(), "running", "kubernetes")]);
    assert_eq!(active[0].sidecars, HashMap::from([("egress".to_string(), true)]).into_iter().collect());
    backend.attach(&slug).await.expect("attach finds it");

    backend.remove(&slug).await.expect("remove");
    assert_eq!(fake.objects_of(&slug), Vec::<String>::new(), "nothing of the bottle is left");
    assert!(backend.attach(&slug).await.is_err(), "gone");
    backend.remove(&slug).await.expect("removing twice is fine");
}

#[tokio::test]
async fn with_agent_sandbox_installed_the_agent_is_a_sandbox_that_owns_the_rest() {
    let Setup { backend, fake, common, _dir } =
        setup(Faults { agent_sandbox: true, ..Faults::default() }, Duration::from_secs(30));
    let slug = common.slug.clone();
    let plan = backend.resolve_plan(common).await.expect("plan");
    assert!(
        bottle_core::backend::BackendPlan::summary_lines(&plan)
            .iter()
            .any(|(_, v)| v.contains("agent-sandbox Sandbox")),
        "the preflight says agent-sandbox is used"
    );
    let bottle = backend.launch(plan).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bottle.pod(), format!("bb-{slug}"), "the controller's Pod");
    let writes = writes(&fake);
    assert_eq!(writes[1], "POST /apis/agents.x-k8s.io/v1beta1/namespaces/bb/sandboxes", "{writes:?}");
    assert_eq!(
        writes.last().map(String::as_str),
        Some(format!("PATCH /apis/agents.x-k8s.io/v1beta1/namespaces/bb/sandboxes/bb-{slug}").as_str())
    );
    assert!(!writes.iter().any(|w| w.contains("configmaps")), "no ConfigMap anchor: {writes:?}");
    let sandbox = fake.object("bb", "sandboxes", &format!("bb-{slug}")).expect("the sandbox");
    assert_eq!(sandbox["spec"]["operatingMode"], "Running");
    let sidecar = fake.object("bb", "pods", &format!("bb-{slug}-sidecar")).expect("sidecar");
    assert_eq!(sidecar["metadata"]["ownerReferences"][0]["kind"], "Sandbox");
    assert_eq!(sandbox["spec"]["podTemplate"]["spec"]["hostAliases"][0]["ip"], sidecar["status"]["podIP"]);
    assert_eq!(sandbox["spec"]["podTemplate"]["spec"]["automountServiceAccountToken"], false);
    backend.remove(&slug).await.expect("remove");
    assert_eq!(fake.objects_of(&slug), Vec::<String>::new(), "the Sandbox took its Pod and the rest with it");
}

#[tokio::test]
async fn a_403_on_create_names_the_verb_and_resource_and_leaves_nothing() {
    let Setup { backend, fake, common, _dir } =
        setup(Faults { forbid_create: Some("pods"), ..Faults::default() }, Duration::from_secs(30));
    let slug = common.slug.clone();
    let plan = backend.resolve_plan(common).await.expect("plan");
    let error = backend.launch(plan).await.expect_err("refused").to_string();
    assert!(!error.contains('\n'), "one line: {error}");
    assert!(error.contains("refused to create pods in namespace bb"), "{error}");
    assert!(error.contains("`create` permission on `pods` is missing"), "{error}");
    assert!(error.contains("bottle k8s rbac"), "{error}");
    assert_eq!(fake.objects_of(&slug), Vec::<String>::new(), "what was created is removed");
}

#[tokio::test]
async fn an_image_the_cluster_cannot_pull_is_one_line_naming_image_and_registry() {
    let Setup { backend, fake, common, _dir } =
        setup(Faults { image_pull: true, ..Faults::default() }, Duration::from_secs(30));
    let slug = common.slug.clone();
    let plan = backend.resolve_plan(common).await.expect("plan");
    let image = plan.spec.agent_image.clone();
    let error = backend.launch(plan).await.expect_err("no image").to_string();
    assert!(!error.contains('\n'), "one line: {error}");
    assert!(error.contains(&format!("cannot pull image {image} from registry registry.example.com")), "{error}");
    assert!(error.contains("ErrImagePull") && error.contains("bottle image push"), "{error}");
    assert_eq!(fake.objects_of(&slug), Vec::<String>::new());
}

#[tokio::test]
async fn a_pod_that_never_becomes_ready_times_out_with_its_last_event() {
    let Setup { backend, fake, common, _dir } =
        setup(Faults { never_ready: true, ..Faults::default() }, Duration::from_secs(2));
    let slug = common.slug.clone();
    let plan = backend.resolve_plan(common).await.expect("plan");
    let error = backend.launch(plan).await.expect_err("never ready").to_string();
    assert!(!error.contains('\n'), "one line: {error}");
    assert!(error.contains(&format!("Pod bb-{slug}-sidecar in namespace bb was not ready after 2s")), "{error}");
    assert!(
        error.contains("its last event: FailedScheduling: 0/3 nodes are available: 3 Insufficient memory."),
        "{error}"
    );
    assert_eq!(fake.objects_of(&slug), Vec::<String>::new());
}

#[tokio::test]
async fn a_watch_that_drops_is_followed_by_a_fresh_read() {
    let Setup { backend, fake, common, _dir } =
        setup(Faults { dropped_watches: 2, ..Faults::default() }, Duration::from_secs(30));
    let plan = backend.resolve_plan(common).await.expect("plan");
    backend.launch(plan).await.unwrap_or_else(|e| panic!("{e}"));
    let requests = fake.requests();
    let watches = requests.iter().filter(|r| r.contains("watch=true")).count();
    assert!(watches >= 2, "watched again after each drop: {requests:#?}");
    let watch = requests.iter().find(|r| r.contains("watch=true")).expect("a watch");
    assert!(watch.contains("fieldSelector=metadata.name%3D"), "one object watched: {watch}");
}

#[tokio::test]
async fn cleanup_removes_a_dead_launchers_bottle_and_keeps_a_live_ones() {
    let Setup { backend, fake, common, _dir } = setup(Faults::default(), Duration::from_secs(30));
    let live = common.slug.clone();
    let plan = backend.resolve_plan(common).await.expect("plan");
    // The fixed owner of the test's plan (pid 4242, another host) reads as foreign: make it this process.
    let mut plan = plan;
    let me = bottle_core::backend::Owner::current();
    for (key, value) in [
        (bottle_core::labels::OWNER_HOST, me.host.clone()),
        (bottle_core::labels::OWNER_PID, me.pid.to_string()),
        (bottle_core::labels::OWNER_START, me.pid_start.to_string()),
    ] {
        plan.spec.annotations.insert(key.to_string(), value);
    }
    backend.launch(plan).await.unwrap_or_else(|e| panic!("{e}"));
    // A crashed run's anchor: its launcher (this host, a pid that never started then) is gone.
    let dead = "shell-deadbeef";
    fake.insert(
        "/api/v1/namespaces/bot-bottle/configmaps",
        serde_json::json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": format!("bb-{dead}"), "namespace": "bot-bottle", "uid": "dead-uid",
            "labels": { "app.kubernetes.io/managed-by": "bot-bottle", "bot-bottle.dev/sandbox": dead },
            "annotations": { "dev.bot-bottle.owner-host": me.host, "dev.bot-bottle.owner-pid": me.pid.to_string(),
                "dev.bot-bottle.owner-start": (me.pid_start + 1).to_string(), "dev.bot-bottle.created-ms": "1" } } }),
    );
    let plan = backend.prepare_cleanup().await.expect("prepare");
    let slugs = bottle_core::backend::CleanupPlan::slugs(&plan);
    assert_eq!(slugs, [dead.to_string()], "only the dead launcher's bottle");
    backend.cleanup(plan).await.expect("cleanup");
    assert_eq!(fake.objects_of(dead), Vec::<String>::new());
    assert!(!fake.objects_of(&live).is_empty(), "the live bottle is kept");
}

#[tokio::test]
async fn the_preflight_names_cluster_namespace_runtime_class_agent_sandbox_and_the_policy_need() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = SHELL.replace("  unenforced_ok: true\n", "  unenforced_ok: true\n  runtime_class: gvisor\n");
    let common = prepared(dir.path(), Some(&text), "shell");
    let (client, _fake) = Fake::start(Faults { agent_sandbox: true, ..Faults::default() });
    let backend = K8sBackend::with_cluster(
        Cluster::with_client(client, "context kind-bots"),
        StateRoot::at(dir.path().join("state")),
        Timeouts::default(),
    );
    let plan = backend.resolve_plan(common).await.expect("plan");
    let lines: HashMap<String, String> = bottle_core::backend::BackendPlan::summary_lines(&plan).into_iter().collect();
    assert!(lines["cluster"].starts_with("context kind-bots"), "{lines:?}");
    assert_eq!(lines["namespace"], "bb");
    assert_eq!(lines["runtime class"], "gvisor");
    assert!(lines["agent runs as"].contains("agent-sandbox is installed"), "{lines:?}");
    assert!(lines["network"].contains("network plugin that enforces NetworkPolicy"), "{lines:?}");
    assert!(lines["WARNING"].contains("unenforced_ok: true"), "loud when enforcement is waived: {lines:?}");
    assert!(lines["agent image"].starts_with("registry.example.com/team/bot-bottle/shell:"), "{lines:?}");
}

#[tokio::test]
async fn a_namespace_this_user_may_not_look_into_is_passed_over_by_list_and_cleanup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, fake) = Fake::start(Faults { forbid_list: Some("pods"), ..Faults::default() });
    let backend = K8sBackend::with_cluster(
        Cluster::with_client(client, "someone else's cluster"),
        StateRoot::at(dir.path().join("state")),
        Timeouts::default(),
    );
    backend.is_available().await.expect("the cluster answers");
    assert_eq!(backend.enumerate_active().await.expect("list passes over it"), Vec::new());
    let forbidden_configmaps = Faults { forbid_list: Some("configmaps"), ..Faults::default() };
    let (client, _other) = Fake::start(forbidden_configmaps);
    let backend = K8sBackend::with_cluster(
        Cluster::with_client(client, "someone else's cluster"),
        StateRoot::at(dir.path().join("state")),
        Timeouts::default(),
    );
    let plan = backend.prepare_cleanup().await.expect("cleanup passes over it");
    assert!(bottle_core::backend::CleanupPlan::is_empty(&plan));
    assert!(fake.requests().iter().any(|r| r.starts_with("GET /api/v1/namespaces/bot-bottle/pods")), "it looked");
}
