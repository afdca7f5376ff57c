//! Egress: the bottle reaches an allowed HTTPS upstream (a real server on
//! the host) only through its proxy, which injects the credential the
//! bottle never sees; everything else is denied (403, with a reason) or
//! unreachable; every request is in the audit log; without its proxy the
//! bottle has no way out.

use bottle_core::Sidecar;

use crate::fixtures::upstream::Upstream;
use crate::{World, probe};

/// The credential the proxy injects.
const TOKEN: &str = "testkit-upstream-token-91c3";

pub(super) async fn egress(world: &World) {
    let up = Upstream::start(&world.path("work"), &world.target().host_address());
    let manifest = world.shell_manifest(
        "egress.yaml",
        &format!(
            "    env:\n      UP_TOKEN: {{ from_host: E2E_UP_TOKEN, secret: true }}\n    egress:\n      - host: \"{ip}\"\n        \
             ports: [{port}]\n        methods: [GET]\n        paths: [\"/allowed/\"]\n        \
             auth: {{ scheme: bearer, from_host: E2E_UP_TOKEN }}\n",
            ip = up.ip,
            port = up.port
        ),
    );
    let ca = up.ca.to_str().expect("utf8");
    let env = [("E2E_UP_TOKEN", TOKEN), ("BOT_BOTTLE_UPSTREAM_CA", ca)];
    let session = world.prepare(&world.spec(manifest), &env).await;
    let summary = session.summary();
    assert!(summary.contains("[auth:bearer from $E2E_UP_TOKEN]"), "{summary}");
    assert!(!summary.contains(TOKEN), "no secret in the summary");
    let running = session.launch(std::future::pending()).await.expect("launch");
    let slug = running.slug().to_string();
    let bottle = running.bottle();

    // Allowed: the upstream gets the real credential in place of the sentinel
    // the bottle holds, and its reflection of it (in a header, in the body,
    // split across chunks) comes back as the sentinel only.
    let sentinel = "bot-bottle-hidden:UP_TOKEN";
    let digest = sha256(&format!("Bearer {TOKEN}"));
    for path in ["/allowed/x", "/allowed/split/x"] {
        let auth = format!("Authorization: Bearer {sentinel}");
        let out = probe::curl(bottle, &["-i", "--suppress-connect-headers", "-H", &auth, &up.url(path)]).await;
        assert_eq!(out.exit_code, 0, "allowed request failed: {}", out.stderr);
        assert!(!out.stdout.contains(TOKEN), "the credential comes back from {path}: {}", out.stdout);
        let (head, body) = out.stdout.split_once("\r\n\r\n").expect("a response head");
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
    let body = probe::curl(bottle, &["-w", "\n%{http_code}", &plain]).await.stdout;
    assert!(body.ends_with("403") && body.contains("insecure_http"), "http:// with a credential: {body}");

    // Denied: another host (refused before TLS), a method and a path outside the route.
    let other = probe::curl(bottle, &["https://example.com/"]).await;
    assert_ne!(other.exit_code, 0);
    assert!(other.stderr.contains("403"), "CONNECT to an unlisted host is refused with 403: {}", other.stderr);
    let body = probe::curl(bottle, &["-w", "\n%{http_code}", "-X", "POST", &up.url("/allowed/x")]).await.stdout;
    assert!(body.ends_with("403"), "POST is not in the route's methods: {body}");
    let body = probe::curl(bottle, &["-i", &up.url("/elsewhere")]).await.stdout;
    // `-i` shows the proxy's CONNECT answer (200) first, then the intercepted response.
    assert!(body.contains("\nHTTP/2 403") || body.contains("\nHTTP/1.1 403"), "path outside the route: {body}");
    assert!(body.to_ascii_lowercase().contains("x-bot-bottle-denied"), "the reason is in a header: {body}");

    // No way around the proxy: direct connections and outside DNS fail.
    let direct = probe::curl(bottle, &["--noproxy", "*", "--max-time", "5", &up.url("/allowed/x")]).await;
    assert_ne!(direct.exit_code, 0, "a direct connection must fail");
    let dns = probe::sh(bottle, "getent hosts example.com").await;
    assert!(!dns.success(), "outside names must not resolve: {}", dns.stdout);

    // The audit log has both the allowed and the denied requests, and no secret.
    let mut log = Vec::new();
    bottle.sidecar_log(Sidecar::Egress, false, &mut log).await.expect("the egress audit log");
    let log = String::from_utf8(log).expect("utf8");
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert!(lines.iter().any(|l| l["decision"] == "allow" && l["path"] == "/allowed/x"), "{log}");
    assert!(lines.iter().any(|l| l["decision"] == "deny" && l["host"] == "example.com"), "{log}");
    assert!(!log.contains(TOKEN), "the audit log holds no secret");

    // The secret is nowhere in the bottle: not in env, /proc, argv or files.
    assert_eq!(probe::find(bottle, TOKEN).await, Vec::<String>::new(), "the credential is nowhere in the bottle");
    let env = probe::ok(bottle, "env").await;
    assert!(!env.contains(TOKEN) && env.contains("UP_TOKEN=bot-bottle-hidden:UP_TOKEN"), "{env}");
    assert!(env.contains("HTTPS_PROXY=http://"), "{env}");

    // Kill the proxy: the bottle fails closed; teardown still removes everything.
    world.target().kill_proxy(world, &slug);
    let closed = probe::curl(bottle, &["--max-time", "5", &up.url("/allowed/x")]).await;
    assert_ne!(closed.exit_code, 0, "without its proxy the bottle has no network");
    running.teardown().await.expect("teardown");
    assert_eq!(world.resources(&slug), Vec::<String>::new(), "nothing of the bottle is left");
}

/// The hex SHA-256 of `text`, by `sha256sum`.
fn sha256(text: &str) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("sha256sum");
    crate::fixtures::text(&out.stdout).split_whitespace().next().expect("digest").to_string()
}
