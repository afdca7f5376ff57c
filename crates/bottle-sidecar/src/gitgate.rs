//! The git gate (filled by its author).

/// Run the git gate with the configuration at `path`; returns the exit code.
pub fn main(_path: &str) -> i32 {
    2
}
