//! What only this backend shows: the exact `smolvm` commands it runs for a
//! bottle (as the fake records them in `calls.jsonl`), the image archive it
//! caches, the environment its guest's commands see, and a prebuilt image
//! archive booting with Docker out of the backend's reach.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use bottle_testkit::fixtures::{self, text};
use bottle_testkit::{World, probe};

use crate::{CACHE, Smolvm, fake_state, is_root};

bottle_testkit::test!(the_exact_smolvm_calls, Smolvm, the_exact_calls);

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Every call the backend made (`calls.jsonl`).
fn calls(world: &World) -> Vec<Vec<String>> {
    let log = std::fs::read_to_string(fake_state(world).join("calls.jsonl")).expect("calls.jsonl");
    log.lines().map(|l| serde_json::from_str(l).expect("a JSON array per line")).collect()
}

async fn the_exact_calls(world: &World) {
    let mut spec = world.spec(world.default_manifest());
    spec.label = Some("testkit smolvm".into());
    spec.detached = true;
    let session = world.prepare(&spec, &[]).await;
    let summary = session.summary();
    let running = session.launch(std::future::pending()).await.expect("launch");
    let slug = running.slug().to_string();
    let bottle = running.bottle();
    assert!(summary.contains(&format!("bb-{slug}")), "the summary names the machine: {summary}");
    if is_root() {
        assert!(summary.contains(&format!("network namespace bb-{slug} of its own")), "{summary}");
    }

    let meta = world.state().read(&slug).expect("metadata");
    let listed = world.backend().enumerate_active_dyn().await.expect("enumerate_active");
    let tag = listed.iter().find(|a| a.slug == slug).expect("listed").image.clone();
    let id = Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", &tag]).output().expect("docker");
    let id = text(&id.stdout).trim().trim_start_matches("sha256:").to_string();
    let archive = Path::new(CACHE).join("bot-bottle/smolvm-images").join(format!("{id}.tar"));
    assert!(archive.is_file(), "the image archive is cached by image id: {}", archive.display());

    let proxy = probe::ok(bottle, "printenv HTTPS_PROXY").await.trim().to_string();
    let token = proxy.strip_prefix("http://bb:").and_then(|rest| rest.split_once('@')).map(|(token, _)| token);
    let token = token.unwrap_or_else(|| panic!("the proxy carries the bottle's token: {proxy}"));
    if is_root() {
        assert_eq!(
            proxy,
            format!("http://bb:{token}@127.0.0.1:3128"),
            "the proxy is the relay on the machine's own loopback"
        );
    }
    assert_eq!(token.len(), 64, "with the bottle's token: {proxy}");

    let owner = &meta.owner;
    let labels: BTreeMap<&str, String> = [
        ("dev.bot-bottle.agent", "shell".to_string()),
        ("dev.bot-bottle.backend", "smolmachines".into()),
        ("dev.bot-bottle.created-ms", owner.created_ms.to_string()),
        ("dev.bot-bottle.detached", "true".into()),
        ("dev.bot-bottle.image-tag", tag.clone()),
        ("dev.bot-bottle.label", "testkit smolvm".into()),
        ("dev.bot-bottle.owner-host", owner.host.clone()),
        ("dev.bot-bottle.owner-pid", owner.pid.to_string()),
        ("dev.bot-bottle.owner-start", owner.pid_start.to_string()),
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
    let calls = calls(world);
    assert!(!calls.iter().flatten().any(|arg| arg.contains(token)), "the token is on no smolvm command line");
    let bundle = "/etc/ssl/certs/ca-certificates.crt";
    let guest_env = probe::ok(bottle, "env").await;
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
    running.teardown().await.expect("teardown");
    assert_eq!(world.resources(&slug), Vec::<String>::new());
}

bottle_testkit::test!(
    without_docker_a_prebuilt_image_archive_boots,
    Smolvm,
    a_prebuilt_image_archive,
    env = &[("DOCKER_HOST", "unix:///nonexistent/bot-bottle-testkit-docker.sock")]
);

/// `docker ARGS…` against the engine the fake uses (this case hides it from the backend).
fn real_docker(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    match std::env::var(fixtures::FAKE_DOCKER_HOST_ENV).ok().filter(|h| !h.is_empty()) {
        Some(host) => cmd.env("DOCKER_HOST", host),
        None => cmd.env_remove("DOCKER_HOST"),
    };
    cmd.output().expect("docker")
}

async fn a_prebuilt_image_archive(world: &World) {
    // An archive of the shell image (built by the warm-up), as a user would bring it.
    let tags = real_docker(&["images", "--format", "{{.Repository}}:{{.Tag}}", "bot-bottle/shell"]);
    let tag = text(&tags.stdout).lines().next().expect("a shell image").to_string();
    let archive = world.path("work").join("shell-image.tar");
    let saved = real_docker(&["save", "--output", archive.to_str().expect("utf8"), &tag]);
    assert!(saved.status.success(), "docker save: {}", text(&saved.stderr));
    let manifest = world.shell_manifest("prebuilt.yaml", &format!("      image_archive: {}\n", archive.display()));
    let session = world.prepare(&world.spec(manifest), &[]).await;
    assert!(session.summary().contains("the manifest's image_archive"), "{}", session.summary());
    let running = session.launch(std::future::pending()).await.expect("launch without Docker");
    let slug = running.slug().to_string();
    assert_eq!(probe::ok(running.bottle(), "id -un").await.trim(), "agent");
    running.teardown().await.expect("teardown");
    assert_eq!(world.resources(&slug), Vec::<String>::new());

    // Without Docker and without an archive, the error says what to do.
    let spec = world.spec(world.default_manifest());
    let refused = bottle_core::Session::prepare(&spec, world.providers(), world.host(), world.backend().clone()).await;
    let e = refused.err().expect("no image without Docker or an archive");
    assert!(e.to_string().contains("image_archive"), "{e}");
}
