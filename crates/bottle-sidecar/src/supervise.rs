//! The supervise server: an MCP server (streamable HTTP, the official Rust
//! SDK `rmcp`) through which a bottle's agent asks its operator for things.
//!
//! `bottle-sidecar supervise --config FILE.json` reads a
//! [`SuperviseConfig`], listens on its `listen` address, prints
//! `supervise: listening on ADDR` to stderr once it accepts connections,
//! and serves `POST/GET/DELETE /mcp` until SIGTERM or SIGINT (exit 0).
//!
//! Every request must present the bottle's client token (a bearer token,
//! or the password of a Basic pair) and name a loopback host (`Host`), so
//! neither another bottle nor a web page reaches it. Each tool call is
//! checked ([`Ask::check`]), rate-limited per bottle (at most
//! [`MAX_PENDING`] waiting, [`MAX_PER_WINDOW`] in [`RATE_WINDOW`]) and
//! appended to the bottle's queue ([`Queue`]), where the operator sees it
//! (`bottle supervise list`); a waiting tool then polls the queue for the
//! operator's decision until its deadline, and says `denied` when none
//! came. The server needs no network: Docker runs it with none at all.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bottle_core::sidecar::{SidecarProcess, SuperviseConfig, TokenDigest};
use bottle_core::supervise::{
    Ask, MAX_PENDING, MAX_PER_WINDOW, MCP_PATH, Queue, RATE_WINDOW, Request, SERVER_NAME, Verdict,
};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, tool, tool_handler, tool_router};
use serde::Deserialize;

use crate::listen::Listener;

/// How often a waiting tool looks for the operator's decision.
const POLL: Duration = Duration::from_millis(200);
/// How long a client may take to send a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the supervise server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SuperviseError {
    /// The queue folder is not there or not writable.
    #[error("the supervise queue {path} is not usable: {source}")]
    Queue {
        /// The queue folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The configured address.
        addr: String,
        /// Why it cannot be bound.
        source: std::io::Error,
    },
}

/// What every session of the server shares: the bottle's queue and its limits.
#[derive(Debug)]
struct Shared {
    bottle: String,
    queue: Queue,
    timeout: Duration,
    pending: AtomicUsize,
    recent: Mutex<VecDeque<std::time::Instant>>,
}

/// A waiting request, counted while it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    /// Check, rate-limit and queue `ask`; wait for the operator's decision
    /// when it waits. What the tool says back, or why it was refused.
    async fn ask(&self, ask: Ask) -> Result<String, String> {
        ask.check()?;
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            while recent.front().is_some_and(|t| now.duration_since(*t) > RATE_WINDOW) {
                recent.pop_front();
            }
            if recent.len() >= MAX_PER_WINDOW {
                return Err(format!(
                    "rate limited: this bottle made {MAX_PER_WINDOW} requests in the last {} minutes; wait, and \
                     ask only for what you cannot do without",
                    RATE_WINDOW.as_secs() / 60
                ));
            }
            recent.push_back(now);
        }
        let waits = ask.waits();
        let _waiting = if waits {
            if self.pending.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                return Err(format!(
                    "rate limited: {MAX_PENDING} requests of this bottle already wait for the operator; wait for \
                     their answers first"
                ));
            }
            Some(Waiting(&self.pending))
        } else {
            None
        };
        let request = Request::new(&self.bottle, ask, self.timeout).map_err(|e| e.to_string())?;
        self.queue.push(&request).map_err(|e| format!("the request could not be queued: {e}"))?;
        if !waits {
            return Ok(format!("delivered to the operator (request {})", request.id));
        }
        loop {
            match self.queue.decision(&request.id) {
                Ok(Some(decision)) => return Ok(answer(&request, &decision.verdict, decision.note.as_deref())),
                Ok(None) => {}
                Err(e) => eprintln!("supervise: warning: reading the decisions failed: {e}"),
            }
            if bottle_core::backend::now_ms() >= request.deadline_ms {
                return Ok(format!(
                    "denied: the operator did not answer within {} (request {}); go on without it, or ask again \
                     later if it is essential",
                    bottle_core::supervise::describe_wait(self.timeout),
                    request.id
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// What a decided tool call returns to the agent.
fn answer(request: &Request, verdict: &Verdict, note: Option<&str>) -> String {
    let note = note.map(|n| format!("; the operator's note: {n}")).unwrap_or_default();
    match (verdict, &request.ask) {
        (Verdict::Approved, Ask::RequestEgress { host, .. }) => format!(
            "approved: the egress proxy now allows {host} for this bottle (no restart needed; retry the request){note}"
        ),
        (Verdict::Approved, Ask::RequestPush { branches, .. }) => {
            format!("approved: the git gate now lets pushes update {} (push again){note}", branches.join(", "))
        }
        (Verdict::Approved, _) => format!("approved{note}"),
        (Verdict::Denied, _) => format!("denied by the operator{note}; do not try to get around it"),
        (Verdict::Answered { answer }, _) => format!("{answer}{note}"),
    }
}

/// `request_egress`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct RequestEgressArgs {
    /// The host name to reach, e.g. `pypi.org` or `*.githubusercontent.com` (no scheme, port or path).
    host: String,
    /// The HTTP methods needed, e.g. ["GET"]; leave out for any.
    #[serde(default)]
    methods: Vec<String>,
    /// The URL path patterns needed, e.g. ["/simple/*"]; leave out for any.
    #[serde(default)]
    paths: Vec<String>,
    /// The ports needed, when not 443 (https) and 80 (http).
    #[serde(default)]
    ports: Vec<u16>,
    /// Why the task needs it, in one or two sentences the operator can judge.
    reason: String,
}

/// `request_push`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct RequestPushArgs {
    /// The branches (or globs such as `fix/*`) to push to, without `refs/heads/`.
    branches: Vec<String>,
    /// Why the task needs to push there, in one or two sentences the operator can judge.
    reason: String,
}

/// `ask_operator`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct AskOperatorArgs {
    /// The question, complete enough to answer without other context.
    question: String,
    /// The answers to offer, when there is a fixed set.
    #[serde(default)]
    choices: Vec<String>,
}

/// `notify`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct NotifyArgs {
    /// The message for the operator.
    message: String,
}

