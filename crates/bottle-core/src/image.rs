//! An image's build context, shared by every backend that builds images: a
//! tar holding the Dockerfile, the host CA bundle (or an empty stand-in), the
//! recipe's extra files and the override's folder when there is one; and a
//! tag derived from the context's content hash, so an unchanged image is
//! never rebuilt.

use sha2::{Digest, Sha256};

use crate::plan::{ContextSource, HOST_CA_CONTEXT_FILE, ImageRecipe};
use crate::{Error, Result};

/// Name of the Dockerfile inside the context we send.
pub const DOCKERFILE_IN_CONTEXT: &str = "bot-bottle.Dockerfile";

/// A build context ready to send, and the tag its content hashes to.
#[derive(Clone)]
pub struct BuildContext {
    /// `<recipe repository>:<12 hex digits of the context's SHA-256>`.
    pub tag: String,
    /// The context itself, a tar.
    pub tar: Vec<u8>,
}

impl std::fmt::Debug for BuildContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildContext").field("tag", &self.tag).field("tar_bytes", &self.tar.len()).finish()
    }
}

/// [`build_context`] on a blocking thread, for async callers; `what` names
/// the image in an error (`agent`, `sidecar`).
pub async fn pack_context(recipe: ImageRecipe, what: &str) -> Result<BuildContext> {
    crate::blocking::unblock(move || build_context(&recipe))
        .await
        .map_err(|_| Error::new(crate::ErrorKind::Io, format!("packing the {what} image's build context failed")))?
}

/// Make the context of `recipe` (blocking file I/O: call it off the async runtime).
pub fn build_context(recipe: &ImageRecipe) -> Result<BuildContext> {
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
    for file in &recipe.extra_files {
        match &file.source {
            ContextSource::File(path) => {
                let data = std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
                append(&file.name, &data, file.mode)?;
            }
            ContextSource::Bytes(data) => append(&file.name, data, file.mode)?,
        }
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
            prebuilt_archive: None,
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
        let a = build_context(&recipe(Some(ca.clone()), None)).expect("context");
        let again = build_context(&recipe(Some(ca.clone()), None)).expect("context");
        assert_eq!(a.tag, again.tag, "same content, same tag");
        assert!(a.tag.starts_with("bot-bottle/test:"));
        std::fs::write(&ca, "CERT B").expect("write");
        assert_ne!(
            build_context(&recipe(Some(ca), None)).expect("context").tag,
            a.tag,
            "the CA bundle is part of the image"
        );
        let none = build_context(&recipe(None, None)).expect("context");
        assert_ne!(none.tag, a.tag);
        assert_eq!(names(&none.tar), [DOCKERFILE_IN_CONTEXT, HOST_CA_CONTEXT_FILE]);
    }

    #[test]
    fn an_override_folder_is_the_context() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("files/.git")).expect("mkdir");
        std::fs::write(tmp.path().join("files/setup.sh"), "echo hi").expect("write");
        std::fs::write(tmp.path().join("files/.git/HEAD"), "x").expect("write");
        let ctx = build_context(&recipe(None, Some(tmp.path().to_path_buf()))).expect("context");
        assert_eq!(names(&ctx.tar), ["files/setup.sh", DOCKERFILE_IN_CONTEXT, HOST_CA_CONTEXT_FILE]);
    }
}
