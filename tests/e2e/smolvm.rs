//! The `smolmachines` backend end to end, against the fake `smolvm`
//! (`crates/smolvm-fake`: each machine is a Docker container sharing the
//! host's network, with `--outbound-localhost-only` enforced by the host's
//! firewall): start, exec, list beside a Docker bottle, egress through the
//! host-side proxy, the git gate, secrets, stop and cleanup leaving no
//! machine, container or sidecar process — and the exact `machine create`
//! argv the backend sent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::{World, bottle_bin, require_docker, text, wait_for, warm_image, write};

/// The fake `smolvm`, built next to `bottle`.
fn fake_smolvm() -> PathBuf {
    let fake = Path::new(bottle_bin()).with_file_name("smolvm");
    assert!(
        fake.is_file(),
        "{} is missing: `cargo test --workspace` builds it, or run `cargo build -p smolvm-fake`",
        fake.display()
    );
    fake
}

/// A test world whose `bottle` commands find the fake `smolvm` first on `PATH`.
pub(crate) struct Smol {
    pub(crate) world: World,
    /// Processes a test started in a bottle's namespace.
    exposed: std::sync::Mutex<Vec<std::process::Child>>,
}

impl Smol {
    pub(crate) fn new() -> Self {
        require_docker();
        warm_image();
        let mut world = World::new();
        let bin = world.path("fake-bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        // The fake reaches the Docker Engine even when a test hides it from `bottle` (see `without_docker`).
        let wrapper = format!(
            "#!/bin/sh\nif [ \"${{SMOLVM_FAKE_DOCKER_HOST+set}}\" = set ]; then\n  \
             if [ -n \"$SMOLVM_FAKE_DOCKER_HOST\" ]; then export DOCKER_HOST=\"$SMOLVM_FAKE_DOCKER_HOST\"; \
             else unset DOCKER_HOST; fi\nfi\nexec '{}' \"$@\"\n",
            fake_smolvm().display()
        );
        let script = write(&bin, "smolvm", &wrapper);
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        std::fs::create_dir_all(world.path("fake-state")).expect("mkdir");
        let path = std::env::var("PATH").unwrap_or_default();
        world.set_env("PATH", format!("{}:{path}", bin.display()));
        let state = world.path("fake-state").display().to_string();
        world.set_env("SMOLVM_FAKE_STATE", state);
        Smol { world, exposed: Default::default() }
    }

    fn bottle(&self, args: &[&str]) -> Command {
        self.world.bottle(args)
    }

    /// `bottle args…` with the Docker backend unavailable (so `cleanup` leaves
    /// other tests' Docker bottles alone); the fake still reaches Docker.
    fn without_docker(&self, args: &[&str]) -> Output {
        let mut cmd = self.bottle(args);
        cmd.env("SMOLVM_FAKE_DOCKER_HOST", std::env::var("DOCKER_HOST").unwrap_or_default())
            .env("DOCKER_HOST", "unix:///nonexistent/bot-bottle-e2e-docker.sock");
        cmd.output().expect("run bottle")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.bottle(args).output().expect("run bottle")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "bottle {args:?} failed: {}\n{}", out.status, text(&out.stderr));
        text(&out.stdout)
    }

    /// `BOT_BOTTLE_BACKEND=smolmachines bottle [--manifest M] start shell --yes --detach [extra]`
    /// with host `env`; returns the slug and the summary.
    pub(crate) fn start(&self, manifest: Option<&Path>, extra: &[&str], env: &[(&str, &str)]) -> (String, String) {
        let mut args = Vec::new();
        if let Some(m) = manifest {
            args.extend(["--manifest", m.to_str().expect("utf8")]);
        }
        args.extend(["start", "shell", "--yes", "--detach"]);
        args.extend_from_slice(extra);
        let out = self.bottle(&args).env("BOT_BOTTLE_BACKEND", "smolmachines").envs(env.iter().copied()).output();
        let out = out.expect("run bottle start");
        assert!(out.status.success(), "start failed: {}", text(&out.stderr));
        let slug = text(&out.stdout).trim().to_string();
        self.world.track(&slug);
        (slug, text(&out.stderr))
    }

