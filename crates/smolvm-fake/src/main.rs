//! `smolvm`, the fake: a test double of the real smolvm CLI for bot-bottle's
//! tests, following the contract in `shared/smolvm-cli.md` — the same
//! `machine` commands, named flags and exit codes (usage errors exit 2,
//! failures such as an unknown machine exit 1, `exec` exits with the
//! command's code), `machine ls --json` in the documented shape. It keeps its
//! state under `$SMOLVM_FAKE_STATE` (required), records every invocation's
//! arguments in `$SMOLVM_FAKE_STATE/calls.jsonl`, and runs each machine as a
//! Docker container with its network policy enforced by the host's firewall
//! (see the `engine` module). A machine made in a named network namespace
//! (`ip netns exec NAME smolvm machine create …`) has its guest's network
//! there, as smolvm's socket impersonation gives the guest the network of the
//! VM process: every `exec` enters that namespace (and the container's
//! cgroups and other namespaces) with `nsenter`; such a machine starts only
//! from that namespace. It must run as root, like the tests that use it.
//!
//! Where it stops short of smolvm: `-p` (port forwarding) is refused;
//! `--allow-host` allows the host's addresses but does not filter DNS
//! answers; `delete` without `-f` refuses instead of prompting; `exec
//! --timeout` stops waiting and exits 124 but the command may go on running
//! in the machine; `cp` copies a file (or a folder, through `tar`) and needs
//! the machine running.

mod args;
mod engine;
mod store;

use std::io::IsTerminal;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use args::{Flag, Parsed, parse, switch, value};
use store::{Network, Record, Store};

/// A failure: the message for stderr and the exit code.
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) code: i32,
    pub(crate) message: String,
}

impl Fail {
    /// A failed operation (exit 1).
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Fail { code: 1, message: message.into() }
    }

    /// A usage error (exit 2, as clap's).
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Fail { code: 2, message: message.into() }
    }
}

const USAGE: &str = "usage: smolvm machine <create|start|stop|delete|exec|cp|ls|status> [OPTIONS]\n\
(a fake for tests: machines are Docker containers; state in $SMOLVM_FAKE_STATE)";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match run(&args) {
        Ok(code) => code,
        Err(fail) => {
            eprintln!("error: {}", fail.message);
            fail.code
        }
    };
    std::process::exit(code);
}

fn run(args: &[String]) -> Result<i32, Fail> {
    let store = Store::from_env()?;
    store.record_call(args)?;
    let (command, rest) = match args {
        [machine, command, rest @ ..] if machine == "machine" => (command.as_str(), rest),
        [flag] if flag == "--version" || flag == "-V" => {
            println!("smolvm {} (fake)", env!("CARGO_PKG_VERSION"));
            return Ok(0);
        }
        [flag] if flag == "--help" || flag == "-h" => {
            println!("{USAGE}");
            return Ok(0);
        }
        _ => return Err(Fail::usage(format!("unrecognized command line {args:?}\n{USAGE}"))),
    };
    match command {
        "create" => create(&store, rest),
        "start" => start(&store, rest),
        "stop" => stop(&store, rest),
        "delete" | "rm" => delete(&store, rest),
        "exec" => exec(&store, rest),
        "cp" => cp(&store, rest),
        "ls" | "list" => ls(&store, rest),
        "status" => status(&store, rest),
        other => Err(Fail::usage(format!("unrecognized subcommand '{other}'\n{USAGE}"))),
    }
}

const NAME: Flag = value("name", Some('n'));

fn only_flags(rest: &[String], flags: &[Flag]) -> Result<Parsed, Fail> {
    let parsed = parse(rest, flags, false)?;
    match parsed.positionals.first() {
        Some(extra) => Err(Fail::usage(format!("unexpected argument '{extra}' found"))),
        None => Ok(parsed),
    }
}

