//! Supervise, from inside a real Docker bottle the way an agent would use
//! it: an MCP client (`curl` speaking streamable HTTP) lists the tools; a
//! `request_egress` for a host the proxy denies waits until `bottle
//! supervise approve` on the host, after which the same request passes the
//! proxy with no restart (the proxy's pid unchanged); a denial, an answer
//! and a timeout come back as such; the server refuses a request without
//! the bottle's token, or with another bottle's.

use bottle_testkit::fixtures::MCP_CLIENT_SCRIPT;
use bottle_testkit::fixtures::bridge::host_address;
use bottle_testkit::fixtures::upstream::Upstream;
use std::process::{Child, Command, Stdio};

use crate::harness::{World, require_docker, text, wait_for, write};

/// The `bottle exec` command that sends `message` to bottle `slug`'s supervise server.
pub(crate) fn mcp(world: &World, slug: &str, message: &serde_json::Value) -> Command {
    mcp_as(world, slug, message, None)
}

/// [`mcp`], presenting `token` instead of the bottle's own.
fn mcp_as(world: &World, slug: &str, message: &serde_json::Value, token: Option<&str>) -> Command {
    let message = message.to_string();
    let mut args = vec!["exec", slug, "--", "sh", "-c", MCP_CLIENT_SCRIPT, "mcp", &message];
    args.extend(token);
    let mut cmd = world.bottle(&args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// A `tools/call` of `tool` with `arguments`.
pub(crate) fn call(tool: &str, arguments: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})
}

/// The JSON-RPC result in an SSE (or JSON) response body.
fn result_of(body: &str) -> serde_json::Value {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:").map(str::trim).or(Some(l.trim())))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.get("result").is_some() || v.get("error").is_some())
        .unwrap_or_else(|| panic!("no JSON-RPC result in: {body}"))
}

/// The text a finished tool call returned.
pub(crate) fn tool_text(child: Child) -> String {
    let out = child.wait_with_output().expect("wait for the tool call");
    assert!(out.status.success(), "the MCP call failed: {}\n{}", text(&out.stderr), text(&out.stdout));
    let result = result_of(&text(&out.stdout));
    result["result"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no text: {result}")).to_string()
}

/// The pending request of `tool` whose fields hold `needle`, once `bottle supervise list --json` shows it.
fn pending(world: &World, tool: &str, needle: &str) -> serde_json::Value {
    let mut found = None;
    let listed = wait_for(30, || {
        let list: serde_json::Value = serde_json::from_str(&world.ok(&["supervise", "list", "--json"])).expect("json");
        found = list
            .as_array()
            .expect("an array")
            .iter()
            .find(|e| e["tool"] == tool && e["state"] == "pending" && e.to_string().contains(needle))
            .cloned();
        found.is_some()
    });
    assert!(listed, "no pending {tool} request with {needle} in `bottle supervise list`");
    found.expect("found")
}

/// The pid of bottle `slug`'s egress proxy, as the engine sees it.
fn egress_pid(slug: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}} {{.State.StartedAt}}", &format!("bb-{slug}-egress")])
        .output()
        .expect("docker inspect");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

pub(crate) fn manifest(world: &World, name: &str, timeout: &str) -> std::path::PathBuf {
    world.shell_manifest(name, &format!("    supervise: {{ timeout: {timeout} }}\n"))
}

