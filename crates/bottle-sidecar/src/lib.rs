#![doc = include_str!("../README.md")]

mod audit;
mod connection;
pub mod egress;
pub mod gitgate;
mod listen;
mod program;
pub mod relay;
pub mod supervise;
mod time;
mod token;

pub use listen::{Listener, Stream};

use std::path::PathBuf;

use bottle_core::sidecar::SidecarCommand;

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

/// Runs the sidecar program that `args` name (`egress --config FILE`,
/// `git-gate --config FILE`, `supervise --config FILE` or `relay ADDRESS=SOCKET…`, as
/// [`SidecarCommand`] writes them); returns the process's exit code.
pub fn main(args: &[String], relaunch: &Relaunch) -> i32 {
    match SidecarCommand::parse(args) {
        Ok(SidecarCommand::Egress { config }) => egress::main(&config),
        Ok(SidecarCommand::GitGate { config }) => gitgate::main(&config, relaunch),
        Ok(SidecarCommand::Supervise { config }) => supervise::main(&config),
        Ok(SidecarCommand::Relay { pairs }) => relay::main(pairs),
        Err(err) => {
            let prefix: Vec<String> =
                std::iter::once(relaunch.program.display().to_string()).chain(relaunch.args.clone()).collect();
            eprintln!("error: {err}\nusage: {} {}", prefix.join(" "), SidecarCommand::USAGE);
            2
        }
    }
}
