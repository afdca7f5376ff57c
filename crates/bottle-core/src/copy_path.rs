//! The two ends of a copy between the host and a bottle (`bottle cp`), as
//! `docker cp` takes them: exactly one is `SLUG:PATH`, a guest path that is
//! relative to the agent's workdir when it does not start with `/`; the
//! other is a host path (`./a:b` is a host path with a colon). A relative
//! guest path never climbs out of the workdir with `..`. An existing
//! folder as the destination means the copy goes into it, under the
//! source's name.

use std::path::{Component, Path, PathBuf};

use crate::{Error, ErrorKind, Result};

/// One end of a copy, as written on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyEnd {
    /// A path on the host.
    Host(PathBuf),
    /// `SLUG:PATH`: a path in a bottle.
    Guest {
        /// The bottle's slug.
        slug: String,
        /// The path as written (absolute, or relative to the agent's workdir).
        path: String,
    },
}

impl CopyEnd {
    /// `SLUG:PATH` when the text before the first `:` is a slug (lower-case
    /// letters, digits and `-`, not starting with `-`), else a host path.
    pub fn parse(arg: &str) -> CopyEnd {
        match arg.split_once(':') {
            Some((slug, path)) if crate::state::validate_slug(slug).is_ok() => {
                CopyEnd::Guest { slug: slug.to_string(), path: path.to_string() }
            }
            _ => CopyEnd::Host(PathBuf::from(arg)),
        }
    }
}

/// A copy between the host and a bottle, its direction known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopySpec {
    /// From the host into bottle `slug`.
    In {
        /// The host file or folder.
        host: PathBuf,
        /// The bottle's slug.
        slug: String,
        /// Where it goes in the bottle (as written).
        guest: String,
    },
    /// Out of bottle `slug` to the host.
    Out {
        /// The bottle's slug.
        slug: String,
        /// The guest file or folder (as written).
        guest: String,
        /// Where it goes on the host.
        host: PathBuf,
    },
}

impl CopySpec {
    /// The copy from `source` to `dest`: exactly one of them is `SLUG:PATH`,
    /// with a path after the colon.
    pub fn parse(source: &str, dest: &str) -> Result<CopySpec> {
        let copy = match (CopyEnd::parse(source), CopyEnd::parse(dest)) {
            (CopyEnd::Host(host), CopyEnd::Guest { slug, path }) => CopySpec::In { host, slug, guest: path },
            (CopyEnd::Guest { slug, path }, CopyEnd::Host(host)) => CopySpec::Out { slug, guest: path, host },
            (CopyEnd::Guest { .. }, CopyEnd::Guest { .. }) => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "`{source}` and `{dest}` are both in a bottle; a copy goes between the host and one bottle: \
                         copy out to the host, then in"
                    ),
                ));
            }
            (CopyEnd::Host(_), CopyEnd::Host(_)) => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "neither `{source}` nor `{dest}` is in a bottle; write one of them as SLUG:PATH \
                         (`bottle list active` shows the slugs)"
                    ),
                ));
            }
        };
        let (CopySpec::In { guest, slug, .. } | CopySpec::Out { guest, slug, .. }) = &copy;
        if host_of(&copy).as_os_str().is_empty() || guest.is_empty() {
            let which = if guest.is_empty() {
                format!("`{slug}:` names no path in the bottle")
            } else {
                "the host path is empty".to_string()
            };
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{which}; write `{slug}:.` for the agent's workdir, `{slug}:/abs/path` for another place"),
            ));
        }
        Ok(copy)
    }
}

fn host_of(copy: &CopySpec) -> &Path {
    match copy {
        CopySpec::In { host, .. } | CopySpec::Out { host, .. } => host,
    }
}

/// The absolute guest path `path` names: as it is when it starts with `/`,
/// else relative to `workdir` and inside it (a relative path whose `..`
/// climbs out of the workdir is refused: an absolute path says so on
/// purpose); `.` and `..` resolved, and never the root.
pub fn resolve_guest_path(workdir: &str, path: &str) -> Result<String> {
    let base = if path.starts_with('/') {
        ""
    } else if workdir.starts_with('/') {
        workdir
    } else {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("`{path}` is relative and the bottle's workdir is not known here; give an absolute path"),
        ));
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in base.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    let floor = if base.is_empty() { 0 } else { parts.len() };
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.len() <= floor && floor > 0 => {
                let workdir = format!("/{}", parts.join("/"));
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "`{path}` climbs out of the agent's workdir {workdir}; a relative path stays inside it: \
                         write an absolute path (starting with /) for a place outside"
                    ),
                ));
            }
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    if parts.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("`{path}` is the bottle's root folder; name a file or folder in it"),
        ));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// The last name of the absolute guest path `guest` (made by [`resolve_guest_path`]).
pub(crate) fn guest_name(guest: &str) -> &str {
    guest.rsplit('/').next().unwrap_or(guest)
}