fn create(store: &Store, rest: &[String]) -> Result<i32, Fail> {
    let flags = [
        NAME,
        value("image", None),
        value("label", None),
        value("env", Some('e')),
        value("volume", Some('v')),
        value("port", Some('p')),
        value("cpus", None),
        value("mem", None),
        switch("net", None),
        value("allow-host", None),
        value("allow-cidr", None),
        switch("outbound-localhost-only", None),
    ];
    let p = only_flags(rest, &flags)?;
    let name = p.required("name")?;
    if !store::valid_name(&name) {
        return Err(Fail::usage(format!("invalid machine name '{name}'")));
    }
    let image = p.required("image")?;
    let mut labels = std::collections::BTreeMap::new();
    for label in p.all("label") {
        let (k, v) =
            label.split_once('=').ok_or_else(|| Fail::usage(format!("invalid label '{label}': expected K=V")))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let env = p.all("env");
    if let Some(bad) = env.iter().find(|e| !e.contains('=')) {
        return Err(Fail::usage(format!("invalid environment variable '{bad}': expected K=V")));
    }
    if !p.all("port").is_empty() {
        return Err(Fail::new("the fake smolvm does not emulate port forwarding (-p)"));
    }
    let (hosts, cidrs) = (p.all("allow-host"), p.all("allow-cidr"));
    let chosen = [p.has("net"), !hosts.is_empty() || !cidrs.is_empty(), p.has("outbound-localhost-only")];
    if chosen.iter().filter(|c| **c).count() > 1 {
        return Err(Fail::usage(
            "--net, --allow-host/--allow-cidr and --outbound-localhost-only cannot be used together",
        ));
    }
    let network = match chosen {
        [true, _, _] => Network::Net,
        [_, true, _] => Network::Allow { hosts, cidrs },
        [_, _, true] => Network::OutboundLocalhostOnly,
        _ => Network::None,
    };
    let memory_mib = match p.one("mem")? {
        Some(m) => Some(m.parse().map_err(|_| Fail::usage(format!("invalid value '{m}' for '--mem'")))?),
        None => None,
    };
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut record = Record {
        container: engine::container_name(&name),
        name: name.clone(),
        image: image.clone(),
        docker_image: String::new(),
        labels,
        env,
        volumes: p.all("volume"),
        cpus: p.one("cpus")?,
        memory_mib,
        network,
        created_at: store::rfc3339(secs),
        rules: Vec::new(),
        netns: engine::current_netns()?,
    };
    store.create(&record)?;
    let made = engine::image_for(&image, &name).and_then(|docker_image| {
        record.docker_image = docker_image;
        engine::create(&record, store.dir())?;
        store.save(&record)
    });
    if let Err(e) = made {
        let _ = engine::delete(&record);
        let _ = store.remove(&name);
        return Err(e);
    }
    eprintln!("created machine '{name}'");
    Ok(0)
}

fn start(store: &Store, rest: &[String]) -> Result<i32, Fail> {
    let p = only_flags(rest, &[NAME])?;
    let mut record = store.get(&p.required("name")?)?;
    if engine::state(&record).0 {
        return Err(Fail::new(format!("machine '{}' is already running", record.name)));
    }
    let here = engine::current_netns()?;
    if here != record.netns {
        let name = |ns: &Option<String>| ns.clone().unwrap_or_else(|| "the host's".into());
        return Err(Fail::new(format!(
            "machine '{}' was created in network namespace {} and cannot start in {} (a limit of the fake)",
            record.name,
            name(&record.netns),
            name(&here)
        )));
    }
    engine::remove_rules(&record.rules);
    let started = engine::start(&mut record);
    store.save(&record)?;
    started?;
    eprintln!("started machine '{}'", record.name);
    Ok(0)
}

fn stop(store: &Store, rest: &[String]) -> Result<i32, Fail> {
    let p = only_flags(rest, &[NAME])?;
    let mut record = store.get(&p.required("name")?)?;
    if !engine::state(&record).0 {
        return Err(Fail::new(format!("machine '{}' is not running", record.name)));
    }
    let stopped = engine::stop(&mut record);
    store.save(&record)?;
    stopped?;
    eprintln!("stopped machine '{}'", record.name);
    Ok(0)
}

fn delete(store: &Store, rest: &[String]) -> Result<i32, Fail> {
    let p = only_flags(rest, &[NAME, switch("force", Some('f'))])?;
    let record = store.get(&p.required("name")?)?;
    if !p.has("force") {
        return Err(Fail::new(format!("refusing to delete machine '{}' without a prompt: pass -f", record.name)));
    }
    engine::delete(&record)?;
    store.remove(&record.name)?;
    eprintln!("deleted machine '{}'", record.name);
    Ok(0)
}

fn running(store: &Store, name: &str) -> Result<Record, Fail> {
    let record = store.get(name)?;
    if !engine::state(&record).0 {
        return Err(Fail::new(format!(
            "machine '{name}' is not running; start it with `smolvm machine start --name {name}`"
        )));
    }
    Ok(record)
}

/// `--timeout` values: `30s`, `5m`, `1h`, `250ms`, or plain seconds.
fn duration(text: &str) -> Result<Duration, Fail> {
    let bad = || Fail::usage(format!("invalid value '{text}' for '--timeout'"));
    let (number, unit) = text.find(|c: char| !c.is_ascii_digit()).map_or((text, ""), |i| text.split_at(i));
    let n: u64 = number.parse().map_err(|_| bad())?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(bad()),
    })
}

