//! `cargo xtask`: the project's developer tasks, in Rust so they run the same
//! on a developer's machine and in CI.
//!
//! - `setup` makes sure Docker is installed, `dockerd` answers and the base
//!   image exists (built offline with debootstrap when it does not);
//! - `test` is the one test command (README and `.ci/run`): `setup`, then
//!   `cargo test --workspace`;
//! - `try` runs the release `bottle start shell`;
//! - `bench` measures what the targets in the issues promise.
//!
//! The tidy checks are `#[test]`s in `tidy.rs`, so `cargo test` runs them.

mod bench;
mod setup;
#[cfg(test)]
mod tidy;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, ensure};

const USAGE: &str = "\
usage: cargo xtask <command> [-- args]

commands:
  setup            install Docker if missing, start dockerd, build the base image
  test [-- ARGS]   setup, then `cargo test --workspace ARGS` (the project's test command)
  try [-- ARGS]    setup, build bottle (release), run `bottle start shell ARGS`
  bench <name>     setup, build bottle (release), run a benchmark:
";

const ENVIRONMENT: &str = "
environment:
  BOT_BOTTLE_BASE_IMAGE      tag of the base image (default debian:bookworm-slim)
  BOT_BOTTLE_DEBIAN_MIRROR   mirror for debootstrap (default: from the host's apt sources)
  BOTTLE_BENCH_ITERS         iterations of `bench start` (default 10)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        [] | ["help" | "-h" | "--help", ..] => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        ["setup"] => setup::run().map(|()| ExitCode::SUCCESS),
        ["test", rest @ ..] => test(passthrough(rest)),
        ["try", rest @ ..] => try_bottle(passthrough(rest)),
        ["bench", name] if bench::BENCHES.iter().any(|(known, _)| known == name) => {
            bench::run(name).map(|()| ExitCode::SUCCESS)
        }
        ["bench", rest @ ..] => {
            let known: Vec<&str> = bench::BENCHES.iter().map(|(name, _)| *name).collect();
            let asked = rest.join(" ");
            let message = format!("unknown benchmark `{asked}`; known: {}", known.join(", "));
            return usage_error(&message);
        }
        [other, ..] => return usage_error(&format!("unknown command `{other}`")),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> String {
    let benches: String = bench::BENCHES.iter().map(|(name, what)| format!("    {name:<14} {what}\n")).collect();
    format!("{USAGE}{benches}{ENVIRONMENT}")
}

fn usage_error(message: &str) -> ExitCode {
    eprint!("error: {message}\n\n{}", usage());
    ExitCode::from(2)
}

/// The arguments after the command, without the `--` that separates them.
fn passthrough<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    match rest {
        ["--", tail @ ..] => tail.to_vec(),
        _ => rest.to_vec(),
    }
}

fn test(args: Vec<&str>) -> Result<ExitCode> {
    setup::run()?;
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--no-fail-fast"]).args(args).current_dir(workspace_root());
    println!("$ {}", show(&cmd));
    let status = cmd.status().context("while running cargo test --workspace")?;
    // cargo has already printed why it failed: pass its code on and add nothing.
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

fn try_bottle(args: Vec<&str>) -> Result<ExitCode> {
    setup::run()?;
    let bottle = build_bottle()?;
    let mut cmd = Command::new(&bottle);
    cmd.args(["start", "shell"]).args(args);
    println!("$ {}", show(&cmd));
    // `exec` only returns when it failed.
    let err = cmd.exec();
    Err(err).with_context(|| format!("while running {}", bottle.display()))
}

/// Builds `bottle` in release mode and returns the path of the binary.
fn build_bottle() -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", "bottle-cli", "--release"]).current_dir(workspace_root());
    run(&mut cmd).context("while building bottle in release mode")?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"));
    Ok(target.join("release").join("bottle"))
}

/// The directory of the workspace's `Cargo.toml`.
fn workspace_root() -> PathBuf {
    let xtask = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().map(PathBuf::from).unwrap_or(xtask)
}

/// The cargo that runs us (cargo sets `CARGO`), else the one on `PATH`.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")))
}

/// Runs `cmd` with inherited stdio and fails unless it exits with 0.
fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("could not run `{}`", show(cmd)))?;
    ensure!(status.success(), "`{}` failed ({status})", show(cmd));
    Ok(())
}

/// Runs `cmd`, returns its stdout; its stderr goes to ours.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("could not run `{}`", show(cmd)))?;
    ensure!(out.status.success(), "`{}` failed ({})", show(cmd), out.status);
    String::from_utf8(out.stdout).with_context(|| format!("`{}` printed no UTF-8", show(cmd)))
}

/// A command line as a person would type it (no quoting: for messages only).
fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}
