//! The CLI with the `smolmachines` backend, against the fake `smolvm`
//! (`crates/smolvm-fake`: each machine is a Docker container): `start`
//! prints the summary and the slug, `exec` runs as the agent (or `--user`)
//! in the workdir with the command's exit code, `list active` shows it
//! beside a Docker bottle in start order, and `cleanup` names what a killed
//! `start` left, per backend, says which backend it skips, and removes it.
//! (What the backend does is the conformance suite's, run by
//! `crates/bottle-smolvm`.)

use std::process::{Command, Output};

use bottle_testkit::fixtures::{FAKE_DOCKER_HOST_ENV, fake_smolvm, install_fake_smolvm};

use crate::harness::{World, require_docker, text, wait_for, warm_image};

/// A test world whose `bottle` commands find the fake `smolvm` first on `PATH`.
struct Smol {
    world: World,
}

impl Smol {
    fn new() -> Self {
        require_docker();
        warm_image();
        let mut world = World::new();
        // The fake reaches the Docker Engine even when a test hides it from `bottle` (see `without_docker`).
        let bin = install_fake_smolvm(&world.path("fake-bin"));
        std::fs::create_dir_all(world.path("fake-state")).expect("mkdir");
        let path = std::env::var("PATH").unwrap_or_default();
        world.set_env("PATH", format!("{}:{path}", bin.display()));
        let state = world.path("fake-state").display().to_string();
        world.set_env("SMOLVM_FAKE_STATE", state);
        Smol { world }
    }

    fn bottle(&self, args: &[&str]) -> Command {
        self.world.bottle(args)
    }

    /// `bottle args…` with the Docker backend unavailable (so `cleanup` leaves
    /// other tests' Docker bottles alone); the fake still reaches Docker.
    fn without_docker(&self, args: &[&str]) -> Output {
        let mut cmd = self.bottle(args);
        cmd.env(FAKE_DOCKER_HOST_ENV, std::env::var("DOCKER_HOST").unwrap_or_default())
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

    /// `BOT_BOTTLE_BACKEND=smolmachines bottle start shell --yes --detach [extra]`;
    /// returns the slug and the summary.
    fn start(&self, extra: &[&str]) -> (String, String) {
        let mut args = vec!["start", "shell", "--yes", "--detach"];
        args.extend_from_slice(extra);
        let out = self.bottle(&args).env("BOT_BOTTLE_BACKEND", "smolmachines").output();
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

    /// Live `bottle sidecar` processes of `slug`.
    fn sidecars_of(&self, slug: &str) -> Vec<bottle_testkit::fixtures::SidecarProcess> {
        bottle_testkit::fixtures::sidecar_processes(&self.world.path("state/bot-bottle").join(slug), slug)
    }
}

impl Drop for Smol {
    fn drop(&mut self) {
        // Whatever a failed test left: the fake's machines and the sidecar processes.
        for name in self.machines_quietly() {
            let _ = self.smolvm(&["machine", "delete", "--name", &name, "-f"]);
        }
        let state = self.world.path("state/bot-bottle");
        for slug in std::fs::read_dir(&state).into_iter().flatten().flatten() {
            let slug = slug.file_name().to_string_lossy().into_owned();
            for process in self.sidecars_of(&slug) {
                let _ = Command::new("kill").args(["-KILL", &process.pid]).output();
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

#[test]
fn a_smolvm_bottle_runs_commands_and_lists_beside_docker() {
    let smol = Smol::new();
    let docker_slug = smol.world.start_detached(&[]);
    let (slug, summary) = smol.start(&["--label", "e2e smolvm"]);
    assert!(summary.contains("smolmachines") && summary.contains("bb-"), "{summary}");

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

    smol.ok(&["stop", &slug]);
    assert!(!smol.machine_names().contains(&format!("bb-{slug}")), "stop removes the machine");
    let again = smol.run(&["exec", &slug, "--", "true"]);
    assert!(!again.status.success() && text(&again.stderr).contains("no running bottle"), "{}", text(&again.stderr));
    smol.world.ok(&["stop", &docker_slug]);
}

#[test]
fn cleanup_names_and_removes_what_a_killed_smolvm_start_left() {
    let smol = Smol::new();
    let (live, _) = smol.start(&[]);
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
    assert!(text(&dry.stderr).contains("dry run: nothing removed"), "{}", text(&dry.stderr));
    assert!(smol.machine_names().contains(&format!("bb-{slug}")), "a dry run removes nothing");

    let removed = smol.without_docker(&["cleanup", "--yes"]);
    assert!(removed.status.success(), "cleanup: {}", text(&removed.stderr));
    assert!(text(&removed.stderr).contains("smolmachines: removed"), "{}", text(&removed.stderr));
    assert!(!smol.machine_names().contains(&format!("bb-{slug}")), "cleanup removes the machine");
    assert!(smol.machine_names().contains(&format!("bb-{live}")), "the live bottle still runs");
    smol.ok(&["stop", &live]);
}

#[test]
fn a_smolvm_bottle_that_asks_for_supervise_is_refused_in_one_line_and_leaves_nothing() {
    let smol = Smol::new();
    let manifest = crate::harness::write(
        &smol.world.path("work"),
        "sv.yaml",
        "agents:\n  shell:\n    bottle: b\nbottles:\n  b:\n    agent_provider:\n      template: shell\n    supervise: true\n",
    );
    let out = smol
        .bottle(&["--manifest", manifest.to_str().expect("utf8"), "start", "shell", "--yes", "--detach"])
        .env("BOT_BOTTLE_BACKEND", "smolmachines")
        .output()
        .expect("run bottle start");
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "refused: {stderr}");
    let error: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(error[0].contains("`supervise: true`, which the smolvm backend does not run yet; use --backend docker"));
    assert!(smol.machine_names().is_empty(), "no machine made");
    let state = smol.world.path("state/bot-bottle");
    let left: Vec<_> = std::fs::read_dir(&state).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(left.is_empty(), "no state folder left: {left:?}");
}