/// The last name of host path `host`, `.` and `..` resolved against the
/// current folder: what the copy is called in the bottle.
pub(crate) fn host_name(host: &Path) -> Result<String> {
    let named = host.components().next_back().and_then(|c| match c {
        Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
        _ => None,
    });
    if let Some(name) = named {
        return Ok(name);
    }
    let absolute = std::fs::canonicalize(host).map_err(|e| Error::io(format!("reading {}", host.display()), e))?;
    absolute.file_name().map(|n| n.to_string_lossy().into_owned()).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("`{}` is the host's root folder; name a folder in it", host.display()),
        )
    })
}

/// Where a copy named `name` lands given the destination `dest`: inside it
/// when it is an existing folder, else `dest` itself.
pub(crate) fn host_target(dest: &Path, name: &str) -> PathBuf {
    if dest.is_dir() { dest.join(name) } else { dest.to_path_buf() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(slug: &str, path: &str) -> CopyEnd {
        CopyEnd::Guest { slug: slug.into(), path: path.into() }
    }

    #[test]
    fn an_end_is_in_a_bottle_when_it_starts_with_a_slug_and_a_colon() {
        for (arg, expect) in [
            ("shell-1a2b:/etc/hosts", guest("shell-1a2b", "/etc/hosts")),
            ("shell-1a2b:notes.txt", guest("shell-1a2b", "notes.txt")),
            ("shell-1a2b:", guest("shell-1a2b", "")),
            ("shell-1a2b:a:b", guest("shell-1a2b", "a:b")),
            ("notes.txt", CopyEnd::Host("notes.txt".into())),
            ("./a:b", CopyEnd::Host("./a:b".into())),
            ("/abs/x:y", CopyEnd::Host("/abs/x:y".into())),
            ("Shell:x", CopyEnd::Host("Shell:x".into())),
            ("-x:y", CopyEnd::Host("-x:y".into())),
            (":x", CopyEnd::Host(":x".into())),
        ] {
            assert_eq!(CopyEnd::parse(arg), expect, "{arg}");
        }
    }

    #[test]
    fn exactly_one_end_is_in_a_bottle_and_it_names_a_path() {
        assert_eq!(
            CopySpec::parse("notes.txt", "s-1:work/").expect("in"),
            CopySpec::In { host: "notes.txt".into(), slug: "s-1".into(), guest: "work/".into() }
        );
        assert_eq!(
            CopySpec::parse("s-1:/etc/hosts", ".").expect("out"),
            CopySpec::Out { slug: "s-1".into(), guest: "/etc/hosts".into(), host: ".".into() }
        );
        for (source, dest, says) in [
            ("s-1:/a", "s-2:/b", "both in a bottle"),
            ("a", "b", "neither `a` nor `b` is in a bottle"),
            ("a", "s-1:", "`s-1:` names no path"),
            ("s-1:/a", "", "the host path is empty"),
        ] {
            let e = CopySpec::parse(source, dest).expect_err(says);
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            assert!(e.message().contains(says), "{source} {dest}: {e}");
        }
    }

    #[test]
    fn guest_paths_resolve_against_the_workdir() {
        let work = "/home/agent/workspace";
        for (path, expect) in [
            ("notes.txt", "/home/agent/workspace/notes.txt"),
            ("./src/../lib/", "/home/agent/workspace/lib"),
            (".", "/home/agent/workspace"),
            ("src/..", "/home/agent/workspace"),
            ("/etc//hosts", "/etc/hosts"),
            ("/../etc", "/etc"),
            ("/home/agent/workspace/../.bashrc", "/home/agent/.bashrc"),
        ] {
            assert_eq!(resolve_guest_path(work, path).expect(path), expect, "{path}");
        }
        for escaping in ["..", "../.bashrc", "src/../../x", "./../../../etc/passwd"] {
            let e = resolve_guest_path(work, escaping).expect_err(escaping);
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{escaping}");
            assert!(e.message().contains("climbs out of the agent's workdir /home/agent/workspace"), "{e}");
        }
        assert_eq!(resolve_guest_path(work, "/").expect_err("root").kind(), ErrorKind::InvalidInput);
        assert_eq!(resolve_guest_path("/", ".").expect_err("root").kind(), ErrorKind::InvalidInput);
        assert!(resolve_guest_path("", "x").expect_err("no workdir").message().contains("absolute"));
        assert_eq!(resolve_guest_path("", "/x").expect("absolute needs no workdir"), "/x");
        assert_eq!(guest_name("/home/agent/workspace"), "workspace");
    }

    #[test]
    fn a_folder_as_destination_takes_the_copy_under_its_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert_eq!(host_target(tmp.path(), "notes.txt"), tmp.path().join("notes.txt"));
        let new = tmp.path().join("new");
        assert_eq!(host_target(&new, "notes.txt"), new);
        assert_eq!(host_name(Path::new("a/b.txt")).expect("name"), "b.txt");
        assert_eq!(host_name(Path::new("a/b/")).expect("name"), "b");
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(host_name(Path::new(".")).expect("name"), cwd.file_name().expect("named").to_string_lossy());
    }
}
