//! A real OpenSSH server for tests: `sshd` on 127.0.0.1 at a free port, run
//! from a temporary directory with its own host key, config and authorized
//! key (all made with `ssh-keygen`), logging in the current user (root
//! included) by that key only. Whatever path a test names over it is served,
//! so bare repositories in [`Sshd::dir`] are upstreams for `git` over ssh.
//!
//! Every session runs through a `ForceCommand` script that records it (so a
//! test can count the gate's fetches, [`Sshd::sessions`]) and waits while a
//! hold is on ([`Sshd::hold`]) before it runs the command the client asked for.
//!
//! As non-root-safe as sshd allows: `StrictModes no` (the temp dir's modes
//! don't matter), `UsePAM no`, and the privilege separation directory
//! `/run/sshd` is made only when running as root (where sshd needs it). sshd
//! wants its absolute path for re-exec, and takes no port 0, so a free port is
//! picked first and the start retried if someone takes it meanwhile.

use std::io::{BufRead as _, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Where Debian's `openssh-server` puts sshd.
const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd; stopped when dropped.
pub(crate) struct Sshd {
    dir: TempDir,
    host: String,
    child: Option<Child>,
    port: u16,
    user: String,
    client_key: PathBuf,
    host_public_key: String,
}

impl Sshd {
    /// Starts sshd on 127.0.0.1 and waits until it greets.
    pub(crate) fn start() -> Self {
        Self::start_on("127.0.0.1")
    }

    /// Starts sshd listening on `host` (an address of this machine) and waits until it greets.
    pub(crate) fn start_on(host: &str) -> Self {
        assert!(Path::new(SSHD).is_file(), "{SSHD} is missing: apt-get install openssh-server");
        let dir = tempfile::Builder::new().prefix("sshd-fixture-").tempdir().expect("a temp dir for sshd");
        let host_key = keygen(dir.path(), "host_ed25519");
        let client_key = keygen(dir.path(), "client_ed25519");
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized).expect("authorized_keys");
        let host_public_key = std::fs::read_to_string(host_key.with_extension("pub")).expect("host public key");
        let host_public_key = host_public_key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        let user = command_stdout(Command::new("id").arg("-un"));
        if user == "root" {
            // sshd's privilege separation directory; Debian makes it at boot only.
            std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        }

        let session = dir.path().join("session.sh");
        std::fs::write(&session, session_script(dir.path())).expect("session.sh");
        std::fs::set_permissions(&session, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");

        let mut last_log = String::new();
        for _attempt in 0..10 {
            let port = free_port(host);
            let config = dir.path().join("sshd_config");
            std::fs::write(&config, sshd_config(dir.path(), host, &host_key, &authorized, port)).expect("sshd_config");
            let log = dir.path().join("sshd.log");
            let mut child = Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("sshd.log"))
                .spawn()
                .expect("spawning sshd");
            if wait_ready(&mut child, host, port, Duration::from_secs(10)) {
                let host = host.to_string();
                return Self { dir, host, child: Some(child), port, user, client_key, host_public_key };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
            // Someone may have taken the port between our probe and sshd's bind: then try another.
            assert!(last_log.contains("Address already in use"), "sshd did not start:\n{last_log}");
        }
        panic!("sshd found no free port in 10 tries:\n{last_log}");
    }

    /// Stops sshd (sessions already open finish on their own).
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The temp dir: a place for the test's repositories, removed with the fixture.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The address sshd listens on.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// sshd's port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The user that logs in (the current one).
    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    /// The client's private key (OpenSSH format), as an upstream's `IdentityFile` holds it.
    pub(crate) fn client_key(&self) -> String {
        std::fs::read_to_string(&self.client_key).expect("the client key")
    }

    /// The `known_hosts` line that pins sshd's host key.
    pub(crate) fn known_hosts_line(&self) -> String {
        format!("[{}]:{} {}\n", self.host, self.port, self.host_public_key)
    }

    /// `GIT_SSH_COMMAND` that reaches this sshd directly with the client key.
    pub(crate) fn ssh_command(&self) -> String {
        let known_hosts = self.dir.path().join("client_known_hosts");
        std::fs::write(&known_hosts, self.known_hosts_line()).expect("client known_hosts");
        format!(
            "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o IdentityAgent=none -o UserKnownHostsFile={} \
             -o StrictHostKeyChecking=yes -o BatchMode=yes -p {}",
            self.client_key.display(),
            known_hosts.display(),
            self.port
        )
    }

    /// How many ssh sessions have started so far.
    pub(crate) fn sessions(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("sessions")).map_or(0, |log| log.lines().count())
    }

    /// Holds every session that starts from now on, before it runs its
    /// command, until the returned guard is dropped.
    pub(crate) fn hold(&self) -> Hold {
        let path = self.dir.path().join("hold");
        std::fs::write(&path, "").expect("the hold file");
        Hold(path)
    }

    /// `repo` as an `ssh://` URL on this server.
    pub(crate) fn ssh_url(&self, repo: &Path) -> String {
        format!("ssh://{}@{}:{}{}", self.user, self.host, self.port, repo.display())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sessions are held while this file exists; see [`Sshd::hold`].
pub(crate) struct Hold(PathBuf);

impl Drop for Hold {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The `ForceCommand`: records the session, waits while `dir/hold` exists, runs what was asked.
fn session_script(dir: &Path) -> String {
    let quoted = |name: &str| format!("'{}'", dir.join(name).display().to_string().replace('\'', r"'\''"));
    format!(
        "#!/bin/sh\necho \"$SSH_ORIGINAL_COMMAND\" >> {sessions}\nwhile [ -e {hold} ]; do sleep 0.05; done\n\
         exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n",
        sessions = quoted("sessions"),
        hold = quoted("hold"),
    )
}

fn sshd_config(dir: &Path, host: &str, host_key: &Path, authorized: &Path, port: u16) -> String {
    format!(
        "Port {port}\n\
         ListenAddress {host}\n\
         HostKey {host_key}\n\
         PidFile {pid}\n\
         AuthorizedKeysFile {authorized}\n\
         StrictModes no\n\
         UsePAM no\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\n\
         AcceptEnv GIT_PROTOCOL\n\
         ForceCommand {session}\n\
         PrintMotd no\n\
         LogLevel INFO\n",
        host_key = host_key.display(),
        pid = dir.join("sshd.pid").display(),
        authorized = authorized.display(),
        session = dir.join("session.sh").display(),
    )
}

/// Makes an ed25519 key pair `dir/name` (+ `.pub`) without a passphrase.
fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .status()
        .expect("running ssh-keygen");
    assert!(status.success(), "ssh-keygen {name} failed");
    path
}

/// Whether sshd (`child`, on `port`) greets with its banner before `timeout`.
fn wait_ready(child: &mut Child, host: &str, port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        if let Ok(stream) = TcpStream::connect((host, port)) {
            stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let mut banner = String::new();
            if BufReader::new(stream).read_line(&mut banner).is_ok() && banner.starts_with("SSH-") {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A port nobody listens on just now.
fn free_port(host: &str) -> u16 {
    let listener = TcpListener::bind((host, 0)).expect("binding a free port");
    listener.local_addr().expect("its address").port()
}

fn command_stdout(cmd: &mut Command) -> String {
    let out = cmd.output().expect("running a command");
    assert!(out.status.success(), "{cmd:?} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
