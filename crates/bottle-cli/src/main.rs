//! The `bottle` binary: parse the command line, run the command, print any
//! error on one line to stderr and exit non-zero.

mod args;
mod color;
mod commands;
mod context;
mod dashboard;
mod supervise;

use clap::Parser;

fn main() {
    // `bottle sidecar …`: what bottles run beside them (its own runtime, its own exit code).
    bot_bottle::run_sidecar_if_asked();
    let cli = args::Cli::parse();
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
