//! A running bottle on a cluster: commands over the pods/exec WebSocket
//! (kube's `AttachedProcess`: stdin, stdout and stderr on their channels,
//! the exit code from the status channel), trees in and out as tar
//! streams through the guest's `tar`, the sidecars' audit logs from the
//! sidecar Pod's container logs, and teardown by the anchor.
//!
//! A restricted Pod runs every exec as its container's user: what the
//! generic provisioning does "as root" runs as the agent, in the folders
//! the agent Pod makes writable for it
//! ([`AGENT_WRITABLE`](crate::render::AGENT_WRITABLE)).

use std::path::Path;

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{AttachParams, LogParams};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use bottle_core::backend::{CopyOut, Handle, split_guest_path};
use bottle_core::{Bottle, ByteSize, Error, ErrorKind, ExecResult, GuestUser, Result, Sidecar};

use crate::cluster::{Cluster, refused};
use crate::render::{self, AGENT_CONTAINER};

/// A handle on one bottle's agent Pod (and, by its slug, the rest).
pub struct K8sBottle {
    cluster: Cluster,
    namespace: String,
    pod: String,
    handle: Handle,
}

impl std::fmt::Debug for K8sBottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("K8sBottle").field("slug", &self.handle.slug()).field("pod", &self.pod).finish()
    }
}

/// What one exec gave back.
#[derive(Debug)]
pub(crate) struct Ran {
    /// The exit code (`None` when the connection closed before the status).
    pub code: Option<i64>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// The exit code a pods/exec status frame carries: 0 for `Success`, the
/// `ExitCode` cause of a `NonZeroExitCode` failure; `None` for any other
/// failure (the process could not start).
pub fn exit_code(status: &Status) -> Option<i64> {
    if status.status.as_deref() == Some("Success") {
        return Some(0);
    }
    if status.reason.as_deref() != Some("NonZeroExitCode") {
        return None;
    }
    let causes = status.details.as_ref()?.causes.as_ref()?;
    causes.iter().find(|c| c.reason.as_deref() == Some("ExitCode"))?.message.as_deref()?.parse().ok()
}

impl K8sBottle {
    pub(crate) fn new(cluster: Cluster, namespace: String, pod: String, handle: Handle) -> Self {
        K8sBottle { cluster, namespace, pod, handle }
    }

    /// The agent Pod's name.
    pub fn pod(&self) -> &str {
        &self.pod
    }

    fn err(&self, e: Error) -> Error {
        self.handle.err(e)
    }

    /// Runs `argv` in the agent container with `stdin` (shut once written),
    /// reading stdout and stderr while awaiting the status.
    pub(crate) async fn run(&self, argv: &[String], stdin: Option<&[u8]>) -> Result<Ran> {
        let ap = AttachParams::default().container(AGENT_CONTAINER).stdin(stdin.is_some()).stdout(true).stderr(true);
        let mut process = self
            .cluster
            .pods(&self.namespace)
            .exec(&self.pod, argv.to_vec(), &ap)
            .await
            .map_err(|e| self.err(refused(e, "create", "pods/exec", &self.namespace)))?;
        let status = process.take_status();
        let (mut out, mut err) = (process.stdout(), process.stderr());
        let mut input = process.stdin();
        let write = async {
            if let (Some(writer), Some(bytes)) = (input.as_mut(), stdin) {
                writer.write_all(bytes).await?;
                writer.shutdown().await?;
            }
            Ok::<(), std::io::Error>(())
        };
        let read = |pipe: Option<tokio::io::ReadHalf<tokio::io::SimplexStream>>| async move {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                pipe.read_to_end(&mut bytes).await?;
            }
            Ok::<Vec<u8>, std::io::Error>(bytes)
        };
        let (written, stdout, stderr, status) =
            tokio::join!(write, read(out.take()), read(err.take()), settled(status));
        let io = |e: std::io::Error| self.err(Error::io(format!("streaming to the agent Pod {}", self.pod), e));
        written.map_err(io)?;
        let (stdout, stderr) = (stdout.map_err(io)?, stderr.map_err(io)?);
        let code = match &status {
            Some(status) => match exit_code(status) {
                Some(code) => Some(code),
                None => {
                    return Err(self.err(Error::new(
                        ErrorKind::Backend,
                        format!(
                            "the cluster could not run `{}` in Pod {}: {}",
                            argv.first().map_or("", String::as_str),
                            self.pod,
                            status.message.clone().unwrap_or_default()
                        ),
                    )));
                }
            },
            None => None,
        };
        Ok(Ran { code, stdout, stderr })
    }
}

#[async_trait]
impl Bottle for K8sBottle {
    fn slug(&self) -> &str {
        self.handle.slug()
    }

    fn agent_user(&self) -> &str {
        self.handle.user()
    }

    async fn exec(&self, script: &str, _user: GuestUser) -> Result<ExecResult> {
        let ran = self.run(&["sh".into(), "-c".into(), script.into()], None).await?;
        Ok(ExecResult {
            exit_code: ran.code.unwrap_or(-1),
            stdout: String::from_utf8_lossy(&ran.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&ran.stderr).into_owned(),
        })
    }

