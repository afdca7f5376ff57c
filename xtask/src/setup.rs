//! `cargo xtask setup`: every Debian package the tests and the main job use
//! ([`PACKAGES`], the one list), `dockerd` answering, and the base image that
//! the Dockerfiles name (`FROM debian:bookworm-slim`) present.
//!
//! Nothing can be pulled from a registry here, so the base image is built
//! offline: debootstrap from the host's Debian mirror into a temporary
//! directory, then `docker import`. Each step is skipped when its result is
//! already there, so a second run takes well under a second. As root the
//! privileged commands run directly, otherwise through `sudo`; each is printed
//! before it runs.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};

use crate::{output, show};

const DEFAULT_IMAGE: &str = "debian:bookworm-slim";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
const SUITE: &str = "bookworm";
const DOCKERD_LOG: &str = "/var/log/bot-bottle-dockerd.log";
const DOCKERD_PID: &str = "/var/run/docker.pid";
const DOCKERD_SOCKET: &str = "/var/run/docker.sock";
const CONTAINERD_PID: &str = "/var/run/docker/containerd/containerd.pid";
/// How long a starting `dockerd` may take to answer.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(60);
/// Where `dockerd`, `debootstrap` and the tools they call live, on `PATH` or not.
const SBIN: [&str; 3] = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// A Debian package that the tests or the main job need, and the programs
/// of it they run: setup installs it when one of them is missing.
pub(crate) struct Package {
    /// The package's name.
    pub(crate) name: &'static str,
    /// The programs of it that the workspace runs on the host.
    pub(crate) programs: &'static [&'static str],
    /// Who needs it.
    pub(crate) why: &'static str,
}

/// Every Debian package the tests and `cargo xtask try` use on the host.
/// `setup` installs those whose programs are missing, in one `apt-get`
/// call; the tidy test `every_program_the_workspace_runs_is_installed_by_setup`
/// fails when code runs a program that is neither here nor part of a new
/// machine (`new-machine-packages.txt`).
pub(crate) const PACKAGES: &[Package] = &[
    Package { name: "docker.io", programs: &["docker", "dockerd"], why: "the Docker Engine that runs bottles" },
    Package {
        name: "iptables",
        programs: &["iptables", "ip6tables"],
        why: "dockerd's networks and the smolvm fake's firewall",
    },
    Package { name: "iproute2", programs: &["ip"], why: "tests find the host's addresses" },
    Package { name: "debootstrap", programs: &["debootstrap"], why: "the offline base image" },
    Package { name: "openssh-server", programs: &["sshd"], why: "the git gate's tests serve upstreams over ssh" },
    Package { name: "openssh-client", programs: &["ssh", "ssh-keygen"], why: "the git gate and its tests" },
    Package { name: "git", programs: &["git"], why: "the git gate and its tests" },
    Package { name: "curl", programs: &["curl"], why: "the egress proxy's tests" },
    Package { name: "openssl", programs: &["openssl"], why: "the e2e tests' HTTPS upstream" },
    Package { name: "python3", programs: &["python3"], why: "the e2e tests' HTTPS upstream" },
    Package {
        name: "tmux",
        programs: &["tmux"],
        why: "the dashboard opens attach in a tmux window; its e2e test drives it in tmux",
    },
    Package { name: "procps", programs: &["ps", "kill"], why: "tests look at and signal processes" },
];

/// Runs every step of `cargo xtask setup`.
pub(crate) fn run() -> Result<()> {
    let mut host = Host { root: is_root(), apt_updated: false };
    host.ensure_packages().context("while installing the packages the tests and bottles need")?;
    host.ensure_daemon().context("while making sure dockerd answers")?;
    host.ensure_base_image().context("while making sure the base image exists")?;
    Ok(())
}

/// This machine, and what `setup` has done to it so far in this run.
struct Host {
    /// Whether we are root; otherwise privileged commands go through `sudo`.
    root: bool,
    /// Whether `apt-get update` ran already (once a run is enough).
    apt_updated: bool,
}

