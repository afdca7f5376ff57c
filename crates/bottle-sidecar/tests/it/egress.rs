//! Egress proxy tests: the proxy in-process (and once as the real binary) in
//! front of a local HTTPS upstream with its own test CA, driven by real
//! `curl` and by raw TCP/TLS clients. The upstream echoes what it received
//! as JSON (and, as hex, which the proxy's scrubber does not look for, what
//! really arrived), reflects the request's headers in its own headers, body
//! and trailers, writes them split across chunks, serves N bytes, and echoes
//! bytes after an `Upgrade`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bottle_core::sidecar::{ClientToken, EgressConfig, EgressRule, InjectedHeader, Secret, mint_ca};
use bottle_sidecar::egress::{host_matches, path_matches, serve};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use proptest::prelude::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::{Value, json};
use tempfile::TempDir;

const BOTTLE: &str = "test-bottle";
const SENTINEL: &str = "bot-bottle-hidden:TOKEN";
/// The credential the tests' routes inject, and its header value.
const CREDENTIAL: &str = "real-token-7f3a";
const SECRET: &str = "Bearer real-token-7f3a";
/// Another hidden variable's sentinel, which belongs to no route.
const OTHER_SENTINEL: &str = "bot-bottle-hidden:OTHER";

// ---------------------------------------------------------------- fixtures

/// The runtime the upstream and the in-process proxies run on; tests
/// themselves are synchronous and drive curl or blocking sockets.
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("test runtime")
    })
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The local upstream: HTTPS (h2 and http/1.1) and plain HTTP on loopback.
struct Upstream {
    tls_port: u16,
    plain_port: u16,
    ca_pem: String,
}

fn upstream() -> &'static Upstream {
    static UPSTREAM: OnceLock<Upstream> = OnceLock::new();
    UPSTREAM.get_or_init(start_upstream)
}

fn start_upstream() -> Upstream {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, "egress test upstream CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("leaf params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    let mut config = rustls::ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let _guard = rt().enter();
    let tls = tokio::net::TcpListener::from_std(bind()).expect("tls listener");
    let plain = tokio::net::TcpListener::from_std(bind()).expect("plain listener");
    let (tls_port, plain_port) = (port_of(&tls), port_of(&plain));
    rt().spawn(async move {
        loop {
            let Ok((stream, _)) = tls.accept().await else { continue };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else { return };
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                serve_upstream(TokioIo::new(stream), h2, "https").await;
            });
        }
    });
    rt().spawn(async move {
        loop {
            let Ok((stream, _)) = plain.accept().await else { continue };
            tokio::spawn(serve_upstream(TokioIo::new(stream), false, "http"));
        }
    });
    Upstream { tls_port, plain_port, ca_pem: ca_cert.pem() }
}

fn bind() -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.set_nonblocking(true).expect("nonblocking");
    listener
}

fn port_of(listener: &tokio::net::TcpListener) -> u16 {
    listener.local_addr().expect("local addr").port()
}

type TestBody = BoxBody<Bytes, hyper::Error>;

async fn serve_upstream<I>(io: I, h2: bool, scheme: &'static str)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
    let conn = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    let service = service_fn(move |req| upstream_handle(req, conn, scheme));
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(io, service).await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).with_upgrades().await;
    }
}

async fn upstream_handle(
    mut req: Request<Incoming>,
    conn: u64,
    scheme: &'static str,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_owned();
    if let Some(n) = path.strip_prefix("/split/").and_then(|n| n.parse::<usize>().ok()) {
        return Ok(Response::new(split_reflection(req.headers(), n)));
    }
    if let Some(n) = path.strip_prefix("/bytes/").and_then(|n| n.parse::<u64>().ok()) {
        let mut response = Response::new(Repeat { left: n }.boxed());
        response.headers_mut().insert("content-length", n.into());
        return Ok(response);
    }
    if path == "/upgrade" && req.headers().contains_key("upgrade") {
        // Switches to whatever the client asked for, and echoes it.
        let protocol = req.headers()["upgrade"].clone();
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            }
        });
        let response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", protocol)
            .body(empty())
            .expect("101");
        return Ok(response);
    }
    let mut headers = BTreeMap::<String, String>::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers.entry(name.as_str().to_owned()).and_modify(|v| *v = format!("{v}, {value}")).or_insert(value);
    }
    let reflect = path == "/reflect";
    let reflected: Vec<(String, String)> =
        headers.iter().map(|(name, value)| (format!("x-reflect-{name}"), value.clone())).collect();
    let method = req.method().to_string();
    let version = format!("{:?}", req.version());
    let uri = req.uri().path_and_query().map(ToString::to_string).unwrap_or_default();
    // HTTP/2 carries the authority in the URI, HTTP/1.1 in `Host`.
    let authority = req.uri().authority().map(ToString::to_string).or_else(|| headers.get("host").cloned());
    let body_len = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(_) => usize::MAX,
    };
    let hex_headers: BTreeMap<&String, String> = headers.iter().map(|(name, value)| (name, hex(value))).collect();
    let echo = json!({
        "method": method, "uri": uri, "authority": authority, "version": version, "headers": headers,
        "conn": conn, "scheme": scheme, "body_len": body_len,
        "hex": { "uri": hex(&uri), "headers": hex_headers },
    });
    let body = Bytes::from(echo.to_string());
    if !reflect {
        return Ok(Response::new(Full::new(body).map_err(|never| match never {}).boxed()));
    }
    // The request's headers back in the response's headers, body and trailers.
    let mut trailers = hyper::HeaderMap::new();
    let mut response = Response::new(empty());
    for (name, value) in reflected {
        let (Ok(name), Ok(value)) =
            (hyper::header::HeaderName::try_from(name), value.parse::<hyper::header::HeaderValue>())
        else {
            continue;
        };
        trailers.insert(name.clone(), value.clone());
        response.headers_mut().insert(name, value);
    }
    response.headers_mut().insert("content-length", body.len().into());
    *response.body_mut() = Pieces::new(vec![body], Some(trailers)).boxed();
    Ok(response)
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> String {
    let bytes: Vec<u8> =
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect();
    String::from_utf8(bytes).expect("text")
}

