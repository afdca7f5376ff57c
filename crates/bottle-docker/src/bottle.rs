//! A running Docker bottle: commands through the exec API, files in and out
//! through the archive API, the attached agent session (a raw TTY when
//! stdin is a terminal) and teardown.

use std::io::IsTerminal;
use std::path::Path;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{DownloadFromContainerOptions, UploadToContainerOptions};
use bottle_core::backend::{CopyOut, Handle, split_guest_path};
use bottle_core::{Bottle, ByteSize, Error, ErrorKind, ExecResult, GuestUser, Result};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::engine::{failed, is_not_found};

/// A handle on one bottle's agent container.
pub struct DockerBottle {
    docker: Docker,
    container: String,
    handle: Handle,
}

impl std::fmt::Debug for DockerBottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerBottle").field("slug", &self.handle.slug()).field("container", &self.container).finish()
    }
}

impl DockerBottle {
    /// A handle on the agent container `container` of the bottle `handle` describes.
    pub(crate) fn new(docker: &Docker, container: String, handle: Handle) -> Self {
        DockerBottle { docker: docker.clone(), container, handle }
    }

    fn err(&self, e: Error) -> Error {
        self.handle.err(e)
    }

    async fn start(
        &self,
        argv: Vec<String>,
        user: &str,
        tty: bool,
        stdin: bool,
        workdir: Option<&str>,
    ) -> Result<(String, StartExecResults)> {
        let env = if tty { std::env::var("TERM").ok().map(|t| vec![format!("TERM={t}")]) } else { None };
        let exec = self
            .docker
            .create_exec(
                &self.container,
                CreateExecOptions {
                    cmd: Some(argv),
                    user: Some(user.to_string()),
                    attach_stdin: Some(stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(tty),
                    working_dir: workdir.map(str::to_string),
                    env,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.err(failed("create an exec")(e)))?;
        let started = self
            .docker
            .start_exec(&exec.id, Some(StartExecOptions { detach: false, tty, output_capacity: None }))
            .await
            .map_err(|e| self.err(failed("start an exec")(e)))?;
        Ok((exec.id, started))
    }

    async fn exit_code(&self, exec_id: &str) -> Result<i64> {
        for _ in 0..100 {
            let info = self.docker.inspect_exec(exec_id).await.map_err(|e| self.err(failed("inspect an exec")(e)))?;
            if info.running != Some(true) {
                return Ok(info.exit_code.unwrap_or(-1));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err(self.err(Error::new(ErrorKind::Backend, "a command's output ended but it kept running for 2 s")))
    }
}

#[async_trait]
impl Bottle for DockerBottle {
    fn slug(&self) -> &str {
        self.handle.slug()
    }

    fn agent_user(&self) -> &str {
        self.handle.user()
    }

    async fn exec(&self, script: &str, user: GuestUser) -> Result<ExecResult> {
        let argv = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
        let (id, started) = self.start(argv, &self.handle.user_name(user), false, false, None).await?;
        let mut result = ExecResult::default();
        if let StartExecResults::Attached { mut output, .. } = started {
            while let Some(chunk) = output.next().await {
                match chunk.map_err(|e| self.err(failed("read an exec's output")(e)))? {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        result.stdout.push_str(&String::from_utf8_lossy(&message))
                    }
                    LogOutput::StdErr { message } => result.stderr.push_str(&String::from_utf8_lossy(&message)),
                    LogOutput::StdIn { .. } => {}
                }
            }
        }
        result.exit_code = self.exit_code(&id).await?;
        Ok(result)
    }

    async fn cp_in(&self, host: &Path, guest: &str) -> Result<()> {
        let packed = self.handle.pack_in(self, host, guest).await?;
        let options = UploadToContainerOptions { path: packed.parent, ..Default::default() };
        self.docker
            .upload_to_container(&self.container, Some(options), bollard::body_full(packed.tar.into()))
            .await
            .map_err(|e| self.err(failed("copy files into the bottle")(e)))
    }

    async fn cp_out(&self, guest: &str, host: &Path, limit: ByteSize) -> Result<CopyOut> {
        // Measured first: a tree over the limit is not even streamed.
        if let Some(answer) = self.handle.measure_out(self, guest, limit).await? {
            return Ok(answer);
        }
        let (_, name) = split_guest_path(guest)?;
        // Streamed to a file beside `host`, cut off past the allowance (the
        // tree may grow between the measure and the copy), then unpacked.
        let parent = host.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        let spool = tempfile::NamedTempFile::new_in(parent)
            .map_err(|e| Error::io(format!("creating a file in {}", parent.display()), e))?;
        let mut file = tokio::fs::File::from_std(
            spool.reopen().map_err(|e| Error::io(format!("opening {}", spool.path().display()), e))?,
        );
        let options = DownloadFromContainerOptions { path: guest.to_string() };
        let mut stream = self.docker.download_from_container(&self.container, Some(options));
        let (allowance, mut spooled) = (bottle_core::backend::tar_allowance(limit), 0u64);
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) if is_not_found(&e) => return Ok(CopyOut::Missing),
                Err(e) => return Err(self.err(failed("copy files out of the bottle")(e))),
            };
            spooled += chunk.len() as u64;
            if spooled > allowance {
                return Ok(CopyOut::TooLarge { limit });
            }
            file.write_all(&chunk).await.map_err(|e| Error::io(format!("writing {}", spool.path().display()), e))?;
        }
        file.flush().await.map_err(|e| Error::io(format!("writing {}", spool.path().display()), e))?;
        drop(file);
        let (name, host) = (name.to_string(), host.to_path_buf());
        tokio::task::spawn_blocking(move || {
            let tar = std::fs::File::open(spool.path()).map_err(|e| Error::io("reading the copy", e))?;
            bottle_core::backend::unpack_bounded(std::io::BufReader::new(tar), &name, &host, limit)
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("unpacking {guest}: {e}")))?
        .map_err(|e| self.err(e))
    }

