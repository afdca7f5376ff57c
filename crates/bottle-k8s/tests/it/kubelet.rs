//! The fake's kubelet on the real Docker Engine: each Pod the backend
//! creates runs as Docker containers (the first holds the Pod's network,
//! the others join it), from the Pod's own image, user, command, env,
//! `hostAliases`, DNS, capabilities, read-only root and memory limit; its
//! emptyDirs and Secret volumes are host folders bind-mounted where the Pod
//! mounts them (group `fsGroup`); its init containers run to completion
//! first; it is ready once its TCP readiness probes answer.
//! Exec is `docker exec` into the named container, as the container's user.
//!
//! The Pods live on an `--internal` Docker network of the fake's own: the
//! agent Pod reaches its sidecar Pod and nothing else (what the agent's
//! NetworkPolicy allows, enforced the coarse way); the sidecar Pod is also
//! on Docker's default bridge, for its egress. What the sidecar's policy
//! refuses (private ranges, the metadata address) is not enforced.
//!
//! Everything it makes carries the label [`LABEL`] with the fake's id and
//! goes when its Pod is deleted; a reaper process removes whatever is left
//! when the process that made the fake ends, however it ends.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use serde_json::Value;

/// The label of every container and network the fake's kubelet makes (value: the fake's id).
pub(crate) const LABEL: &str = "dev.bot-bottle.test.k8s-fake";

/// The label naming the bottle (slug) a container's Pod belongs to.
pub(crate) const SLUG_LABEL: &str = "dev.bot-bottle.test.k8s-fake.sandbox";

/// The bytes of a memory quantity (`4294967296`, `256Mi`, `1G`).
fn bytes_of(quantity: &str) -> Option<u64> {
    let split = quantity.find(|c: char| !c.is_ascii_digit()).unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let unit: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => return None,
    };
    number.parse::<u64>().ok().map(|n| n * unit)
}

/// A kubelet whose Pods are Docker containers.
#[derive(Debug)]
pub(crate) struct DockerKubelet {
    id: String,
    network: String,
    volumes: tempfile::TempDir,
}

/// `docker ARGS`: its stdout, or its stderr's last line as the error.
fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run docker ({e})"))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("docker failed").trim().to_string())
}

