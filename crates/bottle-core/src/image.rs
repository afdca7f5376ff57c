//! An image's build context, shared by every backend that builds images: a
//! tar holding the Dockerfile, the host CA bundle (or an empty stand-in), the
//! recipe's extra files and the override's folder when there is one; and a
//! tag derived from the context's content hash, so an unchanged image is
//! never rebuilt.
//!
//! Hashing the context is the costly part of a start (the sidecar image's
//! context holds the `bottle` executable and its libraries). So the tag is
//! also remembered under a cheap key ([`recipe_key`]: the recipe's texts
//! and each file's path, size, modification time and inode) in the
//! operator's cache folder; while no file changes, the tag comes from there
//! and the tar is packed only when an image has to be built.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::plan::{ContextSource, HOST_CA_CONTEXT_FILE, ImageRecipe};
use crate::{Error, Result};

/// Name of the Dockerfile inside the context we send.
pub const DOCKERFILE_IN_CONTEXT: &str = "bot-bottle.Dockerfile";

/// The variable naming the folder the tags of build contexts are remembered
/// in (by default `$XDG_CACHE_HOME/bot-bottle/contexts`, or
/// `~/.cache/bot-bottle/contexts`).
pub(crate) const CONTEXT_CACHE_ENV: &str = "BOT_BOTTLE_CONTEXT_CACHE";

/// A build context ready to send, and the tag its content hashes to.
#[derive(Clone)]
pub struct BuildContext {
    /// `<recipe repository>:<12 hex digits of the context's SHA-256>`.
    pub tag: String,
    content: Content,
}

/// What a [`BuildContext`] sends: the tar packed already, or the recipe to
/// pack it from when asked (its tag came from the cache), or nothing (a
/// prebuilt image).
#[derive(Clone)]
enum Content {
    Packed(Vec<u8>),
    Recipe(Box<ImageRecipe>),
    Nothing,
}

impl std::fmt::Debug for BuildContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let content = match &self.content {
            Content::Packed(tar) => format!("{} bytes", tar.len()),
            Content::Recipe(_) => "packed when built".to_string(),
            Content::Nothing => "none".to_string(),
        };
        f.debug_struct("BuildContext").field("tag", &self.tag).field("tar", &content).finish()
    }
}

impl BuildContext {
    /// A context of nothing under `tag`: an image that is never built from it.
    pub fn prebuilt(tag: impl Into<String>) -> Self {
        BuildContext { tag: tag.into(), content: Content::Nothing }
    }

    /// The tar to send (blocking file I/O when it was not packed yet: call
    /// it off the async runtime, or use [`BuildContext::packed`]).
    pub fn tar(&self) -> Result<Vec<u8>> {
        match &self.content {
            Content::Packed(tar) => Ok(tar.clone()),
            Content::Recipe(recipe) => Ok(pack(recipe)?.0),
            Content::Nothing => Ok(Vec::new()),
        }
    }

    /// [`BuildContext::tar`] on a blocking thread, for async callers.
    pub async fn packed(&self) -> Result<Vec<u8>> {
        if let Content::Packed(tar) = &self.content {
            return Ok(tar.clone());
        }
        let context = self.clone();
        crate::blocking::unblock(move || context.tar()).await.map_err(|_| {
            Error::new(crate::ErrorKind::Io, format!("packing the build context of {} failed", self.tag))
        })?
    }
}

/// [`build_context`] on a blocking thread, for async callers; `what` names
/// the image in an error (`agent`, `sidecar`). The tag comes from the cache
/// when the recipe's files are unchanged since it was last hashed.
pub async fn pack_context(recipe: ImageRecipe, what: &str) -> Result<BuildContext> {
    crate::blocking::unblock(move || cached_context(&recipe, cache_dir().as_deref()))
        .await
        .map_err(|_| Error::new(crate::ErrorKind::Io, format!("packing the {what} image's build context failed")))?
}

/// The folder build contexts' tags are remembered in, when there is one.
fn cache_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var(CONTEXT_CACHE_ENV) {
        return Some(dir);
    }
    let base = var("XDG_CACHE_HOME").filter(|d| d.is_absolute()).or_else(|| var("HOME").map(|h| h.join(".cache")))?;
    Some(base.join("bot-bottle/contexts"))
}

/// The context of `recipe`, its tag remembered in `cache` (when given)
/// under [`recipe_key`]: a hit packs nothing.
pub(crate) fn cached_context(recipe: &ImageRecipe, cache: Option<&Path>) -> Result<BuildContext> {
    let key = cache.and_then(|dir| recipe_key(recipe).map(|key| dir.join(key)));
    if let Some(path) = &key
        && let Ok(tag) = std::fs::read_to_string(path)
        && tag.starts_with(&format!("{}:", recipe.repository))
    {
        return Ok(BuildContext { tag, content: Content::Recipe(Box::new(recipe.clone())) });
    }
    let context = build_context(recipe)?;
    if let Some(path) = key {
        // A cache that cannot be written only costs the next start a hash.
        let _ = remember(&path, &context.tag);
    }
    Ok(context)
}