impl Host {
    /// Installs, in one go, every package of [`PACKAGES`] one of whose
    /// programs is missing (a Docker Engine from elsewhere counts as there).
    fn ensure_packages(&mut self) -> Result<()> {
        let missing: Vec<&Package> =
            PACKAGES.iter().filter(|package| package.programs.iter().any(|p| find_program(p).is_none())).collect();
        if missing.is_empty() {
            println!("packages: all {} present", PACKAGES.len());
            return Ok(());
        }
        for package in &missing {
            let absent: Vec<&str> = package.programs.iter().copied().filter(|p| find_program(p).is_none()).collect();
            println!("packages: {} missing ({}), for {}", package.name, absent.join(", "), package.why);
        }
        let names: Vec<&str> = missing.iter().map(|package| package.name).collect();
        self.apt_install(&names)?;
        for package in &missing {
            for program in package.programs {
                find_program(program)
                    .with_context(|| format!("{} is installed, yet there is no `{program}`", package.name))?;
            }
        }
        if let Some(dockerd) = missing.iter().any(|p| p.name == "docker.io").then(|| find_program("dockerd")).flatten()
        {
            let version = output(Command::new(&dockerd).arg("--version"))?;
            println!("docker: installed {} (docker.io)", version.trim().trim_start_matches("Docker version "));
        }
        Ok(())
    }