/// One MCP session's handler (all sessions share [`Shared`]).
#[derive(Debug, Clone)]
struct Supervisor {
    shared: Arc<Shared>,
    #[expect(dead_code, reason = "the tool_handler macro routes through Self::tool_router()")]
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl Supervisor {
    fn new(shared: Arc<Shared>) -> Self {
        Supervisor { shared, tool_router: Self::tool_router() }
    }

    #[tool(description = "Ask the operator to let this sandbox reach a host that its egress proxy denies (a 403 \
        whose body says `egress denied`). Blocks until the operator decides (minutes, possibly), then returns \
        `approved` (retry your request: it now passes) or `denied` with the reason. Ask only for hosts the task \
        needs, with a reason the operator can judge.")]
    async fn request_egress(&self, Parameters(args): Parameters<RequestEgressArgs>) -> Result<String, String> {
        let RequestEgressArgs { host, methods, paths, ports, reason } = args;
        let methods = methods.into_iter().map(|m| m.to_ascii_uppercase()).collect();
        let host = host.trim().to_ascii_lowercase();
        self.shared.ask(Ask::RequestEgress { host, methods, paths, ports, reason }).await
    }

    #[tool(description = "Ask the operator to let `git push` update branches that the git gate's push policy \
        refuses (`remote: bot-bottle: push to refs/heads/x refused: branch not in [...]`). Blocks until the \
        operator decides (minutes, possibly), then returns `approved` (push again: it now passes) or `denied` \
        with the reason.")]
    async fn request_push(&self, Parameters(args): Parameters<RequestPushArgs>) -> Result<String, String> {
        let branches = args.branches.into_iter().map(|b| b.trim().to_string()).collect();
        self.shared.ask(Ask::RequestPush { branches, reason: args.reason }).await
    }

    #[tool(description = "Ask the operator a question and wait for the answer (minutes, possibly): for a \
        decision that is theirs to make, or information only they have. Offer `choices` when the answer is one \
        of a few. Returns the operator's answer text, or `denied` when nobody answered in time.")]
    async fn ask_operator(&self, Parameters(args): Parameters<AskOperatorArgs>) -> Result<String, String> {
        self.shared.ask(Ask::AskOperator { question: args.question, choices: args.choices }).await
    }

    #[tool(description = "Tell the operator something (progress, a finished task, a problem) without waiting \
        for an answer. Returns at once.")]
    async fn notify(&self, Parameters(args): Parameters<NotifyArgs>) -> Result<String, String> {
        self.shared.ask(Ask::Notify { message: args.message }).await
    }
}

#[tool_handler]
impl ServerHandler for Supervisor {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(SERVER_NAME, env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "This sandbox (bottle {}) reaches the network only through an egress proxy with an allow-list, \
                 and its operator answers requests here. When the proxy denies a host the task needs, call \
                 request_egress; when the git gate refuses a push to a branch, call request_push; for a decision \
                 that is the operator's, call ask_operator; to report, call notify.",
                self.shared.bottle
            ))
    }
}

