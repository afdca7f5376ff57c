//! Copying trees between the host and a bottle, for backends whose engine
//! moves files as tar archives: pack a host tree owned by the agent, split a
//! guest path, unpack a tree that came out of a bottle.

use std::path::Path;

use crate::{Error, ErrorKind, Result};

/// Pack `host` (file, directory or symlink) as a tar holding `name`, every
/// entry owned by `uid`/`gid`: what a backend unpacks in the guest.
pub fn pack_tree(host: &Path, name: &str, uid: u64, gid: u64) -> std::io::Result<Vec<u8>> {
    fn add(b: &mut tar::Builder<Vec<u8>>, path: &Path, name: &str, uid: u64, gid: u64) -> std::io::Result<()> {
        let meta = std::fs::symlink_metadata(path)?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Deterministic);
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

/// Unpack `tar` (holding the single tree `name`, as [`pack_tree`] or a
/// backend's copy-out makes it) and move that tree to `host`, which must not
/// exist. The tree is staged next to `host`, so the move is a rename.
pub fn unpack_tree(tar: &[u8], name: &str, host: &Path) -> Result<()> {
    let parent = host.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    let staging = tempfile::tempdir_in(parent).map_err(|e| Error::io(format!("staging in {}", parent.display()), e))?;
    let mut archive = tar::Archive::new(tar);
    archive.set_preserve_permissions(true);
    archive.unpack(staging.path()).map_err(|e| Error::io(format!("unpacking {name}"), e))?;
    std::fs::rename(staging.path().join(name), host)
        .map_err(|e| Error::io(format!("moving {name} to {}", host.display()), e))
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
    fn packed_trees_are_owned_by_the_agent() {
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
        assert_eq!(
            entries,
            [
                ("workspace".to_string(), 1000, 1001),
                ("workspace/sub".to_string(), 1000, 1001),
                ("workspace/sub/f".to_string(), 1000, 1001)
            ]
        );
    }

    #[test]
    fn a_packed_tree_unpacks_under_a_new_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("d/sub")).expect("mkdir");
        std::fs::write(tmp.path().join("d/sub/f"), "data").expect("write");
        let tar = pack_tree(&tmp.path().join("d"), "tree", 0, 0).expect("pack");
        let target = tmp.path().join("out/copy");
        unpack_tree(&tar, "tree", &target).expect("unpack");
        assert_eq!(std::fs::read_to_string(target.join("sub/f")).expect("read"), "data");
        assert_eq!(std::fs::read_dir(tmp.path().join("out")).expect("ls").count(), 1, "no staging left");
    }
}
