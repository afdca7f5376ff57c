//! `cargo xtask bench egress`: the egress proxy against a direct connection,
//! on loopback, in one run.
//!
//! An in-process HTTPS upstream (hyper + rustls, HTTP/1.1, its own test CA)
//! serves 1 KiB and 100 MiB bodies; an in-process client (hyper + rustls, so
//! the overhead measured is the proxy's, not process spawns) runs two
//! workloads — 1,000 sequential keep-alive requests of 1 KiB, and one 100 MiB
//! download — directly, through the release `bottle sidecar egress` (TLS
//! intercepted), through a second one whose route injects a credential (so
//! it scrubs every response of the injected values), and, when installed,
//! through squid (a plain `CONNECT` tunnel) and mitmproxy (TLS intercepted).
//! Each workload runs fifteen rounds, interleaved (rounds swing by up to 2×
//! on a small, busy machine; more of them steady the medians); the medians
//! are compared.
//! Targets (issue 16), each printed at the end with the baseline measured
//! there and a verdict: small requests ≤ 2× direct with proxy CPU ≤ 60 µs
//! per request; the download ≥ 60% of direct throughput with proxy CPU ≤
//! 0.85 ms per MiB; with scrubbing on (the credential setup), time and CPU
//! within 10% of those without; the proxy's idle RSS ≤ 20 MiB.
//!
//! The client and upstream must not be debug builds, so a debug `xtask`
//! re-runs itself in release first.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine as _;
use bottle_core::sidecar::{EgressConfig, EgressPolicy, EgressRule, InjectedHeader, Secret};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Bytes, Frame, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Stats, secs, verdict};
use crate::{show, workspace_root};

const SMALL: usize = 1024;
const SMALL_REQUESTS: usize = 1000;
const BIG: u64 = 100 * 1024 * 1024;
const ROUNDS: usize = 15;
const SMALL_TARGET: f64 = 2.0;
/// Proxy CPU per small request, in µs.
const SMALL_CPU_TARGET: f64 = 60.0;
const BIG_TARGET: f64 = 0.60;
/// Proxy CPU per MiB downloaded, in ms.
const BIG_CPU_TARGET: f64 = 0.85;
/// Scrubbing's time and CPU at most this factor of the same without it.
const SCRUB_TARGET: f64 = 1.10;
const RSS_TARGET_KIB: u64 = 20 * 1024;
/// Issue 16's figures before the work on speed, the baselines of the targets.
const BASELINE_SMALL: &str = "2.83× direct, 161 µs CPU per request";
const BASELINE_BIG: &str = "42% of direct, 1.66 ms CPU per MiB";
const BASELINE_RSS: &str = "5.9 MiB";
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The client token of the benchmark's bottle.
const BENCH_TOKEN: &str = "bench-client-token";
/// The credential the scrubbing setup's route injects.
const BENCH_CREDENTIAL: &str = "bench-credential-4c1f9a27d3e8b650";
/// The names of the two setups of our own proxy.
const EGRESS: &str = "bottle egress (TLS intercept)";
const EGRESS_SCRUB: &str = "bottle egress + credential";

/// TLS connections the upstream accepted (a proxy that pools opens few).
static UPSTREAM_CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// Runs the benchmark (re-running a debug `xtask` in release first).
pub(crate) fn run() -> Result<()> {
    if cfg!(debug_assertions) {
        println!("bench egress: re-running xtask in release, so that its client and upstream are optimized");
        let mut cmd = crate::cargo();
        cmd.args(["run", "--release", "--quiet", "-p", "xtask", "--", "bench", "egress"]).current_dir(workspace_root());
        return crate::run(&mut cmd);
    }
    let sidecar = crate::build_bottle()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("while starting the tokio runtime")?;
    runtime.block_on(bench(&sidecar))
}

/// One way from the client to the upstream, and what it measured.
struct Setup {
    name: &'static str,
    /// The proxy's port, or `None` for the direct connection.
    proxy: Option<u16>,
    /// The proxy process, whose CPU time is measured too.
    pid: Option<u32>,
    /// The client's TLS configuration (trusting whoever presents the certificate).
    tls: Arc<rustls::ClientConfig>,
    small: Vec<Duration>,
    big: Vec<Duration>,
    small_cpu: Vec<Duration>,
    big_cpu: Vec<Duration>,
}

