//! The connection to the Docker Engine: made on first use, API version
//! negotiated (Engine 20.10 speaks 1.41), and engine errors mapped into
//! bot-bottle's error with the operation as context.

use bollard::Docker;
use bottle_core::{Error, ErrorKind, Result};
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
    /// The client, connecting and negotiating on first use.
    pub(crate) async fn client(&self) -> Result<&Docker> {
        self.client
            .get_or_try_init(|| async {
                let docker = Docker::connect_with_local_defaults().map_err(unavailable)?;
                let negotiate = tokio::time::timeout(std::time::Duration::from_secs(5), docker.negotiate_version());
                match negotiate.await {
                    Ok(Ok(docker)) => Ok(docker),
                    Ok(Err(e)) => Err(unavailable(e)),
                    Err(_) => Err(Error::new(
                        ErrorKind::Unavailable,
                        format!("the Docker Engine did not answer within 5 s; {HOW_TO_GET_DOCKER}"),
                    )
                    .with_backend(crate::NAME)),
                }
            })
            .await
    }
}

fn unavailable(e: bollard::errors::Error) -> Error {
    let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    Error::new(ErrorKind::Unavailable, format!("cannot reach the Docker Engine at {host}; {HOW_TO_GET_DOCKER}"))
        .with_backend(crate::NAME)
        .with_source(e)
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
