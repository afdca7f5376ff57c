//! What a machine really is in the fake: a Docker container
//! (`smolvm-fake-NAME`, running `sleep infinity` as root under `--init`, with
//! `/tmp` and `/run` as tmpfs as in smolvm), and its network policy enforced
//! by the host's firewall.
//!
//! - `--outbound-localhost-only` and the allow-lists: the container shares the
//!   host's network namespace (so a service the host binds on 127.0.0.1:PORT
//!   is reachable at that address, as through smolvm's TSI), and `iptables` /
//!   `ip6tables` rules matching the container's cgroup (v2 path, `-m cgroup
//!   --path`) reject everything else it sends: for localhost-only, any
//!   destination outside 127.0.0.0/8 and ::1. The rules are inserted when the
//!   machine starts (the cgroup exists only then), before any command can run
//!   in it, and deleted when it stops. If they cannot be inserted the machine
//!   does not start: the fake never runs a machine without its policy.
//! - `--net`: the host's network, no rules. No flag: `--network none`.

use std::net::ToSocketAddrs;
use std::process::{Command, Output, Stdio};

use crate::Fail;
use crate::store::{Network, Record};

/// The container of machine `name`.
pub(crate) fn container_name(name: &str) -> String {
    format!("smolvm-fake-{name}")
}

/// Run `program args…`, capturing its output.
pub(crate) fn run(program: &str, args: &[String]) -> Result<Output, Fail> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Fail::new(format!("cannot run {program}: {e}")))
}

