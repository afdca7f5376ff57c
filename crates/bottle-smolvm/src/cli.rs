//! The `smolvm` command line as this backend drives it: finding the binary,
//! building each command's argv (pure functions, so tests can pin the exact
//! contract of `../shared/smolvm-cli.md`), running it, and reading
//! `machine ls --json` back.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use bottle_core::{Error, ErrorKind, Result};
use serde::Deserialize;

/// The program this backend runs.
pub(crate) const PROGRAM: &str = "smolvm";

/// How to get smolvm when it is missing: shown by `is_available`.
const HOW_TO_GET_SMOLVM: &str = "install smolvm (github.com/smol-machines/smolvm; it needs KVM on Linux or \
Hypervisor.framework on macOS) and put it on PATH, or use `--backend docker`";

/// The located `smolvm` binary.
#[derive(Debug, Clone)]
pub(crate) struct Smolvm {
    program: PathBuf,
    /// A command that runs `smolvm` somewhere else (`ip netns exec NAME`).
    prefix: Vec<String>,
}

/// One machine as `machine ls --json` and `machine status --json` describe it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Machine {
    /// The machine's name.
    pub(crate) name: String,
    /// `running`, `stopped`, …
    #[serde(default)]
    pub(crate) state: String,
    /// The image it was created from.
    #[serde(default)]
    pub(crate) image: Option<String>,
    /// The labels given at create.
    #[serde(default)]
    pub(crate) labels: HashMap<String, String>,
}

impl Machine {
    pub(crate) fn is_running(&self) -> bool {
        self.state == "running"
    }
}

/// What `machine create` gets for one bottle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CreateSpec<'a> {
    pub(crate) name: &'a str,
    /// The `docker save` archive.
    pub(crate) image: &'a Path,
    pub(crate) labels: &'a BTreeMap<String, String>,
    /// Whole CPUs (`--cpus`).
    pub(crate) cpus: u32,
    /// Memory in MiB (`--mem`).
    pub(crate) memory_mib: u64,
}

/// `machine create`: labels in key order, CPUs and memory, and outbound traffic to the
/// loopback only. The bottle's environment is not here: it holds the
/// bottle's token, and a command line is visible to every host user (`ps`);
/// it goes into [`GUEST_ENV_FILE`] instead.
pub(crate) fn create_args(spec: &CreateSpec<'_>) -> Vec<String> {
    let mut args: Vec<String> = ["machine", "create", "--name", spec.name, "--image"].map(String::from).to_vec();
    args.push(spec.image.display().to_string());
    for (k, v) in spec.labels {
        args.extend(["--label".to_string(), format!("{k}={v}")]);
    }
    args.extend(["--cpus".to_string(), spec.cpus.to_string(), "--mem".to_string(), spec.memory_mib.to_string()]);
    args.push("--outbound-localhost-only".into());
    args
}

/// The guest file holding the bottle's environment (`export K='V'` lines),
/// read by every command [`exec_args`] runs.
pub(crate) const GUEST_ENV_FILE: &str = "/etc/bot-bottle.env";

/// The text of [`GUEST_ENV_FILE`] for `env`.
pub(crate) fn env_file(env: &BTreeMap<String, String>) -> String {
    env.iter().map(|(k, v)| format!("export {k}={}\n", bottle_core::provider::shell_quote(v))).collect()
}

/// `machine start`, `stop`, `delete -f`.
pub(crate) fn lifecycle_args(verb: &str, name: &str) -> Vec<String> {
    let mut args: Vec<String> = ["machine", verb, "--name", name].map(String::from).to_vec();
    if verb == "delete" {
        args.push("-f".into());
    }
    args
}

/// How an `exec` runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ExecSpec<'a> {
    /// Run as this user (wrapped in `runuser`, since `exec` has no `--user`); `None` runs as root.
    pub(crate) user: Option<&'a str>,
    pub(crate) workdir: Option<&'a str>,
    pub(crate) env: Vec<(String, String)>,
    /// Attach stdin (`-i`).
    pub(crate) interactive: bool,
    /// Allocate a terminal (`-t`).
    pub(crate) tty: bool,
}