async fn bench(sidecar: &Path) -> Result<()> {
    let scratch = Scratch::new()?;
    let upstream = Upstream::start().await?;
    let port = upstream.port;
    println!("upstream: https://127.0.0.1:{port} (in-process, HTTP/1.1); client: hyper + rustls (in-process)");

    let mut setups = vec![Setup::new("direct", None, &upstream.ca_pem)?];
    let mut processes = Vec::new();

    let (egress, bottle_ca) = start_egress(sidecar, &scratch, &upstream.ca_pem, port, false)?;
    let egress_pid = egress.pid();
    let idle_rss = rss_kib(egress_pid, "VmRSS")?;
    setups.push(Setup::new(EGRESS, Some(&egress), &bottle_ca)?);
    processes.push(egress);
    let (scrubbing, scrubbing_ca) = start_egress(sidecar, &scratch, &upstream.ca_pem, port, true)?;
    setups.push(Setup::new(EGRESS_SCRUB, Some(&scrubbing), &scrubbing_ca)?);
    processes.push(scrubbing);

    match which("squid") {
        Some(squid) => {
            let proxy = start_squid(&squid, &scratch)?;
            setups.push(Setup::new("squid (CONNECT tunnel)", Some(&proxy), &upstream.ca_pem)?);
            processes.push(proxy);
        }
        None => println!("squid: skipped (not installed; `apt-get install squid` adds it)"),
    }
    match which("mitmdump") {
        Some(mitmdump) => {
            let (proxy, ca) = start_mitmproxy(&mitmdump, &scratch, &upstream.ca_pem)?;
            setups.push(Setup::new("mitmproxy (TLS intercept)", Some(&proxy), &ca)?);
            processes.push(proxy);
        }
        None => println!("mitmproxy: skipped (mitmdump not installed; `pip install mitmproxy` adds it)"),
    }

    // Warm-up: connections, the proxy's leaf for the host, its upstream pool.
    for setup in &setups {
        let mut sender = open(setup, port).await.with_context(|| format!("while warming up {}", setup.name))?;
        for _ in 0..20 {
            get(&mut sender, port, "/small").await.with_context(|| format!("while warming up {}", setup.name))?;
        }
    }
    for round in 1..=ROUNDS {
        for setup in &mut setups {
            let before = UPSTREAM_CONNECTIONS.load(Ordering::Relaxed);
            workloads(setup, port).await.with_context(|| format!("while measuring {}", setup.name))?;
            let opened = UPSTREAM_CONNECTIONS.load(Ordering::Relaxed) - before;
            println!(
                "round {round}/{ROUNDS}: {:<30} {SMALL_REQUESTS} × 1 KiB {}, 100 MiB {} ({opened} upstream connections)",
                setup.name,
                secs(setup.small[round - 1]),
                secs(setup.big[round - 1])
            );
        }
    }

    let direct_small = Stats::of(setups[0].small.clone()).median;
    let direct_big = Stats::of(setups[0].big.clone()).median;
    let egress_small = Stats::of(setups[1].small.clone()).median;
    let egress_big = Stats::of(setups[1].big.clone()).median;
    let requests = u32::try_from(SMALL_REQUESTS).unwrap_or(u32::MAX);
    println!("\n{SMALL_REQUESTS} sequential keep-alive HTTPS requests of 1 KiB (median of {ROUNDS}):");
    for (i, setup) in setups.iter().enumerate() {
        let median = Stats::of(setup.small.clone()).median;
        let ratio = median.as_secs_f64() / direct_small.as_secs_f64();
        let target = match (i, setup.name) {
            (1, _) => format!(" (target ≤ {SMALL_TARGET}×): {}", verdict(ratio <= SMALL_TARGET)),
            (_, EGRESS_SCRUB) => {
                format!(" ({:.2}× without the credential)", median.as_secs_f64() / egress_small.as_secs_f64())
            }
            _ => String::new(),
        };
        let cpu = match setup.pid {
            Some(_) => {
                format!("; proxy CPU {} per request", micros(Stats::of(setup.small_cpu.clone()).median / requests))
            }
            None => String::new(),
        };
        println!(
            "  {:<30} {} ({} per request), {ratio:.2}× direct{target}{cpu}",
            setup.name,
            secs(median),
            micros(median / requests)
        );
    }
    println!("\none 100 MiB download (median of {ROUNDS}):");
    for (i, setup) in setups.iter().enumerate() {
        let median = Stats::of(setup.big.clone()).median;
        let share = direct_big.as_secs_f64() / median.as_secs_f64();
        let target = match (i, setup.name) {
            (1, _) => format!(" (target ≥ {:.0}%): {}", BIG_TARGET * 100.0, verdict(share >= BIG_TARGET)),
            (_, EGRESS_SCRUB) => {
                format!(
                    " ({:.0}% of the throughput without it)",
                    egress_big.as_secs_f64() / median.as_secs_f64() * 100.0
                )
            }
            _ => String::new(),
        };
        let cpu = match setup.pid {
            Some(_) => format!("; proxy CPU {}", secs(Stats::of(setup.big_cpu.clone()).median)),
            None => String::new(),
        };
        println!(
            "  {:<30} {} ({:.0} MiB/s), {:.0}% of direct throughput{target}{cpu}",
            setup.name,
            secs(median),
            100.0 / median.as_secs_f64(),
            share * 100.0
        );
    }
    println!(
        "\nbottle sidecar egress idle RSS: {} (target ≤ {}): {}; after the runs: {}, peak {}",
        mib(idle_rss),
        mib(RSS_TARGET_KIB),
        verdict(idle_rss <= RSS_TARGET_KIB),
        mib(rss_kib(egress_pid, "VmRSS")?),
        mib(rss_kib(egress_pid, "VmHWM")?)
    );
    let cpu_small_us =
        |setup: &Setup| Stats::of(setup.small_cpu.clone()).median.as_secs_f64() * 1e6 / SMALL_REQUESTS as f64;
    let cpu_big_ms = |setup: &Setup| Stats::of(setup.big_cpu.clone()).median.as_secs_f64() * 1e3 / (BIG >> 20) as f64;
    let small_ratio = egress_small.as_secs_f64() / direct_small.as_secs_f64();
    let big_share = direct_big.as_secs_f64() / egress_big.as_secs_f64();
    let (egress, scrub) = (&setups[1], &setups[2]);
    let scrub_small = Stats::of(scrub.small.clone()).median.as_secs_f64() / egress_small.as_secs_f64();
    let scrub_big = Stats::of(scrub.big.clone()).median.as_secs_f64() / egress_big.as_secs_f64();
    let scrub_small_cpu = cpu_small_us(scrub) / cpu_small_us(egress);
    let scrub_big_cpu = cpu_big_ms(scrub) / cpu_big_ms(egress);
    println!(
        "
targets (issue 16), this run against the issue's baseline:"
    );
    let rows = [
        (
            format!("1 KiB requests ≤ {SMALL_TARGET}× direct, proxy CPU ≤ {SMALL_CPU_TARGET} µs"),
            format!("{small_ratio:.2}×, {:.0} µs", cpu_small_us(egress)),
            BASELINE_SMALL.to_owned(),
            small_ratio <= SMALL_TARGET && cpu_small_us(egress) <= SMALL_CPU_TARGET,
        ),
        (
            format!("100 MiB ≥ {:.0}% of direct, proxy CPU ≤ {BIG_CPU_TARGET} ms/MiB", BIG_TARGET * 100.0),
            format!("{:.0}%, {:.2} ms/MiB", big_share * 100.0, cpu_big_ms(egress)),
            BASELINE_BIG.to_owned(),
            big_share >= BIG_TARGET && cpu_big_ms(egress) <= BIG_CPU_TARGET,
        ),
        (
            format!("scrubbing: 1 KiB time and CPU ≤ {SCRUB_TARGET}× unscrubbed"),
            format!("{scrub_small:.2}× time, {scrub_small_cpu:.2}× CPU ({:.0} µs)", cpu_small_us(scrub)),
            "none (new row)".to_owned(),
            scrub_small <= SCRUB_TARGET && scrub_small_cpu <= SCRUB_TARGET,
        ),
        (
            format!("scrubbing: 100 MiB time and CPU ≤ {SCRUB_TARGET}× unscrubbed"),
            format!("{scrub_big:.2}× time, {scrub_big_cpu:.2}× CPU ({:.2} ms/MiB)", cpu_big_ms(scrub)),
            "none (new row)".to_owned(),
            scrub_big <= SCRUB_TARGET && scrub_big_cpu <= SCRUB_TARGET,
        ),
        (
            format!("idle RSS ≤ {}", mib(RSS_TARGET_KIB)),
            mib(idle_rss),
            BASELINE_RSS.to_owned(),
            idle_rss <= RSS_TARGET_KIB,
        ),
    ];
    for (target, measured, baseline, met) in rows {
        println!("  {target:<58} {measured:<40} baseline {baseline:<38} {}", verdict(met));
    }
    for process in &processes[2..] {
        if let Ok(rss) = rss_kib(process.pid(), "VmRSS") {
            println!("  for comparison, {} RSS after the runs: {}", process.name, mib(rss));
        }
    }
    drop(processes);
    Ok(())
}