/// Write `tag` to `path` atomically (a temporary file, then a rename).
fn remember(path: &Path, tag: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(tmp.path(), tag)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A cheap key for what `recipe` packs: its texts, and for each file its
/// path, size, modification time, inode and device (never its content);
/// 64 hex digits. `None` when a file cannot be looked at (then the context
/// is hashed, and that error reported).
pub(crate) fn recipe_key(recipe: &ImageRecipe) -> Option<String> {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    let stat = |path: &Path| -> Option<String> {
        let m = std::fs::metadata(path).ok()?;
        Some(format!("{}:{}:{}:{}:{}:{}", path.display(), m.len(), m.mtime(), m.mtime_nsec(), m.ino(), m.dev()))
    };
    field(b"bot-bottle context key 1");
    field(recipe.repository.as_bytes());
    field(recipe.dockerfile.as_bytes());
    if let Some(dir) = &recipe.context_dir {
        let mut entries = Vec::new();
        collect(dir, dir, &mut entries).ok()?;
        entries.sort();
        field(dir.display().to_string().as_bytes());
        for rel in entries {
            let m = std::fs::symlink_metadata(dir.join(&rel)).ok()?;
            field(
                format!("{}:{}:{}:{}:{}:{}", rel.display(), m.len(), m.mtime(), m.mtime_nsec(), m.ino(), m.mode())
                    .as_bytes(),
            );
        }
    }
    field(recipe.host_ca_bundle.as_deref().map_or(Some(String::new()), stat)?.as_bytes());
    for file in &recipe.extra_files {
        field(file.name.as_bytes());
        field(&file.mode.to_le_bytes());
        match &file.source {
            ContextSource::File(path) => field(stat(path)?.as_bytes()),
            ContextSource::Bytes(data) => field(data),
        }
    }
    Some(hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Make the context of `recipe` (blocking file I/O: call it off the async runtime).
pub fn build_context(recipe: &ImageRecipe) -> Result<BuildContext> {
    let (tar, tag) = pack(recipe)?;
    Ok(BuildContext { tag, content: Content::Packed(tar) })
}

/// The tar of `recipe`'s context and the tag it hashes to.
fn pack(recipe: &ImageRecipe) -> Result<(Vec<u8>, String)> {
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
    Ok((tar, format!("{}:{hex}", recipe.repository)))
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
        assert_eq!(names(&none.tar().expect("tar")), [DOCKERFILE_IN_CONTEXT, HOST_CA_CONTEXT_FILE]);
    }

    #[test]
    fn an_override_folder_is_the_context() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("files/.git")).expect("mkdir");
        std::fs::write(tmp.path().join("files/setup.sh"), "echo hi").expect("write");
        std::fs::write(tmp.path().join("files/.git/HEAD"), "x").expect("write");
        let ctx = build_context(&recipe(None, Some(tmp.path().to_path_buf()))).expect("context");
        assert_eq!(names(&ctx.tar().expect("tar")), ["files/setup.sh", DOCKERFILE_IN_CONTEXT, HOST_CA_CONTEXT_FILE]);
    }

    #[test]
    fn a_cached_tag_is_used_while_no_file_changes_and_a_changed_file_is_hashed_again() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = tmp.path().join("cache");
        let file = tmp.path().join("bottle");
        std::fs::write(&file, "program 1").expect("write");
        let mut with_file = recipe(None, None);
        with_file.extra_files.push(crate::plan::ContextFile {
            name: "b/bottle".into(),
            source: ContextSource::File(file.clone()),
            mode: 0o755,
        });
        let first = cached_context(&with_file, Some(&cache)).expect("context");
        assert!(matches!(first.content, Content::Packed(_)), "a miss packs and hashes");
        let hit = cached_context(&with_file, Some(&cache)).expect("context");
        assert_eq!(hit.tag, first.tag);
        assert!(matches!(hit.content, Content::Recipe(_)), "a hit packs nothing");
        assert_eq!(hit.tar().expect("tar"), first.tar().expect("tar"), "packed on demand, the same tar");
        // A changed file (another size and mtime) is a new key: hashed again, a new tag.
        std::fs::write(&file, "program two").expect("write");
        let changed = cached_context(&with_file, Some(&cache)).expect("context");
        assert!(matches!(changed.content, Content::Packed(_)));
        assert_ne!(changed.tag, first.tag);
        // A cache entry of another repository is never believed.
        let key = recipe_key(&with_file).expect("key");
        std::fs::write(cache.join(&key), "other/repo:000000000000").expect("write");
        assert_eq!(cached_context(&with_file, Some(&cache)).expect("context").tag, changed.tag);
    }
}
