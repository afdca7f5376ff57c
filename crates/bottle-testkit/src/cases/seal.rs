//! The bottle is sealed: probed from inside as a prompt-injected agent would. No address of the host (every interface, IPv4 and
//! IPv6, link-local and loopback included, and the metadata address, bound
//! for the test), no gateway and no other bottle's sidecars answer; no name
//! reaches a resolver of the host's (a stub on 127.0.0.53 that the host's
//! resolv.conf names for the test, the Ubuntu default that Docker Engine
//! before 23.0.11/25.0.4/26.0 forwards internal DNS to); and a client
//! without the bottle's token gets 407/401 from its sidecars.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bottle_core::{Bottle, Sidecar};

use crate::fixtures::text;
use crate::{World, probe};

/// Where a test makes another bottle's proxy answer on TCP.
const EXPOSED_PORT: u16 = 3999;

/// The metadata address of the common clouds.
const METADATA: &str = "169.254.169.254";

/// A `CONNECT` without credentials, as a client without the bottle's token sends it.
pub(crate) const BARE_CONNECT: &[u8] = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";

/// Send `request` to a sidecar's unix socket; its answer's first line.
fn ask_socket(socket: &std::path::Path, request: &[u8]) -> String {
    use std::io::BufRead as _;
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(request).expect("write");
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line).expect("read");
    line
}

/// A TCP server on every address of the host (and the metadata address,
/// added to `lo` for the test), answering each connection with a line.
struct HostServer {
    port: u16,
    /// Every address it can be reached at, each checked from the host.
    addrs: Vec<String>,
    stop: Arc<AtomicBool>,
    _metadata: MetadataAddress,
}

impl HostServer {
    fn start() -> HostServer {
        let metadata = MetadataAddress::add();
        // `[::]` takes IPv4 too; without IPv6 the IPv4 wildcard alone.
        let (listener, v6) = match TcpListener::bind("[::]:0") {
            Ok(listener) => (listener, true),
            Err(_) => (TcpListener::bind("0.0.0.0:0").expect("bind 0.0.0.0"), false),
        };
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.write_all(b"host service\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        let mut addrs: Vec<String> = host_addresses().into_iter().filter(|a| v6 || !a.contains(':')).collect();
        if !v6 {
            println!("this host has no IPv6: only its IPv4 addresses are probed");
        }
        addrs.push(METADATA.to_string());
        // Other runs' bottles come and go meanwhile: an address whose bridge
        // went away since the listing is no longer the host's to probe.
        addrs.retain(|addr| {
            let target = socket_addr(addr, port);
            let mut stream = match TcpStream::connect_timeout(&target, Duration::from_secs(3)) {
                Ok(stream) => stream,
                Err(e) if addr != METADATA && !host_addresses().contains(addr) => {
                    println!("{addr} went away while probing ({e}): another bottle's bridge; not probed");
                    return false;
                }
                Err(e) => panic!("the host itself cannot reach its server at {addr}: {e}"),
            };
            let mut line = String::new();
            stream.read_to_string(&mut line).expect("read");
            assert_eq!(line, "host service\n", "{addr}");
            true
        });
        HostServer { port, addrs, stop, _metadata: metadata }
    }
}

impl Drop for HostServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `169.254.169.254` on the host's `lo` while it lives, so that a metadata
/// service really answers there.
struct MetadataAddress(bool);

impl MetadataAddress {
    fn add() -> MetadataAddress {
        let out = std::process::Command::new("ip")
            .args(["addr", "add", &format!("{METADATA}/32"), "dev", "lo"])
            .output()
            .expect("ip addr add");
        let stderr = text(&out.stderr);
        // Already there: another run's (iproute2 says either, by version); it stays that run's to remove.
        let there = stderr.contains("File exists") || stderr.contains("already assigned");
        assert!(out.status.success() || there, "adding {METADATA} to lo needs root: {stderr}");
        MetadataAddress(out.status.success())
    }
}

impl Drop for MetadataAddress {
    fn drop(&mut self) {
        if self.0 {
            let _ =
                std::process::Command::new("ip").args(["addr", "del", &format!("{METADATA}/32"), "dev", "lo"]).output();
        }
    }
}

/// Every address of every interface of the host (`ip -o addr`), IPv6
/// link-local ones with their zone; not the tentative ones, which are not
/// in use yet.
fn host_addresses() -> Vec<String> {
    let out = std::process::Command::new("ip").args(["-o", "addr", "show"]).output().expect("ip -o addr show");
    assert!(out.status.success(), "ip -o addr show: {}", text(&out.stderr));
    let mut found = BTreeSet::new();
    for line in text(&out.stdout).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        // A tentative address (IPv6 duplicate detection, for a second or
        // two after another run's veth appears) takes no connection yet.
        if words.iter().any(|w| *w == "tentative" || *w == "dadfailed") {
            continue;
        }
        let (Some(iface), Some(at)) = (words.get(1), words.iter().position(|w| *w == "inet" || *w == "inet6")) else {
            continue;
        };
        let Some(addr) = words.get(at + 1).and_then(|a| a.split('/').next()) else { continue };
        if addr == METADATA {
            continue;
        }
        match addr.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) if (v6.segments()[0] & 0xffc0) == 0xfe80 => {
                found.insert(format!("{addr}%{}", iface.trim_end_matches(':')));
            }
            Ok(_) => {
                found.insert(addr.to_string());
            }
            Err(_) => {}
        }
    }
    found.into_iter().collect()
}

