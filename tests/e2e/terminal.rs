//! Running `bottle` with its stdout on a terminal: a pseudo-terminal made
//! by `python3` (which setup installs for the HTTPS upstream), so a test
//! sees what an operator at a terminal sees.

use std::path::Path;

use crate::harness::{World, bottle_bin, text};

/// Runs `args` as the child's argv with its stdout on a new pseudo-terminal
/// and stdin on /dev/null; copies what the terminal showed to stdout and the
/// child's stderr to stderr, and exits with its code.
const ON_A_PTY: &str = r#"
import os, subprocess, sys
master, slave = os.openpty()
child = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE)
os.close(slave)
shown = bytearray()
while True:
    try:
        chunk = os.read(master, 65536)
    except OSError:
        break
    if not chunk:
        break
    shown += chunk
err = child.stderr.read()
code = child.wait()
sys.stdout.buffer.write(bytes(shown))
sys.stderr.buffer.write(err)
sys.exit(code)
"#;

/// `bottle args…` in `world` with stdout on a terminal; requires success
/// and returns what the terminal showed (with `\n` line ends).
pub(crate) fn on_a_terminal(world: &World, args: &[&str]) -> String {
    on_a_terminal_with(world, &[], args)
}

/// [`on_a_terminal`] with `env` set for this command too.
pub(crate) fn on_a_terminal_with(world: &World, env: &[(&str, &str)], args: &[&str]) -> String {
    let mut argv = vec!["-c", ON_A_PTY, bottle_bin()];
    argv.extend_from_slice(args);
    let out = world.bottle_at(Path::new("python3"), &argv).envs(env.iter().copied()).output().expect("python3");
    assert!(out.status.success(), "bottle {args:?} on a terminal failed: {}\n{}", out.status, text(&out.stderr));
    text(&out.stdout).replace("\r\n", "\n")
}