/// `{"authorization": "<the request's authorization>"}`, written in `n`
/// pieces cut inside the value, with a pause (so a flush) between pieces.
fn split_reflection(headers: &hyper::HeaderMap, n: usize) -> TestBody {
    let value = headers.get("authorization").map(|v| v.as_bytes().to_vec()).unwrap_or_default();
    let head = b"{\"authorization\": \"";
    let text = [&head[..], &value, b"\"}"].concat();
    let start = head.len();
    let cuts: Vec<usize> = (1..n).map(|i| start + i * value.len() / n).collect();
    let mut pieces = Vec::new();
    let mut from = 0;
    for cut in cuts.into_iter().chain([text.len()]) {
        pieces.push(Bytes::copy_from_slice(&text[from..cut]));
        from = cut;
    }
    Pieces::new(pieces, None).boxed()
}

/// A body written piece by piece, 20 ms apart, then its trailers.
struct Pieces {
    pieces: std::collections::VecDeque<Bytes>,
    trailers: Option<hyper::HeaderMap>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Pieces {
    fn new(pieces: Vec<Bytes>, trailers: Option<hyper::HeaderMap>) -> Self {
        Pieces { pieces: pieces.into(), trailers, pause: None }
    }
}

impl Body for Pieces {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(pause) = this.pause.as_mut() {
            std::task::ready!(pause.as_mut().poll(cx));
            this.pause = None;
        }
        if let Some(piece) = this.pieces.pop_front() {
            this.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(20))));
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        Poll::Ready(this.trailers.take().map(|trailers| Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty() && self.trailers.is_none()
    }
}

fn empty() -> TestBody {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed()
}

/// A body of `left` bytes, streamed in 64 KiB frames.
struct Repeat {
    left: u64,
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        static CHUNK: [u8; 65536] = [b'x'; 65536];
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let n = this.left.min(CHUNK.len() as u64);
        this.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n as usize])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// A route for the tests; `inject` is a `Bearer` value whose sentinel is [`SENTINEL`].
/// A route to `host` on the test upstream's ports (a route reaches 443 and 80
/// only, unless it names its ports).
fn route(host: &str, methods: &[&str], paths: &[&str], inject: Option<&str>) -> EgressRule {
    EgressRule {
        ports: vec![upstream().tls_port, upstream().plain_port],
        methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        inject: inject.map(|value| injected("authorization", value, value.strip_prefix("Bearer ").unwrap_or(value))),
        ..EgressRule::open(host)
    }
}

fn injected(name: &str, value: &str, credential: &str) -> InjectedHeader {
    InjectedHeader {
        name: name.to_owned(),
        value: Secret::new(value),
        credential: Secret::new(credential),
        sentinels: vec![SENTINEL.to_owned()],
        source: "$TOKEN".to_owned(),
    }
}

/// A route to `host` injecting [`SECRET`], reaching the upstream's TLS port (and `more`).
fn credential_route(host: &str, more: &[u16]) -> EgressRule {
    EgressRule { ports: [&[upstream().tls_port][..], more].concat(), ..route(host, &[], &[], Some(SECRET)) }
}

/// What the upstream's JSON echo says arrived in header `name` (from its hex copy).
fn arrived(got: &Value, name: &str) -> Option<String> {
    got["hex"]["headers"][name].as_str().map(unhex)
}

/// The path and query that arrived upstream.
fn arrived_uri(got: &Value) -> String {
    unhex(got["hex"]["uri"].as_str().expect("hex uri"))
}

/// Asserts that curl's whole output (with `-i`, its headers too) holds no
/// form of the credential and holds the sentinel.
#[track_caller]
fn only_the_sentinel(output: &Output) -> String {
    assert!(output.status.success(), "curl failed: {}", String::from_utf8_lossy(&output.stderr));
    let text = stdout(output);
    for leak in [CREDENTIAL, "real-token", &STANDARD.encode(format!("bot:{CREDENTIAL}"))] {
        assert!(!text.contains(leak), "the agent received {leak}:\n{text}");
    }
    assert!(text.contains(SENTINEL), "no sentinel in:\n{text}");
    text
}

/// A proxy running in-process, with the bottle CA on disk for curl.
struct Proxy {
    port: u16,
    ca_pem: String,
    ca_file: PathBuf,
    audit: PathBuf,
    dir: TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn config(dir: &Path, rules: Vec<EgressRule>, resolve: &[(&str, &str)]) -> EgressConfig {
    let (ca_cert_pem, ca_key_pem) = mint_ca(BOTTLE).expect("mint CA");
    EgressConfig {
        listen: bottle_core::sidecar::Listen::Tcp("127.0.0.1:0".to_owned()),
        audit_log: dir.join("audit.jsonl").display().to_string(),
        grants: None,
        policy: bottle_core::sidecar::EgressPolicy {
            bottle: BOTTLE.to_owned(),
            client_token: ClientToken::from_value(TOKEN).digest(),
            ca_cert_pem,
            ca_key_pem,
            rules,
            sentinels: vec![SENTINEL.to_owned(), OTHER_SENTINEL.to_owned()],
            extra_upstream_ca_pem: Some(upstream().ca_pem.clone()),
            resolve: resolve.iter().map(|(name, ip)| ((*name).to_owned(), ip.parse::<IpAddr>().expect("ip"))).collect(),
        },
    }
}

fn start_proxy(rules: Vec<EgressRule>, resolve: &[(&str, &str)]) -> Proxy {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), rules, resolve);
    launch(dir, config)
}

fn launch(dir: TempDir, config: EgressConfig) -> Proxy {
    let ca_file = dir.path().join("bottle-ca.pem");
    std::fs::write(&ca_file, &config.policy.ca_cert_pem).expect("write CA");
    let audit = PathBuf::from(&config.audit_log);
    let ca_pem = config.policy.ca_cert_pem.clone();
    let _guard = rt().enter();
    let listener = tokio::net::TcpListener::from_std(bind()).expect("proxy listener");
    let port = port_of(&listener);
    let task = rt().spawn(async move {
        if let Err(err) = serve(config, listener.into()).await {
            panic!("egress proxy failed: {err}");
        }
    });
    Proxy { port, ca_pem, ca_file, audit, dir, task }
}

/// The bottle's client token in these tests.
const TOKEN: &str = "test-client-token";

/// The proxy URL with the bottle's credentials, as the bottle's HTTPS_PROXY has it.
fn proxy_url(port: u16) -> String {
    format!("http://bb:{TOKEN}@127.0.0.1:{port}")
}