/// A plain-text response of the same body type as the MCP service's.
fn text(status: StatusCode, message: &str) -> Response<http_body_util::combinators::BoxBody<Bytes, Infallible>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{message}\n"))).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// Serves the supervise MCP server of `config` on `listener` until the
/// future is dropped.
pub async fn serve(config: SuperviseConfig, listener: Listener) -> Result<(), SuperviseError> {
    let queue = Queue::at(&config.queue_dir);
    std::fs::metadata(queue.dir())
        .and_then(|m| if m.is_dir() { Ok(()) } else { Err(std::io::Error::other("not a folder")) })
        .map_err(|source| SuperviseError::Queue { path: config.queue_dir.clone(), source })?;
    let shared = Arc::new(Shared {
        bottle: config.bottle.clone(),
        queue,
        timeout: Duration::from_secs(config.timeout_secs),
        pending: AtomicUsize::new(0),
        recent: Mutex::new(VecDeque::new()),
    });
    let service = StreamableHttpService::new(
        move || Ok(Supervisor::new(Arc::clone(&shared))),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let token: Arc<TokenDigest> = Arc::new(config.client_token);
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(connection) => connection,
            Err(err) => {
                eprintln!("supervise: warning: accepting a connection failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (service, token) = (service.clone(), Arc::clone(&token));
        tokio::spawn(async move {
            let handler = service_fn(move |req: hyper::Request<Incoming>| {
                let mut service = service.clone();
                let token = Arc::clone(&token);
                async move {
                    let headers = req.headers();
                    if !crate::token::presents(&token, headers.get(hyper::header::AUTHORIZATION)) {
                        return Ok::<_, Infallible>(text(
                            StatusCode::UNAUTHORIZED,
                            "this supervise server serves only its own bottle; send the bottle's token as \
                             `Authorization: Bearer TOKEN`",
                        ));
                    }
                    if req.uri().path() != MCP_PATH {
                        return Ok(text(StatusCode::NOT_FOUND, &format!("the MCP endpoint is {MCP_PATH}")));
                    }
                    tower_service::Service::call(&mut service, req).await
                }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), handler)
                .await;
        });
    }
}

/// Runs the supervise server with the configuration at `path`; returns the exit code.
pub fn main(path: &str) -> i32 {
    crate::program::main("supervise", path, crate::program::Workers::Exactly(1), run)
}

async fn run(config: SuperviseConfig) -> Result<(), SuperviseError> {
    let listen = config.listen.to_string();
    let bind_failed = |source| SuperviseError::Listen { addr: listen.clone(), source };
    let listener = Listener::bind(&config.listen).await.map_err(bind_failed)?;
    let addr = listener.local_addr().map_err(bind_failed)?;
    eprintln!("{}", SidecarProcess::Supervise.ready_line(&addr));
    tokio::select! {
        result = serve(config, listener) => result,
        () = crate::egress::shutdown() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(dir: &std::path::Path, timeout: Duration) -> Arc<Shared> {
        Arc::new(Shared {
            bottle: "b1".into(),
            queue: Queue::at(dir),
            timeout,
            pending: AtomicUsize::new(0),
            recent: Mutex::new(VecDeque::new()),
        })
    }

    fn ask(n: usize) -> Ask {
        Ask::AskOperator { question: format!("question {n}?"), choices: vec![] }
    }

    #[tokio::test]
    async fn at_most_four_requests_wait_and_a_fifth_is_refused_until_one_is_answered() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let shared = shared(tmp.path(), Duration::from_secs(30));
        let waiting: Vec<_> = (0..MAX_PENDING)
            .map(|n| {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move { shared.ask(ask(n)).await })
            })
            .collect();
        while shared.queue.requests().expect("requests").len() < MAX_PENDING {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let refused = shared.ask(ask(9)).await.expect_err("a fifth waits for nobody");
        assert!(refused.contains("4 requests of this bottle already wait"), "{refused}");
        let requests = shared.queue.requests().expect("requests");
        let first = requests.iter().find(|r| r.ask == ask(0)).expect("question 0 is queued").id.clone();
        let answer = Verdict::Answered { answer: "yes".into() };
        shared.queue.decide(&first, answer, None, bottle_core::supervise::GrantScope::Session).expect("answer");
        let mut waiting = waiting.into_iter();
        let answered = waiting.next().expect("question 0's task").await.expect("joined");
        assert_eq!(answered.as_deref(), Ok("yes"), "the answered one returns its answer");
        assert!(waiting.all(|task| !task.is_finished()), "the others still wait");
        let notified = shared.ask(Ask::Notify { message: "room again".into() }).await.expect("room again");
        assert!(notified.starts_with("delivered to the operator"), "{notified}");
        assert_eq!(
            shared.ask(Ask::Notify { message: " ".into() }).await.expect_err("empty"),
            "`message` is empty; say it in a sentence"
        );
    }

    #[tokio::test]
    async fn a_bottle_that_asks_too_often_is_told_to_wait() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let shared = shared(tmp.path(), Duration::from_secs(30));
        for n in 0..MAX_PER_WINDOW {
            shared.ask(Ask::Notify { message: format!("n{n}") }).await.expect("within the rate");
        }
        let refused = shared.ask(Ask::Notify { message: "one more".into() }).await.expect_err("over the rate");
        assert!(refused.contains("rate limited: this bottle made 30 requests"), "{refused}");
        assert_eq!(shared.queue.requests().expect("requests").len(), MAX_PER_WINDOW, "the refused one is not queued");
    }
}
