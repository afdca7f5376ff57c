//! A running smolvm bottle: commands through `machine exec` (as the agent
//! through `runuser`, since `exec` has no `--user`), trees in and out as tar
//! archives through `machine cp` and the guest's `tar`, the attached agent
//! session with `-i -t`, the sidecars' audit logs from the host, and
//! teardown.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;

use async_trait::async_trait;
use bottle_core::backend::{CopyOut, Handle, split_guest_path};
use bottle_core::provider::{run_checked, shell_quote};
use bottle_core::{Bottle, ByteSize, Error, ErrorKind, ExecResult, GuestUser, Result, Sidecar};

use crate::cli::{self, ExecSpec, Smolvm};
use crate::sidecar;

/// A handle on one bottle's machine and its host-side sidecars.
pub struct SmolvmBottle {
    smolvm: Smolvm,
    machine: String,
    /// The sidecars' folder in the bottle's state folder.
    sidecars: PathBuf,
    /// The sidecar processes this process started (reaped at close).
    children: Mutex<Vec<Child>>,
    handle: Handle,
}

impl std::fmt::Debug for SmolvmBottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmolvmBottle").field("slug", &self.handle.slug()).field("machine", &self.machine).finish()
    }
}

/// A unique scratch name in the guest's `/tmp` (a tmpfs, root-owned files there are private).
fn guest_scratch() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("/tmp/bot-bottle-copy-{}-{nanos}.tar", std::process::id())
}

impl SmolvmBottle {
    /// A handle on machine `machine` of the bottle `handle` describes, whose
    /// sidecars keep their files in `sidecars`.
    pub(crate) fn new(smolvm: Smolvm, machine: String, sidecars: PathBuf, handle: Handle) -> Self {
        SmolvmBottle { smolvm, machine, sidecars, children: Mutex::new(Vec::new()), handle }
    }

    /// Keep `started` (this process's sidecar children) to reap at close.
    pub(crate) fn adopt(&mut self, started: Vec<Child>) {
        self.children.get_mut().unwrap_or_else(|e| e.into_inner()).extend(started);
    }

    fn err(&self, e: Error) -> Error {
        self.handle.err(e)
    }
}

