//! Finding and removing bottles by their labels: the namespace each bottle
//! lives in (recorded in its state folder at launch), the removal of one
//! bottle (its anchor deleted, so the garbage collector removes what it
//! owns; then every kind swept by the bottle's label for what GC has not
//! reached or what was made before its owner existed), and what `cleanup`
//! finds, judged by the shared orphan rule.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use kube::api::{Api, DeleteParams, ListParams};
use kube::core::DynamicObject;
use serde::de::DeserializeOwned;

use bottle_core::backend::{Leftovers, Orphans};
use bottle_core::{DEFAULT_NAMESPACE, Error, Result, StateRoot};

use crate::cluster::{Cluster, out_of_reach, refused};
use crate::render::{self, MANAGED_BY, MANAGER, ROLE, ROLE_AGENT, SANDBOX};

/// The file in a bottle's state folder naming its namespace.
pub(crate) const NAMESPACE_FILE: &str = "kubernetes-namespace";

/// Notes that the bottle whose state folder is `state_dir` lives in `ns`.
pub(crate) fn record_namespace(state_dir: &Path, ns: &str) -> Result<()> {
    let file = state_dir.join(NAMESPACE_FILE);
    std::fs::write(&file, ns).map_err(|e| Error::io(format!("writing {}", file.display()), e))
}

/// The namespace bottle `slug` lives in (the default when none was recorded).
pub(crate) fn namespace_of(state: &StateRoot, slug: &str) -> String {
    std::fs::read_to_string(state.bottle_dir(slug).join(NAMESPACE_FILE))
        .ok()
        .map(|ns| ns.trim().to_string())
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

/// Every namespace a bottle of this host was recorded in, and the default.
pub(crate) fn namespaces(state: &StateRoot) -> BTreeSet<String> {
    let mut found = BTreeSet::from([DEFAULT_NAMESPACE.to_string()]);
    for entry in std::fs::read_dir(state.dir()).into_iter().flatten().flatten() {
        if let Ok(ns) = std::fs::read_to_string(entry.path().join(NAMESPACE_FILE)) {
            let ns = ns.trim();
            if !ns.is_empty() {
                found.insert(ns.to_string());
            }
        }
    }
    found
}

/// Deletes object `name` of `api` (background propagation); gone already is fine.
async fn delete_one<K>(api: &Api<K>, name: &str, resource: &str, ns: &str) -> Result<()>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(refused(e, "delete", resource, ns)),
    }
}

/// The names of `api`'s objects that `selector` selects.
async fn names<K>(api: &Api<K>, selector: &str, resource: &str, ns: &str) -> Result<Vec<String>>
where
    K: Clone + DeserializeOwned + std::fmt::Debug + kube::Resource,
{
    let list = api.list(&ListParams::default().labels(selector)).await.map_err(|e| refused(e, "list", resource, ns))?;
    Ok(list.items.iter().filter_map(|o| o.meta().name.clone()).collect())
}

/// Removes every object of bottle `slug` in `ns`. Idempotent.
pub(crate) async fn remove(cluster: &Cluster, ns: &str, slug: &str) -> Result<()> {
    let anchor = render::anchor_name(slug);
    delete_one(&cluster.config_maps(ns), &anchor, "configmaps", ns).await?;
    // A Sandbox only where agent-sandbox serves them (a 404 otherwise).
    if cluster.mode().await? == render::Mode::AgentSandbox {
        delete_one(&cluster.sandboxes(ns), &anchor, "sandboxes", ns).await?;
    }
    let selector = render::selector(slug);
    let pods = cluster.pods(ns);
    for name in names(&pods, &selector, "pods", ns).await? {
        delete_one(&pods, &name, "pods", ns).await?;
    }
    let secrets = cluster.secrets(ns);
    for name in names(&secrets, &selector, "secrets", ns).await? {
        delete_one(&secrets, &name, "secrets", ns).await?;
    }
    let policies = cluster.policies(ns);
    for name in names(&policies, &selector, "networkpolicies", ns).await? {
        delete_one(&policies, &name, "networkpolicies", ns).await?;
    }
    Ok(())
}

/// Everything of this backend's bottles in `namespaces`, by slug, judged by
/// the orphan rule; `detached(slug)` asks a bottle whose launcher is gone.
pub(crate) async fn prepare<F, Fut>(cluster: &Cluster, namespaces: &BTreeSet<String>, detached: F) -> Result<Orphans>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut found = Leftovers::default();
    let managed = format!("{MANAGED_BY}={MANAGER}");
    let sandbox_mode = cluster.mode().await? == render::Mode::AgentSandbox;
    for ns in namespaces {
        let anchors = match cluster.config_maps(ns).list(&ListParams::default().labels(&managed)).await {
            Ok(anchors) => anchors,
            Err(e) if out_of_reach(&e) => continue,
            Err(e) => return Err(refused(e, "list", "configmaps", ns)),
        };
        let mut anchors: Vec<(String, kube::core::ObjectMeta, &str)> =
            anchors.items.into_iter().map(|c| (ns.clone(), c.metadata, "configmap")).collect();
        if sandbox_mode {
            let sandboxes: Api<DynamicObject> = cluster.sandboxes(ns);
            let listed = sandboxes
                .list(&ListParams::default().labels(&managed))
                .await
                .map_err(|e| refused(e, "list", "sandboxes", ns))?;
            anchors.extend(listed.items.into_iter().map(|s| (ns.clone(), s.metadata, "sandbox")));
        }
        for (ns, meta, kind) in anchors {
            let Some(slug) = meta.labels.as_ref().and_then(|l| l.get(SANDBOX)).cloned() else { continue };
            let annotations: HashMap<String, String> = meta.annotations.unwrap_or_default().into_iter().collect();
            found.saw(&slug, format!("{kind} {ns}/{}", meta.name.unwrap_or_default()), &annotations);
        }
        let pods = cluster
            .pods(ns)
            .list(&ListParams::default().labels(&managed))
            .await
            .map_err(|e| refused(e, "list", "pods", ns))?;
        for pod in pods.items {
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            let Some(slug) = labels.get(SANDBOX) else { continue };
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
            let annotations: HashMap<String, String> =
                pod.metadata.annotations.clone().unwrap_or_default().into_iter().collect();
            found.saw(
                slug,
                format!("pod {ns}/{} ({})", pod.metadata.name.clone().unwrap_or_default(), phase.to_lowercase()),
                &annotations,
            );
            if labels.get(ROLE).map(String::as_str) == Some(ROLE_AGENT) && phase == "Running" {
                found.agent_runs(slug);
            }
        }
    }
    Ok(found.judge(detached).await)
}