fn socket_addr(addr: &str, port: u16) -> SocketAddr {
    let (ip, zone) = addr.split_once('%').map_or((addr, None), |(ip, zone)| (ip, Some(zone)));
    match ip.parse::<IpAddr>().expect("an IP address") {
        IpAddr::V4(v4) => SocketAddr::from((v4, port)),
        IpAddr::V6(v6) => {
            let scope = zone.map_or(0, |zone| {
                std::fs::read_to_string(format!("/sys/class/net/{zone}/ifindex"))
                    .ok()
                    .and_then(|i| i.trim().parse().ok())
                    .unwrap_or(0)
            });
            SocketAddr::V6(std::net::SocketAddrV6::new(v6, port, 0, scope))
        }
    }
}

/// The addresses among `addrs` that a TCP connection to `port` reaches from
/// inside `bottle`, as its agent user.
async fn reachable_from(bottle: &dyn Bottle, addrs: &[String], port: u16) -> Vec<String> {
    let list = addrs.join(" ");
    let script = format!(
        "for a in {list}; do if timeout 3 bash -c \"exec 3<>/dev/tcp/$a/{port}\" 2>/dev/null; then echo \"OPEN $a\"; \
         fi; done; echo probed"
    );
    let out = probe::ok(bottle, &script).await;
    assert!(out.trim_end().ends_with("probed"), "the probe did not finish: {out}");
    out.lines().filter_map(|l| l.strip_prefix("OPEN ")).map(str::to_string).collect()
}

/// The gateways of the bottle's routing table (IPv4), if it has any.
async fn gateways_of(bottle: &dyn Bottle) -> Vec<String> {
    let table = probe::ok(bottle, "cat /proc/net/route").await;
    table
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(2))
        .filter_map(|hex| u32::from_str_radix(hex, 16).ok())
        .filter(|gw| *gw != 0)
        .map(|gw| Ipv4Addr::from(gw.to_le_bytes()).to_string())
        .collect()
}

pub(super) async fn no_address_outside_answers(world: &World) {
    let server = HostServer::start();
    let session = world.prepare(&world.spec(world.default_manifest()), &[]).await;
    let summary = session.summary();
    assert!(summary.contains("isolation"), "the summary names the isolation in force: {summary}");
    let running = session.launch(std::future::pending()).await.expect("launch");
    let slug = running.slug().to_string();
    let bottle = running.bottle();
    let other = world.start(&world.spec(world.default_manifest()), &[]).await;

    // The control: from inside, the bottle's own proxy answers (a 407 without credentials).
    let proxy = probe::ok(bottle, "curl -s -o /dev/null -w '%{http_code}' --noproxy '*' http://127.0.0.1:3128/").await;
    assert_eq!(proxy.trim(), "407", "the probe reaches what is there");

    let mut targets = server.addrs.clone();
    targets.extend(gateways_of(bottle).await);
    let open = reachable_from(bottle, &targets, server.port).await;
    assert_eq!(open, Vec::<String>::new(), "no address of the host answers from the bottle (probed {targets:?})");

    // Another bottle's proxy, made to answer on TCP beside it: still out of reach.
    let theirs = world.target().expose_egress(world, other.slug(), EXPOSED_PORT);
    let open = reachable_from(bottle, &theirs, EXPOSED_PORT).await;
    assert_eq!(open, Vec::<String>::new(), "another bottle's proxy does not answer ({theirs:?}:{EXPOSED_PORT})");
    other.teardown().await.expect("teardown");
    running.teardown().await.expect("teardown");
    assert_eq!(world.resources(&slug), Vec::<String>::new(), "nothing of the bottle is left");
}

/// A DNS stub on `127.0.0.53:53` that records every name asked and forwards
/// the query to the resolver the host had, so the host keeps resolving.
struct DnsStub {
    names: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    resolv_conf: String,
}