/// `request` with the bottle's `Proxy-Authorization` after its first line.
fn authed(request: &[u8]) -> Vec<u8> {
    let auth = format!("Proxy-Authorization: Basic {}\r\n", STANDARD.encode(format!("bb:{TOKEN}")));
    match request.windows(2).position(|w| w == b"\r\n") {
        Some(at) => [&request[..at + 2], auth.as_bytes(), &request[at + 2..]].concat(),
        None => request.to_vec(),
    }
}

/// `curl -sS -x PROXY --cacert BOTTLE_CA ARGS`.
fn curl(proxy: &Proxy, args: &[&str]) -> Output {
    curl_via(proxy.port, &proxy.ca_file, args)
}

fn curl_via(port: u16, ca_file: &Path, args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "60", "-x", &proxy_url(port), "--cacert"])
        .arg(ca_file)
        .args(args)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .stdin(Stdio::null())
        .output()
        .expect("curl is installed")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// curl's output as the upstream's JSON echo, failing with curl's stderr.
fn echo(output: &Output) -> Value {
    assert!(output.status.success(), "curl failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("no JSON echo ({err}): {}", String::from_utf8_lossy(&output.stdout)))
}

fn https(path: &str) -> String {
    format!("https://localhost:{}{path}", upstream().tls_port)
}

/// The audit log's lines once `ready` holds for them (the proxy writes a
/// line as the response ends, which may be just after curl exits).
fn audit_lines(proxy: &Proxy, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&proxy.audit).unwrap_or_default();
        let lines: Vec<Value> =
            text.lines().map(|line| serde_json::from_str(line).expect("audit line is JSON")).collect();
        if ready(&lines) || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `request` raw to the proxy and returns the response head and body
/// (read to the end, or to its `content-length`).
fn raw_exchange(port: u16, request: &[u8]) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to proxy");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(&authed(request)).expect("write request");
    let head = read_head(&mut stream);
    let length = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).expect("read body");
    (head, String::from_utf8_lossy(&body).into_owned())
}

fn read_head(stream: &mut impl Read) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

// ---------------------------------------------------------------- tests

#[test]
fn curl_sees_injected_credentials_and_sentinels_never_leave() {
    let credential = EgressRule { insecure_http: true, ..credential_route("localhost", &[upstream().plain_port]) };
    let proxy = start_proxy(vec![credential, route("127.0.0.1", &[], &[], None)], &[]);
    let sent = format!("Authorization: Bearer {SENTINEL}");
    let api_key = format!("X-Api-Key: {SENTINEL}");
    let other_key = format!("X-Other-Key: {OTHER_SENTINEL}");

    let got = echo(&curl(
        &proxy,
        &["-H", &sent, "-H", &api_key, "-H", &other_key, "-H", "X-Custom: zebra-42", &https("/echo?q=s3cr3t")],
    ));
    assert_eq!(arrived(&got, "authorization").as_deref(), Some(SECRET), "{got}");
    assert_eq!(got["headers"]["authorization"], SENTINEL, "what comes back is scrubbed: {got}");
    assert_eq!(arrived(&got, "x-api-key").as_deref(), Some(CREDENTIAL), "the route's sentinel, anywhere: {got}");
    assert_eq!(got["headers"].get("x-other-key"), None, "another sentinel is removed: {got}");
    assert_eq!(got["headers"]["x-custom"], "zebra-42");
    assert_eq!(got["authority"], format!("localhost:{}", upstream().tls_port));
    assert_eq!(got["uri"], "/echo?q=s3cr3t");
    assert_eq!(got["method"], "GET");

    let got = echo(&curl(&proxy, &[&https("/no-header")]));
    assert_eq!(arrived(&got, "authorization").as_deref(), Some(SECRET), "injected even when the agent sent none");

    let other = format!("https://127.0.0.1:{}/echo", upstream().tls_port);
    let got = echo(&curl(&proxy, &["-H", &sent, "-H", &api_key, "-H", "X-Other: kept", &other]));
    assert_eq!(got["headers"].get("authorization"), None, "the sentinel is stripped for another host: {got}");
    assert_eq!(got["headers"].get("x-api-key"), None, "{got}");
    assert_eq!(got["headers"]["x-other"], "kept");

    let plain = format!("http://localhost:{}/plain", upstream().plain_port);
    let got = echo(&curl(&proxy, &["-H", &sent, &plain]));
    assert_eq!(got["scheme"], "http");
    assert_eq!(arrived(&got, "authorization").as_deref(), Some(SECRET), "plain http with insecure_http: {got}");

    let upload = proxy.dir.path().join("upload.bin");
    std::fs::write(&upload, vec![7u8; 300_000]).expect("write upload");
    let data = format!("@{}", upload.display());
    let got = echo(&curl(&proxy, &["-X", "POST", "--data-binary", &data, &https("/upload")]));
    assert_eq!(got["body_len"], 300_000);

    let lines = audit_lines(&proxy, |lines| lines.len() >= 5);
    assert_eq!(lines.len(), 5, "one line per request: {lines:?}");
    let first = &lines[0];
    let keys: Vec<&str> = first.as_object().expect("object").keys().map(String::as_str).collect();
    let mut expect = vec![
        "time",
        "bottle",
        "method",
        "host",
        "path",
        "status",
        "bytes_up",
        "bytes_down",
        "rule",
        "decision",
        "reason",
        "duration_ms",
    ];
    expect.sort_unstable();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, expect);
    assert_eq!(first["bottle"], BOTTLE);
    assert_eq!(first["method"], "GET");
    assert_eq!(first["host"], "localhost");
    assert_eq!(first["path"], "/echo", "no query string in the log");
    assert_eq!(first["status"], 200);
    assert_eq!(first["rule"], "localhost");
    assert_eq!(first["decision"], "allow");
    assert_eq!(first["reason"], Value::Null);
    assert!(first["bytes_down"].as_u64().is_some_and(|n| n > 0), "{first}");
    assert!(first["duration_ms"].is_u64());
    let time = first["time"].as_str().expect("time");
    assert!(time.len() == 24 && time.ends_with('Z') && &time[10..11] == "T", "RFC 3339 UTC: {time}");
    let upload_line = lines.iter().find(|line| line["path"] == "/upload").expect("upload line");
    assert_eq!(upload_line["bytes_up"], 300_000);
    assert_eq!(upload_line["method"], "POST");
    assert!(lines.iter().any(|line| line["rule"] == "127.0.0.1"));

    let log = std::fs::read_to_string(&proxy.audit).expect("audit log");
    for value in ["real-token", SENTINEL, "zebra-42", "kept", "s3cr3t"] {
        assert!(!log.contains(value), "the audit log holds a header value or query ({value}):\n{log}");
    }
}

