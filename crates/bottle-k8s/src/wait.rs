//! Waiting for a Pod (or a Sandbox) to become ready, bounded: a watch on
//! the one object, read again from the API whenever the watch drops; what
//! a Pod's status says is judged by [`pod_state`] (an image the cluster
//! cannot pull is one line naming image and registry, never a hang), and a
//! timeout's error carries the object's last event.

use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::core::DynamicObject;
use tokio::time::Instant;

use bottle_core::{Error, ErrorKind, Result};

use crate::cluster::{Cluster, refused};

/// Container waiting reasons that mean the image cannot be pulled.
const PULL_FAILURES: [&str; 4] = ["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"];

/// What a Pod's status says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Running, ready, with this IP.
    Ready(String),
    /// Not yet.
    Starting,
    /// A container's image cannot be pulled.
    ImagePull {
        /// The image.
        image: String,
        /// The waiting reason (`ErrImagePull`, `ImagePullBackOff`, …).
        reason: String,
        /// What the kubelet said.
        message: String,
    },
    /// Ended (or failed) before it was ready.
    Ended(String),
}

/// The registry an image reference pulls from (`docker.io` when it names none).
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// What `pod`'s status says.
pub fn pod_state(pod: &Pod) -> PodState {
    let Some(status) = &pod.status else { return PodState::Starting };
    let containers = status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
    for container in containers {
        if let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = waiting.reason.clone().unwrap_or_default();
            if PULL_FAILURES.contains(&reason.as_str()) {
                return PodState::ImagePull {
                    image: container.image.clone(),
                    reason,
                    message: waiting.message.clone().unwrap_or_default(),
                };
            }
        }
        if let Some(ended) = container.state.as_ref().and_then(|s| s.terminated.as_ref())
            && ended.exit_code != 0
        {
            return PodState::Ended(format!(
                "container {} exited {} ({})",
                container.name,
                ended.exit_code,
                ended.reason.clone().unwrap_or_default()
            ));
        }
    }
    match status.phase.as_deref() {
        Some(phase @ ("Failed" | "Succeeded")) => {
            return PodState::Ended(format!(
                "the Pod is {phase}: {}",
                status.message.clone().or_else(|| status.reason.clone()).unwrap_or_default()
            ));
        }
        Some("Running") => {}
        _ => return PodState::Starting,
    }
    let ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
    match status.pod_ip.as_deref() {
        Some(ip) if ready && !ip.is_empty() => PodState::Ready(ip.to_string()),
        _ => PodState::Starting,
    }
}

/// The error for a Pod that cannot pull `image`.
pub fn pull_error(pod: &str, image: &str, reason: &str, message: &str) -> Error {
    Error::new(
        ErrorKind::Backend,
        format!(
            "Pod {pod} cannot pull image {image} from registry {} ({reason}: {message}); push it there with \
             `bottle image push`, or name the registry the cluster pulls from in the manifest's \
             kubernetes.image_registry",
            registry_of(image),
        ),
    )
}

/// The last event about object `name` in `ns`, as `Reason: message`.
pub async fn last_event(cluster: &Cluster, ns: &str, name: &str) -> String {
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    match cluster.events(ns).list(&lp).await {
        Ok(list) => list
            .items
            .into_iter()
            .max_by_key(|e| {
                e.last_timestamp.as_ref().map(|t| t.0).or(e.event_time.as_ref().map(|t| t.0)).or(e
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0))
            })
            .map_or_else(
                || "no events".to_string(),
                |e| format!("{}: {}", e.reason.unwrap_or_default(), e.message.unwrap_or_default()),
            ),
        Err(e) => format!("(events unreadable: {})", refused(e, "list", "events", ns)),
    }
}

