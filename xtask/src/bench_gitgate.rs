//! `cargo xtask bench gitgate`: a 50 MB push and a clone of it, straight to
//! an upstream over ssh against the same through the release `bottle sidecar
//! git-gate` (target: at most 1.5× direct), interleaved in one run.
//!
//! Everything is local and made in a temp dir: an `sshd` on 127.0.0.1 (the
//! approach of the gate's test fixture: its own host key, config and
//! authorized key, the current user), two bare upstreams alike (one reached
//! directly, one through the gate), and a client repository. Each round
//! commits 50 MB of fresh random files on a new branch, pushes it both ways,
//! then clones that branch both ways. The upstreams keep what they receive
//! as packs, as hosting services do, so a clone measures the transport
//! rather than an upstream packing loose objects.

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::{Stats, secs, verdict};

const ROUNDS: usize = 3;
const FILES: usize = 5;
const FILE_BYTES: usize = 10 << 20;
const TARGET: f64 = 1.5;
const SSHD: &str = "/usr/sbin/sshd";
/// The client token of the benchmark's bottle: the gate serves only clients that send it.
const BENCH_TOKEN: &str = "bench-gate-token";

/// Runs the benchmark.
pub(crate) fn run() -> Result<()> {
    let sidecar = crate::build_bottle()?;
    let tmp = tempfile::Builder::new().prefix("bench-gitgate-").tempdir().context("while making a temp dir")?;
    let top = tmp.path();
    let sshd = Sshd::start(&top.join("sshd")).context("while starting sshd")?;
    let direct = upstream(top, "direct")?;
    let gated = upstream(top, "gated")?;
    let work = top.join("work");
    git(top, &["init", "-q", "-b", "main", &work.to_string_lossy()])?;
    git(&work, &["commit", "-q", "--allow-empty", "-m", "initial"])?;
    git(&work, &["push", "-q", &direct.to_string_lossy(), "main"])?;
    git(&work, &["push", "-q", &gated.to_string_lossy(), "main"])?;

    let mut gate = Gate::start(&sidecar, top, &sshd, &gated).context("while starting the git gate")?;
    println!("git gate at {}, sshd at 127.0.0.1:{}", gate.url, sshd.port);
    let ssh = sshd.ssh_command();
    let direct_url = sshd.url(&direct);
    let gate_url = format!("{}/project.git", gate.url);
    // The bottle's git sends its gate credentials as an extra header.
    use base64::Engine as _;
    let pair =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{BENCH_TOKEN}", bottle_core::sidecar::TOKEN_USER));
    let credentials = format!("http.extraHeader=Authorization: Basic {pair}");

    let mut times: [Vec<Duration>; 4] = Default::default();
    for round in 1..=ROUNDS {
        let branch = format!("bench/{round}");
        git(&work, &["checkout", "-q", "-B", &branch, "main"])?;
        for i in 0..FILES {
            random_file(&work.join(format!("blob-{i}.bin")), FILE_BYTES)?;
        }
        git(&work, &["add", "."])?;
        git(&work, &["commit", "-q", "-m", "50 MB"])?;
        let runs: [(&Path, Vec<&str>); 4] = [
            (&work, vec!["push", "-q", &direct_url, &branch]),
            (&work, vec!["-c", &credentials, "push", "-q", &gate_url, &branch]),
            (top, vec!["clone", "-q", "--single-branch", "-b", &branch, &direct_url, "clone-direct"]),
            (top, vec!["-c", &credentials, "clone", "-q", "--single-branch", "-b", &branch, &gate_url, "clone-gate"]),
        ];
        for (slot, (dir, args)) in runs.iter().enumerate() {
            let timer = Instant::now();
            git_ssh(dir, args, &ssh).with_context(|| format!("round {round}: git {}", args.join(" ")))?;
            times[slot].push(timer.elapsed());
        }
        for clone in ["clone-direct", "clone-gate"] {
            std::fs::remove_dir_all(top.join(clone)).with_context(|| format!("while removing {clone}"))?;
        }
        let [pd, pg, cd, cg] = times.each_ref().map(|t| secs(t[round - 1]));
        println!(
            "round {round}/{ROUNDS}: push direct {pd}, through the gate {pg}; clone direct {cd}, through the gate {cg}"
        );
    }
    let gate_stderr = gate.stop();
    let [push_direct, push_gate, clone_direct, clone_gate] = times.map(Stats::of);
    for (what, direct, gated) in [("push", &push_direct, &push_gate), ("clone", &clone_direct, &clone_gate)] {
        println!("{what} 50 MB straight over ssh: {}", direct.show(secs));
        println!("{what} 50 MB through the gate:    {}", gated.show(secs));
        let ratio = gated.median.as_secs_f64() / direct.median.as_secs_f64();
        println!("ratio {what} gate / direct: {ratio:.2}× (target ≤ {TARGET}×): {}", verdict(ratio <= TARGET));
    }
    if !gate_stderr.trim().is_empty() {
        println!("the gate said:\n{}", gate_stderr.trim_end());
    }
    Ok(())
}

/// A bare upstream `top/NAME.git` that keeps what it receives as packs.
fn upstream(top: &Path, name: &str) -> Result<PathBuf> {
    let repo = top.join(format!("{name}.git"));
    git(top, &["init", "-q", "--bare", "-b", "main", &repo.to_string_lossy()])?;
    git(&repo, &["config", "receive.unpackLimit", "1"])?;
    Ok(repo)
}