#[test]
fn an_upstream_reflecting_the_credential_hands_the_agent_only_the_sentinel() {
    let basic =
        injected("authorization", &format!("Basic {}", STANDARD.encode(format!("bot:{CREDENTIAL}"))), CREDENTIAL);
    let basic = EgressRule { ports: vec![upstream().tls_port], inject: Some(basic), ..EgressRule::open("127.0.0.1") };
    let proxy = start_proxy(vec![credential_route("localhost", &[]), basic], &[]);
    let base64 = STANDARD.encode(format!("bot:{CREDENTIAL}"));

    for protocol in ["--http1.1", "--http2"] {
        // Headers, body and (over HTTP/2) trailers reflect every request header.
        let text = only_the_sentinel(&curl(&proxy, &[protocol, "-i", "--compressed", &https("/reflect")]));
        assert!(text.contains(&format!("x-reflect-authorization: {SENTINEL}")), "{protocol}: {text}");
        assert!(!text.to_ascii_lowercase().contains("x-reflect-accept-encoding"), "no Accept-Encoding went up: {text}");
        // The body is the echo; over HTTP/2 curl prints the trailers right after it.
        let body = text.rsplit_once("\r\n\r\n").map_or("", |(_, body)| body);
        let got: Value = serde_json::Deserializer::from_str(body).into_iter().next().expect("a body").expect("echo");
        assert_eq!(got["headers"]["authorization"], SENTINEL, "{protocol}: {got}");
        assert_eq!(arrived(&got, "authorization").as_deref(), Some(SECRET), "the upstream did get the credential");

        // The value written across chunks, with a flush between them.
        for pieces in [2, 3, 7, SECRET.len()] {
            let out = curl(&proxy, &[protocol, "-i", &https(&format!("/split/{pieces}"))]);
            let text = only_the_sentinel(&out);
            assert!(text.ends_with(&format!("{{\"authorization\": \"{SENTINEL}\"}}")), "{pieces} pieces: {text}");
        }
        // A Basic route: neither the password nor the pair's base64 comes back.
        let text = only_the_sentinel(&curl(
            &proxy,
            &[protocol, "-i", &format!("https://127.0.0.1:{}/reflect", upstream().tls_port)],
        ));
        assert!(!text.contains(&base64), "{text}");
    }
    // Over HTTP/2 curl shows the trailers after the body: scrubbed too.
    let text = stdout(&curl(&proxy, &["--http2", "-i", &https("/reflect")]));
    let trailer = text.lines().filter(|l| l.starts_with("x-reflect-authorization")).count();
    assert_eq!(trailer, 2, "the header and the trailer, both with the sentinel: {text}");

    // A route without a credential passes the same reflection untouched.
    let open = start_proxy(vec![route("localhost", &[], &[], None)], &[]);
    let text = stdout(&curl(&open, &["-i", "-H", "X-Echo: plain-value", &https("/reflect")]));
    assert!(
        text.contains("x-reflect-x-echo: plain-value") && text.to_ascii_lowercase().contains("content-length"),
        "{text}"
    );

    let log = std::fs::read_to_string(&proxy.audit).expect("audit log");
    assert!(!log.contains(CREDENTIAL) && !log.contains(&base64), "{log}");
}

#[test]
fn a_basic_pair_the_client_builds_with_the_sentinel_carries_the_credential() {
    // git over HTTPS and gh send `Authorization: Basic base64(user:TOKEN)`, built from the sentinel.
    let header_route = EgressRule {
        ports: vec![upstream().tls_port],
        inject: Some(injected("x-api-key", CREDENTIAL, CREDENTIAL)),
        ..EgressRule::open("localhost")
    };
    let proxy = start_proxy(vec![header_route], &[]);
    let user = format!("x-access-token:{SENTINEL}");
    let got = echo(&curl(&proxy, &["-u", &user, &https("/git")]));
    let real_pair = STANDARD.encode(format!("x-access-token:{CREDENTIAL}"));
    assert_eq!(arrived(&got, "authorization"), Some(format!("Basic {real_pair}")), "{got}");
    assert_eq!(arrived(&got, "x-api-key").as_deref(), Some(CREDENTIAL));
    assert_eq!(got["headers"]["authorization"], SENTINEL, "the pair it became is scrubbed on the way back: {got}");
    assert!(!got.to_string().contains(&real_pair), "{got}");

    let got = echo(&curl(&proxy, &["-H", &format!("Authorization: token {SENTINEL}"), &https("/gh")]));
    assert_eq!(arrived(&got, "authorization"), Some(format!("token {CREDENTIAL}")), "{got}");

    let foreign = format!("x-access-token:{OTHER_SENTINEL}");
    let got = echo(&curl(&proxy, &["-u", &foreign, &https("/other")]));
    assert_eq!(arrived(&got, "authorization"), None, "a pair with another sentinel is removed: {got}");
}

#[test]
fn a_sentinel_in_the_query_is_swapped_for_its_route_and_stripped_elsewhere() {
    let proxy = start_proxy(vec![credential_route("localhost", &[]), route("127.0.0.1", &[], &[], None)], &[]);
    let query = "/q?access_token=bot-bottle-hidden%3ATOKEN&x=1&other=bot-bottle-hidden:OTHER&y=a+b";
    let out = curl(&proxy, &[&https(query)]);
    let got = echo(&out);
    assert_eq!(arrived_uri(&got), format!("/q?access_token={CREDENTIAL}&x=1&y=a+b"), "{got}");
    assert_eq!(got["uri"], format!("/q?access_token={SENTINEL}&x=1&y=a+b"), "the echo comes back scrubbed");
    assert!(!stdout(&out).contains(CREDENTIAL));

    let other = format!("https://127.0.0.1:{}/q?access_token={SENTINEL}&x=1", upstream().tls_port);
    let got = echo(&curl(&proxy, &[&other]));
    assert_eq!(arrived_uri(&got), "/q?x=1", "no credential on this route: the parameter goes: {got}");
    let got = echo(&curl(&proxy, &[&format!("https://127.0.0.1:{}/q?t={SENTINEL}", upstream().tls_port)]));
    assert_eq!(arrived_uri(&got), "/q", "{got}");
}

