//! Git gate tests: real `git` clients talk smart HTTP to the gate (in-process
//! through `serve`, or the `bottle-sidecar git-gate` binary), and the gate
//! talks ssh to a real `sshd` serving bare upstream repositories.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bottle_core::PushPolicy;
use bottle_core::sidecar::{GateUpstream, GitGateConfig, Secret};
use serde_json::Value;
use tempfile::TempDir;

use bottle_testkit::fixtures::sshd::Sshd;

const BOTTLE: &str = "test-bottle";
/// The bottle's client token in these tests.
const TOKEN: &str = "test-client-token";

/// The `Authorization` header value the bottle's git sends the gate.
fn gate_auth() -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("bb:{TOKEN}")))
}

/// Runs git in `dir` with no user or system configuration and a fixed identity.
fn git(dir: &Path, args: &[&str]) -> Output {
    git_with(dir, args, None)
}

/// [`git`], reaching ssh upstreams with `ssh_command` when given.
fn git_with(dir: &Path, args: &[&str], ssh_command: Option<&str>) -> Output {
    let mut cmd = Command::new("git");
    match ssh_command {
        Some(ssh) => cmd.env("GIT_SSH_COMMAND", ssh),
        None => cmd.env_remove("GIT_SSH_COMMAND"),
    };
    // The bottle's git sends its gate credentials as an extra header, as
    // provisioning configures it (here for every URL: the gate is the only
    // HTTP server these tests talk to).
    cmd.current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "http.extraHeader")
        .env("GIT_CONFIG_VALUE_0", format!("Authorization: {}", gate_auth()))
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "agent")
        .env("GIT_AUTHOR_EMAIL", "agent@bottle.test")
        .env("GIT_COMMITTER_NAME", "agent")
        .env("GIT_COMMITTER_EMAIL", "agent@bottle.test")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .expect("running git")
}

/// git that must succeed; returns its trimmed stdout.
fn git_ok(dir: &Path, args: &[&str]) -> String {
    let out = git(dir, args);
    assert!(out.status.success(), "git {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// git that must fail; returns its stderr.
fn git_err(dir: &Path, args: &[&str]) -> String {
    let out = git(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "git {args:?} succeeded but should not have:\n{stderr}");
    stderr
}

/// The `bot-bottle:` lines of a push's output, without git's `remote:` prefix and padding.
fn gate_lines(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|line| line.strip_prefix("remote: "))
        .map(str::trim)
        .filter(|line| line.starts_with("bot-bottle:"))
        .map(str::to_owned)
        .collect()
}

/// Makes a file of `bytes` random (incompressible) bytes.
fn random_file(path: &Path, bytes: usize) {
    let mut data = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut data)).expect("reading /dev/urandom");
    std::fs::write(path, data).expect("writing a random file");
}

fn agent_policy() -> PushPolicy {
    PushPolicy { branches: vec!["agent/*".into()], ..PushPolicy::default() }
}

/// Writes `content` to `file` in the clone `dir` and commits it.
fn commit_file(dir: &Path, file: &str, content: &str) {
    let path = dir.join(file);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("its folder");
    std::fs::write(&path, content).expect("a file");
    git_ok(dir, &["add", file]);
    git_ok(dir, &["commit", "-q", "-m", file]);
}

/// Sends `request` (head and as much body as it has) to the gate at `url`
/// and leaves the connection open, the test's to read or to stall.
fn send(url: &str, request: &[u8]) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(url.trim_start_matches("http://")).expect("connecting to the gate");
    stream.write_all(request).expect("a request");
    // Not a timing assertion: only so that a broken gate fails the test rather than hanging it.
    stream.set_read_timeout(Some(Duration::from_secs(120))).expect("a read timeout");
    stream
}

/// Reads what the gate answers on `stream` until it closes the connection.
fn answer(mut stream: std::net::TcpStream) -> String {
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(err) => panic!("the gate neither answered nor closed the connection: {err}"),
    }
    String::from_utf8_lossy(&response).into_owned()
}

/// A `GET` of `path` with the bottle's credentials, closing the connection after.
fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: gate\r\nAuthorization: {}\r\nConnection: close\r\n\r\n", gate_auth())
}

/// One test's surroundings: sshd with bare upstreams, and a scratch dir for
/// clients, the gate's work dir and its audit log.
struct World {
    sshd: Sshd,
    scratch: TempDir,
}

