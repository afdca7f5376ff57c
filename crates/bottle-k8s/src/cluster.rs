//! The cluster as the backend talks to it: a `kube::Client` found as
//! kubectl finds one (`KUBECONFIG`, `~/.kube/config`, in-cluster) or handed
//! in (tests: a mock service), the typed APIs of the kinds a bottle is made
//! of, agent-sandbox discovery, and the one-line errors for what the
//! cluster refuses (a 403 names the verb and resource missing).

use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};

use bottle_core::{Error, ErrorKind, Result};

use crate::render::Mode;

/// The agent-sandbox group and version the backend drives.
pub const SANDBOX_GROUP: &str = "agents.x-k8s.io";
/// Its version.
pub const SANDBOX_VERSION: &str = "v1beta1";

/// A connected cluster: the client and what the preflight names.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) client: Client,
    /// The kubeconfig context (or `in-cluster`, or what the caller named).
    pub name: String,
    /// The API server's URL.
    pub url: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("name", &self.name).field("url", &self.url).finish()
    }
}

impl Cluster {
    /// The cluster kubectl would use: `$KUBECONFIG`, `~/.kube/config`, else
    /// the in-cluster service account.
    pub async fn infer() -> Result<Cluster> {
        let config = Config::infer().await.map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                format!(
                    "no Kubernetes cluster configured ({e}); set KUBECONFIG or write ~/.kube/config (as for kubectl), \
                     or run inside a cluster"
                ),
            )
        })?;
        let url = config.cluster_url.to_string();
        let name = kube::config::Kubeconfig::read()
            .ok()
            .and_then(|k| k.current_context)
            .map_or_else(|| "in-cluster".to_string(), |context| format!("context {context}"));
        let client = Client::try_from(config).map_err(|e| {
            Error::new(ErrorKind::Unavailable, format!("cannot make a client for the cluster at {url}: {e}"))
        })?;
        Ok(Cluster { client, name, url })
    }

    /// The current context of the kubeconfig file `path`.
    pub async fn from_kubeconfig(path: &std::path::Path) -> Result<Cluster> {
        let unusable = |e: String| {
            Error::new(ErrorKind::Unavailable, format!("cannot use the kubeconfig {}: {e}", path.display()))
        };
        let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| unusable(e.to_string()))?;
        let name = kubeconfig.current_context.clone().unwrap_or_default();
        let options = kube::config::KubeConfigOptions::default();
        let config = Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| unusable(e.to_string()))?;
        let url = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| unusable(e.to_string()))?;
        Ok(Cluster { client, name: format!("context {name}"), url })
    }

    /// A cluster reached through `client` (a test's mock service), called `name`.
    pub fn with_client(client: Client, name: impl Into<String>) -> Cluster {
        Cluster { client, name: name.into(), url: "(given client)".into() }
    }

    pub(crate) fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }
    pub(crate) fn config_maps(&self, ns: &str) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), ns)
    }
    pub(crate) fn secrets(&self, ns: &str) -> Api<Secret> {
        Api::namespaced(self.client.clone(), ns)
    }
    pub(crate) fn policies(&self, ns: &str) -> Api<NetworkPolicy> {
        Api::namespaced(self.client.clone(), ns)
    }
    pub(crate) fn events(&self, ns: &str) -> Api<Event> {
        Api::namespaced(self.client.clone(), ns)
    }
    pub(crate) fn sandboxes(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &sandbox_resource())
    }

    /// Whether agent-sandbox serves `Sandbox` (`GET /apis/agents.x-k8s.io/v1beta1`):
    /// a 404 (JSON or plain text) means it is not installed.
    pub async fn mode(&self) -> Result<Mode> {
        let gvk = GroupVersionKind::gvk(SANDBOX_GROUP, SANDBOX_VERSION, "Sandbox");
        match kube::discovery::pinned_kind(&self.client, &gvk).await {
            Ok(_) => Ok(Mode::AgentSandbox),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(Mode::Native),
            // The group is served but has no Sandbox kind (another project's group).
            Err(kube::Error::Discovery(_)) => Ok(Mode::Native),
            Err(e) => Err(refused(e, "discover", "the agents.x-k8s.io API group", "")),
        }
    }
}

/// Whether `e` says the namespace is not this user's to look into (403) or
/// not there (404): a namespace nothing of ours can be in, which `list
/// active` and `cleanup` pass over instead of failing (a kubeconfig for an
/// unrelated cluster must not break them).
pub(crate) fn out_of_reach(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 || s.code == 404)
}

/// `Sandbox` without discovery.
pub fn sandbox_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(SANDBOX_GROUP, SANDBOX_VERSION, "Sandbox"), "sandboxes")
}

/// What the cluster's answer `e` to `verb` on `resource` in namespace `ns`
/// means, on one line: a 403 names the verb and resource missing (or the
/// Pod Security or RuntimeClass rule that refused it), an unreachable
/// server says where it was looked for.
pub fn refused(e: kube::Error, verb: &str, resource: &str, ns: &str) -> Error {
    let place = if ns.is_empty() { String::new() } else { format!(" in namespace {ns}") };
    match e {
        kube::Error::Api(status) if status.code == 403 => {
            let message = status.message.clone();
            let text = if message.contains("violates PodSecurity") {
                format!("the cluster refused to {verb} {resource}{place}: {message}")
            } else if message.contains("RuntimeClass") {
                format!(
                    "the cluster refused to {verb} {resource}{place}: {message}; name a RuntimeClass it has \
                     (`kubectl get runtimeclass`) in the manifest's kubernetes.runtime_class"
                )
            } else {
                format!(
                    "the cluster refused to {verb} {resource}{place} (403 Forbidden: the `{verb}` permission on \
                     `{resource}` is missing); grant it with `bottle k8s rbac | kubectl apply -f -`"
                )
            };
            Error::new(ErrorKind::Backend, text)
        }
        kube::Error::Api(status) if status.code == 404 => {
            Error::new(ErrorKind::NotFound, format!("cannot {verb} {resource}{place}: not found ({})", status.message))
        }
        kube::Error::Api(status) => Error::new(
            ErrorKind::Backend,
            format!(
                "the cluster refused to {verb} {resource}{place}: {} ({} {})",
                status.message, status.code, status.reason
            ),
        ),
        other => {
            Error::new(ErrorKind::Unavailable, format!("cannot reach the cluster to {verb} {resource}{place}: {other}"))
        }
    }
}
