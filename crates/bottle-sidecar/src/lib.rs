#![doc = include_str!("../README.md")]

mod audit;
mod connection;
pub mod egress;
pub mod gitgate;
mod listen;
pub mod relay;
mod time;
mod token;

pub use listen::{Listener, Stream};

use std::path::PathBuf;

/// How the running program starts its sidecar programs again: the git
/// gate's push hook runs `PROGRAM ARGS… git-gate --config FILE`.
///
/// For `bottle` that is `bottle sidecar`, through the image's launcher when
/// there is one (see `bottle_core::backend::SELF_ENV`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relaunch {
    /// The executable (or launcher) to run.
    pub program: PathBuf,
    /// The arguments before the sidecar's name (`["sidecar"]` for `bottle`).
    pub args: Vec<String>,
}

impl Relaunch {
    /// `$BOT_BOTTLE_SELF` when a launcher set it, else the running
    /// executable; with `args` before the sidecar's name.
    pub fn current(args: &[&str]) -> std::io::Result<Self> {
        let program = match std::env::var_os(bottle_core::backend::SELF_ENV).filter(|p| !p.is_empty()) {
            Some(launcher) => PathBuf::from(launcher),
            None => std::env::current_exe()?,
        };
        Ok(Self { program, args: args.iter().map(|a| a.to_string()).collect() })
    }
}

/// The usage line of the sidecar programs, after the program's own prefix.
pub const USAGE: &str = "egress --config FILE.json | git-gate --config FILE.json | relay ADDRESS=SOCKET…";

/// Runs the sidecar program that `args` name (`egress --config FILE`,
/// `git-gate --config FILE` or `relay ADDRESS=SOCKET…`); returns the
/// process's exit code.
pub fn main(args: &[String], relaunch: &Relaunch) -> i32 {
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["egress", "--config", path] => egress::main(path),
        ["git-gate", "--config", path] => gitgate::main(path, relaunch),
        ["relay", ..] => relay::main(&args[1..]),
        _ => {
            let prefix: Vec<String> =
                std::iter::once(relaunch.program.display().to_string()).chain(relaunch.args.clone()).collect();
            eprintln!("usage: {} {USAGE}", prefix.join(" "));
            2
        }
    }
}
