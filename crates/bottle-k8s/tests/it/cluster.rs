//! Against a real cluster, when `BOT_BOTTLE_TEST_KUBECONFIG` names its
//! kubeconfig (and `BOT_BOTTLE_TEST_K8S_REGISTRY` the registry holding the
//! images `bottle image push` pushed), in namespace `bot-bottle-test`
//! (made beforehand, labelled `pod-security.kubernetes.io/enforce=restricted`
//! so that admission is checked): what no fake can show — Pod Security
//! admission of the agent Pod, the enforcement probe passing on
//! an enforcing network plugin, exec as a non-root user, no DNS inside,
//! and removal leaving nothing. Without the variable it prints one line of
//! what it would check.

use std::time::Duration;

use bottle_core::backend::Backend as _;
use bottle_core::{Bottle as _, GuestUser, StateRoot};
use bottle_k8s::{Cluster, K8sBackend, Timeouts};

use crate::render::prepared;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_real_cluster_a_bottle_is_admitted_sealed_and_removed() {
    let Some(kubeconfig) = std::env::var_os("BOT_BOTTLE_TEST_KUBECONFIG") else {
        println!(
            "skipped: set BOT_BOTTLE_TEST_KUBECONFIG (and BOT_BOTTLE_TEST_K8S_REGISTRY) to check on a real cluster \
             that the agent Pod is admitted as restricted, the NetworkPolicy probe passes, exec runs non-root \
             without DNS, and removal leaves nothing"
        );
        return;
    };
    let registry = std::env::var("BOT_BOTTLE_TEST_K8S_REGISTRY").unwrap_or_default();
    let registry = if registry.is_empty() { String::new() } else { format!("\n  image_registry: {registry}") };
    let manifest = format!(
        "agents:\n  shell: {{ bottle: shell }}\nbottles:\n  shell:\n    agent_provider: {{ template: shell }}\n\
         kubernetes:\n  namespace: bot-bottle-test{registry}\n"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let common = prepared(dir.path(), Some(&manifest), "shell");
    let slug = common.slug.clone();
    let cluster = Cluster::from_kubeconfig(std::path::Path::new(&kubeconfig)).await.unwrap_or_else(|e| panic!("{e}"));
    let backend = K8sBackend::with_cluster(
        cluster,
        StateRoot::at(dir.path().join("state")),
        Timeouts { ready: Duration::from_secs(300) },
    );
    let plan = backend.resolve_plan(common).await.unwrap_or_else(|e| panic!("{e}"));
    let bottle = backend.launch(plan).await.unwrap_or_else(|e| panic!("{e}"));
    let uid = bottle.exec("id -u", GuestUser::Agent).await.expect("exec");
    assert_eq!((uid.exit_code, uid.stdout.trim()), (0, "1000"), "the agent runs as uid 1000");
    let dns = bottle.exec("getent hosts kubernetes.default.svc.cluster.local", GuestUser::Agent).await.expect("exec");
    assert_ne!(dns.exit_code, 0, "no DNS inside: {}", dns.stdout);
    let token = bottle.exec("test -e /var/run/secrets/kubernetes.io/serviceaccount/token", GuestUser::Agent).await;
    assert_ne!(token.expect("exec").exit_code, 0, "no service-account token");
    bottle_core::Bottle::close(&bottle).await.expect("remove");
    assert!(backend.attach(&slug).await.is_err(), "gone");
}