impl Setup {
    fn new(name: &'static str, proxy: Option<&Proxy>, ca_pem: &str) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.context("a CA certificate is no PEM")?).context("an unusable CA certificate")?;
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Setup {
            name,
            proxy: proxy.map(|proxy| proxy.port),
            pid: proxy.map(Proxy::pid),
            tls: Arc::new(tls),
            small: Vec::new(),
            big: Vec::new(),
            small_cpu: Vec::new(),
            big_cpu: Vec::new(),
        })
    }

    /// CPU time the proxy process has used so far (zero for the direct setup).
    fn cpu(&self) -> Duration {
        self.pid.and_then(cpu_time).unwrap_or_default()
    }
}

/// Runs the two workloads, each on a connection of its own, and records
/// their times and the proxy's CPU time.
async fn workloads(setup: &mut Setup, port: u16) -> Result<()> {
    let (timer, cpu) = (Instant::now(), setup.cpu());
    let mut sender = open(setup, port).await?;
    for _ in 0..SMALL_REQUESTS {
        let n = get(&mut sender, port, "/small").await?;
        ensure!(n == SMALL as u64, "a small response had {n} bytes");
    }
    setup.small.push(timer.elapsed());
    setup.small_cpu.push(setup.cpu().saturating_sub(cpu));
    let (timer, cpu) = (Instant::now(), setup.cpu());
    let mut sender = open(setup, port).await?;
    let n = get(&mut sender, port, "/big").await?;
    ensure!(n == BIG, "the download had {n} bytes, not {BIG}");
    setup.big.push(timer.elapsed());
    setup.big_cpu.push(setup.cpu().saturating_sub(cpu));
    Ok(())
}