impl World {
    fn new() -> Self {
        Self { sshd: Sshd::start(), scratch: tempfile::tempdir().expect("a scratch dir") }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// A bare upstream `NAME.git` with one commit on `main`.
    fn upstream(&self, name: &str) -> PathBuf {
        let repo = self.sshd.dir().join(format!("{name}.git"));
        let seed = self.sshd.dir().join(format!("{name}-seed"));
        let top = self.sshd.dir();
        git_ok(top, &["init", "-q", "--bare", "-b", "main", &repo.to_string_lossy()]);
        git_ok(top, &["init", "-q", "-b", "main", &seed.to_string_lossy()]);
        std::fs::write(seed.join("README"), format!("{name}\n")).expect("README");
        git_ok(&seed, &["add", "README"]);
        git_ok(&seed, &["commit", "-q", "-m", "initial"]);
        git_ok(&seed, &["push", "-q", &repo.to_string_lossy(), "main"]);
        repo
    }

    /// A commit made straight on the upstream (not through the gate); returns its id.
    fn commit_upstream(&self, repo: &Path, branch: &str, file: &str) -> String {
        let seed = repo.with_extension("direct");
        if !seed.exists() {
            git_ok(self.sshd.dir(), &["clone", "-q", &repo.to_string_lossy(), &seed.to_string_lossy()]);
        }
        git_ok(&seed, &["fetch", "-q", "origin"]);
        git_ok(&seed, &["checkout", "-q", "-B", branch, "origin/main"]);
        commit_file(&seed, file, file);
        git_ok(&seed, &["push", "-q", "origin", &format!("{branch}:{branch}")]);
        git_ok(&seed, &["rev-parse", "HEAD"])
    }

    fn gate_upstream(&self, name: &str, repo: &Path, push: PushPolicy) -> GateUpstream {
        GateUpstream {
            name: name.into(),
            host: self.sshd.host().into(),
            port: self.sshd.port(),
            user: self.sshd.user().into(),
            repo: repo.to_string_lossy().into_owned(),
            identity_key: Secret::new(self.sshd.client_key()),
            known_hosts: Some(self.sshd.known_hosts_line()),
            push,
        }
    }

    fn config(&self, upstreams: Vec<GateUpstream>) -> GitGateConfig {
        GitGateConfig {
            listen: bottle_core::sidecar::Listen::Tcp("127.0.0.1:0".into()),
            work_dir: self.path("gate").to_string_lossy().into_owned(),
            audit_log: self.path("audit.jsonl").to_string_lossy().into_owned(),
            grants: None,
            policy: bottle_core::sidecar::GatePolicy {
                bottle: BOTTLE.into(),
                client_token: bottle_core::sidecar::ClientToken::from_value(TOKEN).digest(),
                upstreams,
                idle_timeout_secs: bottle_core::sidecar::GatePolicy::DEFAULT_IDLE_TIMEOUT_SECS,
            },
        }
    }

    /// Clones `form` (an upstream URL as the agent knows it) into `dir`
    /// through the gate at `gate/NAME.git`, keeping the `insteadOf` rewrite
    /// in the clone so fetch and push go through the gate too.
    fn clone(&self, gate: &str, name: &str, form: &str, dir: &str) -> PathBuf {
        let rewrite = format!("url.{gate}/{name}.git.insteadOf={form}");
        git_ok(self.scratch.path(), &["clone", "-q", "-c", &rewrite, form, dir]);
        self.path(dir)
    }

    /// The audit log's records.
    fn audit(&self) -> Vec<Value> {
        let log = std::fs::read_to_string(self.path("audit.jsonl")).unwrap_or_default();
        log.lines().map(|line| serde_json::from_str(line).expect("an audit line is JSON")).collect()
    }
}

/// The gate served in-process on 127.0.0.1:0; stopped when dropped.
struct InProcessGate {
    /// `http://127.0.0.1:PORT`.
    url: String,
    _runtime: tokio::runtime::Runtime,
}

impl InProcessGate {
    fn start(config: GitGateConfig) -> Self {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("binding the gate");
        let url = format!("http://{}", listener.local_addr().expect("the gate's address"));
        // The push hook is this crate's own `bottle-sidecar` (`bottle sidecar` in a bottle).
        let relaunch = bottle_sidecar::Relaunch { program: env!("CARGO_BIN_EXE_bottle-sidecar").into(), args: vec![] };
        runtime.spawn(async move {
            if let Err(err) = bottle_sidecar::gitgate::serve(config, listener.into(), &relaunch).await {
                eprintln!("the gate failed: {err}");
            }
        });
        Self { url, _runtime: runtime }
    }
}

#[test]
fn clones_through_the_gate_by_every_url_form() {
    let world = World::new();
    let repo = world.upstream("project");
    let gate = InProcessGate::start(world.config(vec![world.gate_upstream("project", &repo, agent_policy())]));
    let upstream_main = git_ok(&repo, &["rev-parse", "main"]);
    let ssh_form = world.sshd.ssh_url(&repo);
    // The scp-like form names port 22, where no sshd listens: only the rewrite makes it work.
    let scp_form = format!("{}@{}:{}", world.sshd.user(), world.sshd.host(), repo.display());
    for (form, dir) in [(ssh_form.as_str(), "by-ssh-url"), (scp_form.as_str(), "by-scp-form")] {
        let clone = world.clone(&gate.url, "project", form, dir);
        assert_eq!(std::fs::read_to_string(clone.join("README")).expect("README"), "project\n");
        assert_eq!(git_ok(&clone, &["rev-parse", "HEAD"]), upstream_main, "{form}");
        assert_eq!(git_ok(&clone, &["symbolic-ref", "--short", "HEAD"]), "main", "{form}");
        assert_eq!(git_ok(&clone, &["config", "remote.origin.url"]), form);
    }
}

#[test]
fn an_allowed_push_lands_upstream_and_is_audited() {
    let world = World::new();
    let repo = world.upstream("project");
    let gate = InProcessGate::start(world.config(vec![world.gate_upstream("project", &repo, agent_policy())]));
    let clone = world.clone(&gate.url, "project", &world.sshd.ssh_url(&repo), "agent");

    git_ok(&clone, &["checkout", "-q", "-b", "agent/x"]);
    std::fs::write(clone.join("work.txt"), "one\n").expect("a file");
    git_ok(&clone, &["add", "work.txt"]);
    git_ok(&clone, &["commit", "-q", "-m", "work"]);
    let first = git_ok(&clone, &["rev-parse", "HEAD"]);
    let out = git(&clone, &["push", "origin", "agent/x"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(gate_lines(&stderr), ["bot-bottle: pushed refs/heads/agent/x to upstream project"], "{stderr}");
    assert_eq!(git_ok(&repo, &["rev-parse", "refs/heads/agent/x"]), first);

    // A fast-forward on top.
    std::fs::write(clone.join("work.txt"), "two\n").expect("a file");
    git_ok(&clone, &["commit", "-q", "-am", "more work"]);
    let second = git_ok(&clone, &["rev-parse", "HEAD"]);
    git_ok(&clone, &["push", "-q", "origin", "agent/x"]);
    assert_eq!(git_ok(&repo, &["rev-parse", "refs/heads/agent/x"]), second);

    let audit = world.audit();
    assert_eq!(audit.len(), 2, "{audit:?}");
    let record = &audit[1];
    assert_eq!(record["bottle"], BOTTLE);
    assert_eq!(record["upstream"], "project");
    assert_eq!(record["verdict"], "allow");
    assert_eq!(record["upstream_result"], "ok");
    assert_eq!(record["refs"][0]["ref"], "refs/heads/agent/x");
    assert_eq!(record["refs"][0]["old"], first.as_str());
    assert_eq!(record["refs"][0]["new"], second.as_str());
    assert!(record["duration_ms"].is_u64() && record["time"].as_str().is_some_and(|t| t.ends_with('Z')));
}

#[test]
fn refused_pushes_say_why_in_one_line_and_leave_the_upstream_alone() {
    let world = World::new();
    let repo = world.upstream("project");
    let gate = InProcessGate::start(world.config(vec![world.gate_upstream("project", &repo, agent_policy())]));
    let clone = world.clone(&gate.url, "project", &world.sshd.ssh_url(&repo), "agent");
    git_ok(&clone, &["checkout", "-q", "-b", "agent/x"]);
    git_ok(&clone, &["commit", "-q", "--allow-empty", "-m", "allowed"]);
    git_ok(&clone, &["push", "-q", "origin", "agent/x"]);
    let upstream_refs = || git_ok(&repo, &["for-each-ref"]);
    let before = upstream_refs();

    // A branch outside push.branches.
    git_ok(&clone, &["commit", "-q", "--allow-empty", "-m", "on main"]);
    let stderr = git_err(&clone, &["push", "origin", "HEAD:main"]);
    assert_eq!(
        gate_lines(&stderr),
        ["bot-bottle: push to refs/heads/main refused: branch not in [agent/*]; ask the operator to add it to \
          push.branches"],
        "{stderr}"
    );
    assert!(stderr.contains("pre-receive hook declined"), "{stderr}");

    // A force-push (non-fast-forward) to an allowed branch.
    git_ok(&clone, &["reset", "-q", "--hard", "HEAD~2"]);
    git_ok(&clone, &["commit", "-q", "--allow-empty", "-m", "rewritten"]);
    let stderr = git_err(&clone, &["push", "--force", "origin", "HEAD:agent/x"]);
    let lines = gate_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("bot-bottle: push to refs/heads/agent/x refused: not a fast-forward"), "{stderr}");
    assert!(lines[0].contains("push.force"), "{stderr}");

    // A delete.
    let stderr = git_err(&clone, &["push", "origin", ":agent/x"]);
    let lines = gate_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("bot-bottle: delete of refs/heads/agent/x refused"), "{stderr}");

    // A tag, with tags: false.
    git_ok(&clone, &["tag", "v1"]);
    let stderr = git_err(&clone, &["push", "origin", "v1"]);
    let lines = gate_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("bot-bottle: push to refs/tags/v1 refused: tags are not allowed"), "{stderr}");