impl DockerKubelet {
    /// A kubelet with its own network, and the reaper of what it leaves.
    pub(crate) fn start() -> DockerKubelet {
        let id = format!("{}-{}", std::process::id(), std::time::UNIX_EPOCH.elapsed().unwrap_or_default().as_nanos());
        let network = format!("bb-k8s-fake-{id}");
        let label = format!("{LABEL}={id}");
        docker(&["network", "create", "--internal", "--label", &label, &network])
            .unwrap_or_else(|e| panic!("creating the fake kubelet's network {network}: {e}"));
        let volumes = tempfile::Builder::new().prefix("bb-k8s-fake-volumes-").tempdir().expect("a volumes folder");
        // The reaper: once this process is gone, the fake's containers, network and volumes go too.
        let reap = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             docker ps -aq --filter label={label} | xargs -r docker rm -f >/dev/null 2>&1; \
             docker network rm {network} >/dev/null 2>&1; rm -rf '{folder}'",
            pid = std::process::id(),
            folder = volumes.path().display()
        );
        // Never waited for: it outlives this process, whose end it waits for.
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .args(["-c", &reap])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the fake kubelet's reaper");
        DockerKubelet { id, network, volumes }
    }

    /// The container running `container` of Pod `pod` in `ns`.
    pub(crate) fn container_name(&self, ns: &str, pod: &str, container: &str) -> String {
        format!("bb-k8s-fake-{}-{ns}-{pod}-{container}", self.id)
    }

    /// Runs `pod` (in `ns`, with the `secrets` of the store by name): its IP, or why it cannot run.
    pub(crate) fn run(&self, ns: &str, pod: &Value, secrets: &BTreeMap<String, Value>) -> Result<String, String> {
        let pod: Pod = serde_json::from_value(pod.clone()).map_err(|e| format!("not a Pod: {e}"))?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let slug = pod.metadata.labels.as_ref().and_then(|l| l.get("bot-bottle.dev/sandbox")).cloned();
        let spec = pod.spec.ok_or("a Pod without a spec")?;
        let group = spec.security_context.as_ref().and_then(|s| s.fs_group);
        // Volumes: host folders, owned by the fsGroup (as a kubelet makes them: emptyDirs root's, mode 2777; Secrets readable by the group).
        let mut folders = BTreeMap::new();
        for volume in spec.volumes.iter().flatten() {
            let dir = self.volumes.path().join(ns).join(&name).join(&volume.name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let gid = group.unwrap_or(0);
            if let Some(source) = &volume.secret {
                let secret_name = source.secret_name.clone().unwrap_or_default();
                let secret = secrets.get(&secret_name).ok_or(format!("secret \"{secret_name}\" not found"))?;
                let secret: Secret =
                    serde_json::from_value(secret.clone()).map_err(|e| format!("not a Secret: {e}"))?;
                let mode = source.default_mode.unwrap_or(0o644) as u32;
                let data = secret.data.into_iter().flatten().map(|(k, v)| (k, v.0));
                let strings = secret.string_data.into_iter().flatten().map(|(k, v)| (k, v.into_bytes()));
                for (key, value) in data.chain(strings) {
                    let file = dir.join(&key);
                    std::fs::write(&file, &value).map_err(|e| format!("writing {}: {e}", file.display()))?;
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| e.to_string())?;
                    std::os::unix::fs::chown(&file, Some(0), Some(gid as u32)).map_err(|e| e.to_string())?;
                }
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
            } else {
                std::os::unix::fs::chown(&dir, Some(0), Some(gid as u32)).map_err(|e| e.to_string())?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2777)).map_err(|e| e.to_string())?;
            }
            folders.insert(volume.name.clone(), dir);
        }
        let extra_hosts: Vec<String> = spec
            .host_aliases
            .iter()
            .flatten()
            .flat_map(|alias| alias.hostnames.iter().flatten().map(move |h| format!("{h}:{}", alias.ip)))
            .collect();
        let dns: Vec<String> = match spec.dns_policy.as_deref() {
            Some("None") => spec.dns_config.iter().flat_map(|c| c.nameservers.iter().flatten().cloned()).collect(),
            _ => Vec::new(),
        };
        let pod_user = spec.security_context.as_ref().and_then(|s| s.run_as_user);
        let sidecar = pod.metadata.labels.as_ref().and_then(|l| l.get("bot-bottle.dev/role")).map(String::as_str)
            == Some("sidecar");
        for init in spec.init_containers.iter().flatten() {
            let mut args = self.container_args(ns, &name, slug.as_deref(), init, &folders, pod_user, group);
            args.splice(0..0, ["run", "--rm", "--pull", "never", "--network", "none"].map(String::from));
            args.extend(self.command(init));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            docker(&args).map_err(|e| format!("init container {} of {name}: {e}", init.name))?;
        }
        let mut first: Option<String> = None;
        for container in &spec.containers {
            let mut args = self.container_args(ns, &name, slug.as_deref(), container, &folders, pod_user, group);
            args.splice(0..0, ["run".to_string(), "--detach".into(), "--pull".into(), "never".into()]);
            match &first {
                None => {
                    args.extend(["--network".into(), self.network.clone()]);
                    args.extend(extra_hosts.iter().flat_map(|h| ["--add-host".to_string(), h.clone()]));
                    args.extend(dns.iter().flat_map(|d| ["--dns".to_string(), d.clone()]));
                }
                Some(holder) => args.extend(["--network".into(), format!("container:{holder}")]),
            }
            args.extend(self.command(container));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            docker(&args).map_err(|e| format!("container {} of {name}: {e}", container.name))?;
            if first.is_none() {
                let holder = self.container_name(ns, &name, &container.name);
                if sidecar {
                    docker(&["network", "connect", "bridge", &holder])
                        .map_err(|e| format!("connecting {holder} to the bridge: {e}"))?;
                }
                first = Some(holder);
            }
        }
        let holder = first.ok_or("a Pod without containers")?;
        let template = format!("{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}", self.network);
        let ip = docker(&["inspect", "--format", &template, &holder])?;
        for container in &spec.containers {
            let probe = container.readiness_probe.as_ref().and_then(|p| p.tcp_socket.as_ref());
            if let Some(tcp) = probe {
                self.await_port(ns, &name, &container.name, &ip, &tcp.port)?;
            }
        }
        Ok(ip)
    }

    /// The readiness probe: `port` of the Pod at `ip` accepts a connection
    /// while `container` runs; else why not (the container's last line).
    fn await_port(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        ip: &str,
        port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
    ) -> Result<(), String> {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        let IntOrString::Int(port) = port else { return Err(format!("named probe port {port:?}")) };
        let address: std::net::SocketAddr = format!("{ip}:{port}").parse().map_err(|e| format!("{ip}: {e}"))?;
        let name = self.container_name(ns, pod, container);
        for _ in 0..300 {
            if std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if docker(&["inspect", "--format", "{{.State.Running}}", &name]).as_deref() != Ok("true") {
                let out = Command::new("docker").args(["logs", "--tail", "1", &name]).output();
                let last = out.map(|o| String::from_utf8_lossy(&[o.stdout, o.stderr].concat()).trim().to_string());
                return Err(format!("container {container} of {pod} exited: {}", last.unwrap_or_default()));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Err(format!("container {container} of {pod} does not answer on port {port}"))
    }

    /// The `docker run` options of `container` of Pod `pod` (image and command not yet).
    #[allow(clippy::too_many_arguments)]
    fn container_args(
        &self,
        ns: &str,
        pod: &str,
        slug: Option<&str>,
        container: &Container,
        folders: &BTreeMap<String, PathBuf>,
        pod_user: Option<i64>,
        group: Option<i64>,
    ) -> Vec<String> {
        let security = container.security_context.as_ref();
        let user = security.and_then(|s| s.run_as_user).or(pod_user);
        let gid = security.and_then(|s| s.run_as_group).or(group);
        let mut args = vec![
            "--name".to_string(),
            self.container_name(ns, pod, &container.name),
            "--label".into(),
            format!("{LABEL}={}", self.id),
            "--label".into(),
            format!("{SLUG_LABEL}={}", slug.unwrap_or_default()),
            "--security-opt".into(),
            "no-new-privileges".into(),
        ];
        if let Some(user) = user {
            args.extend(["--user".into(), format!("{user}:{}", gid.unwrap_or(user))]);
        }
        if let Some(group) = group {
            args.extend(["--group-add".into(), group.to_string()]);
        }
        let caps = security.and_then(|s| s.capabilities.as_ref());
        for dropped in caps.and_then(|c| c.drop.as_ref()).into_iter().flatten() {
            args.extend(["--cap-drop".into(), dropped.clone()]);
        }
        // The memory limit, as the kubelet's cgroup enforces it (no swap).
        let memory = container.resources.as_ref().and_then(|r| r.limits.as_ref()).and_then(|l| l.get("memory"));
        if let Some(bytes) = memory.and_then(|q| bytes_of(&q.0)) {
            args.extend(["--memory".into(), bytes.to_string(), "--memory-swap".into(), bytes.to_string()]);
        }
        if security.and_then(|s| s.read_only_root_filesystem) == Some(true) {
            args.push("--read-only".into());
        }
        for var in container.env.iter().flatten() {
            args.extend(["--env".into(), format!("{}={}", var.name, var.value.clone().unwrap_or_default())]);
        }
        for mount in container.volume_mounts.iter().flatten() {
            if let Some(dir) = folders.get(&mount.name) {
                let ro = if mount.read_only == Some(true) { ":ro" } else { "" };
                args.extend(["--volume".into(), format!("{}:{}{ro}", dir.display(), mount.mount_path)]);
            }
        }
        args
    }

    /// The `--entrypoint`, image and arguments of `container`.
    fn command(&self, container: &Container) -> Vec<String> {
        let command = container.command.clone().unwrap_or_default();
        let mut args = Vec::new();
        if let Some(entry) = command.first() {
            args.extend(["--entrypoint".to_string(), entry.clone()]);
        }
        args.push(container.image.clone().unwrap_or_default());
        args.extend(command.into_iter().skip(1));
        args.extend(container.args.clone().unwrap_or_default());
        args
    }

    /// Removes Pod `pod`'s containers and volume folders.
    pub(crate) fn remove(&self, ns: &str, pod: &Value) {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let containers = pod["spec"]["containers"].as_array().into_iter().flatten();
        let names: Vec<String> =
            containers.filter_map(|c| c["name"].as_str()).map(|c| self.container_name(ns, name, c)).collect();
        if !names.is_empty() {
            let mut args = vec!["rm", "--force", "--volumes"];
            args.extend(names.iter().map(String::as_str));
            let _ = docker(&args);
        }
        let _ = std::fs::remove_dir_all(self.volumes.path().join(ns).join(name));
    }

    /// `docker exec` of `argv` in `container` of Pod `pod`, `stdin` fed to it.
    pub(crate) fn exec(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        argv: &[String],
        stdin: &[u8],
    ) -> (Vec<u8>, Vec<u8>, i32) {
        use std::io::Write as _;
        let name = self.container_name(ns, pod, container);
        let child = Command::new("docker")
            .args(["exec", "--interactive", &name])
            .args(argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => return (Vec::new(), format!("cannot run docker exec ({e})").into_bytes(), 126),
        };
        let mut input = child.stdin.take().expect("stdin");
        let stdin = stdin.to_vec();
        let feeder = std::thread::spawn(move || {
            let _ = input.write_all(&stdin);
        });
        let out = child.wait_with_output();
        let _ = feeder.join();
        match out {
            Ok(out) => (out.stdout, out.stderr, out.status.code().unwrap_or(-1)),
            Err(e) => (Vec::new(), format!("docker exec failed ({e})").into_bytes(), 126),
        }
    }

    /// The output (stdout, then stderr) of `container` of Pod `pod` so far.
    pub(crate) fn logs(&self, ns: &str, pod: &str, container: &str) -> Result<Vec<u8>, String> {
        let name = self.container_name(ns, pod, container);
        let out = Command::new("docker").args(["logs", &name]).output().map_err(|e| format!("docker logs: {e}"))?;
        if !out.status.success() {
            return Err(format!("container \"{container}\" in pod \"{pod}\" has no log"));
        }
        Ok([out.stdout, out.stderr].concat())
    }

    /// Stops `container` of Pod `pod` behind the backend's back.
    pub(crate) fn kill(&self, ns: &str, pod: &str, container: &str) {
        let name = self.container_name(ns, pod, container);
        docker(&["kill", &name]).unwrap_or_else(|e| panic!("killing {name}: {e}"));
    }

    /// The names of the running containers of bottle `slug`.
    pub(crate) fn containers_of(&self, slug: &str) -> Vec<String> {
        let out = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label={LABEL}={}", self.id),
            "--filter",
            &format!("label={SLUG_LABEL}={slug}"),
            "--format",
            "{{.Names}}",
        ])
        .unwrap_or_default();
        out.lines().map(str::to_string).collect()
    }
}

impl Drop for DockerKubelet {
    fn drop(&mut self) {
        if let Ok(ids) = docker(&["ps", "-aq", "--filter", &format!("label={LABEL}={}", self.id)]) {
            let mut args = vec!["rm", "--force", "--volumes"];
            args.extend(ids.lines());
            if args.len() > 3 {
                let _ = docker(&args);
            }
        }
        let _ = docker(&["network", "rm", &self.network]);
    }
}