#[async_trait]
impl Bottle for SmolvmBottle {
    async fn exec(&self, script: &str, user: GuestUser) -> Result<ExecResult> {
        let user = self.handle.user_name(user);
        let spec = ExecSpec { user: Some(&user), ..Default::default() };
        let argv = ["sh", "-c", script].map(String::from);
        let out = self.smolvm.output(&cli::exec_args(&self.machine, &spec, &argv), "exec").await?;
        Ok(ExecResult {
            exit_code: out.status.code().map_or(-1, i64::from),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    async fn cp_in(&self, host: &Path, guest: &str) -> Result<()> {
        let packed = self.handle.pack_in(self, host, guest).await?;
        let local = tempfile::NamedTempFile::new().map_err(|e| Error::io("creating a temporary file", e))?;
        std::fs::write(local.path(), &packed.tar)
            .map_err(|e| Error::io(format!("writing {}", local.path().display()), e))?;
        let scratch = guest_scratch();
        self.smolvm
            .checked(&cli::cp_in_args(&self.machine, local.path(), &scratch, "600"), "copy files into the bottle")
            .await
            .map_err(|e| self.err(e))?;
        // Root unpacks, so the entries keep the agent's ownership from the archive.
        let unpack = format!(
            "tar -xf {s} -C {p}; code=$?; rm -f {s}; exit $code",
            s = shell_quote(&scratch),
            p = shell_quote(&packed.parent)
        );
        run_checked(self, &unpack, GuestUser::Root, &format!("unpacking {guest}")).await
    }

    async fn cp_out(&self, guest: &str, host: &Path, limit: ByteSize) -> Result<CopyOut> {
        // Measured first: a tree over the limit is not even packed (the
        // guest's /tmp is memory).
        if let Some(answer) = self.handle.measure_out(self, guest, limit).await? {
            return Ok(answer);
        }
        let (parent, name) = split_guest_path(guest)?;
        let scratch = guest_scratch();
        // Packed, then cut off past the allowance (the tree may grow between the measure and the copy).
        let pack = format!(
            "tar -cf {s} -C {p} {n} && test \"$(stat -c %s {s})\" -le {allowance} || {{ rm -f {s}; exit 4; }}",
            s = shell_quote(&scratch),
            p = shell_quote(parent),
            n = shell_quote(name),
            allowance = bottle_core::backend::tar_allowance(limit),
        );
        let packed = self.exec(&pack, GuestUser::Root).await?;
        match packed.exit_code {
            0 => {}
            4 => return Ok(CopyOut::TooLarge { limit }),
            code => {
                return Err(self.err(Error::new(
                    ErrorKind::Backend,
                    format!("packing {guest} in the bottle exited {code}: {}", packed.stderr.trim()),
                )));
            }
        }
        let host_parent = host.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(host_parent)
            .map_err(|e| Error::io(format!("creating {}", host_parent.display()), e))?;
        let local =
            tempfile::NamedTempFile::new_in(host_parent).map_err(|e| Error::io("creating a temporary file", e))?;
        let copied = self
            .smolvm
            .checked(&cli::cp_out_args(&self.machine, &scratch, local.path()), "copy files out of the bottle")
            .await;
        let _ = self.exec(&format!("rm -f {}", shell_quote(&scratch)), GuestUser::Root).await;
        copied.map_err(|e| self.err(e))?;
        let tar = std::fs::File::open(local.path())
            .map_err(|e| Error::io(format!("reading {}", local.path().display()), e))?;
        bottle_core::backend::unpack_bounded(std::io::BufReader::new(tar), name, host, limit).map_err(|e| self.err(e))
    }

    async fn exec_attached(&self, argv: &[String], user: GuestUser) -> Result<i32> {
        let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
        let env = match std::env::var("TERM") {
            Ok(term) if tty => vec![("TERM".to_string(), term)],
            _ => Vec::new(),
        };
        let user = self.handle.user_name(user);
        let spec = ExecSpec { user: Some(&user), workdir: Some(self.handle.workdir()), env, interactive: true, tty };
        let status = self
            .smolvm
            .command(&cli::exec_args(&self.machine, &spec, argv))
            .stdin(std::process::Stdio::inherit())
            .stdout(std::process::Stdio::inherit())
            .stderr(std::process::Stdio::inherit())
            .status()
            .await
            .map_err(|e| self.err(Error::io("running smolvm machine exec", e)))?;
        Ok(status.code().unwrap_or(1))
    }

    /// `smolvm machine exec -i -t` as `user`, in the workdir.
    fn host_argv(&self, argv: &[String], user: GuestUser) -> Option<Vec<String>> {
        let user = self.handle.user_name(user);
        let spec = ExecSpec {
            user: Some(&user),
            workdir: Some(self.handle.workdir()),
            env: Vec::new(),
            interactive: true,
            tty: true,
        };
        Some(self.smolvm.argv(&cli::exec_args(&self.machine, &spec, argv)))
    }

    async fn sidecar_log(&self, sidecar: Sidecar, follow: bool, sink: &mut (dyn std::io::Write + Send)) -> Result<()> {
        sidecar::copy_audit_log(&self.sidecars, sidecar, follow, sink).await.map_err(|e| self.err(e))
    }

    async fn close(&self) -> Result<()> {
        if !self.handle.close_once() {
            return Ok(());
        }
        // Without the machine list, still stop the sidecars; then report why the machine may remain.
        let (machine, listed) = match self.smolvm.list().await {
            Ok(machines) => (machines.into_iter().find(|m| m.name == self.machine), Ok(())),
            Err(e) => (None, Err(e)),
        };
        let removed =
            crate::cleanup::remove_everything(&self.smolvm, machine.as_ref(), &self.sidecars).await.and(listed);
        let children = std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()));
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
        removed.map_err(|e| self.err(e))
    }

    fn slug(&self) -> &str {
        self.handle.slug()
    }

    fn agent_user(&self) -> &str {
        self.handle.user()
    }
}