    // One refused ref refuses the whole push: the allowed one does not go either.
    let stderr = git_err(&clone, &["push", "origin", "HEAD:agent/y", "HEAD:main"]);
    assert_eq!(gate_lines(&stderr).len(), 1, "{stderr}");

    assert_eq!(upstream_refs(), before);
    let audit = world.audit();
    let verdicts: Vec<&str> = audit.iter().filter_map(|r| r["verdict"].as_str()).collect();
    assert_eq!(verdicts, ["allow", "deny", "deny", "deny", "deny", "deny"], "{audit:?}");
    assert!(audit[1..].iter().all(|r| r["upstream_result"].is_null()), "{audit:?}");
    assert!(audit[1]["reason"].as_str().is_some_and(|r| r.contains("branch not in [agent/*]")), "{audit:?}");
    assert_eq!(audit[5]["refs"].as_array().map(Vec::len), Some(2), "{audit:?}");
}

#[test]
fn a_permissive_policy_forwards_force_pushes_deletes_and_tags() {
    let world = World::new();
    let repo = world.upstream("project");
    let open = PushPolicy { branches: vec!["**".into()], force: true, delete: true, tags: true, ..agent_policy() };
    let gate = InProcessGate::start(world.config(vec![world.gate_upstream("project", &repo, open)]));
    let clone = world.clone(&gate.url, "project", &world.sshd.ssh_url(&repo), "agent");
    git_ok(&clone, &["commit", "-q", "--allow-empty", "-m", "second"]);
    git_ok(&clone, &["push", "-q", "origin", "main", "main:topic/a"]);
    git_ok(&clone, &["reset", "-q", "--hard", "HEAD~1"]);
    git_ok(&clone, &["commit", "-q", "--allow-empty", "-m", "rewritten"]);
    git_ok(&clone, &["tag", "v1"]);
    git_ok(&clone, &["push", "-q", "--force", "origin", "main", "v1", ":topic/a"]);
    let head = git_ok(&clone, &["rev-parse", "HEAD"]);
    assert_eq!(git_ok(&repo, &["rev-parse", "main"]), head);
    assert_eq!(git_ok(&repo, &["rev-parse", "v1"]), head);
    assert_eq!(git_ok(&repo, &["for-each-ref", "--format=%(refname)", "refs/heads/topic"]), "");
}

