//! `bottle dashboard` driven as an operator drives it: the real binary in
//! a real tmux (its own server, on its own socket), keys sent with
//! `send-keys`, the screen read with `capture-pane`, against the real
//! Docker Engine. The engine may run other tests' bottles too: the test
//! selects its own bottle by slug and stops only it.

use std::process::Command;

use crate::harness::{CLEARED_ENV, World, bottle_bin, containers_of, text, wait_for};
use crate::supervise::{call, manifest, mcp, tool_text};

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

    /// Move the agents pane's selection to bottle `slug` (the selected
    /// bottle names the tab pane); other tests' bottles may be listed too.
    fn select(&self, slug: &str) {
        let selected = |s: &str| s.contains(&format!("┌ {slug} "));
        for _ in 0..100 {
            let before = self.screen("dash");
            if selected(&before) {
                break;
            }
            self.keys("j");
            wait_for(5, || self.screen("dash") != before);
        }
        self.wait_screen(10, "its bottle selected", selected);
    }

    /// Type `text` literally (no key names).
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "dash:dash", "-l", text]);
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

    tmux.select(&slug);
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

    // e: a shell in the bottle, as its agent's user, in a window of its own.
    tmux.keys("e");
    let shell = format!("{slug}-shell");
    assert!(wait_for(30, || tmux.windows().contains(&shell)), "no tmux window {shell}: {:?}", tmux.windows());
    tmux.run(&["send-keys", "-t", &format!("dash:{shell}"), "echo in-$(hostname)-as-$(id -un)", "Enter"]);
    let mut seen = String::new();
    let ran = wait_for(60, || {
        seen = tmux.screen(&shell);
        seen.contains(&format!("in-{slug}-as-")) && !seen.contains("-as-root")
    });
    assert!(ran, "the shell window does not run in the bottle as its agent:\n{seen}");
    tmux.run(&["send-keys", "-t", &format!("dash:{shell}"), "exit", "Enter"]);
    assert!(wait_for(30, || !tmux.windows().contains(&shell)), "exit closes the shell window");
    assert!(tmux.alive(), "and the dashboard runs on");

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

/// The slug of the running bottle labelled `label`, from `bottle list active --json`.
fn slug_labelled(world: &World, label: &str) -> String {
    let active: serde_json::Value = serde_json::from_str(&world.ok(&["list", "active", "--json"])).expect("json");
    let found = active.as_array().expect("an array").iter().find(|b| b["label"] == label);
    let slug = found.and_then(|b| b["slug"].as_str()).unwrap_or_else(|| panic!("no bottle labelled {label}: {active}"));
    world.track(slug);
    slug.to_string()
}

#[test]
fn two_bottles_started_from_the_dashboard_show_a_denial_take_an_approval_and_stop() {
    let world = World::new();
    crate::harness::warm_image();
    let manifest = manifest(&world, "dash.yaml", "10m");
    let manifest = manifest.to_str().expect("utf8 path");
    let tmux = Tmux::start(&world, 100, 30, &in_world(&world, &["--manifest", manifest, "dashboard"]));
    tmux.wait_screen(60, "the manifest pane", |s| s.contains("Manifest") && s.contains("shell shell"));

    // Two starts from the manifest pane, each with its label (the second
    // with a colour), running at once.
    let labels = [format!("dash-a-{}", std::process::id()), format!("dash-b-{}", std::process::id())];
    tmux.keys("Tab");
    tmux.keys("Tab");
    for (n, label) in labels.iter().enumerate() {
        tmux.keys("Enter");
        tmux.wait_screen(10, "the start window", |s| s.contains("Start agent shell (detached)."));
        tmux.type_text(label);
        if n == 1 {
            tmux.keys("Right");
        }
        tmux.keys("Enter");
        tmux.wait_screen(10, "the start under way", |s| s.contains(&format!("starting shell ({label})")));
    }
    // A row whose sidecars are all up (a bottle still launching shows `:down`).
    let up =
        |s: &str, label: &str| s.lines().any(|l| l.contains(label) && l.contains("supervise") && !l.contains(":do"));
    let screen = tmux.wait_screen(240, "both bottles up in the agents pane", |s| labels.iter().all(|l| up(s, l)));
    let slugs: Vec<String> = labels.iter().map(|l| slug_labelled(&world, l)).collect();
    assert!(!screen.contains("stopped (resume)"), "a bottle being started is not listed as stopped:\n{screen}");
    let listed = world.ok(&["list", "active", "--json"]);
    let b: Vec<serde_json::Value> = serde_json::from_str(&listed).expect("json");
    let second = b.iter().find(|x| x["slug"] == slugs[1].as_str()).expect("listed");
    assert_eq!(second["color"], "red", "the colour chosen in the start window: {second}");

    // A request the proxy denies shows, highlighted, in the egress tab.
    let slug = &slugs[0];
    let denied = world.run(&[
        "exec",
        slug,
        "--",
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://denied.example/x",
    ]);
    assert_eq!(text(&denied.stdout).trim(), "403", "{}", text(&denied.stderr));
    tmux.keys("Tab");
    tmux.select(slug);
    tmux.keys("1");
    tmux.wait_screen(30, "the denial in the egress tab", |s| {
        s.lines().any(|l| l.contains("deny") && l.contains("denied.example"))
    });

    // The agent asks through supervise; approving it in the requests tab unblocks its call.
    let asked =
        mcp(&world, slug, &call("request_egress", serde_json::json!({"host": "granted.example", "reason": "docs"})))
            .spawn()
            .expect("spawn the MCP call");
    tmux.keys("2");
    tmux.wait_screen(60, "the pending request", |s| {
        s.lines().any(|l| l.contains("pending") && l.contains("granted.example"))
    });
    tmux.keys("y");
    tmux.wait_screen(30, "that it was approved", |s| s.contains(&format!("bottle {slug} may reach granted.example")));
    let reply = tool_text(asked);
    assert!(reply.starts_with("approved: the egress proxy now allows"), "{reply}");
    tmux.keys("4");
    tmux.wait_screen(30, "the live grant in the details", |s| s.contains("+ granted.example"));

    // Stop from the dashboard removes the bottle and its row.
    tmux.keys("s");
    tmux.wait_screen(30, "the stop question", |s| s.contains(&format!("Stop bottle {slug}?")));
    tmux.keys("y");
    tmux.wait_screen(180, "the bottle stopped and its row gone", |s| {
        s.contains(&format!("bottle {slug} stopped and removed")) && !s.contains(&labels[0])
    });
    assert!(containers_of(slug).is_empty(), "stop removed every container of {slug}");
    assert!(!containers_of(&slugs[1]).is_empty(), "the other bottle runs on");
    tmux.keys("q");
    assert!(wait_for(10, || !tmux.alive()), "q quits the dashboard");
    assert!(!containers_of(&slugs[1]).is_empty(), "quitting the dashboard stops no agent");
    world.ok(&["stop", &slugs[1], "--yes"]);
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