    /// Run the fake itself.
    fn smolvm(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(fake_smolvm());
        cmd.args(args).env("SMOLVM_FAKE_STATE", self.world.path("fake-state"));
        cmd.output().expect("run the fake smolvm")
    }

    /// The machines the fake knows (`machine ls --json`).
    fn machines(&self) -> Vec<serde_json::Value> {
        let out = self.smolvm(&["machine", "ls", "--json"]);
        assert!(out.status.success(), "machine ls: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("a JSON array")
    }

    fn machine_names(&self) -> Vec<String> {
        self.machines().iter().filter_map(|m| m["name"].as_str().map(str::to_string)).collect()
    }

    /// Every call the backend made (`calls.jsonl`).
    fn calls(&self) -> Vec<Vec<String>> {
        let log = std::fs::read_to_string(self.world.path("fake-state/calls.jsonl")).expect("calls.jsonl");
        log.lines().map(|l| serde_json::from_str(l).expect("a JSON array per line")).collect()
    }

    /// Live (not zombie) `bottle sidecar` processes of `slug` (the relay
    /// into its network namespace too), as `PID ARGS`.
    pub(crate) fn sidecars_of(&self, slug: &str) -> Vec<String> {
        let dir = self.world.path("state/bot-bottle").join(slug).display().to_string();
        let sockets = format!("/run/bot-bottle/{slug}/");
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).unwrap_or("Z");
            let args = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args = String::from_utf8_lossy(&args).replace('\0', " ");
            if state != "Z" && args.contains(" sidecar ") && (args.contains(&dir) || args.contains(&sockets)) {
                found.push(format!("{pid} {args}"));
            }
        }
        found
    }

    /// Containers (any state) of the fake's machine for `slug`.
    fn containers_of(&self, slug: &str) -> Vec<String> {
        let out = Command::new("docker")
            .args(["ps", "-a", "--filter", &format!("name=^smolvm-fake-bb-{slug}$"), "--format", "{{.Names}}"])
            .output()
            .expect("docker ps");
        text(&out.stdout).lines().map(str::to_string).collect()
    }

    /// Assert that nothing of `slug` is left: machine, container, sidecar process, sidecar files.
    pub(crate) fn assert_gone(&self, slug: &str) {
        assert!(!self.machine_names().contains(&format!("bb-{slug}")), "no machine left: {:?}", self.machines());
        assert!(self.containers_of(slug).is_empty(), "no container of the fake left");
        assert!(self.sidecars_of(slug).is_empty(), "no sidecar process left: {:?}", self.sidecars_of(slug));
        let files = self.world.path("state/bot-bottle").join(slug).join("sidecars");
        assert!(!files.exists(), "no sidecar files left in {}", files.display());
        let netns = format!("/run/netns/bb-{slug}");
        assert!(!Path::new(&netns).exists(), "no network namespace left: {netns}");
        let sockets = format!("/run/bot-bottle/{slug}");
        assert!(!Path::new(&sockets).exists(), "no socket folder left: {sockets}");
    }
}

impl Smol {
    /// Run `bottle sidecar relay PAIR` inside bottle `slug`'s network
    /// namespace until this world ends.
    pub(crate) fn expose_in_netns(&self, slug: &str, pair: &str) {
        let child = Command::new("ip")
            .args(["netns", "exec", &format!("bb-{slug}"), bottle_bin(), "sidecar", "relay", pair])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("ip netns exec");
        self.exposed.lock().unwrap_or_else(|e| e.into_inner()).push(child);
    }
}

