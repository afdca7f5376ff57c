//! The proxy itself: accepts agent connections, answers `CONNECT` (refused
//! before any TLS unless the host has a route that allows the port and the
//! host resolves to an address the route may reach; otherwise intercepted
//! with a minted leaf, h2 or http/1.1 by ALPN) and absolute-form `http://`
//! requests, applies the policy to each request (a credential goes only where
//! it is safe), swaps sentinels for injected credentials, forwards upstream
//! and streams the response back with the injected values scrubbed, and
//! passes HTTP/1.1 upgrades through.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use bottle_core::sidecar::{EgressConfig, TokenDigest};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use super::audit::{AuditLog, Decision, Entry};
use super::body::{DownBody, UpBody};
use super::credentials::Credentials;
use super::io::{Activity, HeaderTimer, Prefixed, Watched, within};
use super::policy::{Denial, Policy, normalize_host, sanitize};
use super::scrub::Scrubber;
use super::tls::{Tls, is_h2};
use super::upstream::{Pool, SendError, Target, Upstreams};
use super::{EgressError, HANDSHAKE_TIMEOUT, HEADER_TIMEOUT, IDLE_TIMEOUT};
use crate::listen::{Listener, Stream};
use crate::token;

/// The header naming why the proxy refused a request.
const DENIED_HEADER: &str = "x-bot-bottle-denied";
/// The header naming why the proxy could not complete a request upstream.
const ERROR_HEADER: &str = "x-bot-bottle-error";
/// Largest request head (and read buffer) accepted from the agent over HTTP/1.1.
const MAX_HEAD: usize = 64 * 1024;
/// Concurrent HTTP/2 streams per agent connection.
const MAX_STREAMS: u32 = 100;
/// Headers that describe one hop, never forwarded (`upgrade` and `te: trailers` are handled apart).
/// Names, not strings: removing by `&str` parses the name again on every request.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::TRANSFER_ENCODING,
    header::TRAILER,
];

/// The running proxy's state, shared by all connections.
pub(crate) struct Proxy {
    bottle: Arc<str>,
    client_token: TokenDigest,
    policy: Policy,
    credentials: Credentials,
    tls: Tls,
    upstreams: Upstreams,
    audit: Arc<AuditLog>,
}

/// Where the requests of one agent connection (or one tunnel) go.
struct Destination {
    target: Target,
    /// For a tunnel: the route and screened addresses, settled at `CONNECT`.
    screened: Option<(usize, Vec<IpAddr>)>,
}

impl Proxy {
    pub(crate) fn new(config: EgressConfig) -> Result<Arc<Self>, EgressError> {
        if config.policy.rules.iter().any(|rule| rule.host.trim().is_empty()) {
            return Err(EgressError::Config("a route has an empty host".into()));
        }
        let credentials = Credentials::new(&config)?;
        let tls = Tls::new(&config)?;
        let upstreams = Upstreams {
            pool: Pool::default(),
            resolve: config
                .policy
                .resolve
                .iter()
                .map(|(name, ip)| (normalize_host(name), *ip))
                .collect::<HashMap<_, _>>(),
            tls: Arc::clone(&tls.upstream),
            tls_h1: Arc::clone(&tls.upstream_h1),
        };
        Ok(Arc::new(Proxy {
            bottle: Arc::from(config.policy.bottle.as_str()),
            client_token: config.policy.client_token,
            policy: Policy::new(&config.policy.bottle, config.policy.rules).with_grants(config.grants),
            credentials,
            tls,
            upstreams,
            audit: Arc::new(AuditLog::open(&config.audit_log)?),
        }))
    }

