//! The backend under test: the same behaviour tests (egress, git gate) run
//! against every backend through this one seam — start a bottle, kill its
//! egress proxy, and check nothing of it is left.

use std::path::Path;

use crate::harness::{World, containers_of, networks_of, require_docker};
use crate::smolvm::Smol;

/// What the behaviour tests need from a backend.
pub(crate) trait Under {
    /// The test's world (its `bottle` commands reach this backend's bottles).
    fn world(&self) -> &World;
    /// `bottle --manifest M start shell --yes --detach` on this backend; (slug, summary).
    fn start(&self, manifest: &Path, env: &[(&str, &str)]) -> (String, String);
    /// Kill the bottle's egress proxy (not through `bottle`).
    fn kill_proxy(&self, slug: &str);
    /// Assert that nothing of the bottle is left.
    fn assert_gone(&self, slug: &str);
    /// The unix socket where `kind` of bottle `slug` listens, as the host sees it.
    fn sidecar_socket(&self, slug: &str, kind: bot_bottle::Sidecar) -> std::path::PathBuf;
    /// Make bottle `slug`'s egress proxy answer on TCP `port` beside it (in
    /// its proxy's container on Docker, in its network namespace on smolvm),
    /// as a careless design would, and check that it answers there; returns
    /// the addresses another bottle would use.
    fn expose_egress(&self, slug: &str, port: u16) -> Vec<String>;
}

/// Send `request` to a sidecar's unix socket; its answer's first line.
pub(crate) fn ask_socket(socket: &Path, request: &[u8]) -> String {
    use std::io::{BufRead as _, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
    stream.write_all(request).expect("write");
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line).expect("read");
    line
}

/// A `CONNECT` without credentials, as a client without the bottle's token sends it.
pub(crate) const BARE_CONNECT: &[u8] = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";

/// The Docker backend.
pub(crate) struct Docker(World);

impl Docker {
    pub(crate) fn new() -> Self {
        require_docker();
        Docker(World::new())
    }
}

impl Under for Docker {
    fn world(&self) -> &World {
        &self.0
    }
    fn start(&self, manifest: &Path, env: &[(&str, &str)]) -> (String, String) {
        self.0.start_manifest(manifest, env)
    }
    fn kill_proxy(&self, slug: &str) {
        let out = std::process::Command::new("docker").args(["kill", &format!("bb-{slug}-egress")]).output();
        assert!(out.expect("docker kill").status.success(), "killing the proxy container");
    }
    fn sidecar_socket(&self, slug: &str, kind: bot_bottle::Sidecar) -> std::path::PathBuf {
        let out = std::process::Command::new("docker")
            .args(["volume", "inspect", "--format", "{{.Mountpoint}}", &format!("bb-{slug}-sockets")])
            .output()
            .expect("docker volume inspect");
        assert!(out.status.success(), "the socket volume of {slug}: {}", crate::harness::text(&out.stderr));
        Path::new(crate::harness::text(&out.stdout).trim()).join(format!("{}.sock", kind.name()))
    }
    fn expose_egress(&self, slug: &str, port: u16) -> Vec<String> {
        let egress = format!("bb-{slug}-egress");
        let relay = format!("0.0.0.0:{port}={}/egress.sock", bot_bottle::backend::SOCKET_DIR);
        let out = std::process::Command::new("docker")
            .args(["exec", "-d", &egress, bot_bottle::backend::LAUNCHER, "sidecar", "relay", &relay])
            .output()
            .expect("docker exec");
        assert!(out.status.success(), "exposing {egress}: {}", crate::harness::text(&out.stderr));
        let out = std::process::Command::new("docker")
            .args(["inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", &egress])
            .output()
            .expect("docker inspect");
        let addrs: Vec<String> = crate::harness::text(&out.stdout).split_whitespace().map(str::to_string).collect();
        assert!(!addrs.is_empty(), "{egress} has an address");
        for addr in &addrs {
            let answered = crate::harness::wait_for(10, || tcp_answer(addr, port).starts_with("HTTP/1.1 407"));
            assert!(answered, "the exposed proxy answers the host at {addr}:{port}");
        }
        addrs
    }
    fn assert_gone(&self, slug: &str) {
        assert!(containers_of(slug).is_empty(), "no container left (sidecars included)");
        assert!(networks_of(slug).is_empty(), "no network left");
        assert!(crate::harness::volumes_of(slug).is_empty(), "no volume left");
    }
}

impl Under for Smol {
    fn world(&self) -> &World {
        &self.world
    }
    fn start(&self, manifest: &Path, env: &[(&str, &str)]) -> (String, String) {
        Smol::start(self, Some(manifest), &[], env)
    }
    fn kill_proxy(&self, slug: &str) {
        let egress: Vec<String> = self.sidecars_of(slug).into_iter().filter(|l| l.contains("egress")).collect();
        assert!(!egress.is_empty(), "no egress process of {slug} found");
        for line in egress {
            let pid = line.split_whitespace().next().expect("pid");
            assert!(std::process::Command::new("kill").args(["-KILL", pid]).status().expect("kill").success());
        }
    }
    fn assert_gone(&self, slug: &str) {
        Smol::assert_gone(self, slug)
    }
    fn sidecar_socket(&self, slug: &str, kind: bot_bottle::Sidecar) -> std::path::PathBuf {
        Path::new("/run/bot-bottle").join(slug).join(format!("{}.sock", kind.name()))
    }
    fn expose_egress(&self, slug: &str, port: u16) -> Vec<String> {
        let socket = self.sidecar_socket(slug, bot_bottle::Sidecar::Egress);
        self.expose_in_netns(slug, &format!("127.0.0.1:{port}={}", socket.display()));
        let probe = format!("curl -s -o /dev/null -w '%{{http_code}}' --noproxy '*' http://127.0.0.1:{port}/");
        let answered = crate::harness::wait_for(10, || {
            self.world.run(&["exec", slug, "--", "sh", "-c", &probe]).stdout.starts_with(b"407")
        });
        assert!(answered, "the exposed proxy answers inside {slug}'s namespace at 127.0.0.1:{port}");
        vec!["127.0.0.1".to_string()]
    }
}

/// The first line of what a TCP server at `addr:port` answers to a bare `CONNECT`.
fn tcp_answer(addr: &str, port: u16) -> String {
    use std::io::{BufRead as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect((addr, port)) else { return String::new() };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    if stream.write_all(BARE_CONNECT).is_err() {
        return String::new();
    }
    let mut line = String::new();
    let _ = std::io::BufReader::new(stream).read_line(&mut line);
    line
}

/// One `#[test]` per backend for a behaviour `body`.
macro_rules! for_each_backend {
    ($body:ident: $docker:ident, $smolvm:ident) => {
        #[test]
        fn $docker() {
            $body(&crate::conformance::Docker::new());
        }
        #[test]
        fn $smolvm() {
            $body(&crate::smolvm::Smol::new());
        }
    };
}
pub(crate) use for_each_backend;
