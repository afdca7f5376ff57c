//! What every sidecar program does around its own work: read its JSON
//! configuration, start a tokio runtime, run, and turn the outcome into an
//! exit code with one line on stderr (`NAME: …`).

use std::fmt::Display;
use std::future::Future;

/// How many runtime worker threads a sidecar runs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Workers {
    /// As many as the CPUs, at most this many.
    UpTo(usize),
    /// Exactly this many.
    Exactly(usize),
}

/// Reads the configuration at `path`, then runs `work` with it on a
/// runtime of `workers`; returns the exit code: 0 when `work` ends well, 2
/// when the configuration cannot be read, 1 otherwise.
pub(crate) fn main<C, E, F>(name: &str, path: &str, workers: Workers, work: impl FnOnce(C) -> F) -> i32
where
    C: serde::de::DeserializeOwned,
    E: Display,
    F: Future<Output = Result<(), E>>,
{
    let read = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice::<C>(&bytes).map_err(|e| e.to_string()));
    let config = match read {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{name}: error: cannot read the configuration {path}: {err}");
            return 2;
        }
    };
    let threads = match workers {
        Workers::UpTo(most) => std::thread::available_parallelism().map_or(2, |n| n.get().min(most)),
        Workers::Exactly(n) => n,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .max_blocking_threads(16)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{name}: error: cannot start the async runtime: {err}");
            return 1;
        }
    };
    match runtime.block_on(work(config)) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("{name}: error: {err}");
            1
        }
    }
}