fn exec(store: &Store, rest: &[String]) -> Result<i32, Fail> {
    let flags = [
        NAME,
        value("env", Some('e')),
        value("workdir", Some('w')),
        switch("interactive", Some('i')),
        switch("tty", Some('t')),
        value("timeout", None),
    ];
    let p = parse(rest, &flags, true)?;
    if p.trailing.is_empty() {
        return Err(Fail::usage("a command to run is required (after --)"));
    }
    let timeout = p.one("timeout")?.map(|t| duration(&t)).transpose()?;
    let record = running(store, &p.required("name")?)?;
    if p.has("tty") && !std::io::stdin().is_terminal() {
        return Err(Fail::new("-t needs a terminal on stdin"));
    }
    let (env, workdir) = (p.all("env"), p.one("workdir")?);
    let mut cmd = match &record.netns {
        Some(netns) => engine::exec_in_netns(&record, netns, &env, workdir.as_deref(), &p.trailing)?,
        None => {
            let mut cmd = Command::new("docker");
            cmd.args(["exec", "--user", "0"]);
            if p.has("interactive") {
                cmd.arg("--interactive");
            }
            if p.has("tty") {
                cmd.arg("--tty");
            }
            for env in &env {
                cmd.args(["--env", env]);
            }
            if let Some(dir) = &workdir {
                cmd.args(["--workdir", dir]);
            }
            cmd.arg(&record.container).args(&p.trailing);
            cmd
        }
    };
    if !p.has("interactive") {
        cmd.stdin(Stdio::null());
    }
    let mut child = cmd.spawn().map_err(|e| Fail::new(format!("cannot run docker exec: {e}")))?;
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| Fail::new(format!("waiting for the command: {e}")))? {
            return Ok(status.code().unwrap_or(1));
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("error: the command timed out");
            return Ok(124);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `NAME:/path` when NAME is a machine, else `None` (a host path).
fn guest_side(store: &Store, arg: &str) -> Result<Option<(Record, String)>, Fail> {
    let Some((name, path)) = arg.split_once(':') else { return Ok(None) };
    if !path.starts_with('/') {
        return Ok(None);
    }
    Ok(store.find(name)?.map(|record| (record, path.to_string())))
}

fn exec_in(record: &Record, stdin: Stdio, argv: &[&str]) -> Command {
    let mut cmd = Command::new("docker");
    cmd.args(["exec", "--interactive", "--user", "0", &record.container]).args(argv).stdin(stdin);
    cmd
}

fn status_ok(cmd: &mut Command, what: &str) -> Result<(), Fail> {
    let out = cmd.stdout(Stdio::null()).output().map_err(|e| Fail::new(format!("{what}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Fail::new(format!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim())))
    }
}

fn cp(store: &Store, rest: &[String]) -> Result<i32, Fail> {
    let p = parse(rest, &[value("mode", None), value("uid", None), value("gid", None)], false)?;
    let [source, target] = p.positionals.as_slice() else {
        return Err(Fail::usage("cp takes a source and a destination (one of them NAME:/path)"));
    };
    let mode = p.one("mode")?;
    if let Some(m) = &mode
        && (m.is_empty() || m.len() > 4 || !m.chars().all(|c| c.is_digit(8)))
    {
        return Err(Fail::usage(format!("invalid value '{m}' for '--mode'")));
    }
    let (uid, gid) = (p.one("uid")?, p.one("gid")?);
    for id in uid.iter().chain(gid.iter()) {
        id.parse::<u32>().map_err(|_| Fail::usage(format!("invalid id '{id}'")))?;
    }
    match (guest_side(store, source)?, guest_side(store, target)?) {
        (None, Some((record, guest))) => {
            let record = running(store, &record.name)?;
            let host = std::path::Path::new(source);
            let meta = std::fs::metadata(host).map_err(|e| Fail::new(format!("cannot read {source}: {e}")))?;
            if meta.is_dir() {
                let packed = Command::new("tar")
                    .args(["-C", source, "-cf", "-", "."])
                    .stdout(Stdio::piped())
                    .spawn()
                    .map_err(|e| Fail::new(format!("cannot run tar: {e}")))?;
                let stdout = packed.stdout.ok_or_else(|| Fail::new("tar gave no output"))?;
                let script = "mkdir -p \"$1\" && tar -C \"$1\" -xf -";
                status_ok(
                    &mut exec_in(&record, stdout.into(), &["sh", "-c", script, "sh", &guest]),
                    "copying the folder in",
                )?;
            } else {
                let file = std::fs::File::open(host).map_err(|e| Fail::new(format!("cannot read {source}: {e}")))?;
                let script = "cat > \"$1\"";
                status_ok(
                    &mut exec_in(&record, file.into(), &["sh", "-c", script, "sh", &guest]),
                    "copying the file in",
                )?;
                let host_mode = format!("{:o}", std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777);
                let mode = mode.unwrap_or(host_mode);
                status_ok(&mut exec_in(&record, Stdio::null(), &["chmod", &mode, &guest]), "setting the mode")?;
            }
            if uid.is_some() || gid.is_some() {
                let owner = format!("{}:{}", uid.as_deref().unwrap_or("0"), gid.as_deref().unwrap_or("0"));
                status_ok(&mut exec_in(&record, Stdio::null(), &["chown", "-R", &owner, &guest]), "setting the owner")?;
            }
        }
        (Some((record, guest)), None) => {
            let record = running(store, &record.name)?;
            let kind = engine::run(
                "docker",
                &[
                    "exec",
                    "--user",
                    "0",
                    &record.container,
                    "sh",
                    "-c",
                    "if [ -d \"$1\" ]; then echo dir; elif [ -e \"$1\" ]; then echo file; fi",
                    "sh",
                    &guest,
                ]
                .map(String::from),
            )?;
            match String::from_utf8_lossy(&kind.stdout).trim() {
                "file" => {
                    let file =
                        std::fs::File::create(target).map_err(|e| Fail::new(format!("cannot write {target}: {e}")))?;
                    let out = exec_in(&record, Stdio::null(), &["cat", "--", &guest])
                        .stdout(file)
                        .output()
                        .map_err(|e| Fail::new(format!("cannot run docker exec: {e}")))?;
                    if !out.status.success() {
                        return Err(Fail::new(format!(
                            "copying {guest} out failed: {}",
                            String::from_utf8_lossy(&out.stderr).trim()
                        )));
                    }
                    if let Some(m) = &mode {
                        let bits = u32::from_str_radix(m, 8).map_err(|_| Fail::usage(format!("invalid mode '{m}'")))?;
                        std::fs::set_permissions(target, std::os::unix::fs::PermissionsExt::from_mode(bits))
                            .map_err(|e| Fail::new(format!("cannot set the mode of {target}: {e}")))?;
                    }
                }
                "dir" => {
                    std::fs::create_dir_all(target).map_err(|e| Fail::new(format!("cannot create {target}: {e}")))?;
                    let packed = exec_in(&record, Stdio::null(), &["tar", "-C", &guest, "-cf", "-", "."])
                        .stdout(Stdio::piped())
                        .spawn()
                        .map_err(|e| Fail::new(format!("cannot run docker exec: {e}")))?;
                    let stdout = packed.stdout.ok_or_else(|| Fail::new("docker exec gave no output"))?;
                    status_ok(
                        Command::new("tar").args(["-C", target, "-xf", "-"]).stdin(stdout),
                        "unpacking the folder",
                    )?;
                }
                _ => return Err(Fail::new(format!("{guest}: no such file or directory in machine '{}'", record.name))),
            }
        }
        (Some(_), Some(_)) => return Err(Fail::usage("copying between two machines is not supported")),
        (None, None) => return Err(Fail::usage("one side of cp must be NAME:/path, with NAME an existing machine")),
    }
    Ok(0)
}

/// A machine as `ls --json` and `status --json` show it.
fn describe(record: &Record) -> serde_json::Value {
    let (running, pid) = engine::state(record);
    serde_json::json!({
        "name": record.name,
        "state": if running { "running" } else { "stopped" },
        "pid": pid,
        "created_at": record.created_at,
        "image": record.image,
        "labels": record.labels,
        "network": record.network.label(),
        "cpus": record.cpus.as_deref().and_then(|c| c.parse::<f64>().ok()).unwrap_or(1.0),
        "memory_mib": record.memory_mib.unwrap_or(512),
        "mounts": record.volumes.len(),
        "ports": 0,
        "ephemeral": false,
    })
}

fn print_json(value: &serde_json::Value) -> Result<(), Fail> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Fail::new(format!("encoding JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

fn ls(store: &Store, rest: &[String]) -> Result<i32, Fail> {
    let p = only_flags(rest, &[switch("json", None)])?;
    let machines: Vec<serde_json::Value> = store.all()?.iter().map(describe).collect();
    if p.has("json") {
        print_json(&serde_json::Value::Array(machines))?;
    } else {
        println!("{:<32} {:<10} IMAGE", "NAME", "STATE");
        for m in &machines {
            println!(
                "{:<32} {:<10} {}",
                m["name"].as_str().unwrap_or_default(),
                m["state"].as_str().unwrap_or_default(),
                m["image"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(0)
}

fn status(store: &Store, rest: &[String]) -> Result<i32, Fail> {
    let p = only_flags(rest, &[NAME, switch("json", None)])?;
    let record = store.get(&p.required("name")?)?;
    let machine = describe(&record);
    if p.has("json") {
        print_json(&machine)?;
    } else {
        println!("{}: {}", record.name, machine["state"].as_str().unwrap_or_default());
    }
    Ok(0)
}
