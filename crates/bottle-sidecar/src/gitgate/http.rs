//! The gate's HTTP side: git's smart HTTP protocol at `/NAME.git`, each
//! request answered by `git http-backend` run as a CGI, with the request body
//! streamed in and its response streamed out. A fetch or clone first fetches
//! the mirror from its upstream (one fetch shared by the requests that wait
//! for it); a push's `pre-receive` hook forwards it, and its audit record is
//! taken afterwards.
//!
//! Bounded against a client that would hold the gate: request headers within
//! [`HEADER_TIMEOUT`] of their first byte, no connection idle past the
//! gate's idle timeout (see the crate's `connection` module), at most
//! [`MAX_REQUESTS`] requests at once.

use std::convert::Infallible;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::connection::{Activity, HeaderTimer, Watched};
use crate::listen::Listener;
use crate::token;
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, BufReader, ReadBuf};
use tokio::process::ChildStdout;
use tokio::sync::OwnedSemaphorePermit;

use super::Gate;
use super::hook::AUDIT_ENV;
use super::mirror::{Mirror, git_command};

/// The smart HTTP endpoints under `/NAME.git`.
const ENDPOINTS: [&str; 3] = ["/info/refs", "/git-upload-pack", "/git-receive-pack"];
/// The most a CGI response's header may take.
const MAX_CGI_HEADER: usize = 64 * 1024;
/// How long a client may take to send a request's header from its first
/// byte, however steadily it trickles in: git sends one at once.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// The most requests the gate serves at once (each may run a git); one more
/// gets `503`. A bottle's git makes one request at a time per command.
pub(crate) const MAX_REQUESTS: usize = 16;

/// Accepts connections on `listener` and serves each one, forever.
pub(crate) async fn run(gate: Arc<Gate>, listener: Listener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(connection) => connection,
            Err(err) => {
                // Out of file descriptors, say: wait a little rather than spin.
                eprintln!("git-gate: warning: accepting a connection failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let gate = Arc::clone(&gate);
        tokio::spawn(async move {
            let io = Watched::new(stream, gate.idle_timeout);
            let activity = io.activity();
            let timer = HeaderTimer::new(Arc::clone(&activity), gate.idle_timeout);
            let service = service_fn(move |req| {
                let gate = Arc::clone(&gate);
                let peer = peer.clone();
                let activity = Arc::clone(&activity);
                async move { Ok::<_, Infallible>(handle(gate, req, peer, activity).await) }
            });
            // A client that goes away mid-request, or stalls and is cut, is
            // no concern of the gate's: its git is ended (see `cgi`).
            let _ = http1::Builder::new()
                .timer(timer)
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(io), service)
                .await;
        });
    }
}

async fn handle(gate: Arc<Gate>, req: Request<Incoming>, peer: String, activity: Arc<Activity>) -> Response<GateBody> {
    if !token::presents(&gate.client_token, req.headers().get(hyper::header::AUTHORIZATION)) {
        let mut response = text(
            StatusCode::UNAUTHORIZED,
            "this git gate serves only its own bottle; send the bottle's gate credentials \
             (its git configuration has them as http.extraHeader)",
        );
        response
            .headers_mut()
            .insert(hyper::header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"bot-bottle git gate\""));
        return response;
    }
    // Taken before anything that waits (the fetch below): a request holding
    // a permit has joined the fetch in flight.
    let Ok(permit) = Arc::clone(&gate.requests).try_acquire_owned() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("busy: {MAX_REQUESTS} requests are being served already; try again in a moment"),
        );
    };
    let path = req.uri().path();
    let Some((repo, endpoint)) =
        ENDPOINTS.iter().find_map(|endpoint| Some((path.strip_suffix(endpoint)?.strip_prefix('/')?, *endpoint)))
    else {
        return text(
            StatusCode::NOT_FOUND,
            "this is a git gate: it speaks git's smart HTTP protocol at /NAME.git only",
        );
    };
    let name = repo.strip_suffix(".git").unwrap_or(repo);
    let Some(mirror) = gate.mirrors.get(name) else {
        let served: Vec<String> = gate.mirrors.keys().map(|name| format!("{name}.git")).collect();
        return text(
            StatusCode::NOT_FOUND,
            &format!("no repository `{repo}` here; this gate serves: {}", served.join(", ")),
        );
    };
    let service = req.uri().query().unwrap_or("").split('&').find_map(|pair| pair.strip_prefix("service="));
    let spool = match (req.method(), endpoint, service) {
        (&Method::GET, "/info/refs", Some("git-upload-pack" | "git-receive-pack")) => {
            // Fresh refs for every fetch, and for every push to be checked
            // against; the client has nothing to say meanwhile.
            let _busy = activity.busy();
            mirror.refresh().await;
            None
        }
        (&Method::POST, "/git-upload-pack", _) => None,
        (&Method::POST, "/git-receive-pack", _) => {
            let n = gate.pushes.fetch_add(1, Ordering::Relaxed);
            Some(gate.layout.spool.join(format!("push-{}-{n}.json", std::process::id())))
        }
        (_, "/info/refs", _) => {
            return text(StatusCode::FORBIDDEN, "this gate speaks git's smart HTTP protocol only (no dumb HTTP)");
        }
        _ => return text(StatusCode::METHOD_NOT_ALLOWED, "use GET for /info/refs and POST for the git services"),
    };
    let path_info = format!("/{name}.git{endpoint}");
    cgi(&gate, mirror, req, peer, &path_info, permit, spool).await
}