#[test]
fn an_approved_request_opens_the_route_live_and_denials_answers_and_timeouts_come_back() {
    require_docker();
    let world = World::new();
    let up = Upstream::start(&world.path("work"), &host_address());
    let ca = up.ca.to_str().expect("utf8").to_string();
    let (slug, summary) = world.start_manifest(&manifest(&world, "sv.yaml", "10m"), &[("BOT_BOTTLE_UPSTREAM_CA", &ca)]);
    assert!(summary.contains(
        "supervise  on at http://127.0.0.1:8765/mcp: tools request_egress, request_push, ask_operator, notify"
    ));
    assert!(summary.contains("waits 10m for you"), "{summary}");

    // The tools, as an MCP client in the bottle lists them.
    let list = mcp(&world, &slug, &serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    let listed = result_of(&text(&list.output_concat()));
    let mut tools: Vec<&str> =
        listed["result"]["tools"].as_array().expect("tools").iter().filter_map(|t| t["name"].as_str()).collect();
    tools.sort();
    assert_eq!(tools, ["ask_operator", "notify", "request_egress", "request_push"]);

    // Denied, and the 403 tells the model which tool to call with which arguments.
    let url = up.url("/granted/x");
    let curl = |extra: &[&str]| {
        let mut args = vec!["exec", slug.as_str(), "--", "curl", "-sS", "--max-time", "10"];
        args.extend_from_slice(extra);
        world.run(&args)
    };
    let plain = format!("http://{}:{}/granted/x", up.ip, up.port);
    let denied = text(&curl(&["-w", "\n%{http_code}", &plain]).stdout);
    assert!(denied.ends_with("403"), "{denied}");
    let hint = format!(
        "call the MCP tool request_egress (server bot-bottle-supervise) with {{\"host\": \"{}\", \"ports\": [{}], \"reason\"",
        up.ip, up.port
    );
    assert!(denied.contains(&hint), "{denied}");
    assert_ne!(curl(&[&url]).status.code(), Some(0), "https is refused before approval");

    // The agent asks; the operator sees it (its control characters escaped) and approves.
    let before = egress_pid(&slug);
    let asked = mcp(
        &world,
        &slug,
        &call(
            "request_egress",
            serde_json::json!({
                "host": up.ip, "ports": [up.port], "reason": "fetch the \u{1b}[2Jfixtures", "methods": ["get"]
            }),
        ),
    )
    .spawn()
    .expect("spawn");
    let request = pending(&world, "request_egress", &up.ip);
    let id = request["id"].as_str().expect("id").to_string();
    let table = world.ok(&["supervise", "list"]);
    // The queue is the operator's: nowhere in the bottle, even for its root.
    let found =
        world.run(&["exec", &slug, "--user", "root", "--", "sh", "-c", "find / -name 'requests.jsonl' 2>/dev/null"]);
    assert_eq!(text(&found.stdout).trim(), "", "the bottle sees no queue file");
    assert!(table.contains("fetch the \\u{1b}[2Jfixtures") && !table.contains('\u{1b}'), "{table}");
    assert_eq!(request["methods"], serde_json::json!(["GET"]));
    let approved = world.run(&["supervise", "approve", &id, "--note", "fixtures only"]);
    assert!(approved.status.success(), "{}", text(&approved.stderr));
    let reply = tool_text(asked);
    assert!(reply.starts_with("approved: the egress proxy now allows") && reply.contains("fixtures only"), "{reply}");
    let passed = curl(&["-w", "\n%{http_code}", &url]);
    assert!(text(&passed.stdout).ends_with("200"), "the same request passes now: {}", text(&passed.stderr));
    assert_eq!(egress_pid(&slug), before, "no restart of the proxy");
    let post = text(&curl(&["-w", "\n%{http_code}", "-X", "POST", &url]).stdout);
    assert!(post.ends_with("403") && post.contains(r#""methods": ["POST"]"#), "only GET was granted: {post}");
    let again = world.run(&["supervise", "deny", &id]);
    assert!(!again.status.success() && text(&again.stderr).contains("already decided"), "{}", text(&again.stderr));

    // A denial and an answer come back as such.
    let asked =
        mcp(&world, &slug, &call("request_egress", serde_json::json!({"host": "other.example", "reason": "r"})))
            .spawn()
            .expect("spawn");
    let id = pending(&world, "request_egress", "other.example")["id"].as_str().expect("id").to_string();
    world.ok(&["supervise", "deny", &id, "--note", "use the mirror"]);
    let reply = tool_text(asked);
    assert!(reply.starts_with("denied by the operator") && reply.contains("use the mirror"), "{reply}");
    let asked = mcp(
        &world,
        &slug,
        &call("ask_operator", serde_json::json!({"question": "tabs or spaces?", "choices": ["tabs", "spaces"]})),
    )
    .spawn()
    .expect("spawn");
    let id = pending(&world, "ask_operator", "tabs or spaces?")["id"].as_str().expect("id").to_string();
    let wrong = world.run(&["supervise", "approve", &id]);
    assert!(!wrong.status.success() && text(&wrong.stderr).contains("answer it with"), "{}", text(&wrong.stderr));
    world.ok(&["supervise", "answer", &id, "spaces, four"]);
    assert_eq!(tool_text(asked), "spaces, four");
    let noted =
        tool_text(mcp(&world, &slug, &call("notify", serde_json::json!({"message": "done"}))).spawn().expect("spawn"));
    assert!(noted.starts_with("delivered to the operator"), "{noted}");

    // Bad input is the agent's error, not the operator's problem.
    let bad = mcp(&world, &slug, &call("request_egress", serde_json::json!({"host": "https://x.org/", "reason": "r"})));
    let bad = result_of(&text(&bad.output_concat()));
    assert_eq!(bad["result"]["isError"], true, "{bad}");
    assert!(bad.to_string().contains("is not a host name"), "{bad}");

    // Only the bottle's own token is served.
    for auth in [vec![], vec!["-H", "Authorization: Bearer not-the-token"]] {
        let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        args.extend(auth);
        args.push("http://127.0.0.1:8765/mcp");
        assert_eq!(text(&curl(&args).stdout), "401");
    }

    // The operator grants a route with no request: POST passes from then on.
    let refused = world.run(&["supervise", "grant", &slug, "--host", "https://x.org/"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("is not a host name"), "{}", text(&refused.stderr));
    let port = up.port.to_string();
    let granted = world.run(&["supervise", "grant", &slug, "--host", &up.ip, "--port", &port, "--method", "post"]);
    assert!(granted.status.success(), "{}", text(&granted.stderr));
    assert!(text(&granted.stderr).contains(&format!("bottle {slug} may reach {}", up.ip)), "{}", text(&granted.stderr));
    let post = text(&curl(&["-w", "\n%{http_code}", "-X", "POST", &url]).stdout);
    assert!(post.ends_with("200"), "the operator's grant allows POST: {post}");
}

#[test]
fn an_unanswered_request_is_denied_at_its_deadline_and_another_bottles_token_is_refused() {
    require_docker();
    let world = World::new();
    let (slug, summary) = world.start_manifest(&manifest(&world, "sv.yaml", "4s"), &[]);
    assert!(summary.contains("waits 4s for you"), "{summary}");
    let asked = mcp(&world, &slug, &call("request_egress", serde_json::json!({"host": "late.example", "reason": "r"})))
        .spawn()
        .expect("spawn");
    let id = pending(&world, "request_egress", "late.example")["id"].as_str().expect("id").to_string();
    let reply = tool_text(asked);
    assert!(reply.starts_with("denied: the operator did not answer within 4s"), "{reply}");
    let list: serde_json::Value = serde_json::from_str(&world.ok(&["supervise", "list", "--json"])).expect("json");
    let entry = list.as_array().expect("array").iter().find(|e| e["id"] == id.as_str()).expect("listed").clone();
    assert_eq!(entry["state"], "expired");
    let late = world.run(&["supervise", "approve", &id]);
    assert!(!late.status.success() && text(&late.stderr).contains("expired"), "{}", text(&late.stderr));

    // A second bottle with supervise presents the first bottle's token to its own server: refused.
    let (other, _) = world.start_manifest(&manifest(&world, "sv2.yaml", "4s"), &[]);
    let token = world.ok(&["exec", &slug, "--", "sh", "-c", "printf %s \"$BOT_BOTTLE_SUPERVISE_TOKEN\""]);
    assert_eq!(token.len(), 64, "the first bottle's token");
    let list = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let out = mcp_as(&world, &other, &list, Some(&token)).output().expect("run");
    assert!(!out.status.success(), "the other bottle's token opens no session: {}", text(&out.stdout));
    let refused = world.run(&[
        "exec",
        &other,
        "--",
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!("Authorization: Bearer {token}"),
        "http://127.0.0.1:8765/mcp",
    ]);
    assert_eq!(text(&refused.stdout), "401");
    let bad = world.run(&["supervise", "approve", "zz"]);
    assert!(!bad.status.success() && text(&bad.stderr).contains("is not a request id"), "{}", text(&bad.stderr));
}

/// Run a command and return its stdout (what the MCP helpers print).
trait OutputConcat {
    fn output_concat(self) -> Vec<u8>;
}

impl OutputConcat for Command {
    fn output_concat(mut self) -> Vec<u8> {
        let out = self.output().expect("run");
        assert!(out.status.success(), "{}", text(&out.stderr));
        out.stdout
    }
}

#[test]
fn a_push_the_policy_refuses_passes_once_request_push_is_approved() {
    use bottle_testkit::fixtures::repo::SeededRepo;
    use bottle_testkit::fixtures::sshd::Sshd;
    require_docker();
    let world = World::new();
    let gateway = host_address();
    let sshd = Sshd::start_on(&gateway);
    let name = world.path("").file_name().expect("name").to_string_lossy().into_owned();
    let repo = SeededRepo::new(&sshd, "bot-bottle-e2e", &name, &world.path("seed"), &world.path("home"));
    let yaml = repo.manifest(&sshd, &gateway) + "    supervise: true\n";
    let (slug, _) = world.start_manifest(&write(&world.path("work"), "bot-bottle.yaml", &yaml), &[]);
    let sh = |script: &str| world.run(&["exec", &slug, "--", "sh", "-c", script]);
    let url = repo.url(&sshd, &gateway);
    let cloned = sh(&format!("cd ~ && git clone -q {url} work && cd work && git commit -q --allow-empty -m fix"));
    assert!(cloned.status.success(), "clone through the gate: {}", text(&cloned.stderr));

    let refused = sh("cd ~/work && git push origin HEAD:fix/typo");
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success(), "refused by push.branches");
    assert!(
        stderr
            .contains(r#"call the MCP tool request_push (server bot-bottle-supervise) with {"branches": ["fix/typo"]"#),
        "{stderr}"
    );

    let asked =
        mcp(&world, &slug, &call("request_push", serde_json::json!({"branches": ["fix/*"], "reason": "a typo"})))
            .spawn()
            .expect("spawn");
    let id = pending(&world, "request_push", "fix/*")["id"].as_str().expect("id").to_string();
    let approved = world.run(&["supervise", "approve", &id]);
    assert!(text(&approved.stderr).contains("may push to fix/* from now on"), "{}", text(&approved.stderr));
    let reply = tool_text(asked);
    assert!(reply.starts_with("approved: the git gate now lets pushes update fix/*"), "{reply}");
    let pushed = sh("cd ~/work && git push -q origin HEAD:fix/typo");
    assert!(pushed.status.success(), "the push passes now: {}", text(&pushed.stderr));
    let upstream = std::process::Command::new("git")
        .args(["-C", repo.path().to_str().expect("utf8"), "rev-parse", "refs/heads/fix/typo"])
        .output()
        .expect("git");
    assert!(upstream.status.success(), "the branch landed upstream: {}", text(&upstream.stderr));
}