/// Run `program args…`; a non-zero exit is an error carrying its stderr.
pub(crate) fn checked(program: &str, args: &[String]) -> Result<String, Fail> {
    let out = run(program, args)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Fail::new(format!(
            "{program} {} failed: {}",
            args.first().map(String::as_str).unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn docker(args: &[&str]) -> Result<String, Fail> {
    checked("docker", &args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}

/// The Docker image for `--image`: a `docker save` archive is loaded; a
/// folder (an unpacked root filesystem) is imported; anything else is a
/// registry reference, which must be in Docker's cache (there is no registry
/// here to pull from).
pub(crate) fn image_for(image: &str, name: &str) -> Result<String, Fail> {
    let path = std::path::Path::new(image);
    if image == "-" || path.is_file() {
        let mut cmd = Command::new("docker");
        cmd.arg("load");
        if image != "-" {
            cmd.args(["--input", image]);
            cmd.stdin(Stdio::null());
        }
        let out = cmd.output().map_err(|e| Fail::new(format!("cannot run docker load: {e}")))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(Fail::new(format!(
                "cannot load image archive {image}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        return text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("Loaded image: ").or_else(|| l.strip_prefix("Loaded image ID: ")))
            .map(|s| s.trim().to_string())
            .ok_or_else(|| Fail::new(format!("docker load of {image} named no image: {}", text.trim())));
    }
    if path.is_dir() {
        let tag = format!("smolvm-fake/{name}:rootfs");
        let script = "tar -C \"$1\" -c . | docker import - \"$2\" >/dev/null";
        checked("sh", &["-c", script, "sh", image, &tag].map(String::from))?;
        return Ok(tag);
    }
    match run("docker", &["image".into(), "inspect".into(), image.into()])?.status.success() {
        true => Ok(image.to_string()),
        false => Err(Fail::new(format!(
            "cannot pull {image}: the fake smolvm has no registry access; load the image into Docker first"
        ))),
    }
}

/// Create the container of `record` (stopped).
pub(crate) fn create(record: &Record, state_dir: &std::path::Path) -> Result<(), Fail> {
    let mut args: Vec<String> = vec![
        "create".into(),
        "--name".into(),
        record.container.clone(),
        "--label".into(),
        format!("smolvm-fake.machine={}", record.name),
        "--label".into(),
        format!("smolvm-fake.state={}", state_dir.display()),
        "--init".into(),
        "--user".into(),
        "0".into(),
        "--entrypoint".into(),
        "sleep".into(),
        "--tmpfs".into(),
        "/tmp:rw,exec,nosuid,mode=1777".into(),
        "--tmpfs".into(),
        "/run:rw,exec,nosuid,mode=755".into(),
        "--network".into(),
        // In a named namespace the guest's network is that namespace's,
        // entered per command (`exec_in_netns`): the container has none.
        if record.network == Network::None || record.netns.is_some() { "none" } else { "host" }.into(),
    ];
    for env in &record.env {
        args.extend(["--env".into(), env.clone()]);
    }
    for volume in &record.volumes {
        args.extend(["--volume".into(), volume.clone()]);
    }
    if let Some(cpus) = &record.cpus {
        args.extend(["--cpus".into(), cpus.clone()]);
    }
    if let Some(mib) = record.memory_mib {
        args.extend(["--memory".into(), format!("{mib}m")]);
    }
    args.extend([record.docker_image.clone(), "infinity".into()]);
    checked("docker", &args).map(|_| ())
}

/// Whether the container runs, and its init process's pid.
pub(crate) fn state(record: &Record) -> (bool, Option<u32>) {
    match docker(&["inspect", "--format", "{{.State.Running}} {{.State.Pid}}", &record.container]) {
        Ok(out) => {
            let mut words = out.split_whitespace();
            let running = words.next() == Some("true");
            let pid = words.next().and_then(|p| p.parse().ok()).filter(|p| *p != 0);
            (running, if running { pid } else { None })
        }
        Err(_) => (false, None),
    }
}

/// The firewall rules (`iptables`/`ip6tables` argv that insert them) for `network`, in insertion order.
pub(crate) fn rules(network: &Network, cgroup: &str) -> Result<Vec<Vec<String>>, Fail> {
    let rule = |program: &str, dest: Option<(&str, bool)>, target: &str| {
        let mut argv: Vec<String> =
            [program, "-w", "-I", "OUTPUT", "-m", "cgroup", "--path", cgroup].map(String::from).to_vec();
        if let Some((dest, negate)) = dest {
            if negate {
                argv.push("!".into());
            }
            argv.extend(["-d".into(), dest.into()]);
        }
        argv.extend(["-j".into(), target.into()]);
        argv
    };
    Ok(match network {
        Network::None | Network::Net => Vec::new(),
        Network::OutboundLocalhostOnly => vec![
            rule("iptables", Some(("127.0.0.0/8", true)), "REJECT"),
            rule("ip6tables", Some(("::1/128", true)), "REJECT"),
        ],
        Network::Allow { hosts, cidrs } => {
            let mut allowed: Vec<String> = cidrs.clone();
            for host in hosts {
                let addrs = (host.as_str(), 0)
                    .to_socket_addrs()
                    .map_err(|e| Fail::new(format!("cannot resolve allowed host {host}: {e}")))?;
                allowed.extend(addrs.map(|a| a.ip().to_string()));
            }
            // Each insert goes first: reject everything, then put the accepts above it.
            let mut all = vec![rule("iptables", None, "REJECT"), rule("ip6tables", None, "REJECT")];
            for dest in &allowed {
                let program = if dest.contains(':') { "ip6tables" } else { "iptables" };
                all.push(rule(program, Some((dest, false)), "ACCEPT"));
            }
            all
        }
    })
}

/// The cgroup (v2 path) of process `pid`.
fn cgroup_of(pid: u32) -> Result<String, Fail> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| Fail::new(format!("cannot read the machine's cgroup: {e}")))?;
    text.lines().find_map(|l| l.strip_prefix("0::")).map(str::to_string).filter(|p| p != "/").ok_or_else(|| {
        Fail::new(
            "the machine's processes have no cgroup v2 path of their own, so its network policy cannot be enforced",
        )
    })
}

/// The named network namespace (`ip netns add`, under `/run/netns`) this
/// process runs in, or `None` in any other (the host's).
pub(crate) fn current_netns() -> Result<Option<String>, Fail> {
    use std::os::unix::fs::MetadataExt as _;
    let id = |path: &std::path::Path| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let own = id(std::path::Path::new("/proc/self/ns/net"))
        .ok_or_else(|| Fail::new("cannot read this process's network namespace"))?;
    let named = std::fs::read_dir("/run/netns").into_iter().flatten().flatten().map(|e| e.path());
    Ok(named.into_iter().find(|path| id(path) == Some(own)).map(|path| path.display().to_string()))
}

/// `CMD…` in a running machine made in the named namespace `netns`: the
/// container's cgroup (its limits, `docker top`), mount, pid, UTS and IPC
/// namespaces and root, the namespace's network, the image's environment
/// plus `env`, as root.
pub(crate) fn exec_in_netns(
    record: &Record,
    netns: &str,
    env: &[String],
    workdir: Option<&str>,
    argv: &[String],
) -> Result<Command, Fail> {
    let (_, pid) = state(record);
    let pid = pid.ok_or_else(|| Fail::new(format!("machine '{}' has no running process", record.name)))?;
    let inspect = ["inspect".into(), "--format".into(), "{{json .Config.Env}}".into(), record.container.clone()];
    let image_env: Vec<String> = serde_json::from_str(checked("docker", &inspect)?.trim())
        .map_err(|e| Fail::new(format!("docker inspect printed no environment: {e}")))?;
    let mut cmd = Command::new("sh");
    // Join the container's cgroups first, so that everything the command starts is in them.
    cmd.args(["-c", JOIN_AND_EXEC, "sh"])
        .args(cgroup_procs_files(pid)?)
        .args(["--", "nsenter"])
        .arg(format!("--target={pid}"))
        .args(["--mount", "--uts", "--ipc", "--pid", "--root", "--wd"])
        .arg(format!("--net={netns}"))
        .args(["--", "/usr/bin/env", "-i"])
        .args(image_env.iter().chain(env))
        .args(["sh", "-c", "cd \"$1\" && shift && exec \"$@\"", "sh", workdir.unwrap_or(".")])
        .args(argv);
    Ok(cmd)
}

/// `sh -c` script: write `$$` into each file before `--`, then run what follows.
const JOIN_AND_EXEC: &str = "while [ \"$1\" != -- ]; do echo $$ > \"$1\" || exit 125; shift; done; shift; exec \"$@\"";

/// The `cgroup.procs` file of every cgroup hierarchy process `pid` is in
/// (v2, and each v1 controller on a hybrid host), by the host's mounts.
fn cgroup_procs_files(pid: u32) -> Result<Vec<String>, Fail> {
    let read = |path: String| std::fs::read_to_string(&path).map_err(|e| Fail::new(format!("cannot read {path}: {e}")));
    let mounts = read("/proc/self/mounts".into())?;
    let mut files = Vec::new();
    for line in read(format!("/proc/{pid}/cgroup"))?.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let mount = mounts.lines().find_map(|m| {
            let fields: Vec<&str> = m.split_whitespace().collect();
            let (point, kind, options) = (*fields.get(1)?, *fields.get(2)?, *fields.get(3)?);
            let matches = match controllers {
                "" => kind == "cgroup2",
                wanted => kind == "cgroup" && wanted.split(',').all(|c| options.split(',').any(|o| o == c)),
            };
            matches.then(|| point.to_string())
        });
        if let Some(point) = mount {
            files.push(format!("{point}{path}/cgroup.procs"));
        }
    }
    if files.is_empty() {
        return Err(Fail::new(format!("no cgroup of process {pid} is mounted on this host")));
    }
    Ok(files)
}

/// Start the container and put its network policy in force; on any failure it is stopped again.
pub(crate) fn start(record: &mut Record) -> Result<(), Fail> {
    docker(&["start", &record.container])?;
    let enforced = (|| -> Result<Vec<Vec<String>>, Fail> {
        let wanted = match record.network {
            // A named namespace holds only its own loopback: nothing to add.
            _ if record.netns.is_some() => return Ok(Vec::new()),
            Network::None | Network::Net => return Ok(Vec::new()),
            _ => {
                let (_, pid) = state(record);
                let pid = pid.ok_or_else(|| Fail::new("the machine stopped right after starting"))?;
                rules(&record.network, &cgroup_of(pid)?)?
            }
        };
        let mut inserted = Vec::new();
        for rule in wanted {
            if let Err(e) = checked(&rule[0], &rule[1..]) {
                remove_rules(&inserted);
                return Err(Fail::new(format!("cannot enforce the machine's network policy: {}", e.message)));
            }
            inserted.push(rule);
        }
        Ok(inserted)
    })();
    match enforced {
        Ok(rules) => {
            record.rules = rules;
            Ok(())
        }
        Err(e) => {
            let _ = docker(&["stop", "--time", "1", &record.container]);
            Err(e)
        }
    }
}

/// Delete firewall rules given by their insert argv (a rule already gone is fine).
pub(crate) fn remove_rules(rules: &[Vec<String>]) {
    for rule in rules.iter().rev() {
        let argv: Vec<String> =
            rule[1..].iter().map(|a| if a == "-I" { "-D".to_string() } else { a.clone() }).collect();
        let _ = run(&rule[0], &argv);
    }
}

/// Take the policy out of force and stop the container.
pub(crate) fn stop(record: &mut Record) -> Result<(), Fail> {
    remove_rules(&record.rules);
    record.rules.clear();
    docker(&["stop", "--time", "2", &record.container]).map(|_| ())
}

/// Take the policy out of force and remove the container.
pub(crate) fn delete(record: &Record) -> Result<(), Fail> {
    remove_rules(&record.rules);
    let out = run("docker", &["rm".into(), "--force".into(), record.container.clone()])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || stderr.contains("No such container") {
        Ok(())
    } else {
        Err(Fail::new(format!("docker rm failed: {}", stderr.trim())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_only_rejects_all_but_loopback_for_the_machines_cgroup() {
        let rules = rules(&Network::OutboundLocalhostOnly, "/docker/abc").expect("rules");
        let joined: Vec<String> = rules.iter().map(|r| r.join(" ")).collect();
        assert_eq!(
            joined,
            [
                "iptables -w -I OUTPUT -m cgroup --path /docker/abc ! -d 127.0.0.0/8 -j REJECT",
                "ip6tables -w -I OUTPUT -m cgroup --path /docker/abc ! -d ::1/128 -j REJECT"
            ]
        );
        assert!(super::rules(&Network::Net, "/x").expect("none").is_empty());
        let allow = Network::Allow { hosts: vec![], cidrs: vec!["10.0.0.0/8".into(), "fd00::/8".into()] };
        let joined: Vec<String> = super::rules(&allow, "/x").expect("rules").iter().map(|r| r.join(" ")).collect();
        assert_eq!(joined[2], "iptables -w -I OUTPUT -m cgroup --path /x -d 10.0.0.0/8 -j ACCEPT");
        assert_eq!(joined[3], "ip6tables -w -I OUTPUT -m cgroup --path /x -d fd00::/8 -j ACCEPT");
    }
}
