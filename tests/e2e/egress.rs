//! `bottle egress log`: the egress proxy's audit log, one JSON line per
//! request, allowed and denied, with no secret in it. (What the proxy does
//! is the conformance suite's egress case.)

use bottle_testkit::fixtures::bridge::host_address;
use bottle_testkit::fixtures::upstream::Upstream;

use crate::harness::{World, require_docker, text, warm_image};

const TOKEN: &str = "e2e-upstream-token-91c3";

#[test]
fn egress_log_prints_allowed_and_denied_requests() {
    require_docker();
    warm_image();
    let world = World::new();
    let up = Upstream::start(&world.path("work"), &host_address());
    let manifest = world.shell_manifest(
        "bot-bottle.yaml",
        &format!(
            "    env:\n      \
             UP_TOKEN: {{ from_host: E2E_UP_TOKEN, secret: true }}\n    egress:\n      - host: \"{ip}\"\n        \
             ports: [{port}]\n        paths: [\"/allowed/\"]\n        auth: {{ scheme: bearer, from_host: E2E_UP_TOKEN }}\n",
            ip = up.ip,
            port = up.port
        ),
    );
    let ca = up.ca.to_str().expect("utf8");
    let (slug, _) = world.start_manifest(&manifest, &[("E2E_UP_TOKEN", TOKEN), ("BOT_BOTTLE_UPSTREAM_CA", ca)]);
    let curl = |url: &str| world.run(&["exec", &slug, "--", "curl", "-sS", "--max-time", "10", url]);
    let allowed = curl(&up.url("/allowed/x"));
    assert!(allowed.status.success(), "allowed request failed: {}", text(&allowed.stderr));
    assert!(!curl("https://example.com/").status.success(), "an unlisted host is denied");

    let log = world.ok(&["egress", "log", &slug]);
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert!(lines.iter().any(|l| l["decision"] == "allow" && l["path"] == "/allowed/x"), "{log}");
    assert!(lines.iter().any(|l| l["decision"] == "deny" && l["host"] == "example.com"), "{log}");
    assert!(!log.contains(TOKEN), "the audit log holds no secret");
    world.ok(&["stop", &slug]);
}