/// The CPU time all threads of process `pid` have used, from `/proc/PID/task/*/schedstat`.
fn cpu_time(pid: u32) -> Option<Duration> {
    let mut total = 0u64;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// A keep-alive HTTP/1.1 connection over TLS to the upstream, directly or
/// through the setup's proxy with `CONNECT`.
async fn open(setup: &Setup, port: u16) -> Result<SendRequest<Empty<Bytes>>> {
    let stream = match setup.proxy {
        None => TcpStream::connect((LOOPBACK, port)).await?,
        Some(proxy) => {
            let mut stream = TcpStream::connect((LOOPBACK, proxy)).await?;
            // Our proxy wants the bottle's token; squid and mitmproxy ignore it.
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("bb:{BENCH_TOKEN}"));
            let connect = format!(
                "CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nProxy-Authorization: Basic {auth}\r\n\r\n"
            );
            stream.write_all(connect.as_bytes()).await?;
            // Byte by byte: nothing may be read past the response head.
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                head.push(stream.read_u8().await.context("the proxy closed during CONNECT")?);
            }
            let head = String::from_utf8_lossy(&head);
            ensure!(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"), "CONNECT refused: {head}");
            stream
        }
    };
    stream.set_nodelay(true)?;
    let name = ServerName::IpAddress(LOOPBACK.into());
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(&setup.tls)).connect(name, stream).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// `GET path`, reading the whole body; returns its length.
async fn get(sender: &mut SendRequest<Empty<Bytes>>, port: u16, path: &str) -> Result<u64> {
    sender.ready().await?;
    let request = Request::get(path).header("host", format!("127.0.0.1:{port}")).body(Empty::new())?;
    let response = sender.send_request(request).await?;
    ensure!(response.status() == StatusCode::OK, "{path}: status {}", response.status());
    let mut body = response.into_body();
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            n += data.len() as u64;
        }
    }
    Ok(n)
}

