//! What the tests run against besides a backend: servers on the host (an
//! sshd upstream and a git repository on it, an HTTPS echo upstream), the host's address on Docker's
//! bridge, the binaries `cargo test --workspace` builds beside the test
//! binaries (`bottle`, the fake `smolvm`), and the check that Docker answers.

pub mod bridge;
pub mod repo;
pub mod sshd;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::process::Command;

/// How to get Docker, for every failure that needs it.
const HOW_TO_GET_DOCKER: &str =
    "run `cargo xtask setup` (installs docker.io, starts dockerd, builds the offline base image)";

/// Fail (never skip) when Docker is not reachable, saying how to get it.
pub fn require_docker() {
    let out = Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "these tests need a running Docker Engine, and `docker version` failed: {}\n{HOW_TO_GET_DOCKER}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("these tests need Docker, and the `docker` command cannot run: {e}\n{HOW_TO_GET_DOCKER}"),
    }
}

/// The folder cargo builds this workspace's binaries in (`target/debug`):
/// the test binary runs from its `deps` folder.
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running test binary");
    let dir = exe.parent().expect("the test binary's folder");
    if dir.file_name().is_some_and(|name| name == "deps") { dir.parent().unwrap_or(dir) } else { dir }.to_path_buf()
}

/// A binary of the workspace in [`build_dir`]; fails saying how to build it.
fn built(name: &str, package: &str) -> PathBuf {
    let path = build_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: `cargo test --workspace` builds it, or run `cargo build -p {package}`",
        path.display()
    );
    path
}

/// The `bottle` binary: what runs a bottle's sidecars (`bottle sidecar …`).
pub fn bottle() -> PathBuf {
    built("bottle", "bottle-cli")
}

/// The fake `smolvm` (`crates/smolvm-fake`).
pub fn fake_smolvm() -> PathBuf {
    built("smolvm", "smolvm-fake")
}

/// The variable that, when set, gives the fake `smolvm` its own
/// `DOCKER_HOST` (unset when empty): a test can hide Docker from bot-bottle
/// while the fake, whose machines are Docker containers, still reaches it.
pub const FAKE_DOCKER_HOST_ENV: &str = "SMOLVM_FAKE_DOCKER_HOST";

/// Writes `bin/smolvm`, a script that runs the fake `smolvm` (with
/// [`FAKE_DOCKER_HOST_ENV`] applied), and returns `bin`: put it first on
/// `PATH` and the smolvm backend finds the fake. The fake also needs
/// `SMOLVM_FAKE_STATE`, the folder of its machines.
pub fn install_fake_smolvm(bin: &Path) -> PathBuf {
    std::fs::create_dir_all(bin).expect("mkdir");
    let wrapper = format!(
        "#!/bin/sh\nif [ \"${{{FAKE_DOCKER_HOST_ENV}+set}}\" = set ]; then\n  \
         if [ -n \"${FAKE_DOCKER_HOST_ENV}\" ]; then export DOCKER_HOST=\"${FAKE_DOCKER_HOST_ENV}\"; \
         else unset DOCKER_HOST; fi\nfi\nexec '{}' \"$@\"\n",
        fake_smolvm().display()
    );
    let script = bin.join("smolvm");
    std::fs::write(&script, wrapper).expect("write the smolvm wrapper");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    bin.to_path_buf()
}

/// Wait until `check` holds, up to `secs` seconds.
pub fn wait_for(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    check()
}

/// Lossy UTF-8.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Write `text` to `dir/name` and return the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// A live `bottle sidecar` process on the host (not a zombie).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarProcess {
    /// Its pid.
    pub pid: String,
    /// The word after `sidecar` in its argv (`egress`, `git-gate`, `relay`).
    pub role: String,
    /// Its whole argv, space-separated.
    pub args: String,
}

/// The live `bottle sidecar` processes of bottle `slug` whose state folder
/// is `state_dir` (the relay into its network namespace, which names the
/// socket folder `/run/bot-bottle/SLUG/`, too).
pub fn sidecar_processes(state_dir: &Path, slug: &str) -> Vec<SidecarProcess> {
    let dir = state_dir.display().to_string();
    let sockets = format!("/run/bot-bottle/{slug}/");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).unwrap_or("Z");
        let raw = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let argv: Vec<String> = raw.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let mine = argv.iter().any(|a| a.contains(&dir) || a.contains(&sockets));
        let role = argv.iter().position(|a| a == "sidecar").and_then(|at| argv.get(at + 1));
        if let (Some(role), true, false) = (role, mine, state == "Z") {
            found.push(SidecarProcess { pid, role: role.clone(), args: argv.join(" ") });
        }
    }
    found
}