impl DnsStub {
    fn start() -> DnsStub {
        let resolv_conf = std::fs::read_to_string("/etc/resolv.conf").expect("/etc/resolv.conf");
        let upstream: Option<SocketAddr> = resolv_conf
            .lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .filter_map(|ns| ns.trim().parse::<IpAddr>().ok())
            .find(|ip| *ip != IpAddr::from([127, 0, 0, 53]))
            .map(|ip| SocketAddr::new(ip, 53));
        let socket = UdpSocket::bind("127.0.0.53:53").expect("binding the DNS stub on 127.0.0.53:53");
        socket.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        let names = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopping) = (Arc::clone(&names), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stopping.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                if let Some(name) = query_name(&buf[..n]) {
                    seen.lock().unwrap_or_else(|e| e.into_inner()).push(name);
                }
                let Some(upstream) = upstream else { continue };
                let forward = UdpSocket::bind("0.0.0.0:0").and_then(|s| {
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    s.send_to(&buf[..n], upstream)?;
                    let mut answer = [0u8; 1500];
                    let (len, _) = s.recv_from(&mut answer)?;
                    Ok(answer[..len].to_vec())
                });
                if let Ok(answer) = forward {
                    let _ = socket.send_to(&answer, from);
                }
            }
        });
        std::fs::write("/etc/resolv.conf", "nameserver 127.0.0.53\n").expect("pointing resolv.conf at the stub");
        DnsStub { names, stop, resolv_conf }
    }

    fn asked(&self) -> Vec<String> {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for DnsStub {
    fn drop(&mut self) {
        let _ = std::fs::write("/etc/resolv.conf", &self.resolv_conf);
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The first question's name of a DNS query, lower-case.
fn query_name(packet: &[u8]) -> Option<String> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *packet.get(at)? as usize;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(packet.get(at + 1..at + 1 + len)?).to_ascii_lowercase());
        at += 1 + len;
    }
    Some(labels.join("."))
}

pub(super) async fn no_name_leaves(world: &World) {
    let stub = DnsStub::start();
    let unique = world.dir().file_name().expect("name").to_string_lossy().to_ascii_lowercase().replace(['.', '_'], "");
    let control = format!("control-{unique}.bot-bottle.test");
    let _ = std::process::Command::new("getent").args(["hosts", &control]).output();
    assert!(stub.asked().contains(&control), "the host's lookups reach the stub: {:?}", stub.asked());

    let running = world.start(&world.spec(world.default_manifest()), &[]).await;
    let leak = format!("leak-{unique}.bot-bottle.test");
    for script in [
        format!("getent hosts {leak}"),
        format!("getent hosts a.{leak}; getent ahostsv6 b.{leak}"),
        format!("curl -s -m 5 https://c.{leak}/"),
        format!("curl -s -m 5 --noproxy '*' http://d.{leak}/"),
    ] {
        let _ = probe::sh(running.bottle(), &script).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leaked: Vec<String> = stub.asked().into_iter().filter(|n| n.contains(&leak)).collect();
    assert_eq!(leaked, Vec::<String>::new(), "a name looked up in the bottle reached the host's resolver");
    drop(stub);
    running.teardown().await.expect("teardown");
}

pub(super) async fn sidecars_serve_only_the_token(world: &World) {
    let up = crate::fixtures::upstream::Upstream::start(&world.path("work"), &world.target().host_address());
    let key = crate::fixtures::write(&world.path("work"), "key", "not a key\n");
    let manifest = world.shell_manifest(
        "token.yaml",
        &format!(
            "    egress:\n      - host: \"{}\"\n        ports: [{}]\n    git:\n      - Name: project\n        \
             Host: 127.0.0.1\n        Repo: nowhere.git\n        IdentityFile: {}\n",
            up.ip,
            up.port,
            key.display()
        ),
    );
    let ca = up.ca.to_str().expect("utf8");
    let session = world.prepare(&world.spec(manifest), &[("BOT_BOTTLE_UPSTREAM_CA", ca)]).await;
    let summary = session.summary();
    let running = session.launch(std::future::pending()).await.expect("launch");
    let slug = running.slug().to_string();
    let bottle = running.bottle();
    let token = probe::ok(bottle, "printenv HTTPS_PROXY").await;
    let token = token.trim().strip_prefix("http://bb:").and_then(|t| t.split('@').next()).expect("token").to_string();
    assert!(!summary.contains(&token), "the token is not in the summary");

    // Inside the bottle: through the proxy with its credentials, yes; without, 407.
    let with = probe::ok(bottle, &format!("curl -s -o /dev/null -w '%{{http_code}}' {}", up.url("/x"))).await;
    assert_eq!(with.trim(), "200", "the bottle's own client passes");
    let without = probe::sh(
        bottle,
        &format!("curl -s -o /dev/null -w '%{{http_connect}}' -x http://127.0.0.1:3128 {}", up.url("/x")),
    )
    .await;
    assert_eq!(without.stdout, "407", "a client without the token gets 407 to its CONNECT");

    // From the host, at the sidecars' own sockets, as any host user could try.
    let gate_request = b"GET /project.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: gate\r\n\r\n";
    for (kind, request, status) in
        [(Sidecar::Egress, BARE_CONNECT, "407"), (Sidecar::GitGate, &gate_request[..], "401")]
    {
        let answer = ask_socket(&world.target().sidecar_socket(world, &slug, kind), request);
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{kind:?} without the token: {answer}");
    }
    for kind in [Sidecar::Egress, Sidecar::GitGate] {
        let mut log = Vec::new();
        bottle.sidecar_log(kind, false, &mut log).await.expect("the audit log");
        assert!(!String::from_utf8_lossy(&log).contains(&token), "the token is in no log ({kind:?})");
    }
    running.teardown().await.expect("teardown");
}