    /// Serves agent connections from `listener` until the task is dropped.
    pub(crate) async fn run(self: Arc<Self>, listener: Listener) -> Result<(), EgressError> {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(Arc::clone(&self).serve_agent(stream));
                }
                Err(err) => {
                    // Out of descriptors or a connection reset while queued: keep serving.
                    eprintln!("egress: accept failed: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// One agent connection to the proxy port: HTTP/1.1 with `CONNECT` and
    /// absolute-form requests.
    async fn serve_agent(self: Arc<Self>, stream: Stream) {
        let io = Watched::new(stream, IDLE_TIMEOUT);
        let activity = io.activity();
        let proxy = Arc::clone(&self);
        let conn_activity = Arc::clone(&activity);
        let service = service_fn(move |req| {
            let proxy = Arc::clone(&proxy);
            let activity = Arc::clone(&conn_activity);
            async move { Ok::<_, Infallible>(proxy.on_proxy_request(req, activity).await) }
        });
        let _ = http1::Builder::new()
            .timer(HeaderTimer::new(activity, IDLE_TIMEOUT))
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEAD)
            // A client that sends its request and shuts its writing half
            // still gets the answer.
            .half_close(true)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades()
            .await;
    }

    async fn on_proxy_request(self: Arc<Self>, req: Request<Incoming>, activity: Arc<Activity>) -> Response<DownBody> {
        if !token::presents(&self.client_token, req.headers().get(header::PROXY_AUTHORIZATION)) {
            return self.auth_required(&req);
        }
        if req.method() == Method::CONNECT {
            return self.on_connect(req, activity).await;
        }
        let uri = req.uri();
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return self.refuse(
                    &req,
                    StatusCode::BAD_REQUEST,
                    "egress: this is a proxy: send absolute-form http:// requests or CONNECT host:port",
                );
            }
        };
        let Some(authority) = uri.authority() else {
            return self.refuse(&req, StatusCode::BAD_REQUEST, "egress: the request URI names no host");
        };
        let default_port = if tls { 443 } else { 80 };
        let target =
            Target { host: normalize_host(authority.host()), port: authority.port_u16().unwrap_or(default_port), tls };
        self.forward(&Destination { target, screened: None }, req).await
    }

    /// `CONNECT host:port`: checked against the routes and the resolved
    /// addresses before anything else; then a tunnel, intercepted.
    async fn on_connect(self: Arc<Self>, req: Request<Incoming>, activity: Arc<Activity>) -> Response<DownBody> {
        let Some((host, port)) = req.uri().authority().and_then(|a| Some((normalize_host(a.host()), a.port_u16()?)))
        else {
            return self.refuse(&req, StatusCode::BAD_REQUEST, "egress: CONNECT needs host:port");
        };
        let target = Target { host, port, tls: true };
        let entry = || Entry::start(Arc::clone(&self.audit), Arc::clone(&self.bottle), "CONNECT", &target.host, "");
        let route = match self.policy.route(&target.host, target.port) {
            Ok(route) => route,
            Err(denial) => return self.deny(entry(), denial),
        };
        let addrs = match self.screen(route, &target).await {
            Ok(addrs) => addrs,
            Err(err) => return self.failed(entry(), route, err),
        };
        let proxy = Arc::clone(&self);
        tokio::spawn(async move {
            if let Ok(upgraded) = hyper::upgrade::on(req).await {
                let destination = Destination { target, screened: Some((route, addrs)) };
                proxy.serve_tunnel(TokioIo::new(upgraded), destination, activity).await;
            }
        });
        Response::new(DownBody::full("", None))
    }

    /// The resolved addresses of `target` that `route` may reach.
    async fn screen(&self, route: usize, target: &Target) -> Result<Vec<IpAddr>, SendError> {
        let ips = self.upstreams.resolve(target).await?;
        self.policy.screen(route, &target.host, &ips).map_err(SendError::Denied)
    }

    /// Inside a tunnel: TLS (told by its first byte) with a leaf for the
    /// host, or plain HTTP/1.1.
    async fn serve_tunnel<I>(self: Arc<Self>, mut io: I, mut destination: Destination, activity: Arc<Activity>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut first = [0u8; 1];
        match within(HEADER_TIMEOUT, "tunnel", io.read(&mut first)).await {
            Ok(1) => {}
            _ => return,
        }
        let io = Prefixed::new(first.to_vec(), io);
        // A TLS handshake record starts with 22.
        if first[0] != 22 {
            destination.target.tls = false;
            self.serve_http(TokioIo::new(io), false, destination, activity).await;
            return;
        }
        let config = match self.tls.server_config(&destination.target.host) {
            Ok(config) => config,
            Err(err) => {
                eprintln!("egress: {err}");
                return;
            }
        };
        let Ok(stream) = within(HANDSHAKE_TIMEOUT, "TLS handshake", TlsAcceptor::from(config).accept(io)).await else {
            return;
        };
        let h2 = is_h2(stream.get_ref().1.alpn_protocol());
        self.serve_http(TokioIo::new(stream), h2, destination, activity).await;
    }

    async fn serve_http<I>(self: Arc<Self>, io: I, h2: bool, destination: Destination, activity: Arc<Activity>)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let destination = Arc::new(destination);
        let proxy = Arc::clone(&self);
        let service = service_fn(move |req| {
            let proxy = Arc::clone(&proxy);
            let destination = Arc::clone(&destination);
            async move { Ok::<_, Infallible>(proxy.forward(&destination, req).await) }
        });
        if h2 {
            let _ = http2::Builder::new(TokioExecutor::new())
                .max_concurrent_streams(MAX_STREAMS)
                .serve_connection(io, service)
                .await;
        } else {
            let _ = http1::Builder::new()
                .timer(HeaderTimer::new(activity, IDLE_TIMEOUT))
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(io, service)
                .with_upgrades()
                .await;
        }
    }

    /// One request to `destination`: policy, credentials, upstream, response.
    async fn forward(&self, destination: &Destination, mut req: Request<Incoming>) -> Response<DownBody> {
        let target = &destination.target;
        // The URI is shared bytes: a clone costs no copy of the path.
        let uri = req.uri().clone();
        let path = uri.path();
        let mut entry =
            Entry::start(Arc::clone(&self.audit), Arc::clone(&self.bottle), req.method().as_str(), &target.host, path);
        let route = match &destination.screened {
            Some((route, _)) => *route,
            None => match self.policy.route(&target.host, target.port) {
                Ok(route) => route,
                Err(denial) => return self.deny(entry, denial),
            },
        };
        // A request the route denies may fall under a live grant for the same host.
        let route = match self.policy.check_request(route, req.method().as_str(), path) {
            Ok(()) => route,
            Err(denial) => {
                match self.policy.regrant(route, (&target.host, target.port), req.method().as_str(), path, denial) {
                    Ok(route) => route,
                    Err(denial) => return self.deny(entry, denial),
                }
            }
        };
        entry.set_rule(Some(&self.policy.rule(route).host));
        let checked = self
            .policy
            .check_port(route, target.port)
            .and_then(|()| self.policy.check_credential(route, target.tls, target.port));
        if let Err(denial) = checked {
            return self.deny(entry, denial);
        }
        if req.method() == Method::CONNECT {
            return self.text(entry, StatusCode::BAD_REQUEST, ERROR_HEADER, "egress: CONNECT inside a tunnel");
        }
        let upgrade = req.version() == Version::HTTP_11 && wants_upgrade(req.headers());
        let agent_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        clean_hop_by_hop(&mut parts.headers, upgrade);
        parts.headers.remove(header::EXPECT);
        let scrubber = self.credentials.apply(route, &mut parts);
        let req = Request::from_parts(parts, UpBody::new(body, entry.bytes_up()));

        let addrs = match &destination.screened {
            Some((_, addrs)) => addrs.clone(),
            None => match self.screen(route, target).await {
                Ok(addrs) => addrs,
                Err(err) => return self.failed(entry, route, err),
            },
        };
        if let Some(agent_upgrade) = agent_upgrade {
            return match self.upstreams.send_upgrade(target, &addrs, req).await {
                Ok((response, sender)) => pass_upgrade(response, agent_upgrade, sender, entry, scrubber),
                Err(err) => self.failed(entry, route, err),
            };
        }
        match self.upstreams.send(target, &addrs, req).await {
            Ok(response) => {
                entry.set_status(response.status().as_u16());
                down(response, entry, scrubber)
            }
            Err(err) => self.failed(entry, route, err),
        }
    }

    fn deny(&self, mut entry: Entry, denial: Denial) -> Response<DownBody> {
        let rule = denial.route.map(|route| self.policy.rule(route));
        entry.set_rule(rule.as_ref().map(|rule| rule.host.as_str()));
        entry.set_reason(Decision::Deny, &denial.reason);
        self.text(entry, StatusCode::FORBIDDEN, DENIED_HEADER, &denial.reason)
    }

    fn failed(&self, mut entry: Entry, route: usize, err: SendError) -> Response<DownBody> {
        match err {
            SendError::Denied(denial) => self.deny(entry, denial),
            SendError::Failed(status, message) => {
                entry.set_rule(Some(&self.policy.rule(route).host));
                let message = sanitize(&format!("egress: {message}"));
                entry.set_reason(Decision::Allow, &message);
                self.text(entry, status, ERROR_HEADER, &message)
            }
        }
    }

    /// `407`: the request does not carry this bottle's client token.
    fn auth_required(&self, req: &Request<Incoming>) -> Response<DownBody> {
        let message = "egress: this proxy serves only its own bottle; send the bottle's proxy credentials \
                       (they are in its HTTPS_PROXY)";
        let mut response = self.refuse(req, StatusCode::PROXY_AUTHENTICATION_REQUIRED, message);
        response
            .headers_mut()
            .insert(header::PROXY_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"bot-bottle egress\""));
        response
    }

    /// A request the proxy cannot take at all (not a proxy request).
    fn refuse(&self, req: &Request<Incoming>, status: StatusCode, message: &str) -> Response<DownBody> {
        let host = req.uri().host().unwrap_or("");
        let mut entry = Entry::start(
            Arc::clone(&self.audit),
            Arc::clone(&self.bottle),
            req.method().as_str(),
            host,
            req.uri().path(),
        );
        entry.set_reason(Decision::Deny, message);
        self.text(entry, status, ERROR_HEADER, message)
    }

    /// The proxy's own answer: `message` as the body and in `header`.
    fn text(&self, mut entry: Entry, status: StatusCode, header: &'static str, message: &str) -> Response<DownBody> {
        entry.set_status(status.as_u16());
        let body = format!("{message}\n");
        let mut response = Response::new(DownBody::full(body, Some(entry)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        if let Ok(value) = HeaderValue::from_str(message) {
            headers.insert(header, value);
        }
        response
    }
}

/// Whether an HTTP/1.1 request asks to switch to WebSocket, the one
/// protocol the proxy passes through (any other `Upgrade`, h2c included, is
/// removed and the request goes up as a plain one).
fn wants_upgrade(headers: &HeaderMap) -> bool {
    let websocket = |value: &HeaderValue| value.to_str().is_ok_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    let mut upgrades = headers.get_all(header::UPGRADE).iter().peekable();
    upgrades.peek().is_some()
        && upgrades.all(websocket)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers (and those `Connection` names); with `upgrade`
/// keeps `Upgrade` and sets `Connection: upgrade`.
fn clean_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if !(upgrade && name == header::UPGRADE) {
                headers.remove(name);
            }
        }
    }
    // One pass over the (few) names present beats a lookup per hop-by-hop name.
    if headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
    }
    if headers.get(header::TE).is_some_and(|te| te.as_bytes() != b"trailers") {
        headers.remove(header::TE);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// The upstream's response on its way to the agent: hop-by-hop headers
/// removed, and with `scrubber` (the request carried a credential) the head,
/// body and trailers scrubbed of injected values.
fn down(response: Response<Incoming>, entry: Entry, scrubber: Option<Arc<Scrubber>>) -> Response<DownBody> {
    let (mut parts, body) = response.into_parts();
    clean_hop_by_hop(&mut parts.headers, false);
    if let Some(scrubber) = &scrubber {
        scrubber.scrub_head(&mut parts.headers);
    }
    Response::from_parts(parts, DownBody::stream(body, entry, scrubber))
}

/// The upstream agreed (or not) to switch protocols: on `101`, both sides'
/// upgraded streams are joined until either closes, and the audit line is
/// written then with the bytes each way. The `101` head is scrubbed; the
/// upgraded stream is not (see [`super::scrub`]).
fn pass_upgrade(
    mut response: Response<Incoming>,
    agent: hyper::upgrade::OnUpgrade,
    sender: hyper::client::conn::http1::SendRequest<UpBody>,
    mut entry: Entry,
    scrubber: Option<Arc<Scrubber>>,
) -> Response<DownBody> {
    entry.set_status(response.status().as_u16());
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return down(response, entry, scrubber);
    }
    let upstream = hyper::upgrade::on(&mut response);
    let (mut parts, _) = response.into_parts();
    if let Some(scrubber) = &scrubber {
        scrubber.scrub_headers(&mut parts.headers);
    }
    tokio::spawn(async move {
        let _sender = sender;
        let bytes_up = entry.bytes_up();
        let mut down = 0;
        if let (Ok(agent), Ok(upstream)) = tokio::join!(agent, upstream) {
            let (mut agent, mut upstream) = (TokioIo::new(agent), TokioIo::new(upstream));
            if let Ok((up, copied_down)) = tokio::io::copy_bidirectional(&mut agent, &mut upstream).await {
                bytes_up.fetch_add(up, std::sync::atomic::Ordering::Relaxed);
                down = copied_down;
            }
        }
        entry.finish(down);
    });
    Response::from_parts(parts, DownBody::full("", None))
}
