//! The sidecar programs are `bottle` itself (`bottle sidecar egress|git-gate
//! --config FILE`), so one installed file is the whole tool. This module finds
//! that executable and packs it for a sidecar image, whose recipe
//! ([`sidecar_recipe`]) every backend that runs sidecars from an image shares.
//!
//! A host-built `bottle` is usually linked against the host's glibc, which can
//! be newer than the one in the sidecar image (`debian:bookworm-slim`). So the
//! image never runs it with its own libraries: the bundle carries the host's
//! dynamic loader and every library `bottle` loads, and a launcher runs it
//! through that loader (`ld.so --library-path LIB bottle …`). A static
//! executable (musl, or glibc with `+crt-static`) is bundled alone. Nothing of
//! the image's own libc is used either way, so the bundle runs on any
//! distribution and any glibc.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::plan::{ContextFile, ContextSource};
use crate::{Error, ErrorKind, Result};

/// Environment variable naming the executable whose `sidecar` subcommand runs
/// the sidecars, instead of the running `bottle`.
pub const SIDECAR_ENV: &str = "BOT_BOTTLE_SIDECAR";

/// Environment variable a launcher sets to itself, so that a sidecar which
/// runs itself again (the git gate's push hook) goes through the launcher too.
pub const SELF_ENV: &str = "BOT_BOTTLE_SELF";

/// Where a sidecar image holds the bundle.
pub const BUNDLE_DIR: &str = "/opt/bot-bottle";

/// The bundle's launcher inside an image: `LAUNCHER sidecar egress --config FILE`.
pub const LAUNCHER: &str = "/opt/bot-bottle/run";

/// Libraries glibc loads by name at run time rather than through
/// `DT_NEEDED` (name lookups); bundled when they sit beside the host's libc.
/// Since glibc 2.34 they are stubs, before it they hold the code.
const DLOPENED: [&str; 3] = ["libnss_files.so.2", "libnss_dns.so.2", "libresolv.so.2"];

/// The executable that runs the sidecars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarProgram {
    exe: PathBuf,
}

impl SidecarProgram {
    /// `$BOT_BOTTLE_SIDECAR` when set, else the running executable.
    pub fn locate() -> Result<Self> {
        if let Some(path) = std::env::var_os(SIDECAR_ENV).filter(|p| !p.is_empty()) {
            let exe = PathBuf::from(path);
            if !exe.is_file() {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "{SIDECAR_ENV} names {}, which is not a file; unset it to run the sidecars with this `bottle`",
                        exe.display()
                    ),
                ));
            }
            return Ok(Self { exe });
        }
        let exe = std::env::current_exe().map_err(|e| Error::io("finding the running executable", e))?;
        Ok(Self { exe })
    }

    /// A program at `exe` (whose `sidecar` subcommand runs the sidecars).
    pub fn at(exe: impl Into<PathBuf>) -> Self {
        Self { exe: exe.into() }
    }

    /// The executable.
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// The files of the bundle, named for a build context under `dir/`:
    /// `dir/bottle`, `dir/lib/…` (the loader and libraries, when the
    /// executable is dynamic) and the launcher `dir/run`. An image copies
    /// `dir/` to [`BUNDLE_DIR`] and runs [`LAUNCHER`].
    pub fn bundle(&self, dir: &str) -> Result<Vec<ContextFile>> {
        let file =
            |name: String, path: PathBuf, mode: u32| ContextFile { name, source: ContextSource::File(path), mode };
        let mut files = vec![file(format!("{dir}/bottle"), self.exe.clone(), 0o755)];
        let mut launcher = format!(
            "#!/bin/sh\n# bot-bottle's launcher: `bottle` with the loader and libraries it was built with.\n\
             {SELF_ENV}={LAUNCHER}\nexport {SELF_ENV}\n"
        );
        match interpreter(&self.exe)? {
            None => launcher.push_str(&format!("exec {BUNDLE_DIR}/bottle \"$@\"\n")),
            Some(loader) => {
                let loader_name = file_name(&loader)?;
                let libraries = libraries(&loader, &self.exe)?;
                files.push(file(format!("{dir}/lib/{loader_name}"), loader.clone(), 0o755));
                let libc_dir =
                    libraries.iter().find(|(name, _)| name.starts_with("libc.so")).and_then(|(_, p)| p.parent());
                let extra: Vec<(String, PathBuf)> = libc_dir
                    .map(|dir| {
                        DLOPENED
                            .iter()
                            .map(|name| (name.to_string(), dir.join(name)))
                            .filter(|(name, path)| path.is_file() && !libraries.iter().any(|(n, _)| n == name))
                            .collect()
                    })
                    .unwrap_or_default();
                for (name, path) in libraries.iter().chain(&extra) {
                    files.push(file(format!("{dir}/lib/{name}"), path.clone(), 0o644));
                }
                let _ = writeln!(
                    launcher,
                    "exec {BUNDLE_DIR}/lib/{loader_name} --library-path {BUNDLE_DIR}/lib {BUNDLE_DIR}/bottle \"$@\""
                );
            }
        }
        files.push(ContextFile {
            name: format!("{dir}/run"),
            source: ContextSource::Bytes(launcher.into()),
            mode: 0o755,
        });
        Ok(files)
    }
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| Error::new(ErrorKind::Io, format!("{} has no usable file name", path.display())))
}