impl Drop for Smol {
    fn drop(&mut self) {
        for mut child in std::mem::take(&mut *self.exposed.lock().unwrap_or_else(|e| e.into_inner())) {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever a failed test left: the fake's machines and the sidecar processes.
        for name in self.machines_quietly() {
            let _ = self.smolvm(&["machine", "delete", "--name", &name, "-f"]);
        }
        let state = self.world.path("state/bot-bottle");
        for slug in std::fs::read_dir(&state).into_iter().flatten().flatten() {
            let slug = slug.file_name().to_string_lossy().into_owned();
            for line in self.sidecars_of(&slug) {
                let pid = line.split_whitespace().next().unwrap_or_default().to_string();
                let _ = Command::new("kill").args(["-KILL", &pid]).output();
            }
            let _ = Command::new("ip").args(["netns", "delete", &format!("bb-{slug}")]).output();
            let _ = std::fs::remove_dir_all(format!("/run/bot-bottle/{slug}"));
        }
    }
}

impl Smol {
    fn machines_quietly(&self) -> Vec<String> {
        let out = self.smolvm(&["machine", "ls", "--json"]);
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        list.iter().filter_map(|m| m["name"].as_str().map(str::to_string)).collect()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_smolvm_bottle_runs_lists_beside_docker_and_stops_without_leftovers() {
    let smol = Smol::new();
    let docker_slug = smol.world.start_detached(&[]);
    let (slug, summary) = smol.start(None, &["--label", "e2e smolvm"], &[]);
    assert!(summary.contains("smolmachines") && summary.contains("bb-"), "{summary}");
    assert_eq!(smol.machine_names(), [format!("bb-{slug}")]);
    assert_eq!(smol.containers_of(&slug).len(), 1, "the fake runs the machine as one container");
    assert_eq!(
        smol.sidecars_of(&slug).len(),
        2,
        "the egress proxy on the host and the relay in the machine's namespace: {:?}",
        smol.sidecars_of(&slug)
    );
    assert!(Path::new(&format!("/run/netns/bb-{slug}")).exists(), "as root, the machine has a namespace of its own");
    assert!(summary.contains(&format!("network namespace bb-{slug} of its own")), "{summary}");

    assert_eq!(smol.ok(&["exec", &slug, "--", "id", "-un"]).trim(), "agent", "runs as the non-root agent user");
    assert_eq!(smol.ok(&["exec", &slug, "--user", "root", "--", "id", "-u"]).trim(), "0");
    assert_eq!(smol.ok(&["exec", &slug, "--", "pwd"]).trim(), "/home/agent/workspace");
    assert_eq!(smol.run(&["exec", &slug, "--", "sh", "-c", "exit 7"]).status.code(), Some(7));

    // Both backends' bottles in one listing, sorted by start time, then slug.
    let listed: serde_json::Value = serde_json::from_str(&smol.ok(&["list", "active", "--json"])).expect("json");
    let listed = listed.as_array().expect("array");
    let at = |s: &str| listed.iter().position(|a| a["slug"] == s).unwrap_or_else(|| panic!("{s} listed: {listed:?}"));
    let (d, s) = (at(&docker_slug), at(&slug));
    assert!(d < s, "the Docker bottle started first, so it comes first: {listed:?}");
    let keys: Vec<(u64, String)> = listed
        .iter()
        .map(|a| (a["started_at_ms"].as_u64().unwrap_or(0), a["slug"].as_str().unwrap_or_default().to_string()))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] <= w[1]), "sorted by start time, then slug: {keys:?}");
    let mine = &listed[s];
    assert_eq!(
        (&mine["backend"], &mine["status"], &mine["agent"], &mine["label"]),
        (&"smolmachines".into(), &"running".into(), &"shell".into(), &"e2e smolvm".into())
    );
    assert_eq!(listed[d]["backend"], "docker");
    let table = smol.ok(&["list", "active"]);
    assert!(table.contains(&slug) && table.contains(&docker_slug), "{table}");

