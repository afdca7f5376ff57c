//! The agent image for smolvm: built from the provider's recipe by the Docker
//! CLI (the same content-hashed tag as the Docker backend, so either backend
//! reuses the other's build), then `docker save`d into an archive that
//! `machine create --image` boots. Archives are cached by image id under
//! `$XDG_CACHE_HOME/bot-bottle/smolvm-images/`, so an unchanged image is
//! saved once. Without a terminal the build says on stderr which step it
//! runs, at least every 10 s.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use bottle_core::backend::{BuildContext, BuildProgress, DOCKERFILE_IN_CONTEXT};
use bottle_core::{Error, ErrorKind, Result};
use tokio::io::AsyncWriteExt;

/// What a user without Docker is told.
const NEEDS_DOCKER: &str = "smolvm boots the agent image from a `docker save` archive, and bot-bottle builds it \
with Docker, which is not available here; install and start Docker (`sudo apt-get install -y docker.io && sudo \
dockerd &`, or Docker Desktop on macOS), or name a prebuilt `docker save` archive in the manifest as \
`agent_provider.image_archive`";

/// Where archives are cached: `$XDG_CACHE_HOME/bot-bottle/smolvm-images`, or under `$HOME/.cache`.
pub(crate) fn cache_dir(env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf> {
    let base = match env("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = env("HOME").filter(|v| !v.is_empty()).ok_or_else(|| {
                Error::new(ErrorKind::MissingHostEnv, "neither XDG_CACHE_HOME nor HOME is set; set one of them")
            })?;
            Path::new(&home).join(".cache")
        }
    };
    Ok(base.join("bot-bottle/smolvm-images"))
}

/// The archive of image `id` (`sha256:…`) in `cache`.
pub(crate) fn archive_path(cache: &Path, id: &str) -> PathBuf {
    cache.join(format!("{}.tar", id.trim_start_matches("sha256:")))
}

fn docker(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("docker");
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    cmd
}

fn failed(what: &str, detail: &str) -> Error {
    Error::new(ErrorKind::Backend, format!("{what} failed: {}", detail.trim()))
        .with_operation("prepare the agent image")
        .with_backend(crate::NAME)
}

/// `Ok` when the Docker CLI reaches an engine.
pub(crate) async fn require_docker() -> Result<()> {
    let out = docker(&["version", "--format", "{{.Server.Version}}"]).output().await;
    match out {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(Error::new(
            ErrorKind::Unavailable,
            format!("{NEEDS_DOCKER} (`docker version`: {})", String::from_utf8_lossy(&out.stderr).trim()),
        )
        .with_backend(crate::NAME)),
        Err(e) => {
            Err(Error::new(ErrorKind::Unavailable, format!("{NEEDS_DOCKER} (`docker`: {e})")).with_backend(crate::NAME))
        }
    }
}

/// The id of image `tag`, `None` when the engine does not have it.
pub(crate) async fn image_id(tag: &str) -> Result<Option<String>> {
    let out = docker(&["image", "inspect", "--format", "{{.Id}}", tag])
        .output()
        .await
        .map_err(|e| Error::io("running docker image inspect", e))?;
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok((out.status.success() && !id.is_empty()).then_some(id))
}

