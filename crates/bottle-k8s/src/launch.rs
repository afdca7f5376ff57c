//! Launching a bottle on a cluster from its [`K8sPlan`], one request at a
//! time: agent-sandbox discovered (or not), the namespace's default-deny
//! backstop made once, the anchor (ConfigMap, or the Sandbox created
//! suspended), then what it owns (the Secret, both policies, the sidecar
//! Pod), the sidecar Pod's IP awaited, then the agent Pod (or the Sandbox
//! resumed with the IP) awaited, and last the enforcement probe. Whatever
//! was created is removed when a step fails.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use serde::de::DeserializeOwned;
use serde_json::Value;

use bottle_core::backend::{BackendPlan, Handle};
use bottle_core::{Error, ErrorKind, Result};

use crate::bottle::K8sBottle;
use crate::cluster::{Cluster, refused};
use crate::plan::K8sPlan;
use crate::render::{self, Mode};

/// How long the backend waits for the cluster.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For each Pod (or the Sandbox) to become ready.
    pub ready: Duration,
}

impl Default for Timeouts {
    /// Three minutes per Pod: an image pull on a cold node.
    fn default() -> Self {
        Timeouts { ready: Duration::from_secs(180) }
    }
}

fn typed<T: DeserializeOwned>(value: &Value, what: &str) -> Result<T> {
    serde_json::from_value(value.clone())
        .map_err(|e| Error::new(ErrorKind::Backend, format!("rendering the {what}: {e}")))
}

/// Create everything `plan` names and hand back the running bottle; on
/// error, remove what was created.
pub(crate) async fn launch(cluster: &Cluster, plan: K8sPlan, timeouts: Timeouts) -> Result<K8sBottle> {
    let slug = plan.common().slug.clone();
    let ns = plan.kubernetes.namespace.clone();
    crate::cleanup::record_namespace(&plan.common().state_dir, &ns)?;
    match create(cluster, plan, timeouts).await {
        Ok(bottle) => Ok(bottle),
        Err(e) => {
            let _ = crate::cleanup::remove(cluster, &ns, &slug).await;
            Err(e.with_operation("launch").with_bottle(slug))
        }
    }
}

async fn create(cluster: &Cluster, plan: K8sPlan, timeouts: Timeouts) -> Result<K8sBottle> {
    let ns = plan.kubernetes.namespace.clone();
    let common = plan.common();
    let mode = cluster.mode().await?;
    let mut spec = plan.spec.clone();
    spec.mode = mode;
    let pp = PostParams::default();
    // The backstop, once per namespace: every Pod isolated unless a policy allows.
    let policies = cluster.policies(&ns);
    let found = policies.get_opt(render::DEFAULT_DENY).await.map_err(|e| refused(e, "get", "networkpolicies", &ns))?;
    if found.is_none() {
        let deny: NetworkPolicy = typed(&render::default_deny(&ns), "default-deny policy")?;
        match policies.create(&pp, &deny).await {
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            other => {
                other.map_err(|e| refused(e, "create", "networkpolicies", &ns))?;
            }
        }
    }
    // The anchor, whose UID every other object names as its owner.
    let first = render::render(&spec);
    let uid = match mode {
        Mode::Native => {
            let anchor: ConfigMap = typed(&first.anchor, "anchor ConfigMap")?;
            let made = cluster
                .config_maps(&ns)
                .create(&pp, &anchor)
                .await
                .map_err(|e| refused(e, "create", "configmaps", &ns))?;
            made.metadata.uid
        }
        Mode::AgentSandbox => {
            let sandbox: DynamicObject = typed(&render::suspended(&first.anchor), "Sandbox")?;
            let made = cluster
                .sandboxes(&ns)
                .create(&pp, &sandbox)
                .await
                .map_err(|e| refused(e, "create", "sandboxes", &ns))?;
            made.metadata.uid
        }
    };
    spec.anchor_uid = Some(uid.ok_or_else(|| Error::new(ErrorKind::Backend, "the cluster gave the anchor no UID"))?);
    let owned = render::render(&spec);
    let secret: Secret = typed(&owned.secret, "Secret")?;
    cluster.secrets(&ns).create(&pp, &secret).await.map_err(|e| refused(e, "create", "secrets", &ns))?;
    for policy in [&owned.agent_policy, &owned.sidecar_policy] {
        let policy: NetworkPolicy = typed(policy, "NetworkPolicy")?;
        policies.create(&pp, &policy).await.map_err(|e| refused(e, "create", "networkpolicies", &ns))?;
    }
    let sidecar: Pod = typed(&owned.sidecar_pod, "sidecar Pod")?;
    cluster.pods(&ns).create(&pp, &sidecar).await.map_err(|e| refused(e, "create", "pods", &ns))?;
    let sidecar_name = render::sidecar_pod_name(&spec.id);
    let ip = crate::wait::pod_ready(cluster, &ns, &sidecar_name, timeouts.ready).await?;
    spec.sidecar_ip = Some(ip.clone());
    let pod = match mode {
        Mode::Native => {
            let agent: Pod = typed(render::render(&spec).agent_pod.as_ref().unwrap_or(&Value::Null), "agent Pod")?;
            cluster.pods(&ns).create(&pp, &agent).await.map_err(|e| refused(e, "create", "pods", &ns))?;
            let name = render::agent_pod_name(&spec.id, mode);
            crate::wait::pod_ready(cluster, &ns, &name, timeouts.ready).await?;
            name
        }
        Mode::AgentSandbox => {
            let patch = render::resume_patch(&spec, &ip);
            let name = render::anchor_name(&spec.id);
            cluster
                .sandboxes(&ns)
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| refused(e, "patch", "sandboxes", &ns))?;
            crate::wait::sandbox_ready_pod(cluster, &ns, &name, timeouts.ready).await?
        }
    };
    let p = &common.provision;
    let handle = Handle::new(common.slug.clone(), p.guest_user.clone(), p.workdir.clone());
    let bottle = K8sBottle::new(cluster.clone(), ns, pod, handle);
    if !plan.kubernetes.unenforced_ok {
        crate::probe::require_enforced(&bottle).await?;
    }
    Ok(bottle)
}
