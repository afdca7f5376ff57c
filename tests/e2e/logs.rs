//! The audit logs outlive the bottle: `bottle egress log` of a stopped
//! bottle prints the requests it made (JSON lines when stdout is not a
//! terminal or with `--json`, one short line each on a terminal, `--follow`
//! printing and exiting), and `gate log` of a bottle without a git gate
//! says so in one line and fails.

use bottle_testkit::fixtures::bridge::host_address;
use bottle_testkit::fixtures::upstream::Upstream;

use crate::harness::{World, require_docker, text, warm_image};
use crate::terminal::on_a_terminal;

/// Whether `line` is the short line of an allowed `GET` of `host` `path`
/// answered 200: `HH:MM:SS allow GET HOST PATH 200`.
fn is_short_allowed_line(line: &str, host: &str, path: &str) -> bool {
    let (clock, rest) = line.split_at(line.len().min(8));
    let clock_ok = clock.len() == 8 && clock.bytes().enumerate().all(|(i, b)| (i % 3 == 2) == (b == b':'));
    clock_ok && rest == format!(" allow GET {host} {path} 200")
}

#[test]
fn a_stopped_bottles_egress_log_still_prints_its_requests() {
    require_docker();
    warm_image();
    let world = World::new();
    let up = Upstream::start(&world.path("work"), &host_address());
    let route = format!(
        "    egress:\n      - host: \"{}\"\n        ports: [{}]\n        paths: [\"/kept/\"]\n",
        up.ip, up.port
    );
    let manifest = world.shell_manifest("bot-bottle.yaml", &route);
    let ca = up.ca.to_str().expect("utf8");
    let (slug, _) = world.start_manifest(&manifest, &[("BOT_BOTTLE_UPSTREAM_CA", ca)]);
    let got = world.run(&["exec", &slug, "--", "curl", "-sS", "--max-time", "10", &up.url("/kept/one")]);
    assert!(got.status.success(), "the allowed request: {}", text(&got.stderr));

    // Running, on a terminal: the live log, one short line per request.
    let live = on_a_terminal(&world, &["egress", "log", &slug]);
    assert!(live.lines().any(|l| is_short_allowed_line(l, &up.ip, "/kept/one")), "{live}");

    world.ok(&["stop", &slug]);
    let saved = world.path("state/bot-bottle").join(&slug).join("logs/egress.jsonl");
    assert!(saved.is_file(), "stop kept the log in the state folder");

    // Stopped, stdout not a terminal: the saved JSON lines as they are.
    let piped = world.ok(&["egress", "log", &slug]);
    let lines: Vec<serde_json::Value> =
        piped.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
    let request = lines.iter().find(|l| l["path"] == "/kept/one").unwrap_or_else(|| panic!("the request: {piped}"));
    assert_eq!((request["decision"].as_str(), request["status"].as_u64()), (Some("allow"), Some(200)), "{request}");
    assert_eq!(request["host"], up.ip.as_str());
    assert_eq!(piped, std::fs::read_to_string(&saved).expect("saved log"), "printed as saved");
    assert_eq!(world.ok(&["egress", "log", &slug, "--json"]), piped, "--json: the same lines");
    assert_eq!(world.ok(&["egress", "log", &slug, "--follow"]), piped, "--follow on a stopped bottle prints and exits");

    // Stopped, on a terminal: the short lines; with --json the lines as they are.
    let short = on_a_terminal(&world, &["egress", "log", &slug]);
    assert!(short.lines().any(|l| is_short_allowed_line(l, &up.ip, "/kept/one")), "{short}");
    assert!(!short.contains('{'), "no JSON on the terminal: {short}");
    assert_eq!(on_a_terminal(&world, &["egress", "log", &slug, "--json"]), piped);
}

#[test]
fn gate_log_of_a_bottle_without_git_upstreams_says_so_in_one_line_and_fails() {
    require_docker();
    let world = World::new();
    let slug = world.start_detached(&[]);
    let says_so = |when: &str| {
        let out = world.run(&["gate", "log", &slug]);
        assert_eq!(out.status.code(), Some(1), "{when}: {}", text(&out.stderr));
        assert_eq!(
            text(&out.stderr),
            format!("bottle {slug} has no git gate: its manifest lists no git upstreams\n"),
            "{when}: one line, not an engine error"
        );
        assert!(out.stdout.is_empty(), "{when}: nothing on stdout: {}", text(&out.stdout));
    };
    says_so("running");
    world.ok(&["stop", &slug]);
    says_so("stopped");

    let unknown = world.run(&["egress", "log", "shell-00000000"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown.stderr).contains("`bottle list stopped`"), "{}", text(&unknown.stderr));
}