/// The one line refusing a push to `branch` that changes the CI definition `file`.
fn ci_refusal(branch: &str, file: &str) -> String {
    format!(
        "bot-bottle: push refused: {branch} changes {file}, a CI definition; the manifest's push: {{ ci: true }} allows it"
    )
}

#[test]
fn an_allowed_push_that_changes_a_ci_definition_is_refused_and_the_upstream_is_unchanged() {
    let world = World::new();
    let repo = world.upstream("project");
    let gate = InProcessGate::start(world.config(vec![world.gate_upstream("project", &repo, agent_policy())]));
    let clone = world.clone(&gate.url, "project", &world.sshd.ssh_url(&repo), "agent");
    git_ok(&clone, &["checkout", "-q", "-b", "agent/x"]);
    commit_file(&clone, "work.txt", "work\n");
    git_ok(&clone, &["push", "-q", "origin", "agent/x"]);
    let upstream_refs = || git_ok(&repo, &["for-each-ref"]);
    let before = upstream_refs();

    // An update of an allowed branch that adds a workflow (diffed against its old tip).
    commit_file(&clone, ".github/workflows/x.yml", "on: push\n");
    let stderr = git_err(&clone, &["push", "origin", "agent/x"]);
    assert_eq!(gate_lines(&stderr), [ci_refusal("agent/x", ".github/workflows/x.yml")], "{stderr}");
    assert!(stderr.contains("pre-receive hook declined"), "{stderr}");

    // A new branch whose only change from the default branch is a CI definition.
    git_ok(&clone, &["checkout", "-q", "-b", "agent/y", "origin/main"]);
    commit_file(&clone, ".gitlab-ci.yml", "job: { script: [env] }\n");
    let stderr = git_err(&clone, &["push", "origin", "agent/y"]);
    assert_eq!(gate_lines(&stderr), [ci_refusal("agent/y", ".gitlab-ci.yml")], "{stderr}");

    // Added and removed again within one push: its commits still carry it.
    git_ok(&clone, &["checkout", "-q", "-b", "agent/z", "origin/agent/x"]);
    commit_file(&clone, "Jenkinsfile", "pipeline {}\n");
    git_ok(&clone, &["rm", "-q", "Jenkinsfile"]);
    git_ok(&clone, &["commit", "-q", "-m", "never mind"]);
    let stderr = git_err(&clone, &["push", "origin", "agent/z"]);
    assert_eq!(gate_lines(&stderr), [ci_refusal("agent/z", "Jenkinsfile")], "{stderr}");
    assert_eq!(upstream_refs(), before);

    // The upstream's own CI change, merged in from its default branch, is no change of the agent's.
    world.commit_upstream(&repo, "main", ".github/workflows/ci.yml");
    git_ok(&clone, &["checkout", "-q", "-B", "agent/x", "origin/agent/x"]);
    git_ok(&clone, &["fetch", "-q", "origin"]);
    git_ok(&clone, &["merge", "-q", "--no-edit", "origin/main"]);
    git_ok(&clone, &["push", "-q", "origin", "agent/x"]);
    assert_eq!(git_ok(&repo, &["rev-parse", "agent/x"]), git_ok(&clone, &["rev-parse", "HEAD"]));

    let audit = world.audit();
    let verdicts: Vec<&str> = audit.iter().filter_map(|r| r["verdict"].as_str()).collect();
    assert_eq!(verdicts, ["allow", "deny", "deny", "deny", "allow"], "{audit:?}");
    assert!(audit[1]["reason"].as_str().is_some_and(|r| r.contains("a CI definition")), "{audit:?}");
}

#[test]
fn with_ci_allowed_a_workflow_lands_and_paths_deny_refuses_its_glob() {
    let world = World::new();
    let repo = world.upstream("project");
    let policy = PushPolicy { ci: true, paths_deny: vec!["secrets/**".into()], ..agent_policy() };
    let gate = InProcessGate::start(world.config(vec![world.gate_upstream("project", &repo, policy)]));
    let clone = world.clone(&gate.url, "project", &world.sshd.ssh_url(&repo), "agent");
    git_ok(&clone, &["checkout", "-q", "-b", "agent/x"]);
    commit_file(&clone, ".github/workflows/x.yml", "on: push\n");
    git_ok(&clone, &["push", "-q", "origin", "agent/x"]);
    let landed = git_ok(&clone, &["rev-parse", "HEAD"]);
    assert_eq!(git_ok(&repo, &["rev-parse", "agent/x"]), landed);

    commit_file(&clone, "secrets/prod.env", "TOKEN=x\n");
    let stderr = git_err(&clone, &["push", "origin", "agent/x"]);
    assert_eq!(
        gate_lines(&stderr),
        ["bot-bottle: push refused: agent/x changes secrets/prod.env, which the manifest's push.paths_deny forbids \
          (`secrets/**`)"],
        "{stderr}"
    );
    assert_eq!(git_ok(&repo, &["rev-parse", "agent/x"]), landed);
}