    fn ensure_daemon(&self) -> Result<()> {
        let why = match server_version(Duration::from_secs(5)) {
            Ok(version) => {
                println!("dockerd: running ({version})");
                return Ok(());
            }
            Err(why) => why,
        };
        if why.to_ascii_lowercase().contains("permission denied") {
            bail!(
                "{why}\nadd yourself to the docker group \
                 (`sudo usermod -aG docker $USER`) and log in again"
            );
        }
        if let Some(host) =
            std::env::var("DOCKER_HOST").ok().filter(|host| !host.is_empty() && host != "unix:///var/run/docker.sock")
        {
            bail!("DOCKER_HOST={host} does not answer ({why}); unset it to use a local dockerd");
        }
        if let Some(pid) = live_process("dockerd") {
            println!("dockerd: pid {pid} is up but does not answer yet; waiting up to {} s", DAEMON_TIMEOUT.as_secs());
            let version = wait_for_daemon(None).with_context(|| format!("while waiting for dockerd (pid {pid})"))?;
            println!("dockerd: running (pid {pid}, {version})");
            return Ok(());
        }
        self.clear_stale_files().context("while removing what a dead dockerd left behind")?;
        let started = Instant::now();
        let mut child = self.spawn_dockerd().context("while starting dockerd")?;
        let version = wait_for_daemon(Some(&mut child)).context("while waiting for the dockerd that setup started")?;
        let pid = read_pid(Path::new(DOCKERD_PID)).unwrap_or(child.id());
        println!(
            "dockerd: started (pid {pid}, {version}) in {:.1} s, log in {DOCKERD_LOG}",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Pid files that name a dead (or reused) pid, and the socket of a dead
    /// dockerd: a new dockerd refuses to start over the first.
    fn clear_stale_files(&self) -> Result<()> {
        for (file, owner) in [(DOCKERD_PID, "dockerd"), (CONTAINERD_PID, "containerd")] {
            let Some(pid) = read_pid(Path::new(file)) else {
                continue;
            };
            if live_name(pid).as_deref() == Some(owner) {
                continue; // a containerd that outlived its dockerd is reused
            }
            println!("dockerd: {file} names pid {pid}, which is no live {owner}: removing it");
            run_quietly(self.privileged("rm").args(["-f", file]))?;
        }
        if Path::new(DOCKERD_SOCKET).exists() {
            println!("dockerd: no dockerd listens on {DOCKERD_SOCKET}: removing it");
            run_quietly(self.privileged("rm").args(["-f", DOCKERD_SOCKET]))?;
        }
        Ok(())
    }

    /// Starts dockerd in the background, in its own process group so that
    /// neither Ctrl-C here nor our exit stops it; its output goes to the log.
    fn spawn_dockerd(&self) -> Result<Child> {
        let dockerd = find_program("dockerd").context("no dockerd binary")?;
        if !self.root {
            // The background sudo below cannot ask for a password: ask now.
            run_quietly(Command::new("sudo").arg("-v"))?;
        }
        let mut cmd = self.privileged("sh");
        let script = r#"exec >>"$1" 2>&1 </dev/null
echo "=== $(date -u '+%F %T') cargo xtask setup starts $0"
exec "$0""#;
        cmd.args(["-c", script])
            .arg(&dockerd)
            .arg(DOCKERD_LOG)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let sudo = if self.root { "" } else { "sudo " };
        println!("  $ {sudo}{} >>{DOCKERD_LOG} 2>&1 &", dockerd.display());
        cmd.spawn().with_context(|| format!("could not run `{}`", show(&cmd)))
    }

    fn ensure_base_image(&mut self) -> Result<()> {
        let image = std::env::var("BOT_BOTTLE_BASE_IMAGE")
            .ok()
            .filter(|image| !image.is_empty())
            .unwrap_or_else(|| DEFAULT_IMAGE.to_owned());
        let inspect = Command::new("docker")
            .args(["image", "inspect", &image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("could not run docker image inspect")?;
        if inspect.success() {
            println!("base image {image}: present");
            return Ok(());
        }
        let mirror = mirror();
        println!("base image {image}: absent, building it with debootstrap from {mirror}");
        let debootstrap = find_program("debootstrap").context("no debootstrap, though setup installs it")?;
        let started = Instant::now();
        let rootfs = Rootfs::create(self.root)?;
        run_quietly(self.privileged(&debootstrap).args(["--variant=minbase", SUITE]).arg(&rootfs.path).arg(&mirror))
            .context("while running debootstrap")?;
        // Like Debian's own image: no downloaded packages, no package lists
        // (a Dockerfile runs `apt-get update` before it installs).
        run_quietly(
            self.privileged("find")
                .arg(rootfs.path.join("var/cache/apt"))
                .arg(rootfs.path.join("var/lib/apt/lists"))
                .args(["-type", "f", "-delete"]),
        )
        .context("while removing apt's caches from the root file system")?;
        self.import(&rootfs.path, &image)
            .with_context(|| format!("while importing {} as {image}", rootfs.path.display()))?;
        drop(rootfs);
        println!("base image {image}: built in {} s", started.elapsed().as_secs());
        Ok(())
    }

    /// `tar -C rootfs -c . | docker import - image`, with the `CMD` that
    /// Debian's own image has.
    fn import(&self, rootfs: &Path, image: &str) -> Result<()> {
        let mut tar = self.privileged("tar");
        tar.arg("-C").arg(rootfs).args(["-c", "."]).stdin(Stdio::null()).stdout(Stdio::piped());
        let mut docker = Command::new("docker");
        docker.args(["import", "--change", r#"CMD ["bash"]"#, "-", image]).stdout(Stdio::null());
        println!("  $ {} | {}", show(&tar), show(&docker));
        let mut tar = tar.spawn().context("could not run tar")?;
        let pipe = tar.stdout.take().context("tar has no stdout")?;
        // `docker` owns the pipe's read end: drop it before waiting for tar,
        // so that tar cannot block on a pipe nobody reads.
        let imported = docker.stdin(pipe).status();
        drop(docker);
        let tarred = tar.wait().context("while waiting for tar")?;
        let imported = imported.context("could not run docker import")?;
        ensure!(tarred.success(), "tar failed ({tarred})");
        ensure!(imported.success(), "docker import failed ({imported})");
        Ok(())
    }

    fn apt_install(&mut self, packages: &[&str]) -> Result<()> {
        if !self.apt_updated {
            run_quietly(self.apt_get().arg("update")).context("while running apt-get update")?;
            self.apt_updated = true;
        }
        run_quietly(self.apt_get().args(["install", "-y"]).args(packages))
            .with_context(|| format!("while installing {}", packages.join(" ")))
    }

    fn apt_get(&self) -> Command {
        let mut cmd = self.privileged("env");
        cmd.args(["DEBIAN_FRONTEND=noninteractive", "apt-get", "-q"]);
        cmd
    }

    fn privileged(&self, program: impl AsRef<OsStr>) -> Command {
        privileged(self.root, program)
    }
}

/// `program` as root: directly when we are `root`, else through `sudo`.
fn privileged(root: bool, program: impl AsRef<OsStr>) -> Command {
    if root {
        let mut cmd = Command::new(program);
        cmd.env("PATH", search_path());
        cmd
    } else {
        let mut cmd = Command::new("sudo");
        cmd.arg(program);
        cmd
    }
}

/// The temporary root file system that debootstrap fills; removed on drop.
struct Rootfs {
    path: PathBuf,
    /// Whether we are root (debootstrap's files need root to remove).
    root: bool,
}

impl Rootfs {
    fn create(root: bool) -> Result<Self> {
        let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis());
        let path = PathBuf::from(format!("/var/tmp/bot-bottle-rootfs-{}-{stamp}", std::process::id()));
        fs::create_dir(&path).with_context(|| format!("could not create {}", path.display()))?;
        Ok(Self { path, root })
    }

    fn remove(&self) -> Result<()> {
        // debootstrap unmounts what it mounted unless it was killed; whatever
        // is left must not be deleted through.
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split_whitespace().nth(1))
            .filter(|point| Path::new(point).starts_with(&self.path))
            .collect();
        under.sort_by_key(|point| std::cmp::Reverse(point.len()));
        for point in under {
            run_quietly(privileged(self.root, "umount").args(["-l", point]))?;
        }
        run_quietly(privileged(self.root, "rm").args(["-rf", "--one-file-system"]).arg(&self.path))
    }
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        if let Err(err) = self.remove() {
            eprintln!("warning: could not remove {}: {err:#}", self.path.display());
        }
    }
}

/// Prints `cmd`, runs it with its output held back, and shows the end of
/// that output only if it fails.
fn run_quietly(cmd: &mut Command) -> Result<()> {
    println!("  $ {}", show(cmd));
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("could not run `{}`", show(cmd)))?;
    if !out.status.success() {
        let text = [out.stdout, out.stderr].concat();
        let text = String::from_utf8_lossy(&text);
        bail!("`{}` failed ({})\n{}", show(cmd), out.status, last_lines(&text, 30));
    }
    Ok(())
}

/// The daemon's version, or why `docker version` could not tell it within
/// `timeout`.
fn server_version(timeout: Duration) -> Result<String, String> {
    let mut child = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("could not run docker: {err}"))?;
    let deadline = Instant::now() + timeout;
    while child.try_wait().map_err(|err| err.to_string())?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no answer within {} s", timeout.as_secs()));
        }
        sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().map_err(|err| err.to_string())?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && !version.is_empty() {
        Ok(version)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Polls the daemon until it answers, for [`DAEMON_TIMEOUT`]; fails early
/// when `child` (the dockerd we started) exits.
fn wait_for_daemon(mut child: Option<&mut Child>) -> Result<String> {
    let deadline = Instant::now() + DAEMON_TIMEOUT;
    loop {
        let why = match server_version(Duration::from_secs(3)) {
            Ok(version) => return Ok(version),
            Err(why) => why,
        };
        if let Some(status) = child.as_mut().map(|child| child.try_wait()).transpose()?.flatten() {
            bail!("dockerd exited ({status}) before it answered\n{}", log_tail());
        }
        if Instant::now() >= deadline {
            bail!("dockerd did not answer within {} s ({why})\n{}", DAEMON_TIMEOUT.as_secs(), log_tail());
        }
        sleep(Duration::from_millis(250));
    }
}

fn log_tail() -> String {
    match fs::read_to_string(DOCKERD_LOG) {
        Ok(log) => format!("last lines of {DOCKERD_LOG}:\n{}", last_lines(&log, 20)),
        Err(err) => format!("(could not read {DOCKERD_LOG}: {err})"),
    }
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// The pid of a live (not zombie) process named `name`.
fn live_process(name: &str) -> Option<u32> {
    fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .find(|&pid| live_name(pid).as_deref() == Some(name))
}

/// The name of process `pid`, unless it is gone or a zombie.
fn live_name(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
    (!rest.starts_with(['Z', 'X'])).then(|| name.to_owned())
}

fn read_pid(file: &Path) -> Option<u32> {
    fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
            Some(uids.split_whitespace().nth(1)? == "0") // the effective uid
        })
        .unwrap_or(false)
}

/// `PATH` with the sbin directories added: a user's `PATH` often lacks them.
fn search_path() -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|path| std::env::split_paths(&path).collect()).unwrap_or_default();
    for dir in SBIN.into_iter().chain(["/usr/local/bin", "/usr/bin", "/bin"]) {
        if !dirs.iter().any(|known| known == Path::new(dir)) {
            dirs.push(dir.into());
        }
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&search_path())
        .map(|dir| dir.join(name))
        .find(|path| fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0))
}

