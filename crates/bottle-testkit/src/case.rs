//! How a case runs: [`run`] is the body of each `#[test]` the suite makes.
//! It runs the case in a process of its own — the test binary again, told
//! by its environment which test to run and in which role — because a
//! bottle's process environment is the backend's input (`BOT_BOTTLE_SIDECAR`,
//! `PATH` to find `smolvm`, the state and home folders), a test binary cannot
//! set its own (`std::env::set_var` is unsafe, and this workspace forbids
//! unsafe code), and the owner of a bottle is a process (`cleanup` judges
//! bottles by whether their launcher still runs). The same mechanism gives
//! the cleanup case its launchers to kill, and the saved-state case a
//! teardown whose memory it can measure.

use std::future::Future;
use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use crate::{Capability, Target, World, fixtures};

/// A case's body: an async function of its world.
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// One behaviour test, run against a backend by [`run`].
#[derive(Clone, Copy)]
pub struct Case {
    /// The `#[test]` function's name.
    pub name: &'static str,
    /// What the backend must be able to do for it to run.
    pub needs: &'static [Capability],
    /// It changes the host's network configuration: such cases take turns.
    pub host_network: bool,
    /// Extra environment of its process.
    pub env: &'static [(&'static str, &'static str)],
    /// The test.
    pub body: for<'a> fn(&'a World) -> CaseFuture<'a>,
}

impl Case {
    /// A case named `name` running `body`, needing nothing.
    pub const fn new(name: &'static str, body: for<'a> fn(&'a World) -> CaseFuture<'a>) -> Case {
        Case { name, needs: &[], host_network: false, env: &[], body }
    }
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case").field("name", &self.name).field("needs", &self.needs).finish()
    }
}

/// Which role a process of the test binary plays (unset: the test itself).
const ROLE_ENV: &str = "BOTTLE_TESTKIT_ROLE";
/// The case's folder.
const WORLD_ENV: &str = "BOTTLE_TESTKIT_WORLD";
/// The test to run (`--exact`), so a case's process can start helpers.
const TEST_ENV: &str = "BOTTLE_TESTKIT_TEST";
/// The bottle a helper works on.
const SLUG_ENV: &str = "BOTTLE_TESTKIT_SLUG";
/// The line prefix by which a helper reports a slug.
const SLUG_LINE: &str = "bottle-testkit slug: ";
/// The line prefix by which a helper reports a teardown note.
const NOTE_LINE: &str = "bottle-testkit note: ";
/// The note a stop helper reports when it found the bottle already gone.
pub(crate) const ALREADY_STOPPED: &str = "already stopped";

/// What a process of the test binary does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Run the case.
    Case,
    /// Start and remove a bottle of the default manifest (builds the images once).
    Warm,
    /// Start a detached bottle of the default manifest, report its slug, exit.
    LaunchDetached,
    /// Start a bottle of the default manifest running `sleep 600` attached,
    /// report its slug, and wait (to be killed).
    LaunchAttached,
    /// `session::stop` the bottle named by the slug given, report the notes, exit.
    Stop,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Case => "case",
            Role::Warm => "warm",
            Role::LaunchDetached => "launch-detached",
            Role::LaunchAttached => "launch-attached",
            Role::Stop => "stop",
        }
    }

    fn from_env() -> Option<Role> {
        let role = std::env::var(ROLE_ENV).ok()?;
        [Role::Case, Role::Warm, Role::LaunchDetached, Role::LaunchAttached, Role::Stop]
            .into_iter()
            .find(|r| r.name() == role)
    }
}

/// Cases that change the host's network take turns (within one test binary;
/// cargo runs test binaries one after another).
static HOST_NETWORK: Mutex<()> = Mutex::new(());

/// The backends whose images this process built already.
static WARMED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

