//! The egress proxy: the bottle's only route out.
//!
//! `bottle-sidecar egress --config FILE.json` reads an [`EgressConfig`],
//! listens on its `listen` address, prints `egress: listening on ADDR` to
//! stderr once it accepts connections, and serves until SIGTERM or SIGINT
//! (exit 0). [`serve`] is the same proxy as a library call.
//!
//! What it does with each request:
//!
//! - `CONNECT host:port` is refused with `403` before any TLS unless a route
//!   covers the host and allows the port (a route's `ports`, when it lists
//!   them) and the host resolves to an address the route may reach;
//!   otherwise the tunnel is TLS-intercepted with a leaf minted from the
//!   bottle's CA (h2 or http/1.1 by ALPN). Absolute-form `http://` requests
//!   take the same path over plain TCP.
//! - Each request inside is checked against the route's methods, paths and
//!   ports; a denial is a `403` whose one-sentence body and
//!   `x-bot-bottle-denied` header say which route denied what and how to
//!   allow it. A route's credential goes only over TLS to port 443 (or to its
//!   `ports`), and over plain http only with `insecure_http`; a request on
//!   that route that does not qualify is denied the same way.
//! - The route's own sentinels (the placeholders the bottle sees instead of
//!   its credential) are swapped for the credential wherever the request
//!   carries them — any header, a `Basic` pair the client built, the query —
//!   and the route's header is set; any other sentinel takes its header or
//!   query parameter with it (`credentials.rs`).
//! - A response to a request that carried a credential has every injected
//!   value replaced by its sentinel in its headers, streamed body and
//!   trailers (`scrub.rs`).
//! - Upstream TLS is verified against the system roots plus
//!   `extra_upstream_ca_pem`; upstream connections are pooled, h2 or
//!   http/1.1 by ALPN; HTTP/1.1 upgrades (WebSocket) pass through.
//! - Bodies stream both ways; one JSON line per request goes to the audit log.
//!
//! Timeouts: a connection with no byte moving either way for 5 minutes is
//! closed; a TLS handshake, an upstream connect and a request head (from its
//! first byte) each get 30 seconds.

mod audit;
mod body;
mod credentials;
mod io;
mod policy;
mod proxy;
mod scrub;
mod tls;
mod upstream;

use std::time::Duration;

use crate::listen::Listener;
use bottle_core::sidecar::{EgressConfig, SidecarProcess};

pub use policy::{host_matches, path_matches};

/// A connection with no byte moving for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Limit for a TLS handshake, an upstream connect or a name lookup.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Limit for a request head, from its first byte.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the egress proxy could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EgressError {
    /// The configuration is inconsistent (a bad header name, an unusable extra CA).
    #[error("invalid egress configuration: {0}")]
    Config(String),
    /// The bottle's CA certificate or key cannot be used.
    #[error("the bottle CA is unusable: {0}")]
    Ca(String),
    /// TLS could not be set up.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    /// The audit log cannot be opened for appending.
    #[error("cannot open the audit log {path}: {source}")]
    AuditLog {
        /// The audit log's path.
        path: String,
        /// Why it cannot be opened.
        source: std::io::Error,
    },
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The configured address.
        addr: String,
        /// Why it cannot be bound.
        source: std::io::Error,
    },
}

/// Runs the egress proxy on `listener` with `config` until the future is
/// dropped; returns early only when the configuration is unusable.
pub async fn serve(config: EgressConfig, listener: Listener) -> Result<(), EgressError> {
    proxy::Proxy::new(config)?.run(listener).await
}

/// Runs the egress proxy with the configuration at `path`; returns the exit code.
pub fn main(path: &str) -> i32 {
    crate::program::main("egress", path, crate::program::Workers::UpTo(4), run)
}

async fn run(config: EgressConfig) -> Result<(), EgressError> {
    let listen = config.listen.to_string();
    let bind_failed = |source| EgressError::Listen { addr: listen.clone(), source };
    let listener = Listener::bind(&config.listen).await.map_err(bind_failed)?;
    let addr = listener.local_addr().map_err(bind_failed)?;
    let proxy = proxy::Proxy::new(config)?;
    eprintln!("{}", SidecarProcess::Egress.ready_line(&addr.to_string()));
    tokio::select! {
        result = proxy.run(listener) => result,
        () = shutdown() => Ok(()),
    }
}

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
