//! Egress on Docker: the bottle reaches an allowed upstream only through the
//! proxy, which injects the credential the bottle never sees; everything
//! else is denied or unreachable, and every request is in the audit log.

use crate::conformance::{Under, for_each_backend};
use crate::harness::{World, find_in_bottle, text, warm_image, write};
use crate::upstream::Upstream;

const TOKEN: &str = "e2e-upstream-token-91c3";

fn manifest(world: &World, up: &Upstream) -> std::path::PathBuf {
    let text = format!(
        "agents:\n  shell:\n    bottle: b\nbottles:\n  b:\n    agent_provider:\n      template: shell\n    env:\n      \
         UP_TOKEN: {{ from_host: E2E_UP_TOKEN, secret: true }}\n    egress:\n      - host: \"{ip}\"\n        \
         ports: [{port}]\n        methods: [GET]\n        paths: [\"/allowed/\"]\n        \
         auth: {{ scheme: bearer, from_host: E2E_UP_TOKEN }}\n",
        ip = up.ip,
        port = up.port
    );
    write(&world.path("work"), "bot-bottle.yaml", &text)
}

/// Run `curl ARGS` in the bottle as the agent; (exit code, stdout, stderr).
fn curl(world: &World, slug: &str, args: &[&str]) -> (i32, String, String) {
    let mut argv = vec!["exec", slug, "--", "curl", "-sS", "--max-time", "10"];
    argv.extend_from_slice(args);
    let out = world.run(&argv);
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

for_each_backend!(the_proxy_is_the_only_way_out: egress_on_docker, egress_on_smolmachines);

/// The proxy is the only way out and injects the credentials the bottle never sees.
fn the_proxy_is_the_only_way_out(under: &dyn Under) {
    warm_image();
    let world = under.world();
    let up = Upstream::start(&world.path("work"));
    let manifest = manifest(world, &up);
    let ca = up.ca.to_str().expect("utf8");
    let (slug, summary) = under.start(&manifest, &[("E2E_UP_TOKEN", TOKEN), ("BOT_BOTTLE_UPSTREAM_CA", ca)]);
    assert!(summary.contains("[auth:bearer from $E2E_UP_TOKEN]"), "{summary}");
    assert!(!summary.contains(TOKEN), "no secret in the summary");

    // Allowed: the upstream gets the real credential in place of the sentinel
    // the bottle holds, and its reflection of it (in a header, in the body,
    // split across chunks) comes back as the sentinel only.
    let sentinel = "bot-bottle-hidden:UP_TOKEN";
    let real = format!("Bearer {TOKEN}");
    let digest = {
        let out = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn();
        let mut child = out.expect("sha256sum");
        std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), real.as_bytes()).expect("write");
        text(&child.wait_with_output().expect("sha256sum").stdout)
            .split_whitespace()
            .next()
            .expect("digest")
            .to_string()
    };
    for path in ["/allowed/x", "/allowed/split/x"] {
        let (code, out, err) = curl(
            world,
            &slug,
            &["-i", "--suppress-connect-headers", "-H", &format!("Authorization: Bearer {sentinel}"), &up.url(path)],
        );
        assert_eq!(code, 0, "allowed request failed: {err}");
        assert!(!out.contains(TOKEN), "the credential comes back from {path}: {out}");
        let (head, body) = out.split_once("\r\n\r\n").expect("a response head");
        let reflected = head.lines().find_map(|l| l.strip_prefix("x-echo-authorization: ")).expect("the header");
        assert!(reflected.contains(sentinel), "the reflected header holds the sentinel: {head}");
        let echoed: serde_json::Value = serde_json::from_str(body).expect("upstream JSON");
        let in_body = echoed["headers"]["authorization"].as_str().expect("echoed");
        assert!(in_body.contains(sentinel), "the reflection in the body is the sentinel: {body}");
        assert_eq!(echoed["authorization_sha256"], digest.as_str(), "the upstream got the real credential");
        assert_eq!(echoed["path"], path);
    }

    // Plain http:// to the credential's route: refused with the reason, before anything leaves.
    let plain = format!("http://{}:{}/allowed/x", up.ip, up.port);
    let (_, body, _) = curl(world, &slug, &["-w", "\n%{http_code}", &plain]);
    assert!(body.ends_with("403") && body.contains("insecure_http"), "http:// with a credential: {body}");

    // Denied: another host (refused before TLS), a method and a path outside the route.
    let (code, _, err) = curl(world, &slug, &["https://example.com/"]);
    assert_ne!(code, 0);
    assert!(err.contains("403"), "CONNECT to an unlisted host is refused with 403: {err}");
    let (_, body, _) = curl(world, &slug, &["-w", "\n%{http_code}", "-X", "POST", &up.url("/allowed/x")]);
    assert!(body.ends_with("403"), "POST is not in the route's methods: {body}");
    let (_, body, _) = curl(world, &slug, &["-i", &up.url("/elsewhere")]);
    // `-i` shows the proxy's CONNECT answer (200) first, then the intercepted response.
    assert!(body.contains("\nHTTP/2 403") || body.contains("\nHTTP/1.1 403"), "path outside the route: {body}");
    assert!(body.to_ascii_lowercase().contains("x-bot-bottle-denied"), "the reason is in a header: {body}");

    // No way around the proxy: direct connections and outside DNS fail.
    let (code, _, _) = curl(world, &slug, &["--noproxy", "*", "--max-time", "5", &up.url("/allowed/x")]);
    assert_ne!(code, 0, "a direct connection must fail");
    let dns = world.run(&["exec", &slug, "--", "getent", "hosts", "example.com"]);
    assert!(!dns.status.success(), "outside names must not resolve: {}", text(&dns.stdout));

    // The audit log has both the allowed and the denied requests, and no secret.
    let log = world.ok(&["egress", "log", &slug]);
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert!(lines.iter().any(|l| l["decision"] == "allow" && l["path"] == "/allowed/x"), "{log}");
    assert!(lines.iter().any(|l| l["decision"] == "deny" && l["host"] == "example.com"), "{log}");
    assert!(!log.contains(TOKEN), "the audit log holds no secret");

    // The secret is nowhere in the bottle: not in env, /proc, argv or files.
    assert_eq!(find_in_bottle(world, &slug, TOKEN), Vec::<String>::new(), "the credential is nowhere in the bottle");
    let env = world.ok(&["exec", &slug, "--", "env"]);
    assert!(!env.contains(TOKEN) && env.contains("UP_TOKEN=bot-bottle-hidden:UP_TOKEN"), "{env}");
    assert!(env.contains("HTTPS_PROXY=http://"), "{env}");

    // Kill the proxy: the bottle fails closed; stop still removes everything.
    under.kill_proxy(&slug);
    let (code, _, _) = curl(world, &slug, &["--max-time", "5", &up.url("/allowed/x")]);
    assert_ne!(code, 0, "without its proxy the bottle has no network");
    world.ok(&["stop", &slug]);
    under.assert_gone(&slug);
}
