//! `bottle image push`: a bottle's images as the Docker backend builds them
//! (the same content-hashed tags, built with the Docker CLI when the
//! engine lacks them), tagged under the manifest's registry and pushed
//! there for the cluster to pull.

use std::process::Stdio;

use tokio::io::AsyncWriteExt as _;

use bottle_core::backend::{BuildContext, DOCKERFILE_IN_CONTEXT};
use bottle_core::{Error, ErrorKind, Result};

use crate::plan::image_ref;
use crate::wait::registry_of;

/// `docker ARGS`, its output captured.
fn docker(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("docker");
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    cmd
}

/// The last line of `bytes` that says something.
fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().trim().to_string()
}

/// Runs `cmd` (`what` names it), failing with its last line of stderr.
async fn run(mut cmd: tokio::process::Command, what: &str, stdin: Option<&[u8]>) -> Result<()> {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| {
        Error::new(ErrorKind::Unavailable, format!("cannot run docker for {what} ({e}); install and start Docker"))
    })?;
    if let (Some(bytes), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(bytes).await.map_err(|e| Error::io(format!("sending the build context to {what}"), e))?;
    }
    let out = child.wait_with_output().await.map_err(|e| Error::io(format!("running {what}"), e))?;
    if out.status.success() {
        return Ok(());
    }
    let why = last_line(&out.stderr);
    Err(Error::new(ErrorKind::Backend, format!("{what} failed: {why}")))
}

/// `context`'s image, built with the Docker CLI when the engine lacks it.
pub(crate) async fn build_if_missing(context: &BuildContext) -> Result<()> {
    let present = docker(&["image", "inspect", "--format", "{{.Id}}", &context.tag])
        .output()
        .await
        .is_ok_and(|out| out.status.success());
    if !present {
        let build = docker(&["build", "--tag", &context.tag, "--file", DOCKERFILE_IN_CONTEXT, "-"]);
        let tar = context.packed().await?;
        run(build, &format!("building {}", context.tag), Some(&tar)).await?;
    }
    Ok(())
}

/// `context`'s image, built when the engine lacks it, pushed as `<registry>/<tag>`; that reference.
pub(crate) async fn push(context: &BuildContext, registry: &str) -> Result<String> {
    let target = image_ref(Some(registry), &context.tag);
    build_if_missing(context).await?;
    run(docker(&["tag", &context.tag, &target]), &format!("tagging {target}"), None).await?;
    run(docker(&["push", &target]), &format!("pushing {target}"), None).await.map_err(|e| {
        Error::new(
            ErrorKind::Backend,
            format!(
                "{}; check that registry {} answers and that you are logged in (`docker login {}`)",
                e.message(),
                registry_of(&target),
                registry_of(&target)
            ),
        )
    })?;
    Ok(target)
}