#[test]
fn a_push_over_max_push_mb_is_refused() {
    let world = World::new();
    let repo = world.upstream("project");
    let policy = PushPolicy { max_push_mb: 1, ..agent_policy() };
    let gate = InProcessGate::start(world.config(vec![world.gate_upstream("project", &repo, policy)]));
    let clone = world.clone(&gate.url, "project", &world.sshd.ssh_url(&repo), "agent");
    git_ok(&clone, &["checkout", "-q", "-b", "agent/big"]);
    random_file(&clone.join("big.bin"), 2 << 20);
    git_ok(&clone, &["add", "big.bin"]);
    git_ok(&clone, &["commit", "-q", "-m", "2 MB"]);
    let stderr = git_err(&clone, &["push", "origin", "agent/big"]);
    assert!(stderr.contains("pack exceeds maximum allowed size"), "{stderr}");
    assert!(!git_ok(&repo, &["for-each-ref"]).contains("agent/big"));

    // A push within the limit goes through.
    git_ok(&clone, &["checkout", "-q", "-b", "agent/small", "origin/main"]);
    commit_file(&clone, "small.txt", "small\n");
    git_ok(&clone, &["push", "-q", "origin", "agent/small"]);
    assert_eq!(git_ok(&repo, &["rev-parse", "agent/small"]), git_ok(&clone, &["rev-parse", "HEAD"]));
}

#[test]
fn a_push_stalled_mid_pack_is_cut_off_and_holds_nothing() {
    let world = World::new();
    let repo = world.upstream("project");
    let mut config = world.config(vec![world.gate_upstream("project", &repo, agent_policy())]);
    config.policy.idle_timeout_secs = 2;
    let gate = InProcessGate::start(config);
    let clone = world.clone(&gate.url, "project", &world.sshd.ssh_url(&repo), "agent");

    // The request head, the ref update and the start of a pack; then nothing more.
    let zero = "0".repeat(40);
    let command = format!("{zero} {} refs/heads/agent/stalled\0report-status side-band-64k\n", "1".repeat(40));
    let mut body = format!("{:04x}{command}0000", command.len() + 4).into_bytes();
    body.extend_from_slice(b"PACK\0\0\0\x02\0\0\0\x01\x95");
    let mut request = format!(
        "POST /project.git/git-receive-pack HTTP/1.1\r\nHost: gate\r\nAuthorization: {}\r\n\
         Content-Type: application/x-git-receive-pack-request\r\nContent-Length: 1000000\r\n\r\n",
        gate_auth()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let stalled = send(&gate.url, &request);

    // Meanwhile the mirror is free: fetches and pushes go on.
    git_ok(&clone, &["checkout", "-q", "-b", "agent/x"]);
    commit_file(&clone, "one.txt", "one\n");
    git_ok(&clone, &["push", "-q", "origin", "agent/x"]);

    // The gate stops waiting for the rest (`answer` would report our own
    // read timeout), and git's answer is that the push failed.
    let response = answer(stalled);
    assert!(response.contains("ng refs/heads/agent/stalled"), "{response}");
    // Its quarantine goes with it.
    let objects = world.path("gate/repos/project.git/objects");
    let quarantines = || -> Vec<String> {
        std::fs::read_dir(&objects)
            .expect("the mirror's objects")
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with("incoming-"))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !quarantines().is_empty() {
        assert!(Instant::now() < deadline, "the stalled push's quarantine stays: {:?}", quarantines());
        std::thread::sleep(Duration::from_millis(50));
    }

    commit_file(&clone, "two.txt", "two\n");
    git_ok(&clone, &["push", "-q", "origin", "agent/x"]);
    assert_eq!(git_ok(&repo, &["rev-parse", "agent/x"]), git_ok(&clone, &["rev-parse", "HEAD"]));
    assert!(!git_ok(&repo, &["for-each-ref"]).contains("agent/stalled"));
}

#[test]
fn concurrent_ref_advertisements_share_one_upstream_fetch_and_a_17th_request_gets_503() {
    let world = World::new();
    let repo = world.upstream("project");
    let gate = InProcessGate::start(world.config(vec![world.gate_upstream("project", &repo, agent_policy())]));
    // Once this answers, the gate has prepared its mirror.
    git_ok(world.scratch.path(), &["ls-remote", &format!("{}/project.git", gate.url)]);
    // A request's permit goes when the gate has sent the last of its body,
    // which may be just after git has read it: on a loaded machine the
    // ls-remote's permit was still held as the burst below came in (and a
    // 16th request was refused). Let it go first; nothing is timed here.
    std::thread::sleep(Duration::from_secs(1));
    let sessions = world.sshd.sessions();

    // Upstream sessions wait until the hold is off: the fetch for the first
    // advertisement stays in flight while the others arrive, so none of them
    // is answered before the hold goes, and all hold a permit but the one
    // past the cap, which is answered `503` at once.
    let hold = world.sshd.hold();
    let (answers, answered) = std::sync::mpsc::channel();
    for _ in 0..17 {
        let stream = send(&gate.url, get("/project.git/info/refs?service=git-upload-pack").as_bytes());
        let answers = answers.clone();
        std::thread::spawn(move || {
            let _ = answers.send(answer(stream));
        });
    }
    let first = answered.recv().expect("an answer");
    assert!(first.starts_with("HTTP/1.1 503"), "the request past the cap is refused at once: {first}");
    assert!(
        first.contains("\r\ngit-gate: busy: 16 requests are being served already; try again in a moment\n"),
        "{first}"
    );
    drop(hold);
    for _ in 0..16 {
        let response = answered.recv().expect("an answer");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("refs/heads/main"), "{response}");
    }
    assert_eq!(world.sshd.sessions(), sessions + 1, "one fetch for 16 advertisements");
}