/// Runs `case` against `target`: the body of the `#[test]` named
/// `module::case.name` (`module` is the caller's `module_path!()`).
///
/// In the test binary's own process it skips, printing why, when the
/// backend lacks what the case needs; checks what the backend's tests need;
/// builds the images once; makes the case a private folder (state, home,
/// config, work) and runs the case in a process of its own there, which
/// removes every bottle the case left when it ends, passed or failed.
pub fn run(target: &'static dyn Target, case: &Case, module: &str) {
    let test = module.split_once("::").map_or(case.name.to_string(), |(_, rest)| format!("{rest}::{}", case.name));
    match Role::from_env() {
        None => parent(target, case, &test),
        Some(role) => child(target, case, role),
    }
}

fn parent(target: &dyn Target, case: &Case, test: &str) {
    let lacking: Vec<String> = target
        .lacks()
        .into_iter()
        .filter(|(capability, _)| case.needs.contains(capability))
        .map(|(capability, why)| format!("{capability:?} ({why})"))
        .collect();
    if !lacking.is_empty() {
        // Straight to stderr: libtest hides what a passing test prints.
        let _ = writeln!(
            std::io::stderr(),
            "skipped {test} on {}: it needs what this backend lacks: {}",
            target.name(),
            lacking.join("; ")
        );
        return;
    }
    target.require();
    warm(target, test);
    let _turn = case.host_network.then(|| HOST_NETWORK.lock().unwrap_or_else(|e| e.into_inner()));
    let dir = tempfile::Builder::new().prefix("bottle-testkit-").tempdir().expect("a folder for the case");
    let mut cmd = process(target, dir.path(), test, Role::Case);
    cmd.envs(case.env.iter().copied());
    let out = cmd.output().expect("running the case in a process of its own");
    print!("{}", fixtures::text(&out.stdout));
    eprint!("{}", fixtures::text(&out.stderr));
    assert!(
        out.status.success(),
        "{test} on {} failed in its own process ({}); its output is above",
        target.name(),
        out.status
    );
}

/// Builds the backend's images once per test binary: a bottle of the
/// default manifest started and removed in a process of its own, so that
/// cases running side by side do not all build them.
fn warm(target: &dyn Target, test: &str) {
    let mut warmed = WARMED.lock().unwrap_or_else(|e| e.into_inner());
    if warmed.contains(&target.name()) {
        return;
    }
    let dir = tempfile::Builder::new().prefix("bottle-testkit-warm-").tempdir().expect("a folder");
    let out = process(target, dir.path(), test, Role::Warm).output().expect("running the warm-up");
    assert!(
        out.status.success(),
        "building {}'s images (a first bottle) failed:\n{}\n{}",
        target.name(),
        fixtures::text(&out.stdout),
        fixtures::text(&out.stderr)
    );
    warmed.push(target.name());
}

