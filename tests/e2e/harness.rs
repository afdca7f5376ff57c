//! The test harness: an isolated `bottle` environment per test, Docker
//! queries by label, and removal of whatever a test created.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;

pub(crate) use bottle_testkit::fixtures::{require_docker, text, wait_for, write};

/// The `bottle` binary under test.
pub(crate) fn bottle_bin() -> &'static str {
    env!("CARGO_BIN_EXE_bottle")
}

/// The variables a `bottle` command of a [`World`] never inherits.
pub(crate) const CLEARED_ENV: [&str; 5] =
    ["BOT_BOTTLE_MANIFEST", "BOT_BOTTLE_BACKEND", "RUST_BACKTRACE", "RUST_LIB_BACKTRACE", "NO_COLOR"];

/// One test's private world: state, config and working directory.
pub(crate) struct World {
    dir: tempfile::TempDir,
    slugs: std::sync::Mutex<Vec<String>>,
    env: Vec<(String, String)>,
}

impl World {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["state", "config", "home", "work"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        World { dir, slugs: Default::default(), env: Vec::new() }
    }

    /// Set `key=value` for every `bottle` command of this world (a backend's test set-up).
    pub(crate) fn set_env(&mut self, key: &str, value: impl Into<String>) {
        self.env.push((key.to_string(), value.into()));
    }

    pub(crate) fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// A `bottle` command in this world (no terminal, no inherited manifest).
    pub(crate) fn bottle(&self, args: &[&str]) -> Command {
        self.bottle_at(Path::new(bottle_bin()), args)
    }

    /// [`World::bottle`] with the `bottle` executable at `bin`.
    pub(crate) fn bottle_at(&self, bin: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin);
        cmd.args(args).current_dir(self.path("work")).stdin(std::process::Stdio::null());
        for name in CLEARED_ENV {
            cmd.env_remove(name);
        }
        cmd.envs(self.isolated_env());
        cmd
    }

    /// The variables every `bottle` command of this world has: its own
    /// state, config and home, and what [`World::set_env`] added. (The
    /// variables in [`CLEARED_ENV`] are unset.)
    pub(crate) fn isolated_env(&self) -> Vec<(String, String)> {
        let own = |key: &str, sub: &str| (key.to_string(), self.path(sub).to_string_lossy().into_owned());
        let mut env = vec![own("XDG_STATE_HOME", "state"), own("XDG_CONFIG_HOME", "config"), own("HOME", "home")];
        env.extend(self.env.iter().cloned());
        env
    }

    /// Run `bottle args…` to completion.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.bottle(args).output().expect("run bottle")
    }

    /// Run and require success; returns stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "bottle {args:?} failed: {}\n{}", out.status, text(&out.stderr));
        text(&out.stdout)
    }

    /// `bottle start AGENT --yes --detach [extra]`, returning the slug.
    pub(crate) fn start_detached(&self, extra: &[&str]) -> String {
        warm_image();
        let mut args = vec!["start", "shell", "--yes", "--detach"];
        args.extend_from_slice(extra);
        let stdout = self.ok(&args);
        let slug = stdout.lines().last().expect("slug line").trim().to_string();
        self.track(&slug);
        slug
    }

    /// `bottle --manifest M start shell --yes --detach` with extra host `env`;
    /// returns the slug and the preflight summary (stderr).
    pub(crate) fn start_manifest(&self, manifest: &Path, env: &[(&str, &str)]) -> (String, String) {
        warm_image();
        let manifest = manifest.to_str().expect("utf8 path");
        let mut cmd = self.bottle(&["--manifest", manifest, "start", "shell", "--yes", "--detach"]);
        cmd.envs(env.iter().copied());
        let out = cmd.output().expect("run bottle start");
        assert!(out.status.success(), "start failed: {}", text(&out.stderr));
        let slug = text(&out.stdout).trim().to_string();
        self.track(&slug);
        (slug, text(&out.stderr))
    }

    /// A manifest `name` in the working folder with one agent `shell` whose
    /// bottle `b` (template shell) has the lines `bottle` (indented under it).
    pub(crate) fn shell_manifest(&self, name: &str, bottle: &str) -> PathBuf {
        let yaml = format!(
            "agents:\n  shell:\n    bottle: b\nbottles:\n  b:\n    agent_provider:\n      template: shell\n{bottle}"
        );
        write(&self.path("work"), name, &yaml)
    }

    /// Remember a slug so its resources are removed when the test ends.
    pub(crate) fn track(&self, slug: &str) {
        self.slugs.lock().expect("lock").push(slug.to_string());
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for slug in self.slugs.lock().map(|s| s.clone()).unwrap_or_default() {
            remove_by_slug(&slug);
        }
    }
}

fn docker_lines(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(out.status.success(), "docker {args:?}: {}", text(&out.stderr));
    text(&out.stdout).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

/// Containers (any state) labelled with `slug`.
pub(crate) fn containers_of(slug: &str) -> Vec<String> {
    docker_lines(&["ps", "-a", "--filter", &format!("label=dev.bot-bottle.slug={slug}"), "--format", "{{.Names}}"])
}

/// Networks labelled with `slug`.
pub(crate) fn networks_of(slug: &str) -> Vec<String> {
    docker_lines(&["network", "ls", "--filter", &format!("label=dev.bot-bottle.slug={slug}"), "--format", "{{.Name}}"])
}

/// Remove a slug's resources; never panics (it runs from `Drop`).
fn remove_by_slug(slug: &str) {
    let label = format!("label=dev.bot-bottle.slug={slug}");
    let ids = |args: &[&str]| -> Vec<String> {
        Command::new("docker")
            .args(args)
            .output()
            .map(|o| text(&o.stdout).split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    for c in ids(&["ps", "-aq", "--filter", &label]) {
        let _ = Command::new("docker").args(["rm", "-f", &c]).output();
    }
    for n in ids(&["network", "ls", "-q", "--filter", &label]) {
        let _ = Command::new("docker").args(["network", "rm", &n]).output();
    }
    for v in ids(&["volume", "ls", "-q", "--filter", &label]) {
        let _ = Command::new("docker").args(["volume", "rm", &v]).output();
    }
}

/// Build the shell image once per test run, so parallel tests do not all build it.
pub(crate) fn warm_image() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        require_docker();
        let world = World::new();
        let out = world.run(&["start", "shell", "--yes", "--", "-c", "true"]);
        assert!(out.status.success(), "building the shell image failed:\n{}", text(&out.stderr));
    });
}
