//! The sizes a manifest and a bottle's environment must keep to.
//!
//! A manifest file is at most [`MAX_MANIFEST_BYTES`]. A bottle has at most
//! [`MAX_ENV_ENTRIES`] `env` entries, and its environment must fit what Linux
//! lets a process exec with: each `KEY=VALUE` string (with the NUL that ends
//! it) at most [`MAX_ENV_ENTRY_BYTES`], Linux's `MAX_ARG_STRLEN`, and all of
//! them together at most [`MAX_ENV_TOTAL_BYTES`], well under `ARG_MAX`. The
//! walker checks the literal entries when the manifest is parsed; `prepare`
//! checks the bottle's real environment (host values and the provider's own
//! entries included) through the same [`EnvSize`].

use std::fmt;

/// The largest manifest file, in bytes (1 MiB). A manifest names agents,
/// bottles and what they may reach; anything bigger is data that belongs in
/// a file, and would only make checking and starting slow.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// The most `env` entries one bottle may have (4096): far more than any agent
/// needs, and few enough that the preflight summary stays readable.
pub const MAX_ENV_ENTRIES: usize = 4096;

/// The largest environment entry, in bytes: `KEY=VALUE` and the NUL that ends
/// it, at most Linux's `MAX_ARG_STRLEN` (32 pages, 128 KiB), the longest
/// string `execve` accepts.
pub const MAX_ENV_ENTRY_BYTES: usize = 128 << 10;

/// The largest environment of a bottle, in bytes: the sum of `KEY=VALUE\0`
/// over its entries (1 MiB). Linux's `ARG_MAX` (a quarter of the stack limit,
/// 2 MiB by default) bounds the arguments and the environment together, so
/// this leaves room for the agent's arguments and the variables bot-bottle
/// adds.
pub const MAX_ENV_TOTAL_BYTES: usize = 1 << 20;

/// Why the environment limits exist, for messages.
pub(crate) const EXEC_REASON: &str = "the environment must fit what Linux lets a process exec with";

/// The size of one environment entry as `execve` counts it: `KEY=VALUE\0`.
fn entry_bytes(name: &str, value: &str) -> usize {
    name.len() + 1 + value.len() + 1
}

/// An environment measured against the exec limits (names and sizes only:
/// values may be secrets).
#[derive(Debug)]
pub(crate) struct EnvSize<'e> {
    /// Each entry's name and `KEY=VALUE\0` size, largest first.
    entries: Vec<(&'e str, usize)>,
    /// The sum of the sizes.
    total: usize,
}

/// One way an environment is over the exec limits. Displays as the end of a
/// sentence: "`KEY=…` is N bytes …" and "N bytes in all …".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Excess<'e> {
    /// An entry longer than [`MAX_ENV_ENTRY_BYTES`].
    Entry {
        /// Its name.
        name: &'e str,
        /// Its `KEY=VALUE\0` size.
        bytes: usize,
    },
    /// Entries together longer than [`MAX_ENV_TOTAL_BYTES`].
    Total {
        /// Their `KEY=VALUE\0` sizes summed.
        bytes: usize,
    },
}

impl fmt::Display for Excess<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Excess::Entry { name, bytes } => write!(
                f,
                "`{name}=…` is {bytes} bytes with its ending NUL, more than the {MAX_ENV_ENTRY_BYTES} (128 KiB, \
                 Linux's MAX_ARG_STRLEN) one entry may be"
            ),
            Excess::Total { bytes } => write!(
                f,
                "{bytes} bytes in all as `KEY=VALUE\\0`, more than the {MAX_ENV_TOTAL_BYTES} (1 MiB, well under \
                 Linux's ARG_MAX) an environment may be"
            ),
        }
    }
}

impl<'e> EnvSize<'e> {
    /// Measures the `(name, value)` entries.
    pub(crate) fn measure(env: impl IntoIterator<Item = (&'e str, &'e str)>) -> Self {
        let mut entries: Vec<(&str, usize)> =
            env.into_iter().map(|(name, value)| (name, entry_bytes(name, value))).collect();
        entries.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let total = entries.iter().map(|(_, bytes)| bytes).sum();
        EnvSize { entries, total }
    }

    /// What is over a limit: each entry too long (largest first), then the total.
    pub(crate) fn excesses(&self) -> Vec<Excess<'e>> {
        let mut excesses: Vec<Excess<'e>> = self
            .entries
            .iter()
            .take_while(|(_, bytes)| *bytes > MAX_ENV_ENTRY_BYTES)
            .map(|&(name, bytes)| Excess::Entry { name, bytes })
            .collect();
        if self.total > MAX_ENV_TOTAL_BYTES {
            excesses.push(Excess::Total { bytes: self.total });
        }
        excesses
    }

    /// The `count` largest entries as `NAME (N bytes)`, largest first.
    pub(crate) fn largest(&self, count: usize) -> String {
        let largest: Vec<String> =
            self.entries.iter().take(count).map(|(name, bytes)| format!("{name} ({bytes} bytes)")).collect();
        largest.join(", ")
    }
}