#[test]
fn a_hashed_known_hosts_line_pins_the_upstream() {
    let world = World::new();
    let repo = world.upstream("project");
    let file = world.path("known_hosts");
    std::fs::write(&file, world.sshd.known_hosts_line()).expect("known_hosts");
    let hashed = Command::new("ssh-keygen").arg("-H").arg("-f").arg(&file).output().expect("ssh-keygen -H");
    assert!(hashed.status.success(), "{}", String::from_utf8_lossy(&hashed.stderr));
    let mut upstream = world.gate_upstream("project", &repo, agent_policy());
    upstream.known_hosts = Some(std::fs::read_to_string(&file).expect("the hashed known_hosts"));
    assert!(upstream.known_hosts.as_deref().is_some_and(|line| line.starts_with("|1|")), "{upstream:?}");
    let gate = InProcessGate::start(world.config(vec![upstream]));
    let clone = world.clone(&gate.url, "project", &world.sshd.ssh_url(&repo), "agent");
    git_ok(&clone, &["checkout", "-q", "-b", "agent/x"]);
    commit_file(&clone, "work.txt", "work\n");
    git_ok(&clone, &["push", "-q", "origin", "agent/x"]);
    assert_eq!(git_ok(&repo, &["rev-parse", "agent/x"]), git_ok(&clone, &["rev-parse", "HEAD"]));
}

#[test]
fn a_push_the_upstream_refuses_fails_for_the_agent_with_the_upstream_message() {
    let world = World::new();
    let repo = world.upstream("guarded");
    let hook = repo.join("hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\necho 'upstream says no' >&2\nexit 1\n").expect("the upstream's hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let gate = InProcessGate::start(world.config(vec![world.gate_upstream("guarded", &repo, agent_policy())]));
    let clone = world.clone(&gate.url, "guarded", &world.sshd.ssh_url(&repo), "agent");
    git_ok(&clone, &["commit", "-q", "--allow-empty", "-m", "work"]);

    let stderr = git_err(&clone, &["push", "origin", "HEAD:agent/x"]);
    assert!(stderr.contains("bot-bottle: upstream guarded refused the push"), "{stderr}");
    assert!(stderr.contains("upstream says no"), "{stderr}");
    assert!(git(&repo, &["rev-parse", "--verify", "-q", "refs/heads/agent/x"]).stdout.is_empty());
    // The mirror did not take it either.
    assert!(!git_ok(&clone, &["ls-remote", "origin"]).contains("agent/x"));
    let audit = world.audit();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["verdict"], "allow");
    let result = audit[0]["upstream_result"].as_str().unwrap_or_default();
    assert!(result.starts_with("error:") && result.contains("upstream says no"), "{result}");
}

#[test]
fn fetch_sees_what_happened_upstream_after_the_clone() {
    let world = World::new();
    let repo = world.upstream("project");
    world.commit_upstream(&repo, "feature", "feature.txt");
    let gate = InProcessGate::start(world.config(vec![world.gate_upstream("project", &repo, agent_policy())]));
    let clone = world.clone(&gate.url, "project", &world.sshd.ssh_url(&repo), "agent");
    assert!(git_ok(&clone, &["ls-remote", "origin"]).contains("refs/heads/feature"));

    let fresh = world.commit_upstream(&repo, "main", "fresh.txt");
    git_ok(&repo, &["branch", "-D", "feature"]);
    git_ok(&clone, &["fetch", "-q", "--prune", "origin"]);
    assert_eq!(git_ok(&clone, &["rev-parse", "origin/main"]), fresh);
    assert!(!git_ok(&clone, &["ls-remote", "origin"]).contains("refs/heads/feature"));
    git_ok(&clone, &["pull", "-q", "--ff-only"]);
    assert!(clone.join("fresh.txt").is_file());
}

#[test]
fn a_pinned_host_key_that_does_not_match_stops_the_push() {
    let world = World::new();
    let repo = world.upstream("project");
    let before = git_ok(&repo, &["for-each-ref"]);
    let mut upstream = world.gate_upstream("project", &repo, agent_policy());
    // The client's own public key stands in for a host key that is not sshd's.
    let impostor = std::fs::read_to_string(world.sshd.dir().join("client_ed25519.pub")).expect("a public key");
    let impostor: Vec<&str> = impostor.split_whitespace().take(2).collect();
    upstream.known_hosts = Some(format!("[{}]:{} {}\n", world.sshd.host(), world.sshd.port(), impostor.join(" ")));
    let gate = InProcessGate::start(world.config(vec![upstream]));

    let local = world.path("local");
    git_ok(world.scratch.path(), &["init", "-q", "-b", "agent/x", &local.to_string_lossy()]);
    git_ok(&local, &["commit", "-q", "--allow-empty", "-m", "work"]);
    let stderr = git_err(&local, &["push", &format!("{}/project.git", gate.url), "agent/x"]);
    assert!(stderr.contains("Host key verification failed"), "{stderr}");
    assert_eq!(git_ok(&repo, &["for-each-ref"]), before);
}

