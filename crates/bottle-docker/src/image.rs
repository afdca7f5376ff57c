//! Images on the engine: whether a tag exists, and the build of a context
//! ([`bottle_core::backend::build_context`]: the tag is the context's content hash, so
//! an unchanged image is never rebuilt) with a progress line on a terminal,
//! and without one a line per build step on stderr and one at least every
//! 10 s while a step runs ([`BuildProgress`]).

use std::io::IsTerminal;
use std::time::Instant;

use bollard::Docker;
use bollard::query_parameters::BuildImageOptions;
use bottle_core::backend::{BuildContext, BuildProgress, DOCKERFILE_IN_CONTEXT};
use bottle_core::{Error, ErrorKind, Result};
use futures_util::StreamExt;

use crate::engine::{failed, is_not_found};

/// Whether the engine has `tag` already.
pub(crate) async fn exists(docker: &Docker, tag: &str) -> Result<bool> {
    match docker.inspect_image(tag).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(failed("inspect an image")(e)),
    }
}

/// Build `context` under its tag, showing progress on a terminal.
pub(crate) async fn build(docker: &Docker, context: &BuildContext) -> Result<()> {
    let options = BuildImageOptions {
        dockerfile: DOCKERFILE_IN_CONTEXT.to_string(),
        t: Some(context.tag.clone()),
        rm: true,
        forcerm: true,
        labels: Some([("dev.bot-bottle.image".to_string(), "true".to_string())].into()),
        ..Default::default()
    };
    let terminal = std::io::stderr().is_terminal();
    let progress = terminal.then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar.set_message(format!("building {}", context.tag));
        bar
    });
    // Without a terminal: a line per step, and one at least every 10 s while a step runs.
    let mut lines = (!terminal).then(|| {
        let start = tokio::time::Instant::now() + BuildProgress::INTERVAL;
        (BuildProgress::new(&context.tag), tokio::time::interval_at(start, BuildProgress::INTERVAL))
    });
    let tar = context.packed().await?;
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(tar.into())));
    let mut tail: Vec<String> = Vec::new();
    let mut result = Ok(());
    loop {
        let item = match &mut lines {
            None => stream.next().await,
            Some((quiet, ticker)) => tokio::select! {
                item = stream.next() => item,
                _ = ticker.tick() => {
                    eprintln!("{}", quiet.still_running(Instant::now()));
                    continue;
                }
            },
        };
        let Some(item) = item else { break };
        match item {
            Ok(info) => {
                if let Some(error) = info.error_detail.and_then(|d| d.message).or(info.error) {
                    result = Err(error);
                    break;
                }
                for line in info.stream.iter().flat_map(|s| s.lines()).map(str::trim).filter(|l| !l.is_empty()) {
                    if let (Some(bar), true) = (&progress, line.starts_with("Step ")) {
                        bar.set_message(format!("building {}: {line}", context.tag));
                    }
                    if let Some((quiet, ticker)) = &mut lines
                        && let Some(step) = quiet.line(line, Instant::now())
                    {
                        eprintln!("{step}");
                        ticker.reset();
                    }
                    tail.push(line.to_string());
                    if tail.len() > 15 {
                        tail.remove(0);
                    }
                }
            }
            Err(e) => {
                result = Err(match &e {
                    bollard::errors::Error::DockerStreamError { error } => error.clone(),
                    other => other.to_string(),
                });
                break;
            }
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if let (Some((quiet, _)), Ok(())) = (&lines, &result) {
        eprintln!("{}", quiet.done(Instant::now()));
    }
    result.map_err(|error| {
        Error::new(
            ErrorKind::Backend,
            format!(
                "building image {} failed: {error}\n--- last build output ---\n{}\nFix the Dockerfile, or for a TLS error behind a proxy make sure SSL_CERT_FILE names the proxy's CA bundle",
                context.tag,
                tail.join("\n")
            ),
        )
        .with_operation("build the agent image")
        .with_backend(crate::NAME)
    })
}