/// Runs `git http-backend` for one request.
async fn cgi(
    gate: &Arc<Gate>,
    mirror: &Mirror,
    req: Request<Incoming>,
    peer: String,
    path_info: &str,
    permit: OwnedSemaphorePermit,
    spool: Option<PathBuf>,
) -> Response<GateBody> {
    let (parts, mut body) = req.into_parts();
    // The program itself rather than `git http-backend`, so that killing it
    // kills it, not a `git` in front of it.
    let mut cmd = git_command(&gate.layout.home, &gate.http_backend);
    cmd.env("GIT_PROJECT_ROOT", &gate.layout.repos)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", path_info)
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("REMOTE_USER", &gate.bottle)
        .env("REMOTE_ADDR", peer);
    for (header, var) in [
        (CONTENT_TYPE, "CONTENT_TYPE"),
        (CONTENT_LENGTH, "CONTENT_LENGTH"),
        // http-backend inflates a gzip'd request itself.
        (CONTENT_ENCODING, "HTTP_CONTENT_ENCODING"),
        (HeaderName::from_static("git-protocol"), "HTTP_GIT_PROTOCOL"),
    ] {
        if let Some(value) = parts.headers.get(header).and_then(|v| v.to_str().ok()) {
            cmd.env(var, value);
        }
    }
    if let Some(spool) = &spool {
        cmd.env(AUDIT_ENV, spool);
    }
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(err) => return text(StatusCode::INTERNAL_SERVER_ERROR, &format!("could not run git http-backend: {err}")),
    };
    let (Some(mut stdin), Some(mut stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "git http-backend has no pipes");
    };
    let promised = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let (abort, aborted) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut received = 0u64;
        let whole = loop {
            match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    received += data.len() as u64;
                    if stdin.write_all(&data).await.is_err() {
                        // It stopped reading, and knows why (a pack over the limit, say).
                        break true;
                    }
                }
                // The client went away or was cut off mid-body.
                Some(Err(_)) => break false,
                None => break promised.is_none_or(|promised| promised == received),
            }
        };
        // Dropping stdin ends the request for http-backend...
        drop(stdin);
        if !whole {
            // ...except one that promised a Content-Length: it would wait
            // for the rest forever (spinning), so it is ended instead.
            let _ = abort.send(());
        }
    });
    let name = mirror.name.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("git-gate: {name}: {line}");
        }
    });
    let gate = Arc::clone(gate);
    tokio::spawn(async move {
        tokio::select! {
            _ = child.wait() => {}
            Ok(()) = aborted => {
                // Its git sees the end of its input and goes, and with it a
                // push's quarantine.
                let _ = child.kill().await;
            }
        }
        if let Some(spool) = spool {
            gate.audit.drain(&spool);
        }
        // The request counts until its git is done.
        drop(permit);
    });

    let (head, rest) = match read_cgi_header(&mut stdout).await {
        Ok(split) => split,
        Err(err) => return text(StatusCode::BAD_GATEWAY, &format!("git http-backend answered badly: {err}")),
    };
    let mut response = Response::new(GateBody::Cgi { head: Some(rest), stdout: Some(stdout), buf: vec![0; 64 * 1024] });
    for line in head.lines().map(str::trim_end).filter(|line| !line.is_empty()) {
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if key.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().and_then(|code| code.parse::<u16>().ok());
            if let Some(status) = code.and_then(|code| StatusCode::from_u16(code).ok()) {
                *response.status_mut() = status;
            }
        } else if let (Ok(key), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            response.headers_mut().append(key, value);
        }
    }
    response
}

/// Reads the CGI response header; returns it and what was read past it.
async fn read_cgi_header(stdout: &mut ChildStdout) -> std::io::Result<(String, Bytes)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stdout.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no response header"));
        }
        buf.extend_from_slice(&chunk[..n]);
        // http-backend ends its header with CRLF CRLF; a bare LF LF is CGI too.
        let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4);
        let lf = buf.windows(2).position(|w| w == b"\n\n").map(|at| at + 2);
        let end = match (crlf, lf) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(end) = end {
            let rest = Bytes::copy_from_slice(&buf[end..]);
            buf.truncate(end);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > MAX_CGI_HEADER {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "response header too long"));
        }
    }
}

/// A response body: a short text of the gate's own, or a CGI response.
enum GateBody {
    /// The whole body at once.
    Text(Option<Bytes>),
    /// What was read with the CGI header, then the rest of the CGI's stdout.
    Cgi { head: Option<Bytes>, stdout: Option<ChildStdout>, buf: Vec<u8> },
}

impl Body for GateBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let (head, stdout, buf) = match self.get_mut() {
            GateBody::Text(text) => return Poll::Ready(text.take().map(|text| Ok(Frame::data(text)))),
            GateBody::Cgi { head, stdout, buf } => (head, stdout, buf),
        };
        if let Some(head) = head.take().filter(|head| !head.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        let Some(out) = stdout.as_mut() else { return Poll::Ready(None) };
        let mut read = ReadBuf::new(buf);
        match Pin::new(out).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) if read.filled().is_empty() => {
                *stdout = None;
                Poll::Ready(None)
            }
            Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(read.filled()))))),
            Poll::Ready(Err(err)) => Poll::Ready(Some(Err(err))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A plain-text answer (a newline is added).
fn text(status: StatusCode, message: &str) -> Response<GateBody> {
    let mut response = Response::new(GateBody::Text(Some(Bytes::from(format!("git-gate: {message}\n")))));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
