//! A running smolvm bottle: commands through `machine exec` (as the agent
//! through `runuser`, since `exec` has no `--user`), trees in and out as tar
//! archives through `machine cp` and the guest's `tar`, the attached agent
//! session with `-i -t`, the sidecars' audit logs from the host, and
//! teardown.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bottle_core::backend::{CopyOut, pack_tree, split_guest_path};
use bottle_core::provider::{run_checked, shell_quote};
use bottle_core::{Bottle, ByteSize, Error, ErrorKind, ExecResult, GuestUser, Result, Sidecar};
use tokio::sync::OnceCell;

use crate::cli::{self, ExecSpec, Smolvm};
use crate::sidecar;

/// A handle on one bottle's machine and its host-side sidecars.
pub struct SmolvmBottle {
    pub(crate) smolvm: Smolvm,
    pub(crate) machine: String,
    pub(crate) slug: String,
    pub(crate) user: String,
    pub(crate) workdir: String,
    /// The sidecars' folder in the bottle's state folder.
    pub(crate) sidecars: PathBuf,
    /// The sidecar processes this process started (reaped at close).
    pub(crate) children: Mutex<Vec<Child>>,
    pub(crate) ids: OnceCell<(u64, u64)>,
    pub(crate) closed: AtomicBool,
}

impl std::fmt::Debug for SmolvmBottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmolvmBottle").field("slug", &self.slug).field("machine", &self.machine).finish()
    }
}

/// A unique scratch name in the guest's `/tmp` (a tmpfs, root-owned files there are private).
fn guest_scratch() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("/tmp/bot-bottle-copy-{}-{nanos}.tar", std::process::id())
}

impl SmolvmBottle {
    fn user_name(&self, user: GuestUser) -> String {
        user.name(&self.user)
    }

    fn err(&self, e: Error) -> Error {
        e.with_bottle(&self.slug)
    }

    /// The agent user's numeric uid and gid (asked once).
    async fn agent_ids(&self) -> Result<(u64, u64)> {
        self.ids.get_or_try_init(|| bottle_core::backend::agent_ids(self)).await.copied()
    }

    /// Remove the machine (stopped first) and the sidecars; what was there.
    pub(crate) async fn remove_everything(
        smolvm: &Smolvm,
        machine: Option<&cli::Machine>,
        sidecars: &Path,
    ) -> Result<()> {
        let mut errors = Vec::new();
        if let Some(m) = machine {
            if m.is_running() {
                // A failed stop is fine as long as the delete succeeds.
                let _ = smolvm.output(&cli::lifecycle_args("stop", &m.name), "stop the machine").await;
            }
            if let Err(e) = smolvm.checked(&cli::lifecycle_args("delete", &m.name), "delete the machine").await {
                errors.push(e);
            }
        }
        if let Err(e) = sidecar::remove_all(sidecars).await {
            errors.push(e);
        }
        // A bottle isolated in a network namespace: the namespace and its socket folder.
        if let Some(slug) = sidecars.parent().and_then(|d| d.file_name()).and_then(|n| n.to_str()) {
            if let Err(e) =
                crate::network::remove(&crate::network::netns_name(slug), &crate::network::socket_dir(slug)).await
            {
                errors.push(e);
            }
        }
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Bottle for SmolvmBottle {
    fn slug(&self) -> &str {
        &self.slug
    }

    fn agent_user(&self) -> &str {
        &self.user
    }

    async fn exec(&self, script: &str, user: GuestUser) -> Result<ExecResult> {
        let user = self.user_name(user);
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
        let (parent, name) = split_guest_path(guest)?;
        let (uid, gid) = self.agent_ids().await?;
        let mkdir = format!("mkdir -p {}", shell_quote(parent));
        if !self.exec(&mkdir, GuestUser::Agent).await?.success() {
            run_checked(self, &mkdir, GuestUser::Root, "creating a folder").await?;
        }
        let (host_path, name_owned) = (host.to_path_buf(), name.to_string());
        let tar = tokio::task::spawn_blocking(move || pack_tree(&host_path, &name_owned, uid, gid))
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("packing {}: {e}", host.display())))?
            .map_err(|e| self.err(Error::io(format!("packing {}", host.display()), e)))?;
        let local = tempfile::NamedTempFile::new().map_err(|e| Error::io("creating a temporary file", e))?;
        std::fs::write(local.path(), &tar).map_err(|e| Error::io(format!("writing {}", local.path().display()), e))?;
        let scratch = guest_scratch();
        self.smolvm
            .checked(&cli::cp_in_args(&self.machine, local.path(), &scratch, "600"), "copy files into the bottle")
            .await
            .map_err(|e| self.err(e))?;
        // Root unpacks, so the entries keep the agent's ownership from the archive.
        let unpack = format!(
            "tar -xf {s} -C {p}; code=$?; rm -f {s}; exit $code",
            s = shell_quote(&scratch),
            p = shell_quote(parent)
        );
        run_checked(self, &unpack, GuestUser::Root, &format!("unpacking {guest}")).await
    }

    async fn cp_out(&self, guest: &str, host: &Path, limit: ByteSize) -> Result<CopyOut> {
        let (parent, name) = split_guest_path(guest)?;
        // Measured first: a tree over the limit is not even packed (the
        // guest's /tmp is memory).
        match bottle_core::backend::guest_size(self, guest).await.map_err(|e| self.err(e))? {
            None => return Ok(CopyOut::Missing),
            Some(size) if size > limit.0 => return Ok(CopyOut::TooLarge { limit }),
            Some(_) => {}
        }
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
        let user = self.user_name(user);
        let spec = ExecSpec { user: Some(&user), workdir: Some(&self.workdir), env, interactive: true, tty };
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

    async fn sidecar_log(&self, sidecar: Sidecar, follow: bool, sink: &mut (dyn std::io::Write + Send)) -> Result<()> {
        sidecar::copy_audit_log(&self.sidecars, sidecar, follow, sink).await.map_err(|e| self.err(e))
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // Without the machine list, still stop the sidecars; then report why the machine may remain.
        let (machine, listed) = match self.smolvm.list().await {
            Ok(machines) => (machines.into_iter().find(|m| m.name == self.machine), Ok(())),
            Err(e) => (None, Err(e)),
        };
        let removed = Self::remove_everything(&self.smolvm, machine.as_ref(), &self.sidecars).await.and(listed);
        let children = std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()));
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
        removed.map_err(|e| self.err(e))
    }
}