/// The Debian mirror for debootstrap: `BOT_BOTTLE_DEBIAN_MIRROR`, else the
/// first Debian archive in the host's apt sources, else [`DEFAULT_MIRROR`].
fn mirror() -> String {
    if let Some(mirror) = std::env::var("BOT_BOTTLE_DEBIAN_MIRROR").ok().filter(|mirror| !mirror.is_empty()) {
        return mirror;
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    let mut listed: Vec<PathBuf> =
        fs::read_dir("/etc/apt/sources.list.d").into_iter().flatten().flatten().map(|entry| entry.path()).collect();
    listed.sort();
    files.extend(listed);
    files
        .iter()
        .find_map(|file| debian_mirror(file, &fs::read_to_string(file).ok()?))
        .unwrap_or_else(|| DEFAULT_MIRROR.to_owned())
}

/// The first Debian archive (a `deb` URI whose path ends in `/debian`) in
/// one apt sources file, in the one-line (`.list`) or deb822 (`.sources`)
/// format; other files are not read by apt, so not here either.
fn debian_mirror(file: &Path, text: &str) -> Option<String> {
    let uris: Vec<&str> = match file.extension().and_then(OsStr::to_str) {
        Some("sources") => text
            .split("\n\n")
            .filter(|stanza| {
                let field = |name: &str| {
                    stanza.lines().find_map(|line| {
                        let (key, value) = line.split_once(':')?;
                        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
                    })
                };
                !field("Enabled").is_some_and(|on| on.eq_ignore_ascii_case("no"))
                    && field("Types").is_some_and(|types| types.split_whitespace().any(|t| t == "deb"))
            })
            .flat_map(|stanza| {
                stanza.lines().filter_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    key.trim().eq_ignore_ascii_case("URIs").then_some(value)
                })
            })
            .flat_map(str::split_whitespace)
            .collect(),
        Some("list") => text
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                if words.next()? != "deb" {
                    return None;
                }
                let mut word = words.next()?;
                if word.starts_with('[') {
                    while !word.ends_with(']') {
                        word = words.next()?;
                    }
                    word = words.next()?;
                }
                Some(word)
            })
            .collect(),
        _ => return None,
    };
    uris.into_iter().map(|uri| uri.trim_end_matches('/')).find(|uri| uri.ends_with("/debian")).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(file: &str, text: &str, expect: Option<&str>) {
        assert_eq!(debian_mirror(Path::new(file), text).as_deref(), expect, "{file}:\n{text}");
    }

    #[test]
    fn debian_mirror_from_apt_sources() {
        let bookworm = "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
                        URIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n\n\
                        Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n";
        check("debian.sources", bookworm, Some("http://deb.debian.org/debian"));
        check("a.sources", "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\n", None);
        check(
            "a.sources",
            "Types: deb\nEnabled: no\nURIs: http://a/debian\n\nTypes: deb\nURIs: http://b/debian/\n",
            Some("http://b/debian"),
        );
        check("a.sources", "Types: deb-src\nURIs: http://a/debian\n", None);
        check(
            "sources.list",
            "# deb http://a/debian bookworm main\ndeb http://ftp.fr.debian.org/debian/ bookworm main\n",
            Some("http://ftp.fr.debian.org/debian"),
        );
        check(
            "sources.list",
            "deb [ arch=amd64 signed-by=/k.gpg ] http://a:3142/debian bookworm main\n",
            Some("http://a:3142/debian"),
        );
        check(
            "sources.list",
            "deb [arch=amd64] http://security.debian.org/debian-security bookworm-security main\n",
            None,
        );
        check("debian.sources.disabled", "Types: deb\nURIs: http://a/debian\n", None);
    }
}