/// `machine exec … -- [runuser -u USER --] sh -c 'read the env file; exec "$@"' sh ARGV…`.
pub(crate) fn exec_args(name: &str, spec: &ExecSpec<'_>, argv: &[String]) -> Vec<String> {
    let mut args: Vec<String> = ["machine", "exec", "--name", name].map(String::from).to_vec();
    for (k, v) in &spec.env {
        args.extend(["-e".to_string(), format!("{k}={v}")]);
    }
    if let Some(dir) = spec.workdir {
        args.extend(["-w".to_string(), dir.to_string()]);
    }
    if spec.interactive {
        args.push("-i".into());
    }
    if spec.tty {
        args.push("-t".into());
    }
    args.push("--".into());
    if let Some(user) = spec.user.filter(|u| *u != "root") {
        args.extend(["runuser", "-u", user, "--"].map(String::from));
    }
    let read_env = format!("[ -r {GUEST_ENV_FILE} ] && . {GUEST_ENV_FILE}; exec \"$@\"");
    args.extend(["sh".to_string(), "-c".to_string(), read_env, "sh".to_string()]);
    args.extend(argv.iter().cloned());
    args
}

/// `machine cp HOST NAME:GUEST --mode MODE` (a root-owned file in the guest).
pub(crate) fn cp_in_args(name: &str, host: &Path, guest: &str, mode: &str) -> Vec<String> {
    vec![
        "machine".into(),
        "cp".into(),
        host.display().to_string(),
        format!("{name}:{guest}"),
        "--mode".into(),
        mode.into(),
    ]
}

/// `machine cp NAME:GUEST HOST`.
pub(crate) fn cp_out_args(name: &str, guest: &str, host: &Path) -> Vec<String> {
    vec!["machine".into(), "cp".into(), format!("{name}:{guest}"), host.display().to_string()]
}

impl Smolvm {
    /// Find `smolvm` on `PATH`; an [`ErrorKind::Unavailable`] error says how to get it.
    pub(crate) fn locate() -> Result<Self> {
        match which::which(PROGRAM) {
            Ok(program) => Ok(Smolvm { program, prefix: Vec::new() }),
            Err(e) => Err(Error::new(
                ErrorKind::Unavailable,
                format!("`{PROGRAM}` is not on PATH ({e}); {HOW_TO_GET_SMOLVM}"),
            )
            .with_backend(crate::NAME)),
        }
    }

    /// This `smolvm`, run through `prefix` (e.g. inside a network namespace:
    /// the VM started then has its loopback there).
    pub(crate) fn through(&self, prefix: Vec<String>) -> Smolvm {
        Smolvm { program: self.program.clone(), prefix }
    }

    /// The host argv that runs `smolvm args…` (through the prefix).
    pub(crate) fn argv(&self, args: &[String]) -> Vec<String> {
        let program = std::iter::once(self.program.display().to_string());
        self.prefix.iter().cloned().chain(program).chain(args.iter().cloned()).collect()
    }

    /// A command running `smolvm args…`, stdin closed, output captured.
    pub(crate) fn command(&self, args: &[String]) -> tokio::process::Command {
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut cmd = tokio::process::Command::new(first);
                cmd.args(rest).arg(&self.program);
                cmd
            }
            None => tokio::process::Command::new(&self.program),
        };
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        cmd
    }

    /// Run `smolvm args…` to completion, whatever its exit code.
    pub(crate) async fn output(&self, args: &[String], operation: &'static str) -> Result<Output> {
        self.command(args).output().await.map_err(|e| {
            Error::io(format!("running {}", self.program.display()), e)
                .with_operation(operation)
                .with_backend(crate::NAME)
        })
    }

    /// Run `smolvm args…`; a non-zero exit is an [`ErrorKind::Backend`] error with smolvm's stderr.
    pub(crate) async fn checked(&self, args: &[String], operation: &'static str) -> Result<String> {
        let out = self.output(args, operation).await?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(Error::new(
            ErrorKind::Backend,
            format!(
                "`smolvm {}` failed ({}): {}",
                args.iter().take(2).cloned().collect::<Vec<_>>().join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        )
        .with_operation(operation)
        .with_backend(crate::NAME))
    }

    /// Every machine (`machine ls --json`).
    pub(crate) async fn list(&self) -> Result<Vec<Machine>> {
        let args = ["machine", "ls", "--json"].map(String::from);
        let json = self.checked(&args, "list machines").await?;
        parse_list(&json)
    }
}