    async fn exec_attached(&self, argv: &[String], user: GuestUser) -> Result<i32> {
        let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
        let (id, started) =
            self.start(argv.to_vec(), &self.handle.user_name(user), tty, true, Some(self.handle.workdir())).await?;
        let StartExecResults::Attached { mut output, mut input } = started else {
            return Err(self.err(Error::new(ErrorKind::Backend, "the engine detached an attached exec")));
        };
        let _raw = if tty { Some(bottle_core::backend::RawMode::enable()?) } else { None };
        if tty {
            resize(&self.docker, &id).await;
        }
        let winch = tty.then(|| {
            let (docker, id) = (self.docker.clone(), id.clone());
            tokio::spawn(async move {
                let Ok(mut sig) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()) else {
                    return;
                };
                while sig.recv().await.is_some() {
                    resize(&docker, &id).await;
                }
            })
        });
        let pump = tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 8192];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if input.write_all(&buf[..n]).await.is_err() || input.flush().await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = input.shutdown().await;
        });
        let (mut stdout, mut stderr) = (tokio::io::stdout(), tokio::io::stderr());
        while let Some(chunk) = output.next().await {
            let Ok(chunk) = chunk else { break };
            let written = match chunk {
                LogOutput::StdErr { message } => stderr.write_all(&message).await.and(stderr.flush().await),
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    stdout.write_all(&message).await.and(stdout.flush().await)
                }
                LogOutput::StdIn { .. } => Ok(()),
            };
            if written.is_err() {
                break;
            }
        }
        pump.abort();
        if let Some(winch) = winch {
            winch.abort();
        }
        let code = self.exit_code(&id).await?;
        Ok(i32::try_from(code).unwrap_or(1))
    }

    /// `docker exec -it` (the docker CLI reads the same `DOCKER_HOST`).
    fn host_argv(&self, argv: &[String], user: GuestUser) -> Option<Vec<String>> {
        let head = ["docker", "exec", "-it", "-u", &self.handle.user_name(user), "-w", self.handle.workdir()];
        Some(head.iter().map(|s| s.to_string()).chain([self.container.clone()]).chain(argv.iter().cloned()).collect())
    }

    async fn sidecar_log(
        &self,
        sidecar: bottle_core::Sidecar,
        follow: bool,
        sink: &mut (dyn std::io::Write + Send),
    ) -> Result<()> {
        let name = crate::sidecar::container_name(self.handle.slug(), sidecar.into());
        crate::sidecar::audit_log(&self.docker, &name, follow, sink).await.map_err(|e| self.err(e))
    }

    async fn close(&self) -> Result<()> {
        if !self.handle.close_once() {
            return Ok(());
        }
        crate::cleanup::remove_slug(&self.docker, self.handle.slug()).await
    }
}

async fn resize(docker: &Docker, exec_id: &str) {
    if let Some((width, height)) = bottle_core::backend::window_size() {
        let _ = docker.resize_exec(exec_id, ResizeExecOptions { width, height }).await;
    }
}
