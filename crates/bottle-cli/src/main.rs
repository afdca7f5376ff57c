//! The `bottle` binary: parse the command line, run the command, print any
//! error on one line to stderr and exit non-zero.

mod args;
mod commands;
mod context;

use clap::Parser;

fn main() {
    let cli = args::Cli::parse();
    if let args::Command::Sidecar { args } = &cli.command {
        // A sidecar runs its own runtime and exits with its own code.
        std::process::exit(sidecar(args));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // One line, also with RUST_BACKTRACE set: an error is for the
            // user; only a panic (a bug) prints a backtrace.
            eprintln!("error: {}", one_line(&e));
            1
        }
    };
    // Exit now: a blocked stdin reader must not keep the process alive.
    std::process::exit(code);
}

/// `bottle sidecar ARGS`: the sidecar programs, which bottles run beside them.
fn sidecar(args: &[String]) -> i32 {
    match bottle_sidecar::Relaunch::current(&["sidecar"]) {
        Ok(relaunch) => bottle_sidecar::main(args, &relaunch),
        Err(e) => {
            eprintln!("error: cannot find the running executable: {e}");
            1
        }
    }
}

/// The error and its causes on one line (multi-line messages, such as a
/// manifest's list of errors, keep their own lines).
fn one_line(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !out.contains(&cause) {
            out.push_str(": ");
            out.push_str(&cause);
        }
    }
    out
}