/// Parse `machine ls --json` (unknown fields ignored).
pub(crate) fn parse_list(json: &str) -> Result<Vec<Machine>> {
    serde_json::from_str(json).map_err(|e| {
        Error::new(ErrorKind::Backend, format!("`smolvm machine ls --json` printed no machine list: {e}"))
            .with_backend(crate::NAME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn create_names_the_archive_labels_and_the_loopback_only_network_and_no_env() {
        let labels: BTreeMap<String, String> =
            [("dev.bot-bottle.slug", "shell-1"), ("dev.bot-bottle.backend", "smolmachines")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into();
        let spec = CreateSpec {
            name: "bb-shell-1",
            image: Path::new("/c/img.tar"),
            labels: &labels,
            cpus: 2,
            memory_mib: 4096,
        };
        assert_eq!(
            create_args(&spec),
            strings(&[
                "machine",
                "create",
                "--name",
                "bb-shell-1",
                "--image",
                "/c/img.tar",
                "--label",
                "dev.bot-bottle.backend=smolmachines",
                "--label",
                "dev.bot-bottle.slug=shell-1",
                "--cpus",
                "2",
                "--mem",
                "4096",
                "--outbound-localhost-only",
            ])
        );
    }

    #[test]
    fn the_env_file_exports_each_value_quoted() {
        let env: BTreeMap<String, String> = [("HTTPS_PROXY", "http://bb:t@127.0.0.1:3128"), ("A", "it's")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        assert_eq!(env_file(&env), "export A='it'\\''s'\nexport HTTPS_PROXY=http://bb:t@127.0.0.1:3128\n");
    }

    #[test]
    fn exec_wraps_a_non_root_user_in_runuser_and_reads_the_env_file() {
        let argv = strings(&["sh", "-c", "id -un"]);
        let env = "[ -r /etc/bot-bottle.env ] && . /etc/bot-bottle.env; exec \"$@\"";
        assert_eq!(
            exec_args("m", &ExecSpec { user: Some("agent"), ..Default::default() }, &argv),
            strings(&[
                "machine", "exec", "--name", "m", "--", "runuser", "-u", "agent", "--", "sh", "-c", env, "sh", "sh",
                "-c", "id -un"
            ])
        );
        assert_eq!(
            exec_args("m", &ExecSpec { user: Some("root"), ..Default::default() }, &argv),
            strings(&["machine", "exec", "--name", "m", "--", "sh", "-c", env, "sh", "sh", "-c", "id -un"])
        );
        let attached = ExecSpec {
            user: Some("agent"),
            workdir: Some("/home/agent/workspace"),
            env: vec![("TERM".into(), "xterm".into())],
            interactive: true,
            tty: true,
        };
        assert_eq!(
            exec_args("m", &attached, &strings(&["bash", "-l"])),
            strings(&[
                "machine",
                "exec",
                "--name",
                "m",
                "-e",
                "TERM=xterm",
                "-w",
                "/home/agent/workspace",
                "-i",
                "-t",
                "--",
                "runuser",
                "-u",
                "agent",
                "--",
                "sh",
                "-c",
                env,
                "sh",
                "bash",
                "-l"
            ])
        );
    }

    #[test]
    fn lifecycle_and_copy_commands_follow_the_contract() {
        assert_eq!(lifecycle_args("start", "m"), strings(&["machine", "start", "--name", "m"]));
        assert_eq!(lifecycle_args("stop", "m"), strings(&["machine", "stop", "--name", "m"]));
        assert_eq!(lifecycle_args("delete", "m"), strings(&["machine", "delete", "--name", "m", "-f"]));
        assert_eq!(
            cp_in_args("m", Path::new("/h/x.tar"), "/tmp/x.tar", "600"),
            strings(&["machine", "cp", "/h/x.tar", "m:/tmp/x.tar", "--mode", "600"])
        );
        assert_eq!(
            cp_out_args("m", "/tmp/x.tar", Path::new("/h/x")),
            strings(&["machine", "cp", "m:/tmp/x.tar", "/h/x"])
        );
    }

    #[test]
    fn the_machine_list_ignores_unknown_fields_and_tolerates_missing_ones() {
        let json = r#"[{"name":"a","state":"running","pid":12,"created_at":"2026-01-01T00:00:00Z","image":"/x.tar",
            "labels":{"k":"v"},"network":"outbound-localhost-only","cpus":1,"memory_mib":512,"mounts":0,"ports":0,
            "ephemeral":false,"future":{"x":1}},{"name":"b"}]"#;
        let machines = parse_list(json).expect("parse");
        assert_eq!(machines.len(), 2);
        assert!(machines[0].is_running() && machines[0].labels["k"] == "v");
        assert!(!machines[1].is_running() && machines[1].labels.is_empty() && machines[1].image.is_none());
        assert!(parse_list("[]").expect("empty").is_empty());
        assert_eq!(parse_list("not json").expect_err("bad").kind(), ErrorKind::Backend);
    }
}