#[test]
fn credentials_go_only_over_tls_to_443_or_the_routes_ports() {
    let (tls, plain) = (upstream().tls_port, upstream().plain_port);
    // curl's `-i` output and the reason the proxy gave.
    let refused = |proxy: &Proxy, url: &str| {
        let text = stdout(&curl(proxy, &["-i", url]));
        let reason = text.lines().find_map(|l| l.strip_prefix("x-bot-bottle-denied: ")).map(str::to_owned);
        assert!(text.contains(" 403"), "{url}: {text}");
        let reason = reason.unwrap_or_else(|| panic!("{url}: no reason: {text}"));
        assert!(text.trim_end().ends_with(&reason), "the body is the reason: {text}");
        reason
    };

    // No ports: the route reaches 443 and 80 only, so the upstream's port is
    // refused outright (where its credential may go is the policy's unit test).
    let proxy = start_proxy(vec![EgressRule { ports: vec![], ..route("localhost", &[], &[], Some(SECRET)) }], &[]);
    let connect = format!("CONNECT localhost:{tls} HTTP/1.1\r\nHost: localhost:{tls}\r\n\r\n");
    let (head, body) = raw_exchange(proxy.port, connect.as_bytes());
    let expect = format!(
        "egress denied: port {tls} is not allowed by route localhost of bottle {BOTTLE} (ports: 443, 80); ask the \
         operator to add {tls} to that route's ports in the manifest"
    );
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!((header(&head, "x-bot-bottle-denied"), body.trim_end()), (Some(expect.as_str()), expect.as_str()));
    // Plain http to a credential route that lists the port: refused for the credential.
    let proxy = start_proxy(vec![credential_route("localhost", &[plain])], &[]);
    let reason = refused(&proxy, &format!("http://localhost:{plain}/x"));
    assert!(
        reason.contains("which goes only over TLS, and this request is plain http")
            && reason.contains("`insecure_http: true`"),
        "{reason}"
    );

    // `ports` names the port: TLS there is fine; plain http still needs insecure_http.
    let proxy = start_proxy(vec![credential_route("localhost", &[plain])], &[]);
    assert_eq!(arrived(&echo(&curl(&proxy, &[&https("/x")])), "authorization").as_deref(), Some(SECRET));
    let reason = refused(&proxy, &format!("http://localhost:{plain}/x"));
    assert!(reason.contains("insecure_http"), "{reason}");

    // With insecure_http, plain http to a listed port carries the credential.
    let clear = EgressRule { insecure_http: true, ..credential_route("localhost", &[plain]) };
    let proxy = start_proxy(vec![clear], &[]);
    let got = echo(&curl(&proxy, &[&format!("http://localhost:{plain}/x")]));
    assert_eq!((arrived(&got, "authorization").as_deref(), &got["scheme"]), (Some(SECRET), &json!("http")));

    // `ports` is also all the route may reach: another port is refused at CONNECT, before any TLS.
    let only_tls = EgressRule { ports: vec![tls], ..route("localhost", &[], &[], None) };
    let proxy = start_proxy(vec![only_tls], &[]);
    let connect = format!("CONNECT localhost:{plain} HTTP/1.1\r\nHost: localhost:{plain}\r\n\r\n");
    let (head, body) = raw_exchange(proxy.port, connect.as_bytes());
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let expect = format!(
        "egress denied: port {plain} is not allowed by route localhost of bottle {BOTTLE} (ports: {tls}); ask the \
         operator to add {plain} to that route's ports in the manifest"
    );
    assert_eq!((header(&head, "x-bot-bottle-denied"), body.trim_end()), (Some(expect.as_str()), expect.as_str()));
    let reason = refused(&proxy, &format!("http://localhost:{plain}/x"));
    assert_eq!(reason, expect);
    assert_eq!(echo(&curl(&proxy, &[&https("/fine")]))["uri"], "/fine");
}

#[test]
fn a_client_without_the_bottles_token_gets_407_before_anything_else() {
    let proxy = start_proxy(vec![route("localhost", &[], &[], Some(SECRET))], &[]);
    let wrong = format!("Proxy-Authorization: Basic {}\r\n", STANDARD.encode("bb:not-the-token"));
    let port = upstream().tls_port;
    for auth in [String::new(), wrong] {
        for request in [
            format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n"),
            format!("GET http://localhost:{}/ HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n", upstream().plain_port),
            format!("CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test\r\n{auth}\r\n"),
        ] {
            let mut stream = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
            stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            stream.write_all(request.as_bytes()).expect("write");
            let head = read_head(&mut stream);
            assert!(head.starts_with("HTTP/1.1 407"), "{request:?}: {head}");
            assert!(header(&head, "proxy-authenticate").is_some_and(|v| v.starts_with("Basic")), "{head}");
        }
    }
    // curl without the credentials in its proxy URL: refused; with them: through.
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-x", &format!("http://127.0.0.1:{}", proxy.port)])
        .arg(format!("http://localhost:{}/", upstream().plain_port))
        .output()
        .expect("curl");
    assert_eq!(stdout(&out), "407");
    let lines = audit_lines(&proxy, |lines| lines.len() >= 7);
    assert!(lines.iter().all(|l| l["status"] == 407 && l["decision"] == "deny"), "{lines:?}");
    assert!(lines.iter().all(|l| !l.to_string().contains(SECRET)), "no credential in the audit log");
}

