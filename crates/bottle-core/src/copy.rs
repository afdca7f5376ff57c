//! Copying trees between the host and a bottle, for backends whose engine
//! moves files as tar archives: pack a host tree owned by the agent, split a
//! guest path, and unpack a tree that came out of a bottle — which is
//! hostile input: it is streamed (never whole in memory), bounded in size,
//! and only regular files and folders come out, owner-only (0700 folders,
//! files with the owner's bits only: no setuid, setgid or sticky bit), with
//! their modification times; links, devices and FIFOs stay behind, and no
//! path leaves the tree.

use std::io::Read;
use std::path::{Component, Path};

use crate::resources::ByteSize;
use crate::{Error, ErrorKind, Result};

/// What a bounded copy out of a bottle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyOut {
    /// The guest path does not exist.
    Missing,
    /// The tree is on the host: `bytes` of file content; `skipped` names what
    /// stayed behind (links, devices, FIFOs), if anything.
    Copied {
        /// File content copied.
        bytes: u64,
        /// Entries left behind, as `path (kind)`.
        skipped: Vec<String>,
    },
    /// Nothing of it may come out (it is a link, a device, a FIFO): nothing
    /// is on the host; `skipped` says what it was.
    NothingKept {
        /// What stayed behind, as `path (kind)`.
        skipped: Vec<String>,
    },
    /// The tree is larger than the limit: nothing of it was kept.
    TooLarge {
        /// The limit it is over.
        limit: ByteSize,
    },
}

/// Pack `host` (file, directory or symlink) as a tar holding `name`, every
/// entry owned by `uid`/`gid`, with its mode and modification time (builds
/// that compare times see the files as they were): what a backend unpacks
/// in the guest.
pub fn pack_tree(host: &Path, name: &str, uid: u64, gid: u64) -> std::io::Result<Vec<u8>> {
    fn add(b: &mut tar::Builder<Vec<u8>>, path: &Path, name: &str, uid: u64, gid: u64) -> std::io::Result<()> {
        let meta = std::fs::symlink_metadata(path)?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        header.set_uid(uid);
        header.set_gid(gid);
        if meta.is_dir() {
            header.set_size(0);
            b.append_data(&mut header, name, std::io::empty())?;
            let mut children: Vec<_> = std::fs::read_dir(path)?.collect::<std::io::Result<_>>()?;
            children.sort_by_key(|e| e.file_name());
            for child in children {
                let child_name = format!("{name}/{}", child.file_name().to_string_lossy());
                add(b, &child.path(), &child_name, uid, gid)?;
            }
        } else if meta.file_type().is_symlink() {
            header.set_size(0);
            b.append_link(&mut header, name, std::fs::read_link(path)?)?;
        } else {
            b.append_data(&mut header, name, std::fs::File::open(path)?)?;
        }
        Ok(())
    }
    let mut builder = tar::Builder::new(Vec::new());
    add(&mut builder, host, name, uid, gid)?;
    builder.into_inner()
}

/// Split an absolute guest path into its parent folder and its last name.
pub fn split_guest_path(guest: &str) -> Result<(&str, &str)> {
    let trimmed = guest.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((parent, name)) if trimmed.starts_with('/') && !name.is_empty() && name != ".." => {
            Ok((if parent.is_empty() { "/" } else { parent }, name))
        }
        _ => Err(Error::new(ErrorKind::InvalidInput, format!("`{guest}` is not an absolute guest path"))),
    }
}

/// The apparent size in bytes of `guest` in `bottle` (sparse files count
/// whole: that is what a copy would stream), or `None` when it does not exist.
pub async fn guest_size(bottle: &dyn crate::bottle::Bottle, guest: &str) -> Result<Option<u64>> {
    let g = crate::provider::shell_quote(guest);
    let script = format!("test -e {g} || test -L {g} || exit 3; du -s -B1 --apparent-size {g} | cut -f1");
    let out = bottle.exec(&script, crate::bottle::GuestUser::Root).await?;
    match out.exit_code {
        3 => Ok(None),
        0 => out.stdout.trim().parse().map(Some).map_err(|_| {
            Error::new(ErrorKind::Backend, format!("du printed no size for {guest}: {}", out.stdout.trim()))
        }),
        code => Err(Error::new(
            ErrorKind::Backend,
            format!("measuring {guest} in the bottle exited {code}: {}", out.stderr.trim()),
        )),
    }
}

/// The most a tar of `limit` bytes of content may take on the way out
/// (headers and padding of many small files included).
pub fn tar_allowance(limit: ByteSize) -> u64 {
    limit.0.saturating_mul(2).saturating_add(16 << 20)
}

