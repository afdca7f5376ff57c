//! Connections to upstreams: resolution (the configuration's `resolve`
//! overrides first, then the system resolver), screening of the resolved
//! addresses by the policy, connecting to exactly the addresses screened (no
//! second lookup), TLS with h2/http1.1 by ALPN, and a pool of idle
//! connections per upstream (HTTP/1.1 connections are reused one request at
//! a time, an HTTP/2 connection is shared).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::header::{HOST, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::body::UpBody;
use super::io::{Failure, Watched, chain, within};
use super::policy::Denial;
use super::tls::is_h2;
use super::{HANDSHAKE_TIMEOUT, IDLE_TIMEOUT};

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// Idle HTTP/1.1 connections kept per upstream.
const POOL_PER_TARGET: usize = 8;

/// Where a request goes: host (normalized), port, and whether over TLS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: bool,
}

impl Target {
    /// `host[:port]` as in a `Host` header or URI (the port only when not the scheme's default).
    pub(crate) fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default { host } else { format!("{host}:{}", self.port) }
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

/// Why a request could not be sent upstream.
pub(crate) enum SendError {
    /// The policy refused the resolved addresses.
    Denied(Denial),
    /// Resolution, connection or the exchange failed (502) or timed out (504).
    Failed(StatusCode, String),
}

impl From<Failure> for SendError {
    fn from(failure: Failure) -> Self {
        let status = if failure.timed_out { StatusCode::GATEWAY_TIMEOUT } else { StatusCode::BAD_GATEWAY };
        SendError::Failed(status, failure.message)
    }
}

/// A connection ready to take a request.
pub(crate) enum Sender {
    H1(http1::SendRequest<UpBody>),
    H2(http2::SendRequest<UpBody>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(sender) => sender.is_closed(),
            Sender::H2(sender) => sender.is_closed(),
        }
    }
}

/// Idle upstream connections by target.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<Target, Vec<(Instant, Sender)>>>,
}

impl Pool {
    /// A connection to `target` that can take a request now: the shared
    /// HTTP/2 one, or an HTTP/1.1 one whose previous response has been read.
    fn checkout(&self, target: &Target) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let list = idle.get_mut(target)?;
        list.retain(|(since, sender)| !sender.is_closed() && since.elapsed() < POOL_IDLE);
        let found = match list.iter().position(|(_, sender)| matches!(sender, Sender::H2(_))) {
            Some(h2) => {
                // Shared and in use: it stays pooled, its idle clock restarts.
                list[h2].0 = Instant::now();
                match &list[h2].1 {
                    Sender::H2(shared) => Some(Sender::H2(shared.clone())),
                    Sender::H1(_) => None,
                }
            }
            None => list
                .iter()
                .position(|(_, sender)| matches!(sender, Sender::H1(h1) if h1.is_ready()))
                .map(|ready| list.swap_remove(ready).1),
        };
        if list.is_empty() {
            idle.remove(target);
        }
        found
    }

    /// Keeps `sender` for later requests. An HTTP/1.1 connection goes back
    /// as soon as its response head arrived; [`Pool::checkout`] takes it again
    /// only once the body has been read.
    fn check_in(&self, target: &Target, sender: Sender, fresh: bool) {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let list = idle.entry(target.clone()).or_default();
        match sender {
            Sender::H2(_) if !fresh => return,
            Sender::H2(_) => list.retain(|(_, s)| !matches!(s, Sender::H2(_))),
            Sender::H1(_) if list.len() >= POOL_PER_TARGET => return,
            Sender::H1(_) => {}
        }
        list.push((Instant::now(), sender));
    }
}

/// What the upstream side needs from the proxy.
pub(crate) struct Upstreams {
    pub(crate) pool: Pool,
    pub(crate) resolve: HashMap<String, IpAddr>,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) tls_h1: Arc<rustls::ClientConfig>,
}

impl Upstreams {
    /// The addresses `target` resolves to.
    pub(crate) async fn resolve(&self, target: &Target) -> Result<Vec<IpAddr>, SendError> {
        if let Ok(ip) = target.host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        if let Some(ip) = self.resolve.get(&target.host) {
            return Ok(vec![*ip]);
        }
        let what = format!("cannot resolve {}", target.host);
        let found =
            within(HANDSHAKE_TIMEOUT, &what, tokio::net::lookup_host((target.host.as_str(), target.port))).await?;
        let mut ips: Vec<IpAddr> = Vec::new();
        for addr in found {
            if !ips.contains(&addr.ip()) {
                ips.push(addr.ip());
            }
        }
        Ok(ips)
    }