    // The exact `machine create` the backend sent.
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(smol.world.path("state/bot-bottle").join(&slug).join("metadata.json")).expect("meta"),
    )
    .expect("json");
    let owner = &meta["owner"];
    let tag = mine["image"].as_str().expect("image tag");
    let id = Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", tag]).output().expect("docker");
    let id = text(&id.stdout).trim().trim_start_matches("sha256:").to_string();
    let archive = smol.world.path("home/.cache/bot-bottle/smolvm-images").join(format!("{id}.tar"));
    assert!(archive.is_file(), "the image archive is cached by image id: {}", archive.display());
    let proxy = smol.ok(&["exec", &slug, "--", "printenv", "HTTPS_PROXY"]).trim().to_string();
    let token = proxy.strip_prefix("http://bb:").and_then(|rest| rest.strip_suffix("@127.0.0.1:3128"));
    let token = token.unwrap_or_else(|| panic!("the proxy is the relay on the machine's own loopback: {proxy}"));
    assert_eq!(token.len(), 64, "with the bottle's token: {proxy}");
    let labels: BTreeMap<&str, String> = [
        ("dev.bot-bottle.agent", "shell".to_string()),
        ("dev.bot-bottle.backend", "smolmachines".into()),
        ("dev.bot-bottle.created-ms", owner["created_ms"].to_string()),
        ("dev.bot-bottle.detached", "true".into()),
        ("dev.bot-bottle.image-tag", tag.into()),
        ("dev.bot-bottle.label", "e2e smolvm".into()),
        ("dev.bot-bottle.owner-host", owner["host"].as_str().expect("host").into()),
        ("dev.bot-bottle.owner-pid", owner["pid"].to_string()),
        ("dev.bot-bottle.owner-start", owner["pid_start"].to_string()),
        ("dev.bot-bottle.role", "agent".into()),
        ("dev.bot-bottle.slug", slug.clone()),
        ("dev.bot-bottle.user", "agent".into()),
        ("dev.bot-bottle.workdir", "/home/agent/workspace".into()),
    ]
    .into();
    // No environment on the command line: it holds the token, and every host user sees argv.
    let mut expected = strings(&["machine", "create", "--name", &format!("bb-{slug}"), "--image"]);
    expected.push(archive.display().to_string());
    for (k, v) in &labels {
        expected.extend(["--label".to_string(), format!("{k}={v}")]);
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()).min(2).to_string();
    expected.extend(strings(&["--cpus", &cpus, "--mem", "4096"]));
    expected.push("--outbound-localhost-only".into());
    let calls = smol.calls();
    assert!(!calls.iter().flatten().any(|arg| arg.contains(token)), "the token is on no smolvm command line");
    let bundle = "/etc/ssl/certs/ca-certificates.crt";
    let guest_env = smol.ok(&["exec", &slug, "--", "env"]);
    for line in [
        format!("CURL_CA_BUNDLE={bundle}"),
        format!("HTTPS_PROXY={proxy}"),
        format!("http_proxy={proxy}"),
        "NO_PROXY=localhost,127.0.0.1,::1".to_string(),
        "NODE_EXTRA_CA_CERTS=/usr/local/share/ca-certificates/bot-bottle-ca.crt".to_string(),
    ] {
        assert!(guest_env.lines().any(|l| l == line), "the guest's commands see {line}:\n{guest_env}");
    }
    let creates: Vec<&Vec<String>> = calls.iter().filter(|c| c.get(1).map(String::as_str) == Some("create")).collect();
    assert_eq!(creates, [&expected], "exactly one create, with exactly these arguments");
    let start = strings(&["machine", "start", "--name", &format!("bb-{slug}")]);
    assert!(calls.contains(&start), "then `machine start`: {calls:?}");
    let execs = calls.iter().filter(|c| c.get(1).map(String::as_str) == Some("exec"));
    assert!(
        execs.clone().all(|c| c[2..4] == strings(&["--name", &format!("bb-{slug}")])),
        "every exec names the machine: {calls:?}"
    );
    assert!(
        execs.clone().any(|c| c.windows(4).any(|w| w == strings(&["runuser", "-u", "agent", "--"]))),
        "commands run as the agent through runuser: {calls:?}"
    );

    smol.ok(&["stop", &slug]);
    smol.assert_gone(&slug);
    let again = smol.run(&["exec", &slug, "--", "true"]);
    assert!(!again.status.success() && text(&again.stderr).contains("no running bottle"), "{}", text(&again.stderr));
    smol.world.ok(&["stop", &docker_slug]);
}