#[test]
fn an_unknown_repository_is_a_404_naming_the_served_ones() {
    let world = World::new();
    let repo = world.upstream("project");
    let gate = InProcessGate::start(world.config(vec![world.gate_upstream("project", &repo, agent_policy())]));
    let addr = gate.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connecting to the gate");
    write!(
        stream,
        "GET /nope.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: gate\r\nAuthorization: {}\r\n\
         Connection: close\r\n\r\n",
        gate_auth()
    )
    .expect("a request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response");
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert!(response.contains("no repository `nope.git` here; this gate serves: project.git"), "{response}");
}

#[test]
fn a_client_without_the_bottles_token_gets_401_and_nothing_else() {
    let world = World::new();
    let repo = world.upstream("project");
    let gate = InProcessGate::start(world.config(vec![world.gate_upstream("project", &repo, agent_policy())]));
    let addr = gate.url.trim_start_matches("http://");
    use base64::Engine as _;
    let wrong = base64::engine::general_purpose::STANDARD.encode("bb:not-the-token");
    for auth in [String::new(), format!("Authorization: Basic {wrong}\r\n")] {
        let mut stream = std::net::TcpStream::connect(addr).expect("connecting to the gate");
        write!(
            stream,
            "GET /project.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: gate\r\n{auth}Connection: close\r\n\r\n"
        )
        .expect("a request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("a response");
        assert!(response.starts_with("HTTP/1.1 401"), "{auth:?}: {response}");
        assert!(response.to_ascii_lowercase().contains("www-authenticate: basic"), "{response}");
        assert!(!response.contains("project.git"), "nothing of the gate's repositories is said: {response}");
    }
    // A git client without the header is refused too.
    let out = Command::new("git")
        .args(["ls-remote", &format!("{}/project.git", gate.url)])
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .stdin(Stdio::null())
        .output()
        .expect("git");
    assert!(!out.status.success(), "ls-remote without the token must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not read Username"), "git was asked for credentials: {stderr}");
}

#[test]
fn a_50_mb_push_goes_through() {
    let world = World::new();
    let repo = world.upstream("project");
    let gate = InProcessGate::start(world.config(vec![world.gate_upstream("project", &repo, agent_policy())]));
    let clone = world.clone(&gate.url, "project", &world.sshd.ssh_url(&repo), "agent");
    git_ok(&clone, &["checkout", "-q", "-b", "agent/big"]);
    for i in 0..5 {
        random_file(&clone.join(format!("blob-{i}.bin")), 10 << 20);
    }
    git_ok(&clone, &["add", "."]);
    git_ok(&clone, &["commit", "-q", "-m", "50 MB"]);
    let timer = Instant::now();
    git_ok(&clone, &["push", "-q", "origin", "agent/big"]);
    let through_gate = timer.elapsed();
    assert_eq!(git_ok(&repo, &["rev-parse", "agent/big"]), git_ok(&clone, &["rev-parse", "HEAD"]));

    // The same push straight to a twin upstream over ssh, for comparison.
    let twin = world.upstream("twin");
    let timer = Instant::now();
    let out =
        git_with(&clone, &["push", "-q", &world.sshd.ssh_url(&twin), "agent/big"], Some(&world.sshd.ssh_command()));
    let direct = timer.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    println!(
        "50 MB push: through the gate {:.2} s, straight over ssh {:.2} s",
        through_gate.as_secs_f64(),
        direct.as_secs_f64()
    );
}

/// The `bottle-sidecar git-gate` process, its stderr and stdout collected.
struct GateProcess {
    child: std::process::Child,
    url: String,
    stderr: mpsc::Receiver<String>,
    /// The stderr lines read so far.
    seen: Vec<String>,
    stdout: std::thread::JoinHandle<String>,
}

impl GateProcess {
    fn start(config_path: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bottle-sidecar"))
            .arg("git-gate")
            .arg("--config")
            .arg(config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting bottle-sidecar git-gate");
        let (lines, stderr) = mpsc::channel();
        let reader = BufReader::new(child.stderr.take().expect("stderr"));
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let mut out = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        });
        let mut gate = Self { child, url: String::new(), stderr, seen: Vec::new(), stdout };
        let line = gate.wait_for("git-gate: listening on ");
        gate.url = format!("http://{}", line.trim_start_matches("git-gate: listening on "));
        gate
    }

    /// The next stderr line containing `needle` (every line read is kept in `seen`); panics after 30 s.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.stderr.recv_timeout(left) else { break };
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
        panic!("the gate never printed `{needle}`");
    }

    /// SIGTERM; returns the exit status, stdout and the rest of stderr.
    fn terminate(mut self) -> (std::process::ExitStatus, String, String) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
        let status = self.child.wait().expect("the gate exits");
        // The reader thread ends with the gate's stderr; take what it has.
        let mut stderr = self.seen;
        stderr.extend(self.stderr.iter());
        (status, self.stdout.join().expect("stdout"), stderr.join("\n"))
    }
}