#[test]
fn denials_say_which_route_and_how_to_allow() {
    let proxy = start_proxy(
        vec![
            route("localhost", &["GET"], &["/allowed/", "/repos/*/pulls"], None),
            // No ports: 443 and 80, which the CONNECTs below name.
            EgressRule { ports: vec![], ..route("internal.test", &[], &[], None) },
            EgressRule { ports: vec![], ..route("metadata.test", &[], &[], None) },
        ],
        &[("internal.test", "127.0.0.1"), ("metadata.test", "169.254.169.254")],
    );

    // CONNECT to a host with no route: a plain-text 403, before any TLS.
    let (head, body) = raw_exchange(proxy.port, b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let expect = format!(
        "egress denied: host evil.test is not in bottle {BOTTLE}'s egress routes; ask the operator to add `- host: \
         evil.test` to the bottle's egress in the manifest"
    );
    assert_eq!(header(&head, "x-bot-bottle-denied"), Some(expect.as_str()), "{head}");
    assert_eq!(body.trim_end(), expect);

    let out = curl(&proxy, &["https://evil.test/"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"), "{}", String::from_utf8_lossy(&out.stderr));

    let out = curl(&proxy, &["-i", "http://evil.test/x"]);
    let text = stdout(&out);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains("x-bot-bottle-denied: egress denied: host evil.test"), "{text}");

    // Method and path rules, checked inside the intercepted tunnel.
    let denied = |args: &[&str], says: &str| {
        // After curl's `HTTP/1.1 200 Connection established` comes the response inside the tunnel.
        let text = stdout(&curl(&proxy, args));
        assert!(text.contains("\r\n\r\nHTTP/2 403"), "{args:?}: {text}");
        let reason = text.lines().find(|l| l.starts_with("x-bot-bottle-denied:")).unwrap_or_default();
        assert!(reason.contains(says), "{args:?}: {text}");
    };
    denied(&["-i", "-X", "POST", &https("/allowed/x")], "method POST is not allowed by route localhost");
    denied(&["-i", &https("/forbidden")], "path /forbidden is not allowed by route localhost");
    denied(&["-i", "--path-as-is", &https("/allowed/../forbidden")], "`.` or `..` segment");
    assert_eq!(echo(&curl(&proxy, &[&https("/repos/bot/pulls")]))["uri"], "/repos/bot/pulls");
    assert_eq!(echo(&curl(&proxy, &[&https("/allowed/x?y=1")]))["uri"], "/allowed/x?y=1");

    // Names that resolve to loopback or link-local addresses are refused.
    let (head, _) = raw_exchange(proxy.port, b"CONNECT internal.test:443 HTTP/1.1\r\nHost: internal.test\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(header(&head, "x-bot-bottle-denied").unwrap_or_default().contains("127.0.0.1, a loopback address"));
    let (head, _) = raw_exchange(proxy.port, b"CONNECT metadata.test:443 HTTP/1.1\r\nHost: metadata.test\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(header(&head, "x-bot-bottle-denied").unwrap_or_default().contains("169.254.169.254, a link-local"));
    let text = stdout(&curl(&proxy, &["-i", "http://metadata.test/latest/meta-data/"]));
    assert!(text.starts_with("HTTP/1.1 403") && text.contains("link-local"), "{text}");

    let lines = audit_lines(&proxy, |lines| lines.len() >= 11);
    let evil = lines.iter().find(|line| line["host"] == "evil.test").expect("evil.test line");
    assert_eq!(evil["decision"], "deny");
    assert_eq!(evil["status"], 403);
    assert_eq!(evil["rule"], Value::Null);
    assert_eq!(evil["method"], "CONNECT");
    assert!(evil["reason"].as_str().unwrap_or_default().contains("not in bottle"));
    let post = lines.iter().find(|line| line["method"] == "POST").expect("POST line");
    assert_eq!(
        (&post["decision"], &post["rule"], &post["path"]),
        (&json!("deny"), &json!("localhost"), &json!("/allowed/x"))
    );
    let metadata = lines.iter().find(|line| line["host"] == "metadata.test").expect("metadata line");
    assert_eq!(metadata["rule"], "metadata.test");
    assert_eq!(metadata["decision"], "deny");
    let allowed = lines.iter().filter(|line| line["decision"] == "allow").count();
    assert_eq!(allowed, 2, "{lines:?}");
}

#[test]
fn http2_keep_alive_and_a_streamed_10_mib_download() {
    let proxy = start_proxy(vec![route("localhost", &[], &[], None)], &[]);

    let out = curl(&proxy, &["--http2", "-w", "\n%{http_version}", &https("/h2")]);
    let text = stdout(&out);
    let (json, version) = text.rsplit_once('\n').expect("two lines");
    assert_eq!(version, "2", "HTTP/2 to the agent: {text}");
    let got: Value = serde_json::from_str(json).expect("echo");
    assert_eq!(got["version"], "HTTP/2.0", "HTTP/2 upstream, chosen by ALPN: {got}");

    let out = curl(&proxy, &["--http1.1", "-w", "\n%{num_connects}\n", &https("/a"), &https("/b"), &https("/c")]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert_eq!((lines[1], lines[3], lines[5]), ("1", "0", "0"), "curl reuses its connection: {text}");
    let conns: Vec<Value> = [lines[0], lines[2], lines[4]]
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).expect("echo")["conn"].clone())
        .collect();
    assert!(conns.iter().all(|c| *c == conns[0]), "the upstream connection is pooled: {conns:?}");

    let size = 10 * 1024 * 1024;
    for protocol in ["--http1.1", "--http2"] {
        let out =
            curl(&proxy, &[protocol, "-o", "/dev/null", "-w", "%{size_download}", &https(&format!("/bytes/{size}"))]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(stdout(&out), size.to_string(), "{protocol}");
    }
    let lines = audit_lines(&proxy, |lines| lines.iter().filter(|l| l["bytes_down"] == size).count() == 2);
    assert_eq!(lines.iter().filter(|l| l["bytes_down"] == size).count(), 2, "{lines:?}");
}

#[test]
fn http1_upstream_connections_are_pooled_and_never_shared_while_busy() {
    let proxy = start_proxy(vec![route("localhost", &[], &[], None)], &[]);
    let plain = |path: &str| format!("http://localhost:{}{path}", upstream().plain_port);
    let out = curl(&proxy, &["-w", "\n", &plain("/a"), &plain("/b")]);
    let conns: Vec<Value> =
        stdout(&out).lines().map(|line| serde_json::from_str::<Value>(line).expect("echo")["conn"].clone()).collect();
    assert_eq!(conns.len(), 2);
    assert_eq!(conns[0], conns[1], "the second request reuses the pooled HTTP/1.1 connection");

    // A slow download keeps its upstream connection busy for seconds (more than socket buffers hold).
    let mut slow = Command::new("curl")
        .args(["-sS", "-x", &proxy_url(proxy.port), "--limit-rate", "8M", "-o", "/dev/null"])
        .arg(plain("/bytes/33554432"))
        .stdin(Stdio::null())
        .spawn()
        .expect("curl");
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let got = echo(&curl(&proxy, &[&plain("/while-busy")]));
    assert!(start.elapsed() < Duration::from_secs(2), "waited for the busy connection: {:?}", start.elapsed());
    assert_eq!(got["uri"], "/while-busy");
    assert!(slow.try_wait().expect("slow curl").is_none(), "the download was still running meanwhile");
    let status = slow.wait().expect("slow curl");
    assert!(status.success());
}

#[test]
fn a_websocket_upgrade_passes_through_the_tunnel_and_no_other_does() {
    let proxy = start_proxy(vec![route("localhost", &[], &[], None)], &[]);
    // Any other protocol (h2c, a made-up one) is not switched to: the
    // request goes up without its `Upgrade` and gets a plain answer.
    for other in ["h2c", "echo", "websocket, h2c"] {
        let out =
            curl(&proxy, &["-i", "-H", "Connection: Upgrade", "-H", &format!("Upgrade: {other}"), &https("/upgrade")]);
        let text = stdout(&out);
        assert!(text.contains("\r\n\r\nHTTP/1.1 200") || text.contains("\r\n\r\nHTTP/2 200"), "{other}: {text}");
        assert!(!text.to_ascii_lowercase().contains("\"upgrade\""), "the upstream saw no Upgrade for {other}: {text}");
    }
    let port = upstream().tls_port;
    let mut tcp = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    tcp.write_all(&authed(format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n").as_bytes()))
        .expect("CONNECT");
    let head = read_head(&mut tcp);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(proxy.ca_pem.as_bytes()).expect("CA pem")).expect("root");
    let mut config = rustls::ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(tls, "GET /upgrade HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .expect("upgrade request");
    let head = read_head(&mut tls);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(header(&head, "upgrade"), Some("websocket"));
    for message in ["ping-1", "a longer second message"] {
        tls.write_all(message.as_bytes()).expect("send");
        tls.flush().expect("flush");
        let mut back = vec![0; message.len()];
        tls.read_exact(&mut back).expect("echo");
        assert_eq!(String::from_utf8_lossy(&back), message);
    }
    drop(tls);
    let lines = audit_lines(&proxy, |lines| lines.iter().any(|l| l["status"] == 101));
    let switched = lines.iter().find(|l| l["status"] == 101).expect("the 101 is audited");
    assert_eq!(switched["path"], "/upgrade", "{lines:?}");
}

#[test]
fn malformed_requests_get_400_and_the_proxy_keeps_serving() {
    let proxy = start_proxy(vec![route("localhost", &[], &[], None)], &[]);
    let mut cases: Vec<Vec<u8>> = [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET http://localhost/ HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"GET http://localhost/ HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET http://localhost/ HTTP/1.1\r\n: empty-name\r\n\r\n",
        b"GET http://localhost/ HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"GET http://localhost/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"G\0T http://localhost/ HTTP/1.1\r\n\r\n",
        b"GET http://local host/ HTTP/1.1\r\n\r\n",
        b"GET ftp://localhost/ HTTP/1.1\r\n\r\n",
        b"CONNECT HTTP/1.1\r\n\r\n",
        b"CONNECT localhost HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET http://localhost/ HTTP/1.1\r\nX: a\rb\r\n\r\n",
    ]
    .iter()
    .map(|case| case.to_vec())
    .collect();
    // Random printable soup with line breaks, from a fixed seed.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    const ALPHABET: &[u8] = b"GETPOSTCONNECT /:.?#%@[]\r\n\t HTTP/1.1 abcxyz0123456789-_*\0\x7f\xff";
    for _ in 0..120 {
        let len = 1 + (next() % 300) as usize;
        let mut case: Vec<u8> = (0..len).map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize]).collect();
        case.extend_from_slice(b"\r\n\r\n");
        cases.push(case);
    }
    let fixed = cases.len();
    for (i, case) in cases.iter().enumerate() {
        let mut stream = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        stream.write_all(&authed(case)).expect("write");
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut response = Vec::new();
        let read = stream.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response);
        // The fixed cases all get a 400, except the HTTP/2 preface, which hyper answers by closing.
        let close_ok = i >= fixed || case.starts_with(b"PRI * HTTP/2.0");
        assert!(
            (close_ok && text.is_empty()) || text.starts_with("HTTP/1.1 400"),
            "{:?} got {read:?} {text:?}",
            String::from_utf8_lossy(case)
        );
    }

    // A head larger than the proxy takes is refused (431) too.
    let mut big = b"GET http://localhost/ HTTP/1.1\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 200_000));
    big.extend_from_slice(b"\r\n\r\n");
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let _ = stream.write_all(&authed(&big));
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 431"), "{text}");

    let got = echo(&curl(&proxy, &[&https("/still-serving")]));
    assert_eq!(got["uri"], "/still-serving");
}

#[test]
fn the_binary_announces_its_port_and_stops_on_sigterm_with_every_audit_line_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), vec![credential_route("localhost", &[])], &[]);
    let ca_file = dir.path().join("bottle-ca.pem");
    std::fs::write(&ca_file, &config.policy.ca_cert_pem).expect("write CA");
    let config_file = dir.path().join("egress.json");
    std::fs::write(&config_file, serde_json::to_string(&config).expect("json")).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_bottle-sidecar"))
        .arg("egress")
        .arg("--config")
        .arg(&config_file)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bottle-sidecar");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).expect("read stderr");
    let addr = line.trim().strip_prefix("egress: listening on ").unwrap_or_else(|| panic!("first line: {line:?}"));
    let port: u16 = addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("port in the line");
    assert_ne!(port, 0);

    let got = echo(&curl_via(port, &ca_file, &[&https("/from-the-binary")]));
    assert_eq!(arrived(&got, "authorization").as_deref(), Some(SECRET));
    assert_eq!(got["headers"]["authorization"], SENTINEL);
    // More requests, and SIGTERM straight after the last: the audit writer
    // thread still has lines to write when the signal comes.
    const MORE: usize = 40;
    let urls: Vec<String> = (0..MORE).map(|n| https(&format!("/more/{n}"))).collect();
    let mut args = Vec::new();
    for url in &urls {
        args.extend(["-o", "/dev/null", url.as_str()]);
    }
    let output = curl_via(port, &ca_file, &args);
    assert!(output.status.success(), "curl: {}", String::from_utf8_lossy(&output.stderr));

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        assert!(Instant::now() < deadline, "bottle-sidecar egress did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
    let log = std::fs::read_to_string(&config.audit_log).expect("the audit log");
    let paths: Vec<String> = log
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a whole JSON line")["path"].to_string())
        .collect();
    assert_eq!(paths.len(), 1 + MORE, "one line per request, all written before exit:\n{log}");
    assert_eq!(paths[MORE], json!(format!("/more/{}", MORE - 1)).to_string(), "the last request's line too");
}

#[test]
fn upstream_tls_is_verified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path(), vec![route("localhost", &[], &[], None)], &[]);
    config.policy.extra_upstream_ca_pem = None;
    let proxy = launch(dir, config);
    let text = stdout(&curl(&proxy, &["-i", &https("/x")]));
    assert!(text.contains("\r\n\r\nHTTP/2 502"), "the test CA is not a system root: {text}");
    let error = text.lines().find(|l| l.starts_with("x-bot-bottle-error:")).unwrap_or_default();
    assert!(error.contains("TLS handshake with localhost") && error.contains("certificate"), "{text}");
    let lines = audit_lines(&proxy, |lines| !lines.is_empty());
    assert_eq!((&lines[0]["status"], &lines[0]["decision"]), (&json!(502), &json!("allow")), "{lines:?}");
}