/// The in-process HTTPS upstream.
struct Upstream {
    port: u16,
    ca_pem: String,
}

impl Upstream {
    async fn start() -> Result<Self> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca = rcgen::CertificateParams::default();
        ca.distinguished_name = rcgen::DistinguishedName::new();
        ca.distinguished_name.push(rcgen::DnType::CommonName, "bot-bottle bench upstream CA");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
            .signed_by(&key, &issuer)?;
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.der().clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind((LOOPBACK, 0)).await?;
        let port = listener.local_addr()?.port();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                UPSTREAM_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else { return };
                    let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let size = if req.uri().path() == "/big" { BIG } else { SMALL as u64 };
                        let mut response = Response::new(Repeat { left: size });
                        response.headers_mut().insert("content-length", size.into());
                        Ok::<_, std::convert::Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Upstream { port, ca_pem: ca_cert.pem() })
    }
}

/// A body of `left` bytes in 64 KiB frames.
struct Repeat {
    left: u64,
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];
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

/// A proxy process this bench started; dropping it stops it (SIGTERM, then SIGKILL).
struct Proxy {
    name: &'static str,
    child: Child,
    port: u16,
}

impl Proxy {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bench's scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("bottle-bench-egress-{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("while creating {}", dir.display()))?;
        // squid drops privileges to its own user and must still write its logs here.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))?;
        Ok(Scratch(dir))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Starts the release `bottle sidecar egress` on a free port; returns it and
/// the bottle CA. Its route reaches the upstream's `port`; with `credential`,
/// it injects a credential there, so every response is scrubbed.
fn start_egress(
    sidecar: &Path,
    scratch: &Scratch,
    upstream_ca: &str,
    port: u16,
    credential: bool,
) -> Result<(Proxy, String)> {
    let (ca_cert_pem, ca_key_pem) = bottle_core::sidecar::mint_ca("bench").context("while minting the bottle CA")?;
    let open = EgressRule { ports: vec![port], ..EgressRule::open("127.0.0.1") };
    let rule = if credential {
        EgressRule {
            inject: Some(InjectedHeader {
                name: "authorization".to_owned(),
                value: Secret::new(format!("Bearer {BENCH_CREDENTIAL}")),
                credential: Secret::new(BENCH_CREDENTIAL),
                sentinels: vec!["bot-bottle-hidden:BENCH".to_owned()],
                source: "$BENCH".to_owned(),
            }),
            ..open
        }
    } else {
        open
    };
    let name = if credential { "egress-credential" } else { "egress" };
    let config = EgressConfig {
        listen: bottle_core::sidecar::Listen::Tcp("127.0.0.1:0".to_owned()),
        audit_log: scratch.path(&format!("{name}-audit.jsonl")).display().to_string(),
        grants: None,
        policy: EgressPolicy {
            bottle: "bench".to_owned(),
            client_token: bottle_core::sidecar::ClientToken::from_value(BENCH_TOKEN).digest(),
            ca_cert_pem: ca_cert_pem.clone(),
            ca_key_pem,
            rules: vec![rule],
            sentinels: vec!["bot-bottle-hidden:BENCH".to_owned()],
            extra_upstream_ca_pem: Some(upstream_ca.to_owned()),
            resolve: Default::default(),
        },
    };
    let config_file = scratch.path(&format!("{name}.json"));
    fs::write(&config_file, serde_json::to_string(&config)?)?;
    let mut cmd = Command::new(sidecar);
    cmd.args(["sidecar", "egress", "--config"]).arg(&config_file).stdin(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("could not run `{}`", show(&cmd)))?;
    let stderr = child.stderr.take().context("no stderr")?;
    let mut line = String::new();
    BufReader::new(stderr).read_line(&mut line)?;
    let mut proxy = Proxy { name: "bottle sidecar egress", child, port: 0 };
    proxy.port = line
        .trim()
        .strip_prefix("egress: listening on ")
        .and_then(|addr| addr.parse::<SocketAddr>().ok())
        .map(|addr| addr.port())
        .with_context(|| format!("`{}` printed {line:?}, not its address", show(&cmd)))?;
    // Let it settle before its idle RSS is read.
    std::thread::sleep(Duration::from_millis(300));
    Ok((proxy, ca_cert_pem))
}

fn start_squid(squid: &Path, scratch: &Scratch) -> Result<Proxy> {
    let port = free_port()?;
    let conf = scratch.path("squid.conf");
    let dir = scratch.0.display();
    fs::write(
        &conf,
        format!(
            "http_port 127.0.0.1:{port}\nhttp_access allow all\ncache deny all\ncache_mem 8 MB\naccess_log none\n\
             cache_log {dir}/squid-cache.log\npid_filename {dir}/squid.pid\ncoredump_dir {dir}\n\
             shutdown_lifetime 0 seconds\nworkers 1\n"
        ),
    )?;
    let mut cmd = Command::new(squid);
    cmd.arg("-N").arg("-f").arg(&conf).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let child = cmd.spawn().with_context(|| format!("could not run `{}`", show(&cmd)))?;
    let proxy = Proxy { name: "squid", child, port };
    wait_for_port(port, "squid")?;
    Ok(proxy)
}

fn start_mitmproxy(mitmdump: &Path, scratch: &Scratch, upstream_ca_pem: &str) -> Result<(Proxy, String)> {
    let port = free_port()?;
    let confdir = scratch.path("mitmproxy");
    let upstream_ca = scratch.path("upstream-ca.pem");
    fs::write(&upstream_ca, upstream_ca_pem)?;
    let mut cmd = Command::new(mitmdump);
    cmd.args(["--quiet", "--listen-host", "127.0.0.1", "--listen-port", &port.to_string()])
        .arg("--set")
        .arg(format!("confdir={}", confdir.display()))
        .arg("--set")
        .arg(format!("ssl_verify_upstream_trusted_ca={}", upstream_ca.display()))
        .args(["--set", "stream_large_bodies=1m"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().with_context(|| format!("could not run `{}`", show(&cmd)))?;
    let proxy = Proxy { name: "mitmproxy", child, port };
    wait_for_port(port, "mitmproxy")?;
    let ca = fs::read_to_string(confdir.join("mitmproxy-ca-cert.pem")).context("mitmproxy wrote no CA")?;
    Ok((proxy, ca))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind((LOOPBACK, 0))?.local_addr()?.port())
}

fn wait_for_port(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect((LOOPBACK, port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what} did not listen on port {port} within 30 s")
}

/// `which NAME`, as a path.
fn which(name: &str) -> Option<PathBuf> {
    let out = Command::new("which").arg(name).stderr(Stdio::null()).output().ok()?;
    let path = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !path.trim().is_empty()).then(|| PathBuf::from(path.trim()))
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
fn rss_kib(pid: u32, field: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("process {pid} is gone"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .with_context(|| format!("/proc/{pid}/status has no {field}"))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn micros(time: Duration) -> String {
    format!("{:.0} µs", time.as_secs_f64() * 1e6)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process_rss() {
        let rss = super::rss_kib(std::process::id(), "VmRSS").expect("own status");
        assert!(rss > 0);
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(super::mib(20 * 1024), "20.0 MiB");
        assert_eq!(super::micros(std::time::Duration::from_micros(250)), "250 µs");
    }
}