/// Waits until Pod `name` in `ns` is ready, for at most `timeout`; its IP.
pub async fn pod_ready(cluster: &Cluster, ns: &str, name: &str, timeout: Duration) -> Result<String> {
    let api = cluster.pods(ns);
    let deadline = Instant::now() + timeout;
    let judge = |pod: &Pod| -> Option<Result<String>> {
        match pod_state(pod) {
            PodState::Ready(ip) => Some(Ok(ip)),
            PodState::Starting => None,
            PodState::ImagePull { image, reason, message } => Some(Err(pull_error(name, &image, &reason, &message))),
            PodState::Ended(why) => {
                Some(Err(Error::new(ErrorKind::Backend, format!("Pod {name} ended before it was ready: {why}"))))
            }
        }
    };
    let waited = tokio::time::timeout_at(deadline, async {
        loop {
            // Read afresh (first, and whenever the watch drops), then watch from there.
            let pod = api.get(name).await.map_err(|e| refused(e, "get", "pods", ns))?;
            if let Some(done) = judge(&pod) {
                return done;
            }
            let version = pod.metadata.resource_version.clone().unwrap_or_else(|| "0".into());
            let left = deadline.saturating_duration_since(Instant::now()).as_secs().clamp(1, 290) as u32;
            let wp = WatchParams::default().fields(&format!("metadata.name={name}")).timeout(left);
            let stream = api.watch(&wp, &version).await.map_err(|e| refused(e, "watch", "pods", ns))?;
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod)) => {
                        if let Some(done) = judge(&pod) {
                            return done;
                        }
                    }
                    Ok(WatchEvent::Deleted(_)) => {
                        return Err(Error::new(ErrorKind::Backend, format!("Pod {name} was deleted while starting")));
                    }
                    // A bookmark, an expired version (410), a broken line: read afresh.
                    Ok(_) | Err(_) => break,
                }
            }
        }
    })
    .await;
    match waited {
        Ok(done) => done,
        Err(_) => Err(not_ready(cluster, ns, "Pod", name, timeout).await),
    }
}

/// The error for object `kind` `name` not ready after `timeout`, with its last event.
async fn not_ready(cluster: &Cluster, ns: &str, kind: &str, name: &str, timeout: Duration) -> Error {
    let event = last_event(cluster, ns, name).await;
    Error::new(
        ErrorKind::Backend,
        format!("{kind} {name} in namespace {ns} was not ready after {}s; its last event: {event}", timeout.as_secs()),
    )
}

/// Whether Sandbox `sandbox` is ready: its `Ready` condition `True` for its
/// current generation; `Err` with the reason when the controller says it failed.
pub fn sandbox_ready(sandbox: &DynamicObject) -> Option<std::result::Result<(), String>> {
    let generation = sandbox.metadata.generation;
    let conditions = sandbox.data["status"]["conditions"].as_array()?;
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    let current = generation.is_none_or(|g| ready["observedGeneration"].as_i64().is_none_or(|o| o == g));
    match (ready["status"].as_str(), ready["reason"].as_str()) {
        (Some("True"), _) if current => Some(Ok(())),
        (
            Some("False"),
            Some(reason @ ("ReconcilerError" | "PodFailed" | "PodSucceeded" | "SandboxExpired" | "MultiplePods")),
        ) if current => Some(Err(format!("{reason}: {}", ready["message"].as_str().unwrap_or_default()))),
        _ => None,
    }
}

/// The Pod agent-sandbox made for `sandbox`: its annotation, else its name.
pub fn sandbox_pod(sandbox: &DynamicObject) -> String {
    sandbox
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("agents.x-k8s.io/pod-name").cloned())
        .or_else(|| sandbox.metadata.name.clone())
        .unwrap_or_default()
}

/// Waits until Sandbox `name` is ready (its controller's condition), at most
/// `timeout`, reading it and its Pod once a second; the Pod's name.
pub async fn sandbox_ready_pod(cluster: &Cluster, ns: &str, name: &str, timeout: Duration) -> Result<String> {
    let api = cluster.sandboxes(ns);
    let deadline = Instant::now() + timeout;
    let waited = tokio::time::timeout_at(deadline, async {
        loop {
            let sandbox = api.get(name).await.map_err(|e| refused(e, "get", "sandboxes", ns))?;
            let pod = sandbox_pod(&sandbox);
            match sandbox_ready(&sandbox) {
                Some(Ok(())) => return Ok(pod),
                Some(Err(why)) => {
                    return Err(Error::new(ErrorKind::Backend, format!("Sandbox {name} failed to start: {why}")));
                }
                None => {}
            }
            if let Ok(Some(found)) = cluster.pods(ns).get_opt(&pod).await
                && let PodState::ImagePull { image, reason, message } = pod_state(&found)
            {
                return Err(pull_error(&pod, &image, &reason, &message));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    match waited {
        Ok(done) => done,
        Err(_) => {
            let pod = api.get(name).await.map(|s| sandbox_pod(&s)).unwrap_or_else(|_| name.to_string());
            Err(not_ready(cluster, ns, "Sandbox", &pod, timeout).await)
        }
    }
}