/// The ELF interpreter (`PT_INTERP`) of `exe`; `None` for a static executable.
pub(crate) fn interpreter(exe: &Path) -> Result<Option<PathBuf>> {
    use std::io::Read as _;
    // The headers and the interpreter's path sit at the start of the file:
    // read that much, and the whole file only when they do not.
    let file = std::fs::File::open(exe).map_err(|e| Error::io(format!("reading {}", exe.display()), e))?;
    let mut head = Vec::new();
    file.take(HEADERS_READ).read_to_end(&mut head).map_err(|e| Error::io(format!("reading {}", exe.display()), e))?;
    match elf_interpreter(exe, &head) {
        Err(_) if head.len() as u64 == HEADERS_READ => {
            let data = std::fs::read(exe).map_err(|e| Error::io(format!("reading {}", exe.display()), e))?;
            elf_interpreter(exe, &data)
        }
        found => found,
    }
}

/// How much of an executable [`interpreter`] reads first.
const HEADERS_READ: u64 = 64 << 10;

/// The ELF interpreter named in `data`, the start (or all) of `exe`.
fn elf_interpreter(exe: &Path, data: &[u8]) -> Result<Option<PathBuf>> {
    let bad = |why: &str| Error::new(ErrorKind::Io, format!("{} is not a usable executable: {why}", exe.display()));
    if data.get(..4) != Some(b"\x7fELF") {
        return Err(bad("not an ELF file"));
    }
    // 64-bit little-endian only: x86_64 and aarch64 Linux.
    if data.get(4) != Some(&2) || data.get(5) != Some(&1) {
        return Err(bad("not a 64-bit little-endian ELF file"));
    }
    let u16_at = |at: usize| data.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u64_at =
        |at: usize| data.get(at..at + 8).and_then(|b| usize::try_from(u64::from_le_bytes(b.try_into().ok()?)).ok());
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return Err(bad("truncated ELF header"));
    };
    const PT_INTERP: u32 = 3;
    for index in 0..phnum {
        let header = phoff + index * phentsize;
        let kind = data.get(header..header + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if kind != Some(PT_INTERP) {
            continue;
        }
        let (Some(offset), Some(size)) = (u64_at(header + 8), u64_at(header + 32)) else {
            return Err(bad("truncated program header"));
        };
        let raw = data.get(offset..offset + size).ok_or_else(|| bad("PT_INTERP points outside the file"))?;
        let path = std::str::from_utf8(raw.split(|&b| b == 0).next().unwrap_or_default())
            .map_err(|_| bad("PT_INTERP is not UTF-8"))?;
        return Ok(Some(PathBuf::from(path)));
    }
    Ok(None)
}