/// Unpack the tar stream `tar` (holding the tree `name`, as a backend's
/// copy-out makes it) into `host`, which must not exist, keeping at most
/// `limit` bytes of file content; see the module's rules. The tree is staged
/// next to `host` and renamed there when complete; over the limit (or on any
/// error) nothing is left.
pub fn unpack_bounded(tar: impl Read, name: &str, host: &Path, limit: ByteSize) -> Result<CopyOut> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let parent = host.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    let staging = tempfile::tempdir_in(parent).map_err(|e| Error::io(format!("staging in {}", parent.display()), e))?;
    let fail = |e: std::io::Error| Error::io(format!("unpacking {name} from the bottle"), e);
    let mut archive = tar::Archive::new(tar);
    let (mut bytes, mut skipped) = (0u64, Vec::new());
    let mut dirs = Vec::new();
    for entry in archive.entries().map_err(fail)? {
        let mut entry = entry.map_err(fail)?;
        let path = entry.path().map_err(fail)?.into_owned();
        let inside = path.components().all(|c| matches!(c, Component::Normal(_)))
            && path.components().next().is_some_and(|c| c.as_os_str() == name);
        if !inside {
            skipped.push(format!("{} (outside the tree)", path.display()));
            continue;
        }
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o600);
        let mtime = header.mtime().ok();
        let kind = header.entry_type();
        let target = staging.path().join(&path);
        if kind.is_dir() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&target).map_err(fail)?;
            dirs.push((target, mtime));
        } else if kind.is_file() {
            let size = header.size().map_err(fail)?;
            bytes = bytes.saturating_add(size);
            if bytes > limit.0 {
                return Ok(CopyOut::TooLarge { limit });
            }
            if let Some(dir) = target.parent() {
                std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(fail)?;
            }
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&target).map_err(fail)?;
            // At most what the header says: a lying stream cannot grow a file past it.
            let copied = std::io::copy(&mut (&mut entry).take(size), &mut file).map_err(fail)?;
            if copied != size {
                return Err(fail(std::io::Error::other(format!("{} ended early", path.display()))));
            }
            file.set_permissions(std::fs::Permissions::from_mode((mode & 0o700) | 0o600)).map_err(fail)?;
            if let Some(mtime) = mtime {
                let _ = file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime));
            }
        } else {
            let what = if kind.is_symlink() || kind.is_hard_link() { "a link" } else { "not a file or folder" };
            skipped.push(format!("{} ({what})", path.display()));
        }
    }
    // Folders' times last: creating their entries changed them.
    for (dir, mtime) in dirs.into_iter().rev() {
        if let (Some(mtime), Ok(handle)) = (mtime, std::fs::File::open(&dir)) {
            let _ = handle.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime));
        }
    }
    let tree = staging.path().join(name);
    if !tree.exists() {
        if !skipped.is_empty() {
            return Ok(CopyOut::NothingKept { skipped });
        }
        return Err(Error::new(ErrorKind::Io, format!("the copy of {name} out of the bottle holds no `{name}`")));
    }
    std::fs::rename(&tree, host).map_err(|e| Error::io(format!("moving {name} to {}", host.display()), e))?;
    Ok(CopyOut::Copied { bytes, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_split_into_parent_and_name() {
        assert_eq!(split_guest_path("/home/agent/workspace").expect("ok"), ("/home/agent", "workspace"));
        assert_eq!(split_guest_path("/home/agent/.claude/").expect("ok"), ("/home/agent", ".claude"));
        assert_eq!(split_guest_path("/x").expect("ok"), ("/", "x"));
        for bad in ["relative/path", "/", "", "/a/.."] {
            assert_eq!(split_guest_path(bad).expect_err(bad).kind(), ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn packed_trees_are_owned_by_the_agent_and_keep_their_times() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("d/sub")).expect("mkdir");
        std::fs::write(tmp.path().join("d/sub/f"), "data").expect("write");
        let tar = pack_tree(&tmp.path().join("d"), "workspace", 1000, 1001).expect("pack");
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<(String, u64, u64)> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let h = e.header();
                (e.path().expect("path").display().to_string(), h.uid().expect("uid"), h.gid().expect("gid"))
            })
            .collect();
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_650_000_000);
        std::fs::File::options()
            .write(true)
            .open(tmp.path().join("d/sub/f"))
            .expect("open")
            .set_modified(when)
            .expect("touch");
        let tar = pack_tree(&tmp.path().join("d"), "workspace", 1000, 1001).expect("pack");
        let mut archive = tar::Archive::new(tar.as_slice());
        let file = archive.entries().expect("entries").map(|e| e.expect("entry")).last().expect("the file");
        assert_eq!(file.header().mtime().expect("mtime"), 1_650_000_000, "the file keeps its time");
        assert_eq!(
            entries,
            [
                ("workspace".to_string(), 1000, 1001),
                ("workspace/sub".to_string(), 1000, 1001),
                ("workspace/sub/f".to_string(), 1000, 1001)
            ]
        );
    }

    /// A tar of `entries` (path, kind, mode, data) as a hostile bottle could send.
    fn hostile_tar(entries: &[(&str, tar::EntryType, u32, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, mode, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(*mode);
            header.set_mtime(1_700_000_000);
            header.set_size(data.len() as u64);
            if kind.is_symlink() {
                header.set_link_name("/etc/passwd").expect("link");
                header.set_size(0);
            }
            // Write the name raw, so that `..` and absolute names get through as they would.
            let bytes = header.as_old_mut().name.as_mut();
            bytes[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).expect("append");
        }
        builder.into_inner().expect("tar")
    }

    #[test]
    fn what_comes_out_is_owner_only_regular_files_with_their_times() {
        use std::os::unix::fs::PermissionsExt as _;
        use tar::EntryType;
        let tmp = tempfile::tempdir().expect("tempdir");
        let tar = hostile_tar(&[
            ("s", EntryType::Directory, 0o777, b""),
            ("s/setuid", EntryType::Regular, 0o4777, b"x"),
            ("s/world", EntryType::Regular, 0o666, b"hello"),
            ("s/link", EntryType::Symlink, 0o777, b""),
            ("s/fifo", EntryType::Fifo, 0o666, b""),
            ("s/../../escape", EntryType::Regular, 0o644, b"no"),
            ("/etc/abs", EntryType::Regular, 0o644, b"no"),
        ]);
        let host = tmp.path().join("out/s");
        let done = unpack_bounded(tar.as_slice(), "s", &host, ByteSize::mib(1)).expect("unpack");
        let CopyOut::Copied { bytes, skipped } = done else { panic!("copied: {done:?}") };
        assert_eq!(bytes, 6);
        assert_eq!(skipped.len(), 4, "{skipped:?}");
        let mode = |p: &str| std::fs::metadata(host.join(p)).expect(p).permissions().mode() & 0o7777;
        assert_eq!(mode("."), 0o700);
        assert_eq!(mode("setuid"), 0o700, "no setuid bit, owner only");
        assert_eq!(mode("world"), 0o600);
        assert!(!host.join("link").exists() && std::fs::symlink_metadata(host.join("link")).is_err());
        assert!(!host.join("fifo").exists());
        assert!(!tmp.path().join("escape").exists() && !Path::new("/etc/abs").exists());
        let mtime = std::fs::metadata(host.join("world")).expect("stat").modified().expect("mtime");
        assert_eq!(mtime, std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000), "times kept");
        assert_eq!(std::fs::read_dir(tmp.path().join("out")).expect("ls").count(), 1, "no staging left");
    }

    #[test]
    fn a_tree_over_the_limit_leaves_nothing() {
        use tar::EntryType;
        let tmp = tempfile::tempdir().expect("tempdir");
        let big = vec![0u8; 3000];
        let tar = hostile_tar(&[
            ("s", EntryType::Directory, 0o755, b""),
            ("s/a", EntryType::Regular, 0o644, &big),
            ("s/b", EntryType::Regular, 0o644, &big),
        ]);
        let host = tmp.path().join("out/s");
        let done = unpack_bounded(tar.as_slice(), "s", &host, ByteSize(5000)).expect("unpack");
        assert_eq!(done, CopyOut::TooLarge { limit: ByteSize(5000) });
        assert!(!host.exists());
        assert_eq!(std::fs::read_dir(tmp.path().join("out")).expect("ls").count(), 0, "no staging left");
    }

    #[test]
    fn a_packed_tree_unpacks_under_a_new_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("d/sub")).expect("mkdir");
        std::fs::write(tmp.path().join("d/sub/f"), "data").expect("write");
        let then = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        std::fs::File::options()
            .write(true)
            .open(tmp.path().join("d/sub/f"))
            .expect("open")
            .set_modified(then)
            .expect("time");
        let tar = pack_tree(&tmp.path().join("d"), "tree", 0, 0).expect("pack");
        let target = tmp.path().join("out/copy");
        let done = unpack_bounded(tar.as_slice(), "tree", &target, ByteSize::mib(1)).expect("unpack");
        assert_eq!(done, CopyOut::Copied { bytes: 4, skipped: vec![] });
        assert_eq!(std::fs::read_to_string(target.join("sub/f")).expect("read"), "data");
        let mtime = std::fs::metadata(target.join("sub/f")).expect("stat").modified().expect("mtime");
        assert_eq!(mtime, then, "the time goes in with the file");
        assert_eq!(std::fs::read_dir(tmp.path().join("out")).expect("ls").count(), 1, "no staging left");
    }
}