    /// Sends `req` (already cleaned) to `target` over a pooled connection or a
    /// new one to `addrs` (already screened) and returns the response head.
    pub(crate) async fn send(
        &self,
        target: &Target,
        addrs: &[IpAddr],
        mut req: Request<UpBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut pooled = self.pool.checkout(target);
        loop {
            let fresh = pooled.is_none();
            let mut sender = match pooled.take() {
                Some(sender) => sender,
                None => self.connect(target, addrs, false).await?,
            };
            shape(&mut req, target, matches!(sender, Sender::H2(_)))?;
            // No timeout of its own: the connection's idle timeout ends a silent upstream.
            let sent = match &mut sender {
                Sender::H1(h1) => h1.try_send_request(req).await,
                Sender::H2(h2) => h2.try_send_request(req).await,
            };
            match sent {
                Ok(response) => {
                    self.pool.check_in(target, sender, fresh);
                    return Ok(response);
                }
                Err(mut err) => match err.take_message() {
                    // A pooled connection closed under us before the request went out: retry on a new one.
                    Some(back) if !fresh => req = back,
                    _ => {
                        let err = err.into_error();
                        let status =
                            if is_timeout(&err) { StatusCode::GATEWAY_TIMEOUT } else { StatusCode::BAD_GATEWAY };
                        return Err(SendError::Failed(
                            status,
                            format!("upstream {}: {}", target.authority(), chain(&err)),
                        ));
                    }
                },
            }
        }
    }

    /// Sends an HTTP/1.1 `Upgrade` request on a new connection of its own; the
    /// returned sender must live as long as the upgraded stream.
    pub(crate) async fn send_upgrade(
        &self,
        target: &Target,
        addrs: &[IpAddr],
        mut req: Request<UpBody>,
    ) -> Result<(Response<Incoming>, http1::SendRequest<UpBody>), SendError> {
        let Sender::H1(mut sender) = self.connect(target, addrs, true).await? else {
            return Err(SendError::Failed(StatusCode::BAD_GATEWAY, "the upstream chose HTTP/2 for an upgrade".into()));
        };
        shape(&mut req, target, false)?;
        let response = within(IDLE_TIMEOUT, "upstream response", sender.send_request(req)).await?;
        Ok((response, sender))
    }

    async fn connect(&self, target: &Target, addrs: &[IpAddr], upgrade: bool) -> Result<Sender, SendError> {
        let mut last = None;
        let mut tcp = None;
        for &ip in addrs {
            let addr = SocketAddr::new(ip, target.port);
            match within(HANDSHAKE_TIMEOUT, &format!("cannot connect to {addr}"), TcpStream::connect(addr)).await {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(failure) => last = Some(failure),
            }
        }
        let Some(tcp) = tcp else {
            return Err(last.map_or_else(
                || SendError::Failed(StatusCode::BAD_GATEWAY, "no address to connect to".into()),
                Into::into,
            ));
        };
        let _ = tcp.set_nodelay(true);
        let io = Watched::new(tcp, IDLE_TIMEOUT);
        if !target.tls {
            return handshake(io, false).await;
        }
        let config = if upgrade { &self.tls_h1 } else { &self.tls };
        let name = ServerName::try_from(target.host.clone()).map_err(|err| {
            SendError::Failed(StatusCode::BAD_GATEWAY, format!("{} is no valid TLS server name: {err}", target.host))
        })?;
        let what = format!("TLS handshake with {}", target.authority());
        let stream = within(HANDSHAKE_TIMEOUT, &what, TlsConnector::from(Arc::clone(config)).connect(name, io)).await?;
        let h2 = is_h2(stream.get_ref().1.alpn_protocol());
        handshake(stream, h2).await
    }
}

async fn handshake<I>(io: I, h2: bool) -> Result<Sender, SendError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    if h2 {
        let (sender, conn) =
            within(HANDSHAKE_TIMEOUT, "HTTP/2 handshake", http2::handshake(TokioExecutor::new(), io)).await?;
        tokio::spawn(conn);
        Ok(Sender::H2(sender))
    } else {
        let (sender, conn) = within(HANDSHAKE_TIMEOUT, "HTTP/1.1 handshake", http1::handshake(io)).await?;
        tokio::spawn(conn.with_upgrades());
        Ok(Sender::H1(sender))
    }
}

/// Puts `req` into the form the connection speaks: absolute URI without a
/// `Host` header for HTTP/2, origin-form with `Host` for HTTP/1.1; the
/// authority is always the target's, whatever the agent said.
fn shape(req: &mut Request<UpBody>, target: &Target, h2: bool) -> Result<(), SendError> {
    // Shared bytes, already parsed: no copy and no second parse.
    let path = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    let authority = target.authority();
    let bad =
        |err: &dyn std::fmt::Display| SendError::Failed(StatusCode::BAD_REQUEST, format!("bad request URI: {err}"));
    if h2 {
        let uri = Uri::builder().scheme(target.scheme()).authority(authority).path_and_query(path).build();
        *req.uri_mut() = uri.map_err(|err| bad(&err))?;
        req.headers_mut().remove(HOST);
        *req.version_mut() = Version::HTTP_2;
    } else {
        *req.uri_mut() = Uri::from(path);
        req.headers_mut().insert(HOST, HeaderValue::try_from(authority).map_err(|err| bad(&err))?);
        *req.version_mut() = Version::HTTP_11;
    }
    Ok(())
}

/// Whether `err` comes from a connection's idle timeout.
fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(err) = source {
        if err.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        source = err.source();
    }
    false
}
