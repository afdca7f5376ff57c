//! The fake `smolvm` against its contract (`shared/smolvm-cli.md`): usage
//! errors and unknown machines, the recorded calls, `machine ls --json`'s
//! shape, and — against the real Docker Engine — a machine's whole life,
//! with `--outbound-localhost-only` really enforced.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

fn fake() -> &'static str {
    env!("CARGO_BIN_EXE_smolvm")
}

fn smolvm(state: &Path, args: &[&str]) -> Output {
    Command::new(fake()).args(args).env("SMOLVM_FAKE_STATE", state).output().expect("run the fake")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Run and require success; returns stdout.
fn ok(state: &Path, args: &[&str]) -> String {
    let out = smolvm(state, args);
    assert!(out.status.success(), "smolvm {args:?}: {}\n{}", out.status, text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn usage_errors_unknown_machines_and_the_call_log() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path();
    let unset = Command::new(fake()).args(["machine", "ls"]).env_remove("SMOLVM_FAKE_STATE").output().expect("run");
    assert_eq!(unset.status.code(), Some(1));
    assert!(text(&unset.stderr).contains("SMOLVM_FAKE_STATE"), "{}", text(&unset.stderr));

    let check = |args: &[&str], code: i32, says: &str| {
        let out = smolvm(state, args);
        assert_eq!(out.status.code(), Some(code), "smolvm {args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(says), "smolvm {args:?} says {says:?}: {}", text(&out.stderr));
    };
    check(&["machine", "create", "--name", "m", "--image", "x.tar", "--frobnicate"], 2, "'--frobnicate'");
    check(&["machine", "create", "--image", "x.tar"], 2, "--name");
    check(&["machine", "create", "--name", "m", "--image", "x", "--net", "--outbound-localhost-only"], 2, "together");
    check(&["machine", "exec", "--name", "m"], 2, "command");
    check(&["machine", "teleport", "--name", "m"], 2, "teleport");
    check(&["machine", "start", "--name", "nope"], 1, "machine 'nope' not found");
    check(&["machine", "exec", "--name", "nope", "--", "true"], 1, "machine 'nope' not found");
    check(&["machine", "delete", "--name", "nope", "-f"], 1, "machine 'nope' not found");
    check(&["machine", "status", "--name", "nope", "--json"], 1, "machine 'nope' not found");
    check(&["machine", "cp", "/etc/hostname", "nope:/tmp/x"], 2, "NAME:/path");

    assert_eq!(ok(state, &["machine", "ls", "--json"]).trim(), "[]");
    let calls = std::fs::read_to_string(state.join("calls.jsonl")).expect("calls.jsonl");
    let calls: Vec<Vec<String>> = calls.lines().map(|l| serde_json::from_str(l).expect("a JSON array")).collect();
    assert_eq!(calls.len(), 11, "every call is recorded, refused ones too");
    assert_eq!(calls[0], ["machine", "create", "--name", "m", "--image", "x.tar", "--frobnicate"]);
    assert_eq!(calls[10], ["machine", "ls", "--json"]);
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("these tests need Docker (`cargo xtask setup` installs and starts it): {e}"));
    assert!(out.status.success(), "docker {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

fn firewall() -> String {
    let rules = |mut cmd: Command| text(&cmd.args(["-S", "OUTPUT"]).output().expect("iptables -S").stdout);
    rules(Command::new("iptables")) + &rules(Command::new("ip6tables"))
}

/// Removes the machine's container if the test fails half-way.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

#[test]
fn a_machine_lives_in_a_container_and_reaches_only_the_hosts_loopback() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path();
    let archive = state.join("image.tar");
    docker(&["save", "--output", archive.to_str().expect("utf8"), "debian:bookworm-slim"]);
    let name = format!("fake-it-{}", std::process::id());
    let _container = Container(format!("smolvm-fake-{name}"));
    ok(
        state,
        &[
            "machine",
            "create",
            "--name",
            &name,
            "--image",
            archive.to_str().expect("utf8"),
            "--label",
            "owner=it",
            "-e",
            "GREETING=hi there",
            "--outbound-localhost-only",
        ],
    );
    let again = smolvm(state, &["machine", "create", "--name", &name, "--image", archive.to_str().expect("utf8")]);
    assert_eq!(again.status.code(), Some(1), "a name is taken once");
    let listed: serde_json::Value = serde_json::from_str(&ok(state, &["machine", "ls", "--json"])).expect("JSON");
    let m = &listed[0];
    assert_eq!((m["name"].as_str(), m["state"].as_str()), (Some(name.as_str()), Some("stopped")));
    assert!(m["pid"].is_null());
    assert_eq!(m["labels"]["owner"], "it");
    for key in ["created_at", "image", "network", "cpus", "memory_mib", "mounts", "ports", "ephemeral"] {
        assert!(m.get(key).is_some(), "ls --json has `{key}`: {m}");
    }
    let stopped = smolvm(state, &["machine", "exec", "--name", &name, "--", "true"]);
    assert_eq!(stopped.status.code(), Some(1), "exec needs a running machine");

    ok(state, &["machine", "start", "--name", &name]);
    let status: serde_json::Value =
        serde_json::from_str(&ok(state, &["machine", "status", "--name", &name, "--json"])).expect("JSON");
    assert_eq!(status["state"], "running");
    assert!(status["pid"].as_u64().is_some());
    let id = docker(&["inspect", "--format", "{{.Id}}", &format!("smolvm-fake-{name}")]).trim().to_string();
    let rules = firewall().lines().filter(|l| l.contains(&id)).count();
    assert_eq!(rules, 2, "the policy is in force (IPv4 and IPv6): {}", firewall());

    // exec: root, the machine's env, -e and -w, and the command's own exit code.
    let out = ok(
        state,
        &[
            "machine",
            "exec",
            "--name",
            &name,
            "-e",
            "X=1",
            "-w",
            "/etc",
            "--",
            "sh",
            "-c",
            "id -u; echo \"$GREETING $X\"; pwd",
        ],
    );
    assert_eq!(out, "0\nhi there 1\n/etc\n");
    assert_eq!(smolvm(state, &["machine", "exec", "--name", &name, "--", "sh", "-c", "exit 7"]).status.code(), Some(7));
    let slow = smolvm(state, &["machine", "exec", "--name", &name, "--timeout", "1s", "--", "sleep", "20"]);
    assert_eq!(slow.status.code(), Some(124), "a command past --timeout is stopped");

    // cp both ways, into the tmpfs /tmp too, with mode and owner.
    let host_file = state.join("in.txt");
    std::fs::write(&host_file, "payload\n").expect("write");
    let guest = format!("{name}:/tmp/in.txt");
    ok(
        state,
        &[
            "machine",
            "cp",
            host_file.to_str().expect("utf8"),
            &guest,
            "--mode",
            "640",
            "--uid",
            "1000",
            "--gid",
            "1000",
        ],
    );
    let listed = ok(state, &["machine", "exec", "--name", &name, "--", "stat", "-c", "%a %u %g %s", "/tmp/in.txt"]);
    assert_eq!(listed.trim(), "640 1000 1000 8");
    let back = state.join("back.txt");
    ok(state, &["machine", "cp", &guest, back.to_str().expect("utf8")]);
    assert_eq!(std::fs::read_to_string(&back).expect("read"), "payload\n");
    let missing = smolvm(state, &["machine", "cp", &format!("{name}:/nonexistent"), back.to_str().expect("utf8")]);
    assert_eq!(missing.status.code(), Some(1));

    // The network: the host's loopback yes, any other address of the host no.
    let loopback = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let outside = TcpListener::bind("0.0.0.0:0").expect("bind all");
    let host = bottle_testkit::fixtures::bridge::host_address();
    let connect = |addr: String| {
        let script = format!(
            "timeout 5 bash -c 'exec 3<>/dev/tcp/{}/{}'",
            addr.split(':').next().unwrap_or_default(),
            addr.rsplit(':').next().unwrap_or_default()
        );
        smolvm(state, &["machine", "exec", "--name", &name, "--", "sh", "-c", &script]).status.code()
    };
    assert_eq!(connect(loopback.local_addr().expect("addr").to_string()), Some(0), "the host's 127.0.0.1 is reachable");
    let direct = format!("{host}:{}", outside.local_addr().expect("addr").port());
    std::net::TcpStream::connect(&direct).expect("the host itself reaches that address");
    assert_ne!(connect(direct), Some(0), "another address of the host is not reachable from the machine");

    // Files persist across stop/start; /tmp is a tmpfs; the policy is out of force while stopped.
    ok(state, &["machine", "exec", "--name", &name, "--", "sh", "-c", "echo kept > /root/kept"]);
    ok(state, &["machine", "stop", "--name", &name]);
    assert!(!firewall().contains(&id), "stopped: no rule left: {}", firewall());
    ok(state, &["machine", "start", "--name", &name]);
    let after = ok(state, &["machine", "exec", "--name", &name, "--", "sh", "-c", "cat /root/kept; ls /tmp | wc -l"]);
    assert_eq!(after, "kept\n0\n");

    let refused = smolvm(state, &["machine", "delete", "--name", &name]);
    assert_ne!(refused.status.code(), Some(0), "delete without -f does not prompt here: it refuses");
    ok(state, &["machine", "delete", "--name", &name, "-f"]);
    assert_eq!(ok(state, &["machine", "ls", "--json"]).trim(), "[]");
    assert!(!firewall().contains(&id), "deleted: no rule left");
    let containers = docker(&["ps", "-a", "--filter", &format!("name=smolvm-fake-{name}"), "--format", "{{.Names}}"]);
    assert!(containers.trim().is_empty(), "no container left: {containers}");
}

/// A named network namespace for a test; deleted when dropped.
struct Netns(String);

impl Netns {
    fn add(name: &str) -> Netns {
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(out.status.success(), "ip {args:?} (needs root): {}", text(&out.stderr));
        };
        ip(&["netns", "add", name]);
        let netns = Netns(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"]);
        netns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).output();
    }
}

#[test]
fn a_machine_made_in_a_named_namespace_sees_that_namespaces_loopback_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path();
    let archive = state.join("image.tar");
    docker(&["save", "--output", archive.to_str().expect("utf8"), "debian:bookworm-slim"]);
    let name = format!("fake-ns-{}", std::process::id());
    let _container = Container(format!("smolvm-fake-{name}"));
    let netns = Netns::add(&format!("fake-it-{}", std::process::id()));
    let inside = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", &netns.0, fake()])
            .args(args)
            .env("SMOLVM_FAKE_STATE", state)
            .output()
            .expect("ip netns exec smolvm")
    };
    let archive = archive.to_str().expect("utf8");
    for args in [
        &["machine", "create", "--name", &name, "--image", archive, "-e", "G=hi", "--outbound-localhost-only"][..],
        &["machine", "start", "--name", &name],
    ] {
        let out = inside(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }
    // Made in one namespace, it starts in no other (a limit of the fake, said in one line).
    ok(state, &["machine", "stop", "--name", &name]);
    let elsewhere = smolvm(state, &["machine", "start", "--name", &name]);
    assert_eq!(elsewhere.status.code(), Some(1));
    assert!(text(&elsewhere.stderr).contains("was created in network namespace"), "{}", text(&elsewhere.stderr));
    let out = inside(&["machine", "start", "--name", &name]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A server on the namespace's loopback and one on the host's.
    let listen = "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); \
                  print(s.getsockname()[1], flush=True); [s.accept()[0].close() for _ in iter(int, 1)]";
    let mut ns_server = Command::new("ip")
        .args(["netns", "exec", &netns.0, "python3", "-c", listen])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("a server in the namespace");
    let mut port = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(ns_server.stdout.take().expect("stdout")), &mut port)
        .expect("its port");
    let host = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let connect = |port: &str| {
        let script = format!("timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}'");
        smolvm(state, &["machine", "exec", "--name", &name, "--", "sh", "-c", &script]).status.code()
    };
    assert_eq!(connect(port.trim()), Some(0), "the namespace's loopback is the machine's");
    let host_port = host.local_addr().expect("addr").port().to_string();
    assert_ne!(connect(&host_port), Some(0), "the host's loopback is not");
    // The rest of exec as in the host's namespace: root, the machine's env, -w.
    let out = ok(state, &["machine", "exec", "--name", &name, "-w", "/etc", "--", "sh", "-c", "id -u; echo $G; pwd"]);
    assert_eq!(out, "0\nhi\n/etc\n");
    let _ = ns_server.kill();
    let _ = ns_server.wait();
    ok(state, &["machine", "delete", "--name", &name, "-f"]);
}
