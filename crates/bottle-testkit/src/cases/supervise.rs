//! Supervise, the way an agent uses it: an MCP client in the bottle (`curl`
//! speaking streamable HTTP to the URL and with the token its environment
//! names) lists the tools; a `request_egress` for a host the proxy denies
//! waits in the bottle's queue until the operator approves it, after which
//! the same request passes the running proxy; the server refuses a client
//! without the token; teardown leaves no supervise process or container.

use std::time::Duration;

use bottle_core::supervise::{GrantScope, Queue, Standing, Verdict};

use crate::fixtures::MCP_CLIENT_SCRIPT;
use crate::fixtures::upstream::Upstream;
use crate::{World, probe};

pub(super) async fn supervise(world: &World) {
    let up = Upstream::start(&world.path("work"), &world.target().host_address());
    let manifest = world.shell_manifest("supervise.yaml", "    supervise: { timeout: 60s }\n");
    let ca = up.ca.to_str().expect("utf8");
    let running = world.start(&world.spec(manifest), &[("BOT_BOTTLE_UPSTREAM_CA", ca)]).await;
    let (slug, bottle) = (running.slug().to_string(), running.bottle());
    let script = probe::ok(bottle, "printf '%s' \"$BOT_BOTTLE_SUPERVISE_URL\"").await;
    assert!(script.starts_with("http://") && script.ends_with("/mcp"), "the bottle knows its server: {script}");
    probe::ok(bottle, &format!("cat > /tmp/mcp.sh <<'EOF'\n{MCP_CLIENT_SCRIPT}EOF")).await;

    let listed = probe::ok(bottle, r#"sh /tmp/mcp.sh '{"jsonrpc":"2.0","id":2,"method":"tools/list"}'"#).await;
    for tool in ["request_egress", "request_push", "ask_operator", "notify"] {
        assert!(listed.contains(&format!("\"name\":\"{tool}\"")), "{tool} is offered: {listed}");
    }

    // Denied first, then asked for; the request waits in the operator's queue.
    let url = up.url("/asked/x");
    let denied = probe::curl(bottle, &["--max-time", "10", &url]).await;
    assert_ne!(denied.exit_code, 0, "denied before approval");
    let call = serde_json::json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "request_egress", "arguments": {"host": up.ip, "ports": [up.port], "reason": "the fixtures"}}});
    probe::ok(bottle, &format!("nohup sh /tmp/mcp.sh '{call}' > /tmp/reply 2>&1 &")).await;
    let queue = Queue::of(world.state(), &slug);
    let mut id = None;
    for _ in 0..100 {
        let entries = queue.entries(bottle_core::backend::now_ms()).expect("the queue");
        id = entries.iter().find(|e| e.standing == Standing::Pending).map(|e| e.request.id.clone());
        if id.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = id.expect("the request reached the operator's queue");
    assert!(!probe::ok(bottle, "cat /tmp/reply").await.contains("approved"), "it waits for the operator");
    queue.decide(&id, Verdict::Approved, Some("ok".into()), GrantScope::Session).expect("approve");
    let mut reply = String::new();
    for _ in 0..100 {
        reply = probe::ok(bottle, "cat /tmp/reply").await;
        if reply.contains("\"result\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reply.contains("approved: the egress proxy now allows"), "the agent hears it: {reply}");
    let passed = probe::curl(bottle, &["--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", &url]).await;
    assert_eq!(passed.stdout, "200", "the same request passes the running proxy: {}", passed.stderr);

    // No token, no service.
    let anonymous = probe::ok(bottle, "curl -sS -o /dev/null -w '%{http_code}' \"$BOT_BOTTLE_SUPERVISE_URL\"").await;
    assert_eq!(anonymous, "401");

    running.teardown().await.expect("teardown");
    assert_eq!(world.resources(&slug), Vec::<String>::new(), "no supervise server left");
}
