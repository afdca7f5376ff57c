//! The agent's session inside a bottle: a tmux session named `agent`, run
//! as the agent's user in its workdir, that outlives whoever started it. A
//! detached bottle runs its agent there from launch; `bottle attach`
//! connects a terminal to it (tmux's own detach key, `C-b d`, leaves it
//! running; several terminals may attach in turn or at once); an attached
//! `bottle start` on a terminal is launch + this session + attach, and tears
//! the bottle down when the agent ends, not when the operator detaches.
//!
//! The session's command is the provider's argv, wrapped so that its exit
//! code lands in [`EXIT_FILE`] for whoever asks after it ended. A bottle
//! whose operator detached carries [`DETACHED_MARKER`] (root-owned, so the
//! agent cannot forge it): `cleanup` spares a bottle whose launcher is gone
//! only when it has it.

use crate::bottle::{Bottle, GuestUser};
use crate::provider::{run_checked, shell_quote};
use crate::{Error, ErrorKind, Result};

/// The tmux session's name.
pub const SESSION: &str = "agent";

/// The tmux configuration every agent session uses (written by root at
/// start): a status line that names the detach key, a long scrollback.
pub const TMUX_CONF: &str = "/etc/bot-bottle/tmux.conf";

/// Where the session's command leaves its exit code (the agent's own
/// file: informational only).
pub const EXIT_FILE: &str = "/tmp/bot-bottle-agent.exit";

/// A root-owned file in a bottle whose operator detached from it (or that
/// was started detached): it is meant to outlive its launcher.
pub const DETACHED_MARKER: &str = "/var/lib/bot-bottle/detached";

const CONF: &str = "# bot-bottle's agent session\n\
set -g status-left '[#{session_name}] '\n\
set -g status-right ' C-b d: detach (the agent keeps running) '\n\
set -g status-right-length 60\n\
set -g history-limit 50000\n\
set -g escape-time 10\n";

/// The argv, inside the bottle, that attaches a terminal to the session.
pub fn attach_argv() -> Vec<String> {
    ["tmux", "-f", TMUX_CONF, "attach-session", "-t", SESSION].map(String::from).to_vec()
}

/// Whether the bottle's image can run agent sessions (has `tmux`).
pub async fn supported(bottle: &dyn Bottle) -> Result<bool> {
    Ok(bottle.exec("command -v tmux >/dev/null", GuestUser::Agent).await?.success())
}

/// The root script that writes the tmux configuration every session uses
/// ([`TMUX_CONF`]); provisioning runs it with its other root steps, in one
/// command, before any session starts.
pub fn conf_script() -> String {
    format!("mkdir -p /etc/bot-bottle && printf '%s' {} > {TMUX_CONF} && chmod 644 {TMUX_CONF}", shell_quote(CONF))
}

/// The exit code of [`start`]'s script when the image has no tmux.
const NO_TMUX: i64 = 127;

/// Start the agent's session running `argv` in `workdir` (made when
/// missing), as the agent, in one command (which first checks that the
/// image has tmux). The tmux
/// configuration was written at provisioning ([`conf_script`]).
pub async fn start(bottle: &dyn Bottle, argv: &[String], workdir: &str) -> Result<()> {
    let command: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
    // The agent's exit code, kept for whoever asks after the session ended.
    let wrapped = format!("rm -f {EXIT_FILE}; {}; echo $? > {EXIT_FILE}", command.join(" "));
    let script = format!(
        "command -v tmux >/dev/null || exit {NO_TMUX}; rm -f {EXIT_FILE}; mkdir -p {dir} && \
         tmux -f {TMUX_CONF} new-session -d -s {SESSION} -x 200 -y 50 -c {dir} {wrapped}",
        dir = shell_quote(workdir),
        wrapped = shell_quote(&wrapped),
    );
    let out = bottle.exec(&script, GuestUser::Agent).await?;
    if out.exit_code == NO_TMUX {
        return Err(Error::new(
            ErrorKind::Provision,
            "the bottle's image has no tmux, which runs the agent's session; add `tmux` to the packages its \
             Dockerfile installs (the bundled images have it)",
        )
        .with_bottle(bottle.slug()));
    }
    if !out.success() {
        return Err(Error::new(
            ErrorKind::Provision,
            format!("starting the agent's session exited {}: {}", out.exit_code, out.stderr.trim()),
        )
        .with_bottle(bottle.slug()));
    }
    Ok(())
}

/// Whether the agent's session still runs.
pub async fn is_running(bottle: &dyn Bottle) -> bool {
    let check = format!("tmux -f {TMUX_CONF} has-session -t {SESSION} 2>/dev/null");
    bottle.exec(&check, GuestUser::Agent).await.is_ok_and(|r| r.success())
}

/// The agent's exit code, once its session has ended (`None` while it runs
/// or when it left none).
pub async fn exit_code(bottle: &dyn Bottle) -> Option<i32> {
    let out = bottle.exec(&format!("cat {EXIT_FILE} 2>/dev/null"), GuestUser::Agent).await.ok()?;
    out.stdout.trim().parse().ok()
}

/// Mark the bottle as meant to outlive its launcher.
pub async fn mark_detached(bottle: &dyn Bottle) -> Result<()> {
    let script = format!("mkdir -p /var/lib/bot-bottle && touch {DETACHED_MARKER}");
    run_checked(bottle, &script, GuestUser::Root, "marking the bottle detached").await
}

/// Whether the bottle is marked as meant to outlive its launcher.
pub async fn is_detached(bottle: &dyn Bottle) -> bool {
    bottle.exec(&format!("test -e {DETACHED_MARKER}"), GuestUser::Root).await.is_ok_and(|r| r.success())
}
