//! A real HTTPS upstream for the egress tests: a test CA and a server
//! certificate made with `openssl`, and a Python echo server listening on
//! every address, reached from bottles at the host's `docker0` address.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running upstream; killed when dropped.
pub(crate) struct Upstream {
    child: Child,
    /// The address bottles reach it at (the host's address on Docker's default bridge).
    pub(crate) ip: String,
    pub(crate) port: u16,
    /// The test CA that signed its certificate.
    pub(crate) ca: PathBuf,
}

impl Upstream {
    pub(crate) fn start(dir: &Path) -> Upstream {
        let ip = crate::bridge::host_address();
        let run = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key"]
            .into_iter()
            .chain(["-out", "ca.pem", "-days", "2", "-subj", "/CN=bot-bottle e2e upstream CA"])
            .collect::<Vec<_>>());
        run(&["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "server.key"]
            .into_iter()
            .chain(["-out", "server.csr", "-subj", "/CN=upstream"])
            .collect::<Vec<_>>());
        std::fs::write(
            dir.join("server.ext"),
            format!("subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"),
        )
        .expect("write ext");
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/e2e/fixtures/echo_server.py");
        let mut child = Command::new("python3")
            .args([script, "server.pem", "server.key"])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 echo server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("port line");
        let port = line.trim().parse().unwrap_or_else(|_| panic!("echo server printed {line:?}, not its port"));
        Upstream { child, ip, port, ca: dir.join("ca.pem") }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://{}:{}{path}", self.ip, self.port)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