#[test]
fn cleanup_removes_what_a_killed_smolvm_start_left_and_spares_live_bottles() {
    let smol = Smol::new();
    let (live, _) = smol.start(None, &[], &[]);
    let mut child = smol
        .bottle(&["start", "shell", "--yes", "--", "-c", "sleep 600"])
        .env("BOT_BOTTLE_BACKEND", "smolmachines")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let state = smol.world.path("state/bot-bottle");
    let mut slug = String::new();
    let running = wait_for(120, || {
        let Ok(entries) = std::fs::read_dir(&state) else { return false };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name != live {
                slug = name;
            }
        }
        !slug.is_empty()
            && Command::new("docker")
                .args(["top", &format!("smolvm-fake-bb-{slug}")])
                .output()
                .is_ok_and(|o| text(&o.stdout).contains("sleep 600"))
    });
    assert!(running, "the attached session did not start");
    smol.world.track(&slug);
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert!(smol.machine_names().contains(&format!("bb-{slug}")), "SIGKILL leaves the machine behind");
    assert_eq!(smol.sidecars_of(&slug).len(), 2, "and the egress proxy on the host and the relay in its namespace");

    // Docker hidden from `bottle`: other tests' killed Docker starts are theirs to clean up.
    let dry = smol.without_docker(&["cleanup", "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert!(text(&dry.stderr).contains("skipping backend docker"), "{}", text(&dry.stderr));
    let listed = text(&dry.stdout);
    assert!(listed.contains(&format!("smolmachines: {slug}: machine bb-{slug}")), "names the machine: {listed}");
    assert!(listed.contains(&format!("smolmachines: {slug}: egress sidecar")), "and the sidecar: {listed}");
    assert!(listed.contains(&format!("smolmachines: {slug}: relay sidecar")), "and the relay: {listed}");
    assert!(
        listed.contains(&format!("smolmachines: {slug}: network namespace bb-{slug}")),
        "and its network namespace: {listed}"
    );
    assert!(!listed.contains(&live), "a live detached bottle is not an orphan: {listed}");
    assert_eq!(smol.sidecars_of(&slug).len(), 2, "a dry run removes nothing");

    let removed = smol.without_docker(&["cleanup", "--yes"]);
    assert!(removed.status.success(), "cleanup: {}", text(&removed.stderr));
    smol.assert_gone(&slug);
    assert!(smol.machine_names().contains(&format!("bb-{live}")), "the live bottle still runs");
    assert_eq!(smol.sidecars_of(&live).len(), 2, "with its proxy and relay");
    smol.ok(&["stop", &live]);
    smol.assert_gone(&live);
}

#[test]
fn without_docker_a_prebuilt_image_archive_boots() {
    let smol = Smol::new();
    // An archive of the shell image (built by the warm-up), as a user would bring it.
    let tags = Command::new("docker")
        .args(["images", "--format", "{{.Repository}}:{{.Tag}}", "bot-bottle/shell"])
        .output()
        .expect("docker images");
    let tag = text(&tags.stdout).lines().next().expect("a shell image").to_string();
    let archive = smol.world.path("work").join("shell-image.tar");
    let saved = Command::new("docker").args(["save", "--output"]).arg(&archive).arg(&tag).output().expect("save");
    assert!(saved.status.success(), "docker save: {}", text(&saved.stderr));
    let manifest = write(
        &smol.world.path("work"),
        "prebuilt.yaml",
        &format!(
            "agents:\n  shell:\n    bottle: b\nbottles:\n  b:\n    agent_provider:\n      template: shell\n      \
             image_archive: {}\n",
            archive.display()
        ),
    );
    let m = manifest.to_str().expect("utf8");
    let run = |args: &[&str]| {
        let mut argv = vec!["--manifest", m, "--backend", "smolmachines"];
        argv.extend_from_slice(args);
        smol.without_docker(&argv)
    };
    let started = run(&["start", "shell", "--yes", "--detach"]);
    assert!(started.status.success(), "start without Docker: {}", text(&started.stderr));
    let slug = text(&started.stdout).trim().to_string();
    smol.world.track(&slug);
    assert!(text(&started.stderr).contains("the manifest's image_archive"), "{}", text(&started.stderr));
    let who = run(&["exec", &slug, "--", "id", "-un"]);
    assert_eq!(text(&who.stdout).trim(), "agent", "{}", text(&who.stderr));
    assert!(run(&["stop", &slug]).status.success());
    smol.assert_gone(&slug);

    // Without Docker and without an archive, the error says what to do.
    let refused = smol.without_docker(&["--backend", "smolmachines", "start", "shell", "--yes", "--detach"]);
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("image_archive"), "{}", text(&refused.stderr));
}
