//! The agent image: its build context as a tar (the Dockerfile, the host CA
//! bundle or an empty stand-in, and the override's folder when there is one),
//! a tag derived from the context's content hash so an unchanged image is
//! never rebuilt, and the build itself with a progress line on a terminal.

use std::io::IsTerminal;

use bollard::Docker;
use bollard::query_parameters::BuildImageOptions;
use bottle_core::{Error, ErrorKind, HOST_CA_CONTEXT_FILE, ImageRecipe, Result};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::engine::{failed, is_not_found};

/// Name of the Dockerfile inside the context we send.
const DOCKERFILE_IN_CONTEXT: &str = "bot-bottle.Dockerfile";

/// A build context ready to send, and the tag its content hashes to.
pub(crate) struct BuildContext {
    pub(crate) tag: String,
    pub(crate) tar: Vec<u8>,
}

/// Make the context of `recipe` (blocking file I/O; call from `spawn_blocking`).
pub(crate) fn context(recipe: &ImageRecipe) -> Result<BuildContext> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    if let Some(dir) = &recipe.context_dir {
        let mut entries = Vec::new();
        collect(dir, dir, &mut entries)
            .map_err(|e| Error::io(format!("reading build context {}", dir.display()), e))?;
        entries.sort();
        for rel in entries {
            builder
                .append_path_with_name(dir.join(&rel), &rel)
                .map_err(|e| Error::io(format!("adding {} to the build context", rel.display()), e))?;
        }
    }
    let ca = match &recipe.host_ca_bundle {
        Some(path) => {
            std::fs::read(path).map_err(|e| Error::io(format!("reading host CA bundle {}", path.display()), e))?
        }
        None => Vec::new(),
    };
    let mut append = |name: &str, data: &[u8], mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, name, data).map_err(|e| Error::io("writing the build context", e))
    };
    append(DOCKERFILE_IN_CONTEXT, recipe.dockerfile.as_bytes(), 0o644)?;
    append(HOST_CA_CONTEXT_FILE, &ca, 0o644)?;
    for (name, path) in &recipe.extra_files {
        let data = std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        append(name, &data, 0o755)?;
    }
    let tar = builder.into_inner().map_err(|e| Error::io("finishing the build context", e))?;
    let digest = Sha256::digest(&tar);
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    Ok(BuildContext { tag: format!("{}:{hex}", recipe.repository), tar })
}

/// Files below `dir` (relative paths), skipping `.git` and the names we add ourselves.
fn collect(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        let name = entry.file_name();
        if name == ".git" || name == DOCKERFILE_IN_CONTEXT || name == HOST_CA_CONTEXT_FILE {
            continue;
        }
        if entry.file_type()?.is_dir() {
            collect(root, &path, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

/// Whether the engine has `tag` already.
pub(crate) async fn exists(docker: &Docker, tag: &str) -> Result<bool> {
    match docker.inspect_image(tag).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(failed("inspect an image")(e)),
    }
}

/// Build `context` under its tag, showing progress on a terminal.
pub(crate) async fn build(docker: &Docker, context: BuildContext) -> Result<()> {
    let options = BuildImageOptions {
        dockerfile: DOCKERFILE_IN_CONTEXT.to_string(),
        t: Some(context.tag.clone()),
        rm: true,
        forcerm: true,
        labels: Some([("dev.bot-bottle.image".to_string(), "true".to_string())].into()),
        ..Default::default()
    };
    let progress = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar.set_message(format!("building {}", context.tag));
        bar
    });
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.tar.into())));
    let mut tail: Vec<String> = Vec::new();
    let mut result = Ok(());
    while let Some(item) = stream.next().await {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(ca: Option<std::path::PathBuf>, dir: Option<std::path::PathBuf>) -> ImageRecipe {
        ImageRecipe {
            repository: "bot-bottle/test".into(),
            dockerfile: "FROM scratch\n".into(),
            dockerfile_origin: "test".into(),
            context_dir: dir,
            host_ca_bundle: ca,
            extra_files: Vec::new(),
        }
    }

    fn names(tar: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(tar);
        let entries = archive.entries().expect("entries");
        entries.map(|e| e.expect("entry").path().expect("path").display().to_string()).collect()
    }

    #[test]
    fn the_tag_follows_the_content_and_nothing_else() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = tmp.path().join("ca.pem");
        std::fs::write(&ca, "CERT A").expect("write");
        let a = context(&recipe(Some(ca.clone()), None)).expect("context");
        let again = context(&recipe(Some(ca.clone()), None)).expect("context");
        assert_eq!(a.tag, again.tag, "same content, same tag");
        assert!(a.tag.starts_with("bot-bottle/test:"));
        std::fs::write(&ca, "CERT B").expect("write");
        assert_ne!(context(&recipe(Some(ca), None)).expect("context").tag, a.tag, "the CA bundle is part of the image");
        let none = context(&recipe(None, None)).expect("context");
        assert_ne!(none.tag, a.tag);
        assert_eq!(names(&none.tar), [DOCKERFILE_IN_CONTEXT, HOST_CA_CONTEXT_FILE]);
    }

    #[test]
    fn an_override_folder_is_the_context() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("files/.git")).expect("mkdir");
        std::fs::write(tmp.path().join("files/setup.sh"), "echo hi").expect("write");
        std::fs::write(tmp.path().join("files/.git/HEAD"), "x").expect("write");
        let ctx = context(&recipe(None, Some(tmp.path().to_path_buf()))).expect("context");
        assert_eq!(names(&ctx.tar), ["files/setup.sh", DOCKERFILE_IN_CONTEXT, HOST_CA_CONTEXT_FILE]);
    }
}
