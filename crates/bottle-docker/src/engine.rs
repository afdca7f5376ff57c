//! The connection to the Docker Engine: made on first use, API version
//! negotiated (Engine 20.10 speaks 1.41); engine errors mapped into
//! bot-bottle's error with the operation as context; and the labels by
//! which this backend's resources are made and found again (the shared
//! [`bottle_core::labels`] with this backend's name).

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::ContainerSummary;
use bollard::query_parameters::ListContainersOptions;
use bottle_core::labels::{BACKEND, ROLE, ROLE_AGENT, SLUG};
use bottle_core::{CommonPlan, Error, ErrorKind, Result};
use tokio::sync::OnceCell;

/// How to get Docker when it is missing: shown by `is_available`.
const HOW_TO_GET_DOCKER: &str = "install and start Docker: `sudo apt-get install -y docker.io && sudo dockerd &` \
(from a bot-bottle checkout `cargo xtask setup` does both), or point DOCKER_HOST at a running engine";

/// A lazily connected engine client.
#[derive(Debug, Default)]
pub(crate) struct Engine {
    client: OnceCell<Docker>,
}

impl Engine {
    /// The client, connecting and negotiating on first use: to the engine
    /// `DOCKER_HOST` names (`unix://PATH`, `tcp://HOST:PORT`,
    /// `http://HOST:PORT`), else the local socket. An engine that does not
    /// answer is an error, never a fall back to another one.
    pub(crate) async fn client(&self) -> Result<&Docker> {
        self.client
            .get_or_try_init(|| async {
                let docker = match docker_host() {
                    None => Docker::connect_with_unix_defaults(),
                    Some(_) => Docker::connect_with_defaults(),
                }
                .map_err(unavailable)?;
                let negotiate = tokio::time::timeout(std::time::Duration::from_secs(5), docker.negotiate_version());
                match negotiate.await {
                    Ok(Ok(docker)) => Ok(docker),
                    Ok(Err(e)) => Err(unavailable(e)),
                    Err(_) => Err(Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "the Docker Engine at {} did not answer within 5 s; {HOW_TO_GET_DOCKER}",
                            engine_address()
                        ),
                    )
                    .with_backend(crate::NAME)),
                }
            })
            .await
    }
}

/// `DOCKER_HOST`, when set and not empty (empty means unset, as for the docker CLI).
fn docker_host() -> Option<String> {
    std::env::var("DOCKER_HOST").ok().filter(|h| !h.trim().is_empty())
}

/// Where the engine is looked for, for messages.
pub(crate) fn engine_address() -> String {
    docker_host().unwrap_or_else(|| "unix:///var/run/docker.sock".into())
}

fn unavailable(e: bollard::errors::Error) -> Error {
    let host = engine_address();
    let message = match &e {
        bollard::errors::Error::UnsupportedURISchemeError { .. } => format!(
            "DOCKER_HOST={host} is not a form bot-bottle supports; use unix:///PATH, tcp://HOST:PORT or \
             http://HOST:PORT, or unset it for the local socket"
        ),
        _ => format!("cannot reach the Docker Engine at {host}; {HOW_TO_GET_DOCKER}"),
    };
    Error::new(ErrorKind::Unavailable, message).with_backend(crate::NAME).with_source(e)
}

/// Whether an engine error is a 404.
pub(crate) fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

/// Map an engine error from `operation` into a backend error.
pub(crate) fn failed(operation: &'static str) -> impl FnOnce(bollard::errors::Error) -> Error {
    move |e| {
        let message = match &e {
            bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
            other => other.to_string(),
        };
        Error::new(ErrorKind::Backend, format!("the Docker Engine refused to {operation}: {message}"))
            .with_operation(operation)
            .with_backend(crate::NAME)
            .with_source(e)
    }
}

/// The labels of a resource of `plan` with `role`.
pub(crate) fn labels_for(plan: &CommonPlan, role: &str) -> HashMap<String, String> {
    bottle_core::labels::for_plan(plan, crate::NAME, role)
}

/// A filter selecting this backend's resources, optionally of one slug.
pub(crate) fn filter(slug: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut labels = vec![format!("{BACKEND}={}", crate::NAME)];
    if let Some(slug) = slug {
        labels.push(format!("{SLUG}={slug}"));
    }
    HashMap::from([("label".to_string(), labels)])
}

/// This backend's containers (`all`: stopped ones too), optionally of one
/// slug, optionally agents only.
pub(crate) async fn containers(
    docker: &Docker,
    all: bool,
    slug: Option<&str>,
    agents_only: bool,
) -> Result<Vec<ContainerSummary>> {
    let mut filters = filter(slug);
    if agents_only {
        filters.entry("label".into()).or_default().push(format!("{ROLE}={ROLE_AGENT}"));
    }
    docker
        .list_containers(Some(ListContainersOptions { all, filters: Some(filters), ..Default::default() }))
        .await
        .map_err(failed("list containers"))
}

/// A container's name as the engine lists it (without the leading `/`).
pub(crate) fn container_name(c: &ContainerSummary) -> Option<String> {
    c.names.as_ref().and_then(|n| n.first()).map(|n| n.trim_start_matches('/').to_string())
}
