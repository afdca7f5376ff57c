//! `bottle dashboard` driven as an operator drives it: the real binary in
//! a real tmux (its own server, on its own socket), keys sent with
//! `send-keys`, the screen read with `capture-pane`, against the real
//! Docker Engine. The engine may run other tests' bottles too: the test
//! selects its own bottle by slug and stops only it.

use std::process::Command;

use crate::harness::{CLEARED_ENV, World, bottle_bin, containers_of, text, wait_for};

/// A tmux server of this test's own, with one session running a command.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// A detached `width`×`height` session `dash` (window `dash`) running `command` in `world`'s work folder.
    fn start(world: &World, width: u16, height: u16, command: &str) -> Tmux {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let tmux = Tmux { socket: format!("bot-bottle-dash-{}-{nanos}", std::process::id()) };
        let work = world.path("work");
        let (width, height) = (width.to_string(), height.to_string());
        let work = work.to_str().expect("utf8 path");
        tmux.run(&["new-session", "-d", "-s", "dash", "-n", "dash", "-x", &width, "-y", &height, "-c", work, command]);
        tmux
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("tmux");
        // No operator's ~/.tmux.conf: the defaults, the same everywhere.
        cmd.args(["-L", &self.socket, "-f", "/dev/null"]).args(args);
        cmd
    }

    /// Run tmux `args`, requiring success; its stdout.
    fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("run tmux");
        assert!(out.status.success(), "tmux {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }

    /// What window `window` of the session shows now.
    fn screen(&self, window: &str) -> String {
        self.run(&["capture-pane", "-p", "-t", &format!("dash:{window}")])
    }

    /// Type `keys` into the dashboard's window.
    fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "dash:dash", keys]);
    }

    /// Wait up to `secs` for the dashboard's screen to pass `check`; the last screen.
    fn wait_screen(&self, secs: u64, what: &str, check: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let met = wait_for(secs, || {
            last = self.screen("dash");
            check(&last)
        });
        assert!(met, "after {secs}s the dashboard still does not show {what}; it shows:\n{last}");
        last
    }

    fn windows(&self) -> Vec<String> {
        self.run(&["list-windows", "-t", "dash", "-F", "#{window_name}"]).lines().map(str::to_string).collect()
    }

    fn alive(&self) -> bool {
        self.command(&["has-session", "-t", "dash"]).output().is_ok_and(|o| o.status.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Only this test's server (its own socket).
        let _ = self.command(&["kill-server"]).output();
    }
}

/// `'text'` for a POSIX shell.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The shell command that runs `bottle args…` in `world`'s isolated
/// environment: tmux runs it in its server's environment, so every
/// variable is passed on the command line.
fn in_world(world: &World, args: &[&str]) -> String {
    let mut parts = vec!["env".to_string()];
    for name in CLEARED_ENV {
        parts.push(format!("-u {name}"));
    }
    for (key, value) in world.isolated_env() {
        parts.push(quoted(&format!("{key}={value}")));
    }
    parts.push(quoted(bottle_bin()));
    parts.extend(args.iter().map(|a| quoted(a)));
    parts.join(" ")
}

#[test]
fn the_dashboard_lists_a_bottle_attaches_to_it_and_stops_it_after_asking() {
    let world = World::new();
    let label = format!("dash-e2e-{}", std::process::id());
    let slug = world.start_detached(&["--label", &label]);
    let tmux = Tmux::start(&world, 100, 30, &in_world(&world, &["dashboard"]));
    let screen = tmux.wait_screen(60, "the bottle's row", |s| s.contains(&label));
    assert!(screen.contains("Manifest") && screen.contains("q quit"), "the panes and the footer:\n{screen}");

    // The engine may run other tests' bottles: move down to ours (the
    // selected bottle names the tab pane).
    let selected = |s: &str| s.contains(&format!("┌ {slug} "));
    for _ in 0..100 {
        let before = tmux.screen("dash");
        if selected(&before) {
            break;
        }
        tmux.keys("j");
        wait_for(5, || tmux.screen("dash") != before);
    }
    tmux.wait_screen(10, "its bottle selected", selected);
    tmux.wait_screen(10, "the bottle's sidecars", |s| s.lines().any(|l| l.contains(&label) && l.contains("egress")));

    // a: inside tmux, the agent's session opens in a new window named after the bottle.
    tmux.keys("a");
    assert!(wait_for(30, || tmux.windows().contains(&slug)), "no tmux window {slug}: {:?}", tmux.windows());
    let mut attached = String::new();
    let shown = wait_for(60, || {
        attached = tmux.screen(&slug);
        attached.contains("C-b d: detach")
    });
    assert!(shown, "the new window does not show the agent's session:\n{attached}");
    tmux.run(&["kill-window", "-t", &format!("dash:{slug}")]);
    assert!(tmux.alive(), "closing the attach window leaves the dashboard running");

    // s asks first; anything but y keeps the bottle.
    tmux.keys("s");
    tmux.wait_screen(30, "the stop question", |s| s.contains(&format!("Stop bottle {slug}?")));
    tmux.keys("n");
    tmux.wait_screen(10, "that it was not stopped", |s| s.contains(&format!("bottle {slug} not stopped")));
    assert!(!containers_of(&slug).is_empty(), "n keeps the bottle");

    tmux.keys("s");
    tmux.wait_screen(30, "the stop question again", |s| s.contains(&format!("Stop bottle {slug}?")));
    tmux.keys("y");
    let screen = tmux.wait_screen(180, "the bottle stopped and its row gone", |s| {
        s.contains(&format!("bottle {slug} stopped and removed")) && !s.contains(&label)
    });
    assert!(containers_of(&slug).is_empty(), "stop removed every container of the bottle:\n{screen}");

    // q leaves the dashboard (and so the tmux session it ran in).
    tmux.keys("q");
    assert!(wait_for(10, || !tmux.alive()), "q quits the dashboard");
    let stopped = world.ok(&["list", "stopped", "--json"]);
    assert!(stopped.contains(&slug), "the stopped bottle can be resumed: {stopped}");
}

#[test]
fn without_a_terminal_the_dashboard_says_what_prints_the_same() {
    let world = World::new();
    let out = world.run(&["dashboard"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: bottle dashboard needs a terminal; `bottle list active` and `bottle supervise list` print the same"
    );
}