    async fn cp_in(&self, host: &Path, guest: &str) -> Result<()> {
        let packed = self.handle.pack_in(self, host, guest).await?;
        let argv = ["tar", "-xf", "-", "-C", &packed.parent].map(String::from);
        let ran = self.run(&argv, Some(&packed.tar)).await?;
        if ran.code == Some(0) {
            return Ok(());
        }
        Err(self.err(Error::new(
            ErrorKind::Provision,
            format!("unpacking {guest} in the bottle failed: {}", String::from_utf8_lossy(&ran.stderr).trim()),
        )))
    }

    async fn cp_out(&self, guest: &str, host: &Path, limit: ByteSize) -> Result<CopyOut> {
        if let Some(answer) = self.handle.measure_out(self, guest, limit).await? {
            return Ok(answer);
        }
        let (parent, name) = split_guest_path(guest)?;
        let argv = ["tar", "-cf", "-", "-C", parent, name].map(String::from);
        let ran = self.run(&argv, None).await?;
        if ran.stdout.len() as u64 > bottle_core::backend::tar_allowance(limit) {
            return Ok(CopyOut::TooLarge { limit });
        }
        if ran.code != Some(0) {
            return Err(self.err(Error::new(
                ErrorKind::Backend,
                format!("packing {guest} in the bottle failed: {}", String::from_utf8_lossy(&ran.stderr).trim()),
            )));
        }
        bottle_core::backend::unpack_bounded(std::io::Cursor::new(ran.stdout), name, host, limit)
            .map_err(|e| self.err(e))
    }

    async fn exec_attached(&self, argv: &[String], _user: GuestUser) -> Result<i32> {
        use futures_util::SinkExt as _;
        use std::io::IsTerminal as _;
        let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
        let mut ap = AttachParams::default().container(AGENT_CONTAINER).stdin(true).stdout(true).tty(tty);
        ap.stderr = !tty;
        let mut in_dir = vec!["sh".to_string(), "-c".into(), "cd \"$0\" && exec \"$@\"".into()];
        in_dir.push(self.handle.workdir().to_string());
        in_dir.extend(argv.iter().cloned());
        let mut process = self
            .cluster
            .pods(&self.namespace)
            .exec(&self.pod, in_dir, &ap)
            .await
            .map_err(|e| self.err(refused(e, "create", "pods/exec", &self.namespace)))?;
        let status = process.take_status();
        let (input, out, err) = (process.stdin(), process.stdout(), process.stderr());
        let _raw = if tty { Some(bottle_core::backend::RawMode::enable()?) } else { None };
        // The window's size now and at every change (channel 4).
        let resizer = process.terminal_size().map(|mut sizes| {
            tokio::spawn(async move {
                let size = || {
                    bottle_core::backend::window_size().map(|(width, height)| kube::api::TerminalSize { width, height })
                };
                if let Some(now) = size() {
                    let _ = sizes.send(now).await;
                }
                let Ok(mut winch) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                else {
                    return;
                };
                while winch.recv().await.is_some() {
                    if let Some(now) = size()
                        && sizes.send(now).await.is_err()
                    {
                        return;
                    }
                }
            })
        });
        let pump_in = tokio::spawn(async move {
            if let Some(writer) = input {
                let _ = pump(tokio::io::stdin(), writer).await;
            }
        });
        let pump_out = async {
            if let Some(out) = out {
                let _ = pump(out, tokio::io::stdout()).await;
            }
        };
        let pump_err = async {
            if let Some(err) = err {
                let _ = pump(err, tokio::io::stderr()).await;
            }
        };
        let ((), (), status) = tokio::join!(pump_out, pump_err, settled(status));
        pump_in.abort();
        if let Some(resizer) = resizer {
            resizer.abort();
        }
        Ok(status.as_ref().and_then(exit_code).map_or(1, |code| i32::try_from(code).unwrap_or(1)))
    }

    async fn sidecar_log(&self, sidecar: Sidecar, follow: bool, sink: &mut (dyn std::io::Write + Send)) -> Result<()> {
        use futures_util::AsyncBufReadExt as _;
        use futures_util::StreamExt as _;
        let pod = render::sidecar_pod_name(self.handle.slug());
        let lp = LogParams { container: Some(sidecar.name().to_string()), follow, ..LogParams::default() };
        let stream = self
            .cluster
            .pods(&self.namespace)
            .log_stream(&pod, &lp)
            .await
            .map_err(|e| self.err(refused(e, "get", "pods/log", &self.namespace)))?;
        let mut lines = std::pin::pin!(stream.lines());
        while let Some(line) = lines.next().await {
            let line = line.map_err(|e| self.err(Error::io("reading the sidecar's log", e)))?;
            // Only the audit lines (JSON); the program's own messages stay in the Pod's log.
            if line.starts_with('{') {
                writeln!(sink, "{line}").map_err(|e| Error::io("writing the audit log", e))?;
            }
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        if !self.handle.close_once() {
            return Ok(());
        }
        crate::cleanup::remove(&self.cluster, &self.namespace, self.handle.slug()).await.map_err(|e| self.err(e))
    }
}

/// The exec's status frame, when it has one coming.
async fn settled(status: Option<impl std::future::Future<Output = Option<Status>>>) -> Option<Status> {
    match status {
        Some(status) => status.await,
        None => None,
    }
}

/// Copies `from` to `to`, flushing every chunk (an interactive session's
/// bytes must not wait in a buffer), and shuts `to` at the end.
async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 8192];
    loop {
        match from.read(&mut buf).await? {
            0 => return to.shutdown().await,
            n => {
                to.write_all(&buf[..n]).await?;
                to.flush().await?;
            }
        }
    }
}