/// Build `context` under its tag and return the image id. Its output goes
/// to the terminal when there is one; without one, a line per build step
/// and one at least every 10 s while a step runs go to stderr
/// ([`BuildProgress`]).
pub(crate) async fn build(context: &BuildContext) -> Result<String> {
    let tar = context.packed().await?;
    let terminal = std::io::stderr().is_terminal();
    let mut cmd = docker(&[
        "build",
        "--tag",
        &context.tag,
        "--file",
        DOCKERFILE_IN_CONTEXT,
        "--label",
        "dev.bot-bottle.image=true",
        "-",
    ]);
    cmd.stdin(Stdio::piped());
    if terminal {
        // docker build writes its progress to stdout; ours is for the slug.
        cmd.stdout(std::io::stderr()).stderr(Stdio::inherit());
    } else {
        // BuildKit's steps as lines (`#7 [2/4] RUN …`); the classic builder ignores it.
        cmd.env("BUILDKIT_PROGRESS", "plain");
    }
    let mut child = cmd.spawn().map_err(|e| Error::io("running docker build", e))?;
    let mut stdin = child.stdin.take().ok_or_else(|| failed("docker build", "no stdin"))?;
    let feed = tokio::spawn(async move {
        let written = stdin.write_all(&tar).await;
        drop(stdin);
        written
    });
    let (status, tail) = if terminal {
        let out = child.wait_with_output().await.map_err(|e| Error::io("running docker build", e))?;
        let mut log = String::from_utf8_lossy(&out.stdout).into_owned();
        log.push_str(&String::from_utf8_lossy(&out.stderr));
        let tail: Vec<String> = log.lines().rev().take(TAIL_LINES).map(str::to_string).collect();
        (out.status, tail.into_iter().rev().collect())
    } else {
        follow(&mut child, &context.tag).await?
    };
    let _ = feed.await;
    if !status.success() {
        return Err(failed(
            &format!("building image {}", context.tag),
            &format!(
                "{status}\n--- last build output ---\n{}\nFix the Dockerfile, or for a TLS error behind a proxy make \
                 sure SSL_CERT_FILE names the proxy's CA bundle",
                tail.join("\n")
            ),
        ));
    }
    image_id(&context.tag).await?.ok_or_else(|| {
        failed(&format!("building image {}", context.tag), "the engine does not have the image after the build")
    })
}

/// How many of a failed build's last output lines its error shows.
const TAIL_LINES: usize = 15;

/// `docker build`'s output read line by line (stdout and stderr), with the
/// progress lines on stderr; its exit status and last output lines.
async fn follow(child: &mut tokio::process::Child, tag: &str) -> Result<(std::process::ExitStatus, Vec<String>)> {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let read_failed = |e| Error::io("reading docker build's output", e);
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(failed("docker build", "no output to read"));
    };
    let (mut out, mut err) = (BufReader::new(stdout).lines(), BufReader::new(stderr).lines());
    let (mut out_open, mut err_open) = (true, true);
    let mut progress = BuildProgress::new(tag);
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + BuildProgress::INTERVAL, BuildProgress::INTERVAL);
    let mut tail = std::collections::VecDeque::with_capacity(TAIL_LINES + 1);
    while out_open || err_open {
        let (from_out, line) = tokio::select! {
            line = out.next_line(), if out_open => (true, line),
            line = err.next_line(), if err_open => (false, line),
            _ = ticker.tick() => {
                eprintln!("{}", progress.still_running(Instant::now()));
                continue;
            }
        };
        match line.map_err(read_failed)? {
            Some(line) => {
                if let Some(step) = progress.line(&line, Instant::now()) {
                    eprintln!("{step}");
                    ticker.reset();
                }
                tail.push_back(line);
                if tail.len() > TAIL_LINES {
                    tail.pop_front();
                }
            }
            None if from_out => out_open = false,
            None => err_open = false,
        }
    }
    let status = child.wait().await.map_err(|e| Error::io("running docker build", e))?;
    if status.success() {
        eprintln!("{}", progress.done(Instant::now()));
    }
    Ok((status, tail.into()))
}

/// The archive of image `tag` (id `id`) in `cache`, saved there first unless it already is.
pub(crate) async fn archive(tag: &str, id: &str, cache: &Path) -> Result<PathBuf> {
    let path = archive_path(cache, id);
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(cache).map_err(|e| Error::io(format!("creating {}", cache.display()), e))?;
    let partial = tempfile::Builder::new()
        .prefix(".saving-")
        .suffix(".tar")
        .tempfile_in(cache)
        .map_err(|e| Error::io(format!("creating a file in {}", cache.display()), e))?;
    let target = partial.path().display().to_string();
    let out =
        docker(&["save", "--output", &target, tag]).output().await.map_err(|e| Error::io("running docker save", e))?;
    if !out.status.success() {
        return Err(failed(&format!("saving image {tag}"), &String::from_utf8_lossy(&out.stderr)));
    }
    partial.persist(&path).map_err(|e| Error::io(format!("storing {}", path.display()), e.error))?;
    Ok(path)
}
