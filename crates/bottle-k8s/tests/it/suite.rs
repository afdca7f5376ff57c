//! The conformance suite (`bottle-testkit`) against this backend, through
//! kube-rs's mock service: the recording fake API server (`fake.rs`) with
//! its kubelet running each Pod as Docker containers (`kubelet.rs`), exec
//! over the `v5.channel.k8s.io` WebSocket as `docker exec` in them. The
//! bottle's images are the content-hashed ones the Docker backend builds,
//! built in the local engine when missing (`bottle_k8s::build_images`).
//!
//! Each case's process has its own fake (the mock service lives in the
//! process), so the cases whose helper processes act on the case's bottles
//! (a killed launcher, a stop elsewhere) need what it lacks
//! ([`Capability::SharedEngine`]) and are skipped, as are those of what the
//! backend or the fake does not do (see [`K8s::lacks`] and the README).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bottle_core::{BottleSpec, Host, Manifest, Registry, Sidecar, StateRoot};
use bottle_k8s::{Cluster, K8sBackend, Timeouts};
use bottle_testkit::{Capability, Target, World, fixtures};

use crate::fake::{Fake, Faults};
use crate::kubelet::DockerKubelet;

/// The namespace of the default manifest's bottles.
const NAMESPACE: &str = "bot-bottle";

/// The Kubernetes backend, against the fake API server and its Docker kubelet.
struct K8s;

/// The case process's fake and its kubelet, made by [`K8s::registry`].
static FAKE: OnceLock<(Fake, Arc<DockerKubelet>)> = OnceLock::new();

/// The runtime the fake API server (and kube's request buffer) runs on,
/// apart from the case's own, for as long as the case's process lives.
fn fake_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a tokio runtime")
    })
}

fn fake() -> &'static (Fake, Arc<DockerKubelet>) {
    FAKE.get().expect("the case's registry made the fake")
}

impl Target for K8s {
    fn name(&self) -> &'static str {
        bottle_k8s::NAME
    }

    fn require(&self) {
        fixtures::require_docker();
    }

    fn prepare_world(&self, _dir: &Path) -> Vec<(String, String)> {
        Vec::new()
    }

    fn registry(&self, state: &StateRoot) -> Registry {
        // The images the cluster would pull: the default manifest's, as the case's host builds them.
        let host = Host::from_process().expect("the case's host");
        let providers = agent_provider::builtin();
        let manifest = Arc::new(Manifest::embedded_default(&providers.names()));
        let spec = BottleSpec::new(manifest, "shell", host.home.clone());
        fake_runtime()
            .block_on(bottle_k8s::build_images(&spec, &providers, &host))
            .unwrap_or_else(|e| panic!("building the bottle's images: {e}"));
        let _inside = fake_runtime().enter();
        let kubelet = Arc::new(DockerKubelet::start());
        let (client, fake) = Fake::start_in_docker(Faults::default(), Arc::clone(&kubelet));
        assert!(FAKE.set((fake, kubelet)).is_ok(), "one registry per case process");
        let backend = K8sBackend::with_cluster(
            Cluster::with_client(client, "fake"),
            state.clone(),
            Timeouts { ready: Duration::from_secs(60) },
        );
        let mut registry = Registry::new();
        registry.register(Arc::new(backend));
        registry.alias(bottle_k8s::ALIAS, bottle_k8s::NAME);
        registry
    }

    fn lacks(&self) -> Vec<(Capability, &'static str)> {
        vec![
            (
                Capability::OtherUsers,
                "a Pod of the \"restricted\" profile cannot exec as root: every exec runs as the agent",
            ),
            (
                Capability::HostAttach,
                "the session is attached to over the pods/exec WebSocket, through no host command",
            ),
            (Capability::Revive, "a stopped agent Pod cannot be started again (restartPolicy: Never)"),
            (Capability::Supervise, "supervise is not wired on this backend yet"),
            (
                Capability::SharedEngine,
                "the fake API server lives in the case's process (kube's mock service): its helper processes \
                 would each see a cluster of their own",
            ),
            (Capability::ProcessLimit, "a Pod has no process limit (the kubelet's podPidsLimit is the node's)"),
            (
                Capability::OwnNetwork,
                "the sidecars listen on TCP in their Pod, not on unix sockets the host reaches, and the fake \
                 does not enforce the sidecar Pod's NetworkPolicy",
            ),
        ]
    }

    fn resources(&self, _world: &World, slug: &str) -> Vec<String> {
        let (fake, kubelet) = fake();
        let mut found = fake.objects_of(slug);
        found.extend(kubelet.containers_of(slug).into_iter().map(|c| format!("container {c}")));
        found
    }

    fn running_resources(&self, _world: &World, slug: &str) -> Vec<String> {
        let (_, kubelet) = fake();
        let (agent, sidecar) = (format!("bb-{slug}-agent"), format!("bb-{slug}-sidecar"));
        vec![
            format!("configmaps/bb-{slug}"),
            format!("secrets/bb-{slug}-creds"),
            format!("networkpolicies/{agent}"),
            format!("networkpolicies/{sidecar}"),
            format!("pods/{agent}"),
            format!("pods/{sidecar}"),
            format!("container {}", kubelet.container_name(NAMESPACE, &agent, "agent")),
            format!("container {}", kubelet.container_name(NAMESPACE, &sidecar, "egress")),
        ]
    }

    fn kill_proxy(&self, _world: &World, slug: &str) {
        fake().1.kill(NAMESPACE, &format!("bb-{slug}-sidecar"), "egress");
    }

    fn kill_agent(&self, _world: &World, slug: &str) {
        fake().1.kill(NAMESPACE, &format!("bb-{slug}-agent"), "agent");
    }

    fn sidecar_socket(&self, _world: &World, slug: &str, sidecar: Sidecar) -> PathBuf {
        panic!("{slug}'s {} sidecar listens on TCP in its Pod, not on a unix socket (OwnNetwork)", sidecar.name())
    }

    fn expose_egress(&self, _world: &World, slug: &str, _port: u16) -> Vec<String> {
        panic!("{slug}'s proxy is a Pod's, on the cluster's network: the cases that expose it need OwnNetwork")
    }
}

bottle_testkit::suite!(K8s);