fn git(dir: &Path, args: &[&str]) -> Result<()> {
    git_ssh(dir, args, "ssh")
}

/// Runs git in `dir` without the user's configuration, reaching ssh with `ssh`.
fn git_ssh(dir: &Path, args: &[&str], ssh: &str) -> Result<()> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@bottle.test")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@bottle.test")
        .env("GIT_SSH_COMMAND", ssh)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not run git {}", args.join(" ")))?;
    ensure!(out.status.success(), "git {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    Ok(())
}

fn random_file(path: &Path, bytes: usize) -> Result<()> {
    let mut data = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut data))
        .context("while reading /dev/urandom")?;
    std::fs::write(path, data).with_context(|| format!("while writing {}", path.display()))
}

/// An sshd on 127.0.0.1 logging the current user in with a key of its own;
/// killed when dropped.
struct Sshd {
    dir: PathBuf,
    child: Child,
    port: u16,
    user: String,
}

impl Sshd {
    fn start(dir: &Path) -> Result<Self> {
        ensure!(Path::new(SSHD).is_file(), "{SSHD} is missing: apt-get install openssh-server");
        std::fs::create_dir_all(dir).with_context(|| format!("while creating {}", dir.display()))?;
        for key in ["host_ed25519", "client_ed25519"] {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"])
                .arg(dir.join(key))
                .status()
                .context("could not run ssh-keygen")?;
            ensure!(status.success(), "ssh-keygen {key} failed");
        }
        let user = Command::new("id").arg("-un").output().context("could not run id -un")?;
        let user = String::from_utf8_lossy(&user.stdout).trim().to_owned();
        if user == "root" {
            // sshd's privilege separation directory; Debian makes it at boot only.
            std::fs::create_dir_all("/run/sshd").context("while creating /run/sshd")?;
        }
        for _ in 0..10 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
            let config = dir.join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n\
                     AuthorizedKeysFile {d}/client_ed25519.pub\nStrictModes no\nUsePAM no\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     PermitRootLogin prohibit-password\nAcceptEnv GIT_PROTOCOL\n",
                    d = dir.display()
                ),
            )?;
            let log = dir.join("sshd.log");
            let child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()
                .context("could not start sshd")?;
            let mut sshd = Self { dir: dir.to_owned(), child, port, user: user.clone() };
            if sshd.ready() {
                std::fs::write(dir.join("known_hosts"), sshd.host_key_line()?)?;
                return Ok(sshd);
            }
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            // Someone may have taken the port meanwhile: then try another.
            ensure!(said.contains("Address already in use"), "sshd did not start:\n{said}");
        }
        bail!("sshd found no free port in 10 tries")
    }

    /// Whether sshd greets with its banner within 10 s.
    fn ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
            if let Ok(stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) {
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

    fn host_key_line(&self) -> Result<String> {
        let public = std::fs::read_to_string(self.dir.join("host_ed25519.pub"))?;
        let key: Vec<&str> = public.split_whitespace().take(2).collect();
        Ok(format!("[127.0.0.1]:{} {}\n", self.port, key.join(" ")))
    }

    /// `GIT_SSH_COMMAND` for a direct client (the host key pinned).
    fn ssh_command(&self) -> String {
        format!(
            "ssh -F /dev/null -i {d}/client_ed25519 -o IdentitiesOnly=yes -o IdentityAgent=none \
             -o UserKnownHostsFile={d}/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes -p {}",
            self.port,
            d = self.dir.display()
        )
    }

    fn url(&self, repo: &Path) -> String {
        format!("ssh://{}@127.0.0.1:{}{}", self.user, self.port, repo.display())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The release gate, serving `gated` as `project`; killed when dropped.
struct Gate {
    child: Child,
    url: String,
    stderr: mpsc::Receiver<String>,
}

impl Gate {
    fn start(sidecar: &Path, top: &Path, sshd: &Sshd, gated: &Path) -> Result<Self> {
        let known_hosts = sshd.host_key_line()?;
        let config = serde_json::json!({
            "bottle": "bench",
            "listen": bottle_core::sidecar::Listen::Tcp("127.0.0.1:0".into()),
            "client_token": bottle_core::sidecar::ClientToken::from_value(BENCH_TOKEN).digest(),
            "work_dir": top.join("gate"),
            "audit_log": top.join("gate-audit.jsonl"),
            "upstreams": [{
                "name": "project",
                "host": "127.0.0.1",
                "port": sshd.port,
                "user": sshd.user,
                "repo": gated,
                "identity_key": std::fs::read_to_string(sshd.dir.join("client_ed25519"))?,
                "known_hosts": known_hosts,
                "push": { "branches": ["bench/*"], "force": false, "delete": false, "tags": false },
            }],
        });
        let path = top.join("gate.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        let mut child = Command::new(sidecar)
            .args(["sidecar", "git-gate", "--config"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start {}", sidecar.display()))?;
        let (lines, stderr) = mpsc::channel();
        let reader = BufReader::new(child.stderr.take().context("no stderr")?);
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let mut gate = Self { child, url: String::new(), stderr };
        let mut said = Vec::new();
        while let Ok(line) = gate.stderr.recv_timeout(Duration::from_secs(60)) {
            if let Some(addr) = line.strip_prefix("git-gate: listening on ") {
                gate.url = format!("http://{addr}");
                return Ok(gate);
            }
            said.push(line);
        }
        bail!("the gate did not start:\n{}", said.join("\n"))
    }

    /// Stops the gate; returns what it printed on stderr meanwhile.
    fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop();
    }
}