#[test]
fn a_bad_configuration_fails_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bad = config(dir.path(), vec![], &[]);
    bad.policy.ca_key_pem = Secret::new("not a key");
    let listener = {
        let _guard = rt().enter();
        tokio::net::TcpListener::from_std(bind()).expect("listener")
    };
    let err = rt().block_on(serve(bad, listener.into())).expect_err("an unusable CA key");
    assert!(err.to_string().contains("CA"), "{err}");
}

// ---------------------------------------------------------------- properties

/// A DNS label: letters, digits and inner hyphens.
fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?"
}

fn domain() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..4).prop_map(|labels| labels.join("."))
}

proptest! {
    #[test]
    fn an_exact_host_matches_itself_in_any_case(host in domain(), upper in any::<bool>()) {
        let pattern = if upper { host.to_uppercase() } else { host.clone() };
        let (dotted, sub) = (format!("{host}."), format!("sub.{host}"));
        prop_assert!(host_matches(&pattern, &host));
        prop_assert!(host_matches(&host, &dotted));
        prop_assert!(!host_matches(&host, &sub), "exact names cover no subdomain");
    }

    #[test]
    fn a_wildcard_matches_subdomains_only(suffix in domain(), sub in domain(), glued in label()) {
        let pattern = format!("*.{suffix}");
        let below = format!("{sub}.{suffix}");
        let shouting = below.to_uppercase();
        let glued = format!("{glued}{suffix}");
        let beyond = format!("{below}.evil");
        prop_assert!(host_matches(&pattern, &below));
        prop_assert!(host_matches(&pattern, &shouting));
        prop_assert!(!host_matches(&pattern, &suffix), "the bare suffix is not covered");
        prop_assert!(!host_matches(&pattern, &glued), "no match without a dot boundary");
        prop_assert!(!host_matches(&pattern, &beyond));
    }

    #[test]
    fn different_hosts_do_not_match(a in domain(), b in domain()) {
        prop_assume!(a != b);
        prop_assert!(!host_matches(&a, &b));
    }

    #[test]
    fn a_plain_path_pattern_is_a_prefix(prefix in "/[a-z0-9/._-]{0,20}", rest in "[a-z0-9/._?=-]{0,20}") {
        let path = format!("{prefix}{rest}");
        prop_assert!(path_matches(&prefix, &path));
        prop_assert_eq!(path_matches(&path, &prefix), rest.is_empty());
    }

    #[test]
    fn stars_cut_out_of_a_path_still_match_it(
        path in "/[a-z0-9/._-]{0,30}",
        cuts in prop::collection::vec((0usize..32, 0usize..8), 1..4),
    ) {
        // Replace some ranges of the path by `*`: the glob must match the path.
        let mut pattern = path.clone();
        for (start, len) in cuts {
            let start = start.min(pattern.len());
            let end = (start + len).min(pattern.len());
            pattern.replace_range(start..end, "*");
        }
        prop_assert!(path_matches(&pattern, &path), "{} vs {}", pattern, path);
        prop_assert!(path_matches("*", &path));
    }

    #[test]
    fn a_glob_matches_the_whole_path(head in "/[a-z]{1,8}", tail in "[a-z]{1,8}", extra in "[0-9]{1,4}") {
        let pattern = format!("{head}/*/{tail}");
        let one = format!("{head}/x/{tail}");
        let two = format!("{head}/x/y/{tail}");
        let longer = format!("{one}/{extra}");
        let elsewhere = format!("/0{one}");
        prop_assert!(path_matches(&pattern, &one));
        prop_assert!(path_matches(&pattern, &two), "`*` spans slashes");
        prop_assert!(!path_matches(&pattern, &longer), "anchored at the end");
        prop_assert!(!path_matches(&pattern, &elsewhere), "anchored at the start");
    }
}

#[test]
fn a_huge_path_makes_a_small_audit_line_that_says_it_was_cut() {
    let proxy = start_proxy(vec![route("localhost", &[], &["/allowed/"], None)], &[]);
    let path = format!("/{}", "x".repeat(60 * 1024));
    let (head, _) = raw_exchange(
        proxy.port,
        format!("GET http://localhost:{}{path} HTTP/1.1\r\nHost: localhost\r\n\r\n", upstream().plain_port).as_bytes(),
    );
    assert!(head.starts_with("HTTP/1.1 403"), "{}", &head[..head.len().min(200)]);
    let lines = audit_lines(&proxy, |lines| !lines.is_empty());
    let text = std::fs::read_to_string(&proxy.audit).expect("audit");
    assert!(text.len() < 4096, "the line is bounded: {} bytes", text.len());
    assert!(lines[0]["path"].as_str().expect("path").contains("…[cut "), "{}", lines[0]);
    assert!(lines[0]["reason"].as_str().expect("reason").contains("…[cut "), "{}", lines[0]);
}