/// The shared libraries `exe` loads, as (soname, host path), from the loader's
/// own account (`ld.so --list`, what `ldd` prints).
fn libraries(loader: &Path, exe: &Path) -> Result<Vec<(String, PathBuf)>> {
    let out = Command::new(loader)
        .arg("--list")
        .arg(exe)
        .output()
        .map_err(|e| Error::io(format!("running {} --list", loader.display()), e))?;
    if !out.status.success() {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "{} --list {} failed ({}): {}",
                loader.display(),
                exe.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let listing = String::from_utf8_lossy(&out.stdout);
    let mut found = Vec::new();
    for line in listing.lines() {
        let Some((name, rest)) = line.trim().split_once(" => ") else {
            continue; // the vDSO and the loader itself
        };
        let path = rest.rsplit_once(" (").map_or(rest, |(path, _)| path).trim();
        if path == "not found" || path.is_empty() {
            return Err(Error::new(
                ErrorKind::Io,
                format!("{} needs {name}, which the host's loader cannot find", exe.display()),
            ));
        }
        found.push((name.to_owned(), PathBuf::from(path)));
    }
    Ok(found)
}

/// The sidecar image's Dockerfile (Debian with git, an SSH client and CA
/// certificates; `bottle` itself comes in through the bundle).
const SIDECAR_DOCKERFILE: &str = include_str!("sidecar.Dockerfile");

/// The sidecar image recipe every backend that runs sidecars from an image
/// builds (so its content-hashed tag is the same everywhere): the bundled
/// Dockerfile and `bottle` itself with the loader and libraries it runs
/// with ([`SidecarProgram::bundle`]).
pub fn sidecar_recipe(host_ca_bundle: Option<std::path::PathBuf>) -> Result<crate::plan::ImageRecipe> {
    Ok(crate::plan::ImageRecipe {
        repository: "bot-bottle/sidecar".into(),
        dockerfile: SIDECAR_DOCKERFILE.into(),
        dockerfile_origin: "bundled (sidecar)".into(),
        context_dir: None,
        host_ca_bundle,
        extra_files: SidecarProgram::locate()?.bundle("bot-bottle")?,
        prebuilt_archive: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_is_bundled_with_its_loader_and_libraries() {
        // The test binary is linked like `bottle`.
        let exe = std::env::current_exe().expect("current exe");
        let program = SidecarProgram::at(&exe);
        let files = program.bundle("b").expect("bundle");
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names.first(), Some(&"b/bottle"));
        assert_eq!(names.last(), Some(&"b/run"));
        let loader = interpreter(&exe).expect("elf").expect("the test binary is dynamic");
        let loader_name = loader.file_name().expect("name").to_str().expect("utf8");
        assert!(names.contains(&format!("b/lib/{loader_name}").as_str()), "{names:?}");
        assert!(names.iter().any(|n| n.starts_with("b/lib/libc.so")), "{names:?}");
        let ContextSource::Bytes(run) = &files.last().expect("run").source else { panic!("the launcher is generated") };
        let run = String::from_utf8_lossy(run);
        assert!(
            run.contains(&format!(
                "exec {BUNDLE_DIR}/lib/{loader_name} --library-path {BUNDLE_DIR}/lib {BUNDLE_DIR}/bottle \"$@\""
            )),
            "{run}"
        );
        assert!(run.contains(&format!("{SELF_ENV}={LAUNCHER}")), "{run}");
    }

    #[test]
    fn a_static_executable_is_bundled_alone() {
        // An ELF64 little-endian header with no program header: no PT_INTERP.
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let tmp = tempfile::tempdir().expect("tempdir");
        let exe = tmp.path().join("bottle");
        std::fs::write(&exe, &elf).expect("write");
        assert_eq!(interpreter(&exe).expect("elf"), None);
        let files = SidecarProgram::at(&exe).bundle("b").expect("bundle");
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["b/bottle", "b/run"]);
        let ContextSource::Bytes(run) = &files[1].source else { panic!("the launcher is generated") };
        assert!(String::from_utf8_lossy(run).contains(&format!("exec {BUNDLE_DIR}/bottle \"$@\"")));
    }

    #[test]
    fn what_is_not_an_executable_is_refused_by_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let script = tmp.path().join("script");
        std::fs::write(&script, "#!/bin/sh\n").expect("write");
        let err = SidecarProgram::at(&script).bundle("b").expect_err("not ELF");
        assert!(err.to_string().contains("not an ELF file"), "{err}");
        assert!(err.to_string().contains(&script.display().to_string()), "{err}");
    }
}
