//! Exec, copies and the NetworkPolicy probe over the pods/exec WebSocket
//! protocol, served by the fake (`fake.rs`: a real hyper connection,
//! `v5.channel.k8s.io`, stdin until the close frame, the exit code on the
//! status channel). The fake's "Pod" runs commands on this host, with the
//! guest folder `/work` mapped into a temporary folder.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bottle_core::backend::{Backend as _, CopyOut};
use bottle_core::{Bottle as _, ByteSize, GuestUser, StateRoot};
use bottle_k8s::{Cluster, K8sBackend, K8sBottle, Timeouts};

use crate::fake::{Fake, Faults, Runner};
use crate::render::prepared;

/// A shell bottle in namespace `bb`, NetworkPolicy probed (or not).
fn manifest(unenforced_ok: bool) -> String {
    format!(
        "agents:\n  shell: {{ bottle: shell }}\nbottles:\n  shell:\n    agent_provider: {{ template: shell }}\n\
         kubernetes:\n  namespace: bb\n  unenforced_ok: {unenforced_ok}\n"
    )
}

/// Runs each command on this host, `/work` in argv mapped under `root`;
/// the probe answers `probe` (its exit code and output) instead.
fn local(root: PathBuf, probe: (i32, &'static str)) -> Runner {
    Arc::new(move |_: &crate::fake::ExecIn, argv: &[String], stdin: &[u8]| {
        if argv.iter().any(|a| a.contains("/dev/tcp/")) {
            return (probe.1.as_bytes().to_vec(), Vec::new(), probe.0);
        }
        let mapped = format!("{}/work", root.display());
        let argv: Vec<String> = argv.iter().map(|a| a.replace("/work", &mapped)).collect();
        let mut child = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run the command");
        {
            use std::io::Write as _;
            let mut input = child.stdin.take().expect("stdin");
            input.write_all(stdin).expect("write stdin");
        }
        let out = child.wait_with_output().expect("wait");
        (out.stdout, out.stderr, out.status.code().unwrap_or(-1))
    })
}

struct Launched {
    dir: tempfile::TempDir,
    backend: K8sBackend,
    fake: Fake,
    slug: String,
}

async fn launch(unenforced_ok: bool, probe: (i32, &'static str)) -> (Launched, bottle_core::Result<K8sBottle>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let common = prepared(dir.path(), Some(&manifest(unenforced_ok)), "shell");
    let slug = common.slug.clone();
    let root = dir.path().join("guest");
    std::fs::create_dir_all(root.join("work")).expect("mkdir guest");
    let (client, fake) = Fake::start_with_exec(Faults::default(), local(root, probe));
    let backend = K8sBackend::with_cluster(
        Cluster::with_client(client, "fake"),
        StateRoot::at(dir.path().join("state")),
        Timeouts { ready: Duration::from_secs(30) },
    );
    let plan = backend.resolve_plan(common).await.expect("plan");
    let launched = backend.launch(plan).await;
    (Launched { dir, backend, fake, slug }, launched)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_stdout_and_stderr_apart_and_the_exit_code_comes_from_the_status_channel() {
    let (world, bottle) = launch(true, (0, "")).await;
    let bottle = bottle.unwrap_or_else(|e| panic!("{e}"));
    let ran = bottle.exec("echo out; echo err >&2; exit 3", GuestUser::Agent).await.expect("exec");
    assert_eq!((ran.exit_code, ran.stdout.as_str(), ran.stderr.as_str()), (3, "out\n", "err\n"));
    let ok = bottle.exec("printf 'a b'", GuestUser::Agent).await.expect("exec");
    assert_eq!((ok.exit_code, ok.stdout.as_str()), (0, "a b"));
    let requests = world.fake.requests();
    let exec = requests.iter().find(|r| r.contains("/exec")).expect("an exec request");
    assert!(
        exec.starts_with(&format!(
            "GET /api/v1/namespaces/bb/pods/bb-{}-agent/exec?&stdout=true&stderr=true&container=agent&command=sh&command=-c&command=",
            world.slug
        )),
        "{exec}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_copied_in_comes_back_out_the_same_over_stdin_and_stdout() {
    let (world, bottle) = launch(true, (0, "")).await;
    let bottle = bottle.unwrap_or_else(|e| panic!("{e}"));
    let host = world.dir.path().join("host-tree");
    std::fs::create_dir_all(host.join("sub")).expect("mkdir");
    std::fs::write(host.join("a.txt"), "alpha\n").expect("write");
    std::fs::write(host.join("sub/b.bin"), vec![7u8; 100_000]).expect("write");
    bottle.cp_in(&host, "/work/tree").await.unwrap_or_else(|e| panic!("{e}"));
    let inside = world.dir.path().join("guest/work/tree");
    assert_eq!(std::fs::read_to_string(inside.join("a.txt")).expect("copied in"), "alpha\n");
    let back = world.dir.path().join("back");
    let out = bottle.cp_out("/work/tree", &back, ByteSize::mib(16)).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(out, CopyOut::Copied { .. }), "{out:?}");
    assert_eq!(std::fs::read(back.join("sub/b.bin")).expect("copied out"), vec![7u8; 100_000]);
    let small = bottle.cp_out("/work/tree", &world.dir.path().join("small"), ByteSize(1000)).await.expect("measured");
    assert!(matches!(small, CopyOut::TooLarge { .. }), "{small:?}");
    let missing =
        bottle.cp_out("/work/nothing", &world.dir.path().join("none"), ByteSize::mib(1)).await.expect("measured");
    assert!(matches!(missing, CopyOut::Missing), "{missing:?}");
    let stdin_exec = world.fake.requests().into_iter().find(|r| r.contains("command=tar&command=-xf"));
    assert!(stdin_exec.is_some_and(|r| r.contains("stdin=true")), "the archive goes over stdin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_the_cluster_does_not_enforce_network_policy_the_bottle_is_removed_and_the_error_says_why() {
    let (world, launched) = launch(false, (10, "1.1.1.1:443\n")).await;
    let error = launched.expect_err("not enforced").to_string();
    assert!(!error.contains('\n'), "one line: {error}");
    assert!(error.contains("reached 1.1.1.1:443 directly"), "{error}");
    assert!(error.contains("does not enforce NetworkPolicy"), "{error}");
    assert!(error.contains("unenforced_ok: true"), "{error}");
    assert_eq!(world.fake.objects_of(&world.slug), Vec::<String>::new(), "the bottle was removed");
    assert!(world.backend.attach(&world.slug).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_the_cluster_enforces_network_policy_the_probe_passes() {
    let (world, launched) = launch(false, (0, "")).await;
    launched.unwrap_or_else(|e| panic!("{e}"));
    let requests = world.fake.requests();
    let probe = requests.iter().find(|r| r.contains("%2Fdev%2Ftcp%2F")).expect("the probe ran in the agent Pod");
    assert!(probe.contains(&format!("pods/bb-{}-agent/exec", world.slug)), "{probe}");
}

#[test]
fn an_exec_status_gives_the_exit_code_or_none() {
    let status = |json: serde_json::Value| -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Status {
        serde_json::from_value(json).expect("a Status")
    };
    assert_eq!(bottle_k8s::exit_code(&status(serde_json::json!({ "metadata": {}, "status": "Success" }))), Some(0));
    let failed = status(serde_json::json!({ "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
        "message": "command terminated with non-zero exit code: exit status 42",
        "details": { "causes": [{ "reason": "ExitCode", "message": "42" }] } }));
    assert_eq!(bottle_k8s::exit_code(&failed), Some(42));
    let internal =
        status(serde_json::json!({ "metadata": {}, "status": "Failure", "reason": "InternalError", "code": 500,
        "message": "error executing command in container: not found" }));
    assert_eq!(bottle_k8s::exit_code(&internal), None, "no exit code when the process could not start");
}