#[test]
fn the_gate_process_keeps_the_key_to_itself_and_serves_its_mirror_when_the_upstream_is_gone() {
    let mut world = World::new();
    let repo = world.upstream("project");
    let mut upstream = world.gate_upstream("project", &repo, agent_policy());
    upstream.known_hosts = None; // trust on first use
    let mut config = world.config(vec![upstream]);
    config.audit_log = "-".into();
    let config_path = world.path("gate.json");
    std::fs::write(&config_path, serde_json::to_vec(&config).expect("config JSON")).expect("writing the config");

    let mut gate = GateProcess::start(&config_path);
    assert!(!gate.url.ends_with(":0"), "{}", gate.url);
    let work = world.path("gate");
    let key_mode = std::fs::metadata(work.join("ssh/project.key")).expect("the key file").permissions().mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let recorded = std::fs::read_to_string(work.join("ssh/project.known_hosts")).expect("known_hosts");
    let host_key = world.sshd.known_hosts_line();
    let host_key = host_key.split_whitespace().nth(2).expect("the key");
    assert!(recorded.contains(host_key), "the host key was not recorded on first use: {recorded}");

    let clone = world.clone(&gate.url, "project", &world.sshd.ssh_url(&repo), "agent");
    git_ok(&clone, &["checkout", "-q", "-b", "agent/x"]);
    git_ok(&clone, &["commit", "-q", "--allow-empty", "-m", "work"]);
    git_ok(&clone, &["push", "-q", "origin", "agent/x"]);
    git_err(&clone, &["push", "-q", "origin", "HEAD:main"]);

    // With the upstream gone, fetches serve the mirror as it is, with a warning.
    world.sshd.stop();
    let again = world.clone(&gate.url, "project", &world.sshd.ssh_url(&repo), "after");
    assert_eq!(git_ok(&again, &["rev-parse", "origin/agent/x"]), git_ok(&clone, &["rev-parse", "HEAD"]));
    gate.wait_for("git-gate: warning: could not fetch project from its upstream");

    let (status, stdout, stderr) = gate.terminate();
    assert!(status.success(), "SIGTERM should end the gate with 0: {status}\n{stderr}");
    let audit: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("an audit line")).collect();
    let verdicts: Vec<&str> = audit.iter().filter_map(|r| r["verdict"].as_str()).collect();
    assert_eq!(verdicts, ["allow", "deny"], "{stdout}");

    let key = world.sshd.client_key();
    let secret_lines: Vec<&str> = key.lines().filter(|line| !line.starts_with("-----")).collect();
    assert!(!secret_lines.is_empty());
    for output in [&stdout, &stderr] {
        for line in &secret_lines {
            assert!(!output.contains(line), "the key leaked into the gate's output:\n{output}");
        }
    }
}

#[test]
fn a_branch_granted_live_through_supervise_is_pushed_without_restarting_the_gate() {
    use bottle_core::supervise::{Ask, GrantScope, Queue, Request, Verdict};
    let world = World::new();
    let repo = world.upstream("project");
    let queue = Queue::at(world.path("supervise"));
    queue.open_for_launch().expect("the queue");
    let mut config = world.config(vec![world.gate_upstream("project", &repo, agent_policy())]);
    config.grants = Some(queue.grants_path().display().to_string());
    let gate = InProcessGate::start(config);
    let clone = world.clone(&gate.url, "project", &world.sshd.ssh_url(&repo), "agent");
    git_ok(&clone, &["checkout", "-q", "-b", "fix/typo"]);
    git_ok(&clone, &["commit", "-q", "--allow-empty", "-m", "a fix"]);

    // Refused, and the refusal says which tool to call with which arguments.
    let stderr = git_err(&clone, &["push", "origin", "fix/typo"]);
    assert_eq!(
        gate_lines(&stderr),
        ["bot-bottle: push to refs/heads/fix/typo refused: branch not in [agent/*]; ask the operator to add it to \
          push.branches; or call the MCP tool request_push (server bot-bottle-supervise) with {\"branches\": \
          [\"fix/typo\"], \"reason\": \"why the task needs it\"} and push again once it returns approved"],
        "{stderr}"
    );

    // The operator approves `fix/*`: the next push passes, the gate untouched.
    let ask = Ask::RequestPush { branches: vec!["fix/*".into()], reason: "a typo".into() };
    let request = Request::new(BOTTLE, ask, std::time::Duration::from_secs(60)).expect("request");
    queue.push(&request).expect("queued");
    let grant = queue.decide(&request.id, Verdict::Approved, None, GrantScope::Session).expect("decided");
    assert!(grant.is_some_and(|g| g.is_push() && g.host.is_empty()), "a push grant, no route");
    let out = git(&clone, &["push", "origin", "fix/typo"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(git_ok(&repo, &["rev-parse", "refs/heads/fix/typo"]), git_ok(&clone, &["rev-parse", "HEAD"]));
    let stderr = git_err(&clone, &["push", "origin", "HEAD:main"]);
    assert!(stderr.contains("push to refs/heads/main refused: branch not in [agent/*, fix/*]"), "{stderr}");
}