/// The test binary again, running `test` as `role` in the case folder `dir`:
/// its state, config and home there, the backend's environment, and
/// `BOT_BOTTLE_SIDECAR` naming the `bottle` binary that runs the sidecars
/// (a test binary cannot run them itself: libtest owns its `main`).
fn process(target: &dyn Target, dir: &Path, test: &str, role: Role) -> Command {
    for sub in ["state", "config", "home", "work"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    let exe = std::env::current_exe().expect("the test binary");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1", "--quiet"])
        .env(ROLE_ENV, role.name())
        .env(WORLD_ENV, dir)
        .env(TEST_ENV, test)
        .env("XDG_STATE_HOME", dir.join("state"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("HOME", dir.join("home"))
        .env(bottle_core::backend::SIDECAR_ENV, fixtures::bottle())
        .env_remove("BOT_BOTTLE_MANIFEST")
        .env_remove("BOT_BOTTLE_BACKEND")
        .stdin(Stdio::null())
        .envs(target.prepare_world(dir));
    cmd
}

/// The runtime a case's process runs on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime")
}

fn child(target: &'static dyn Target, case: &Case, role: Role) {
    let dir = std::env::var_os(WORLD_ENV).expect("the case's folder");
    let world = World::open(target, Path::new(&dir));
    let rt = runtime();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            match role {
                Role::Case => (case.body)(&world).await,
                Role::Warm => {
                    let running = world.start(&world.spec(world.default_manifest()), &[]).await;
                    running.teardown().await.expect("teardown");
                }
                Role::LaunchDetached => {
                    let mut spec = world.spec(world.default_manifest());
                    spec.detached = true;
                    let running = world.start(&spec, &[]).await;
                    report(SLUG_LINE, running.slug());
                    running.detach();
                }
                Role::LaunchAttached => {
                    let mut spec = world.spec(world.default_manifest());
                    spec.agent_args = vec!["-c".into(), "sleep 600".into()];
                    let running = world.start(&spec, &[]).await;
                    report(SLUG_LINE, running.slug());
                    let ended = running.attach(std::future::pending()).await;
                    panic!("the attached session was to be killed, but it ended: {ended:?}");
                }
                Role::Stop => {
                    let slug = std::env::var(SLUG_ENV).expect("the slug to stop");
                    let stopped =
                        bottle_core::session::stop(world.backend().as_ref(), &slug, world.state()).await.expect("stop");
                    for note in stopped.notes {
                        report(NOTE_LINE, &note);
                    }
                    if stopped.already {
                        report(NOTE_LINE, ALREADY_STOPPED);
                    }
                }
            }
        })
    }));
    // A helper's bottles are the case's: only the case's process removes what is left.
    if role == Role::Case || role == Role::Warm {
        rt.block_on(world.sweep());
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn report(prefix: &str, value: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{prefix}{value}");
    let _ = stdout.flush();
}

/// A helper process of a case, started by [`World::launch_detached`] and friends.
#[derive(Debug)]
pub struct Helper {
    /// The process.
    pub child: Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Helper {
    /// Starts this test again as `role` in the same case folder (its process
    /// inherits the case's environment).
    pub(crate) fn start(role: Role, env: &[(&str, &str)]) -> Helper {
        let test = std::env::var(TEST_ENV).expect("the running test's name");
        let exe = std::env::current_exe().expect("the test binary");
        let mut child = Command::new(exe)
            .args(["--exact", &test, "--nocapture", "--test-threads=1", "--quiet"])
            .env(ROLE_ENV, role.name())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting a helper process");
        let lines = std::io::BufReader::new(child.stdout.take().expect("its stdout")).lines();
        Helper { child, lines }
    }

    /// Starts a helper that stops bottle `slug`.
    pub(crate) fn stop(slug: &str) -> Helper {
        Helper::start(Role::Stop, &[(SLUG_ENV, slug)])
    }

    /// The next value the helper reports with `prefix`; `None` when it
    /// ended without one.
    fn next(&mut self, prefix: &str) -> Option<String> {
        self.lines.by_ref().map_while(Result::ok).find_map(|line| line.strip_prefix(prefix).map(str::to_string))
    }

    /// The slug of the bottle the helper started (blocks until it says).
    pub fn slug(&mut self) -> String {
        self.next(SLUG_LINE).expect("the helper ended without starting a bottle (its stderr is above)")
    }

    /// Every note the helper reported, once it ended.
    pub fn notes(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.next(NOTE_LINE)).collect()
    }

    /// Waits for the helper to end; its exit status and the most memory it
    /// held at once (`VmHWM`, read while it ran), in bytes.
    pub fn wait_measured(&mut self) -> (std::process::ExitStatus, u64) {
        let status = format!("/proc/{}/status", self.child.id());
        let mut peak_kib = 0u64;
        loop {
            if let Some(exit) = self.child.try_wait().expect("waiting for the helper") {
                return (exit, peak_kib * 1024);
            }
            if let Ok(text) = std::fs::read_to_string(&status) {
                let hwm = text.lines().find_map(|l| l.strip_prefix("VmHWM:")).map(|v| v.trim().trim_end_matches(" kB"));
                peak_kib = peak_kib.max(hwm.and_then(|v| v.trim().parse().ok()).unwrap_or(0));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
