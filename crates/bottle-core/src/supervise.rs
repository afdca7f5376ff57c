//! The supervise queue: what a bottle's agent asks its operator for, and
//! the operator's answers, kept as JSON lines in the bottle's state folder
//! (`<state>/<slug>/supervise/`), which nothing in the bottle can reach:
//!
//! - `requests.jsonl`, appended by the supervise sidecar, one [`Request`]
//!   per tool call the agent made (`request_egress`, `ask_operator`,
//!   `notify`);
//! - `decisions.jsonl`, appended by the operator's `bottle supervise
//!   approve|deny|answer` ([`decide`]), one [`Decision`] per request at
//!   most, under the folder's lock; the sidecar waits for it;
//! - `grants.jsonl`, appended before the decision that approves a
//!   `request_egress`, one [`Grant`] per approved route: the bottle's egress
//!   proxy reads it when a request would be denied, so an approval widens
//!   the running bottle's policy live (no restart, open connections
//!   unaffected). This folder is the control channel between the operator,
//!   the supervise sidecar and the proxy.
//!
//! A request nobody answers before its deadline counts as denied. Text the
//! agent wrote is shown to the operator only through [`escape`], so an
//! agent cannot paint the operator's terminal.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sidecar::EgressRule;
use crate::state::StateRoot;
use crate::{Error, ErrorKind, Result};

/// The folder in a bottle's state folder holding its supervise queue.
pub const SUPERVISE_DIR: &str = "supervise";
/// The requests file in [`SUPERVISE_DIR`].
pub const REQUESTS_FILE: &str = "requests.jsonl";
/// The decisions file in [`SUPERVISE_DIR`].
pub const DECISIONS_FILE: &str = "decisions.jsonl";
/// The live egress grants file in [`SUPERVISE_DIR`].
pub const GRANTS_FILE: &str = "grants.jsonl";
/// The lock file in [`SUPERVISE_DIR`] that decisions are written under.
const LOCK_FILE: &str = ".lock";

/// How long a request waits for the operator by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The most requests of one bottle that may wait for the operator at once.
pub const MAX_PENDING: usize = 4;
/// The most requests one bottle may make in [`RATE_WINDOW`].
pub const MAX_PER_WINDOW: usize = 30;
/// The window [`MAX_PER_WINDOW`] counts in.
pub const RATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// The longest text (in characters) a request's field may hold.
pub const MAX_TEXT_CHARS: usize = 2000;
/// An approval must reach the sidecar this long before the deadline (the
/// sidecar looks for it until the deadline itself).
pub const DECISION_MARGIN: Duration = Duration::from_secs(2);

/// The port the bottle reaches its supervise server at, on its own loopback.
pub const SUPERVISE_PORT: u16 = 8765;
/// The path of the MCP endpoint on the supervise server.
pub const MCP_PATH: &str = "/mcp";
/// The variable that tells the bottle its supervise server's MCP URL.
pub const URL_ENV: &str = "BOT_BOTTLE_SUPERVISE_URL";
/// The variable holding the token the bottle presents to its supervise
/// server (`Authorization: Bearer …`): the bottle's own client token, the
/// one its proxy URL carries.
pub const TOKEN_ENV: &str = "BOT_BOTTLE_SUPERVISE_TOKEN";
/// The MCP server's name as the agent's tools show it.
pub const SERVER_NAME: &str = "bot-bottle-supervise";

/// What the agent asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "tool", rename_all = "snake_case")]
pub enum Ask {
    /// `request_egress`: a route the bottle's egress proxy does not allow yet.
    RequestEgress {
        /// The host (or `*.domain` pattern) to reach.
        host: String,
        /// The methods wanted (none: any).
        #[serde(default)]
        methods: Vec<String>,
        /// The path patterns wanted (none: any).
        #[serde(default)]
        paths: Vec<String>,
        /// The ports wanted (none: 443 and 80).
        #[serde(default)]
        ports: Vec<u16>,
        /// Why, in the agent's words.
        reason: String,
    },
    /// `request_push`: branch globs the git gate's push policy does not allow yet.
    RequestPush {
        /// The branch globs wanted (`agent/feature-x`, `fix/*`).
        branches: Vec<String>,
        /// Why, in the agent's words.
        reason: String,
    },
    /// `ask_operator`: a question, with the choices offered when there are some.
    AskOperator {
        /// The question.
        question: String,
        /// The answers offered (none: free text).
        #[serde(default)]
        choices: Vec<String>,
    },
    /// `notify`: a message; nothing waits for it.
    Notify {
        /// The message.
        message: String,
    },
}

impl Ask {
    /// Its tool's name.
    pub fn tool(&self) -> &'static str {
        match self {
            Ask::RequestEgress { .. } => "request_egress",
            Ask::RequestPush { .. } => "request_push",
            Ask::AskOperator { .. } => "ask_operator",
            Ask::Notify { .. } => "notify",
        }
    }

    /// Whether it waits for the operator.
    pub fn waits(&self) -> bool {
        !matches!(self, Ask::Notify { .. })
    }

    /// What is wrong with it, for the agent: an empty or over-long field, a
    /// host that is no host name, a method that is no method.
    pub fn check(&self) -> std::result::Result<(), String> {
        let text = |name: &str, value: &str, required: bool| {
            if required && value.trim().is_empty() {
                return Err(format!("`{name}` is empty; say it in a sentence"));
            }
            if value.chars().count() > MAX_TEXT_CHARS {
                return Err(format!("`{name}` is longer than {MAX_TEXT_CHARS} characters; shorten it"));
            }
            Ok(())
        };
        match self {
            Ask::RequestEgress { host, methods, paths, ports, reason } => {
                let bare = host.strip_prefix("*.").unwrap_or(host);
                let valid = !bare.is_empty()
                    && bare.len() <= 253
                    && bare.split('.').all(|label| {
                        !label.is_empty()
                            && label.len() <= 63
                            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    });
                if !valid {
                    return Err(format!(
                        "`host` {:?} is not a host name; give a name such as `api.example.com` or `*.example.com` \
                         (no scheme, port or path)",
                        escape(host)
                    ));
                }
                if let Some(bad) = methods.iter().find(|m| m.is_empty() || !m.chars().all(|c| c.is_ascii_alphabetic()))
                {
                    return Err(format!("`methods` holds {:?}, which is no HTTP method (GET, POST, …)", escape(bad)));
                }
                if let Some(bad) = paths.iter().find(|p| !p.starts_with('/') || p.chars().any(char::is_control)) {
                    return Err(format!("`paths` holds {:?}; a path pattern starts with `/`", escape(bad)));
                }
                if methods.len() > 16 || paths.len() > 32 || ports.len() > 16 {
                    return Err("at most 16 methods, 32 paths and 16 ports".into());
                }
                if ports.contains(&0) {
                    return Err("`ports` holds 0, which is no port".into());
                }
                text("reason", reason, true)
            }
            Ask::RequestPush { branches, reason } => {
                if branches.is_empty() || branches.len() > 16 {
                    return Err("`branches` needs 1 to 16 branch names or globs".into());
                }
                let bad = |b: &String| {
                    b.is_empty()
                        || b.len() > 200
                        || b.starts_with('/')
                        || b.starts_with("refs/")
                        || b.contains("..")
                        || b.chars().any(|c| c.is_control() || c.is_whitespace() || "~^:?[\\".contains(c))
                };
                if let Some(bad) = branches.iter().find(|b| bad(b)) {
                    return Err(format!(
                        "`branches` holds {:?}, which is no branch name or glob (write `agent/x` or `fix/*`, \
                         without refs/heads/)",
                        escape(bad)
                    ));
                }
                text("reason", reason, true)
            }
            Ask::AskOperator { question, choices } => {
                text("question", question, true)?;
                if choices.len() > 16 {
                    return Err("at most 16 choices".into());
                }
                choices.iter().try_for_each(|c| text("choices", c, true))
            }
            Ask::Notify { message } => text("message", message, true),
        }
    }
}

/// One request of the agent's, as `requests.jsonl` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Its id (8 hex digits), which the operator's commands name.
    pub id: String,
    /// The bottle that asked.
    pub bottle: String,
    /// When it was asked, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Until when it waits (the same as `time_ms` for a notification).
    pub deadline_ms: u64,
    /// What was asked.
    #[serde(flatten)]
    pub ask: Ask,
}

impl Request {
    /// A new request of bottle `bottle`'s, made now, waiting `timeout`.
    pub fn new(bottle: &str, ask: Ask, timeout: Duration) -> Result<Self> {
        let mut bytes = [0u8; 4];
        getrandom::fill(&mut bytes).map_err(|e| {
            Error::new(ErrorKind::Io, format!("the system has no random numbers to name a request: {e}"))
        })?;
        let time_ms = crate::backend::now_ms();
        let wait = if ask.waits() { u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX) } else { 0 };
        Ok(Request {
            id: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            bottle: bottle.to_string(),
            time_ms,
            deadline_ms: time_ms.saturating_add(wait),
            ask,
        })
    }
}

/// What the operator decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Approved (a route is granted for a `request_egress`).
    Approved,
    /// Denied.
    Denied,
    /// An `ask_operator` answered.
    Answered {
        /// The answer.
        answer: String,
    },
}

/// How long an approval holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantScope {
    /// For the bottle as it runs now.
    #[default]
    Session,
    /// Also for every `resume` of it (kept in its state).
    Always,
}

/// The operator's decision on one request, as `decisions.jsonl` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The request's id.
    pub id: String,
    /// When it was decided, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// What was decided.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The operator's note for the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// How long an approval holds.
    #[serde(default)]
    pub scope: GrantScope,
}

/// An approved route or push, as `grants.jsonl` holds it: a route (its
/// `host`, read by the egress proxy) or branch globs (`branches`, read by
/// the git gate's push hook for every upstream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The request that asked for it.
    pub id: String,
    /// When it was granted.
    pub time_ms: u64,
    /// The host (or pattern); empty for a push grant.
    #[serde(default)]
    pub host: String,
    /// The branch globs a push may update; empty for a route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<String>,
    /// The methods (none: any).
    #[serde(default)]
    pub methods: Vec<String>,
    /// The path patterns (none: any).
    #[serde(default)]
    pub paths: Vec<String>,
    /// The ports (none: 443 and 80).
    #[serde(default)]
    pub ports: Vec<u16>,
    /// How long it holds.
    #[serde(default)]
    pub scope: GrantScope,
}

impl Grant {
    /// The egress route it adds (no credential: a grant never carries one).
    pub fn rule(&self) -> EgressRule {
        EgressRule {
            methods: self.methods.clone(),
            paths: self.paths.clone(),
            ports: self.ports.clone(),
            ..EgressRule::open(&self.host)
        }
    }

    /// Whether it grants branches to push (not a route).
    pub fn is_push(&self) -> bool {
        !self.branches.is_empty()
    }

    /// The manifest lines that make it permanent.
    pub fn manifest_yaml(&self) -> String {
        if self.is_push() {
            let quoted: Vec<String> = self.branches.iter().map(|b| format!("{b:?}")).collect();
            return format!(
                "git:\n  - …\n    push: {{ branches: [{}] }}   # added to each upstream's\n",
                quoted.join(", ")
            );
        }
        let mut yaml = format!("egress:\n  - host: {}\n", self.host);
        if !self.methods.is_empty() {
            yaml.push_str(&format!("    methods: [{}]\n", self.methods.join(", ")));
        }
        if !self.paths.is_empty() {
            let quoted: Vec<String> = self.paths.iter().map(|p| format!("{p:?}")).collect();
            yaml.push_str(&format!("    paths: [{}]\n", quoted.join(", ")));
        }
        if !self.ports.is_empty() {
            let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
            yaml.push_str(&format!("    ports: [{}]\n", ports.join(", ")));
        }
        yaml
    }
}

/// Where a request stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Standing {
    /// Waiting for the operator.
    Pending,
    /// Decided.
    Decided {
        /// The decision.
        decision: Decision,
    },
    /// Nobody decided before its deadline: denied.
    Expired,
    /// A notification: nothing to decide.
    Noted,
}

/// A request and where it stands, as `bottle supervise list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The request.
    #[serde(flatten)]
    pub request: Request,
    /// Where it stands.
    #[serde(flatten)]
    pub standing: Standing,
}

/// The id of a grant the operator made without a request ([`Queue::grant`]).
pub const OPERATOR_GRANT: &str = "operator";

/// One bottle's supervise queue folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    dir: PathBuf,
}

impl Queue {
    /// The queue in `dir` (the sidecar's view: the folder it was given).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Queue { dir: dir.into() }
    }

    /// Bottle `slug`'s queue in the state root `state`.
    pub fn of(state: &StateRoot, slug: &str) -> Self {
        Queue::of_dir(&state.bottle_dir(slug))
    }

    /// The queue of the bottle whose state folder is `bottle_dir`.
    pub fn of_dir(bottle_dir: &Path) -> Self {
        Queue::at(bottle_dir.join(SUPERVISE_DIR))
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The live grants file (the egress proxy's view of it).
    pub fn grants_path(&self) -> PathBuf {
        self.dir.join(GRANTS_FILE)
    }

    /// Create the folder, writable by the supervise sidecar's user (it is
    /// inside the operator's own state folder, mode 0700, so nobody else on
    /// the host can reach it).
    pub fn create(&self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let made = std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o777)));
        made.map_err(|e| Error::io(format!("creating {}", self.dir.display()), e))
    }

    /// Make the queue ready for a launch of its bottle: the folder created,
    /// and the grants of earlier runs dropped except those approved with
    /// `--always` ([`GrantScope::Always`]), which every resume keeps.
    pub fn open_for_launch(&self) -> Result<()> {
        self.create()?;
        let kept: Vec<Grant> = self.grants()?.into_iter().filter(|g| g.scope == GrantScope::Always).collect();
        let path = self.grants_path();
        let tmp = self.dir.join(format!(".{GRANTS_FILE}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        for grant in &kept {
            append_line(&tmp, grant)?;
        }
        let replaced = if kept.is_empty() {
            std::fs::remove_file(&path)
                .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
        } else {
            std::fs::rename(&tmp, &path)
        };
        replaced.map_err(|e| Error::io(format!("renewing {}", path.display()), e))
    }

    /// Every request, oldest first.
    pub fn requests(&self) -> Result<Vec<Request>> {
        read_lines(&self.dir.join(REQUESTS_FILE))
    }

    /// Every decision, oldest first.
    pub fn decisions(&self) -> Result<Vec<Decision>> {
        read_lines(&self.dir.join(DECISIONS_FILE))
    }

    /// Every grant, oldest first.
    pub fn grants(&self) -> Result<Vec<Grant>> {
        read_lines(&self.grants_path())
    }

    /// The decision on request `id`, when there is one.
    pub fn decision(&self, id: &str) -> Result<Option<Decision>> {
        Ok(self.decisions()?.into_iter().find(|d| d.id == id))
    }

    /// Append `request` (the sidecar's side).
    pub fn push(&self, request: &Request) -> Result<()> {
        append_line(&self.dir.join(REQUESTS_FILE), request)
    }

    /// Every request with where it stands at `now_ms`, oldest first.
    pub fn entries(&self, now_ms: u64) -> Result<Vec<Entry>> {
        let decisions = self.decisions()?;
        Ok(self
            .requests()?
            .into_iter()
            .map(|request| {
                let standing = match decisions.iter().find(|d| d.id == request.id) {
                    _ if !request.ask.waits() => Standing::Noted,
                    Some(decision) => Standing::Decided { decision: decision.clone() },
                    None if now_ms >= request.deadline_ms => Standing::Expired,
                    None => Standing::Pending,
                };
                Entry { request, standing }
            })
            .collect())
    }

    /// Record the operator's `verdict` on request `id` (the operator's
    /// side), under the queue's lock so two operators never both decide it.
    /// An approved `request_egress` appends its [`Grant`] first, so the
    /// route is live before the agent hears it was approved. Refuses a
    /// request that is unknown, already decided, past (or within
    /// [`DECISION_MARGIN`] of) its deadline, or whose verdict does not fit
    /// its tool; returns the grant when one was made.
    pub fn decide(&self, id: &str, verdict: Verdict, note: Option<String>, scope: GrantScope) -> Result<Option<Grant>> {
        let _lock = self.lock()?;
        let now = crate::backend::now_ms();
        let entry = self
            .entries(now)?
            .into_iter()
            .find(|e| e.request.id == id)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no request {id} in {}", self.dir.display())))?;
        let refuse = |why: String| Err(Error::new(ErrorKind::InvalidInput, format!("request {id} {why}")));
        match &entry.standing {
            Standing::Pending => {}
            Standing::Decided { decision } => return refuse(format!("was already decided: {}", describe(decision))),
            Standing::Expired => return refuse("expired before it was decided (the agent was told: denied)".into()),
            Standing::Noted => return refuse("is a notification; there is nothing to decide".into()),
        }
        let margin = u64::try_from(DECISION_MARGIN.as_millis()).unwrap_or(0);
        if now.saturating_add(margin) >= entry.request.deadline_ms {
            return refuse("is about to expire; it cannot be decided any more".into());
        }
        let grant = match (&entry.request.ask, &verdict) {
            (_, Verdict::Denied) => None,
            (Ask::RequestEgress { host, methods, paths, ports, .. }, Verdict::Approved) => Some(Grant {
                id: id.to_string(),
                time_ms: now,
                host: host.clone(),
                methods: methods.clone(),
                paths: paths.clone(),
                ports: ports.clone(),
                branches: Vec::new(),
                scope,
            }),
            (Ask::RequestPush { branches, .. }, Verdict::Approved) => Some(Grant {
                id: id.to_string(),
                time_ms: now,
                host: String::new(),
                methods: Vec::new(),
                paths: Vec::new(),
                ports: Vec::new(),
                branches: branches.clone(),
                scope,
            }),
            (Ask::AskOperator { .. }, Verdict::Answered { .. }) => None,
            (Ask::AskOperator { .. }, Verdict::Approved) => {
                return refuse("is a question; answer it with `bottle supervise answer ID TEXT`".into());
            }
            (_, Verdict::Answered { .. }) => {
                return refuse(format!("is a {}, not a question; approve or deny it", entry.request.ask.tool()));
            }
            (Ask::Notify { .. }, Verdict::Approved) => unreachable!("a notification is Noted"),
        };
        if let Some(grant) = &grant {
            append_line(&self.grants_path(), grant)?;
        }
        let decision = Decision { id: id.to_string(), time_ms: now, verdict, note, scope };
        append_line(&self.dir.join(DECISIONS_FILE), &decision)?;
        Ok(grant)
    }

    /// The operator's own live grant, asked for by no request: `ask` (a
    /// `request_egress` or `request_push`, checked as the agent's would be)
    /// granted at once for `scope`, through the same grants file the
    /// sidecars read. Its id is `operator`.
    pub fn grant(&self, ask: &Ask, scope: GrantScope) -> Result<Grant> {
        ask.check().map_err(|why| Error::new(ErrorKind::InvalidInput, why.replace('`', "")))?;
        let base = Grant {
            id: OPERATOR_GRANT.to_string(),
            time_ms: crate::backend::now_ms(),
            host: String::new(),
            methods: Vec::new(),
            paths: Vec::new(),
            ports: Vec::new(),
            branches: Vec::new(),
            scope,
        };
        let grant = match ask {
            Ask::RequestEgress { host, methods, paths, ports, .. } => Grant {
                host: host.clone(),
                methods: methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
                paths: paths.clone(),
                ports: ports.clone(),
                ..base
            },
            Ask::RequestPush { branches, .. } => Grant { branches: branches.clone(), ..base },
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("a {} grants nothing; grant a route or branches", other.tool()),
                ));
            }
        };
        if !self.dir.is_dir() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "{} does not exist: the bottle runs without supervise, so nothing can be granted live; add \
                     `supervise: true` to its bottle in the manifest",
                    self.dir.display()
                ),
            ));
        }
        let _lock = self.lock()?;
        append_line(&self.grants_path(), &grant)?;
        Ok(grant)
    }

    fn lock(&self) -> Result<std::fs::File> {
        crate::state::lock_file(&self.dir.join(LOCK_FILE))
    }
}

/// The branch globs granted live in the grants file at `path` (nothing
/// when it is missing or unreadable): what the git gate's hook adds to
/// every upstream's `push.branches`.
pub fn granted_branches(path: &Path) -> Vec<String> {
    read_lines::<Grant>(path).unwrap_or_default().into_iter().flat_map(|g| g.branches).collect()
}

/// A wait for a person: `10m`, `1h30m`, `45s`.
pub fn describe_wait(wait: Duration) -> String {
    let secs = wait.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.is_empty() { "0s".into() } else { out }
}

/// A decision in a few words: `approved`, `denied (note)`, `answered "…"`.
pub fn describe(decision: &Decision) -> String {
    let verdict = match &decision.verdict {
        Verdict::Approved => "approved".to_string(),
        Verdict::Denied => "denied".to_string(),
        Verdict::Answered { answer } => format!("answered {:?}", escape(answer)),
    };
    match &decision.note {
        Some(note) => format!("{verdict} ({})", escape(note)),
        None => verdict,
    }
}

/// The request `id` among every bottle's queue in `state`: its bottle's
/// slug and queue. An id no queue holds is [`ErrorKind::NotFound`].
pub fn find(state: &StateRoot, id: &str) -> Result<(String, Queue)> {
    let valid = id.len() == 8 && id.chars().all(|c| c.is_ascii_hexdigit());
    if !valid {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("`{}` is not a request id (8 hex digits, see `bottle supervise list`)", escape(id)),
        ));
    }
    for meta in state.list() {
        let queue = Queue::of(state, &meta.slug);
        if queue.requests()?.iter().any(|r| r.id == id) {
            return Ok((meta.slug, queue));
        }
    }
    Err(Error::new(ErrorKind::NotFound, format!("no request {id}; `bottle supervise list` shows them")))
}

/// Every bottle's requests in `state` with where they stand at `now_ms`,
/// oldest first.
pub fn all_entries(state: &StateRoot, now_ms: u64) -> Result<Vec<Entry>> {
    let mut all = Vec::new();
    for meta in state.list() {
        all.extend(Queue::of(state, &meta.slug).entries(now_ms)?);
    }
    all.sort_by(|a, b| (a.request.time_ms, &a.request.id).cmp(&(b.request.time_ms, &b.request.id)));
    Ok(all)
}

/// `text` safe to print on a terminal: control characters (escape, carriage
/// return, backspace, newline…), and the bidirectional overrides that
/// reorder what a line shows, written as `\u{…}` escapes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    // A line that does not parse (a torn write, an edit) is skipped: the
    // rest of the queue still counts.
    Ok(text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect())
}

fn append_line<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut line = serde_json::to_vec(value)
        .map_err(|e| Error::new(ErrorKind::Io, format!("encoding a line of {}", path.display())).with_source(e))?;
    line.push(b'\n');
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new().create(true).append(true).mode(0o644).open(path)?;
        file.write_all(&line)?;
        file.sync_data()
    };
    write().map_err(|e| Error::io(format!("appending to {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(host: &str) -> Ask {
        Ask::RequestEgress { host: host.into(), methods: vec![], paths: vec![], ports: vec![], reason: "docs".into() }
    }

    #[test]
    fn an_approved_route_is_granted_before_its_decision_and_decided_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let queue = Queue::at(tmp.path());
        let request = Request::new("b1", egress("pypi.org"), Duration::from_secs(60)).expect("request");
        queue.push(&request).expect("push");
        let entries = queue.entries(request.time_ms).expect("entries");
        assert_eq!(entries[0].standing, Standing::Pending);
        let grant = queue
            .decide(&request.id, Verdict::Approved, Some("ok".into()), GrantScope::Session)
            .expect("decide")
            .expect("a grant");
        assert_eq!((grant.host.as_str(), grant.rule().inject), ("pypi.org", None));
        assert_eq!(queue.grants().expect("grants"), [grant]);
        let decision = queue.decision(&request.id).expect("read").expect("decided");
        assert_eq!((decision.verdict, decision.note.as_deref()), (Verdict::Approved, Some("ok")));
        let again = queue.decide(&request.id, Verdict::Denied, None, GrantScope::Session).expect_err("twice");
        assert!(again.to_string().contains("already decided: approved (ok)"), "{again}");
    }

    #[test]
    fn the_operator_grants_a_route_or_branches_live_checked_like_a_request() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let missing = Queue::at(tmp.path().join("supervise"));
        let e = missing.grant(&egress("pypi.org"), GrantScope::Session).expect_err("no supervise folder");
        assert!(e.to_string().contains("runs without supervise"), "{e}");
        let queue = Queue::at(tmp.path());
        let route = Ask::RequestEgress {
            host: "*.pypi.org".into(),
            methods: vec!["get".into()],
            paths: vec!["/simple/*".into()],
            ports: vec![443],
            reason: "granted by the operator".into(),
        };
        let grant = queue.grant(&route, GrantScope::Always).expect("grant");
        assert_eq!(
            (grant.id.as_str(), grant.host.as_str(), grant.scope),
            (OPERATOR_GRANT, "*.pypi.org", GrantScope::Always)
        );
        assert_eq!(grant.methods, ["GET"], "methods are upper-cased as the proxy compares them");
        let push = Ask::RequestPush { branches: vec!["fix/*".into()], reason: "operator".into() };
        let branches = queue.grant(&push, GrantScope::Session).expect("grant branches");
        assert_eq!(queue.grants().expect("grants"), [grant, branches]);
        assert_eq!(granted_branches(&queue.grants_path()), ["fix/*"]);
        let e = queue.grant(&egress("https://pypi.org/"), GrantScope::Session).expect_err("no host name");
        assert!(e.to_string().contains("is not a host name"), "{e}");
        let e = queue.grant(&Ask::Notify { message: "hi".into() }, GrantScope::Session).expect_err("not a grant");
        assert!(e.to_string().contains("grants nothing"), "{e}");
        assert_eq!(queue.grants().expect("grants").len(), 2, "a refused grant writes nothing");
    }

    #[test]
    fn a_launch_keeps_only_the_grants_approved_for_always() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let queue = Queue::at(tmp.path().join("supervise"));
        queue.open_for_launch().expect("first launch");
        let mut ids = Vec::new();
        for (host, scope) in [("session.org", GrantScope::Session), ("always.org", GrantScope::Always)] {
            let request = Request::new("b1", egress(host), Duration::from_secs(60)).expect("request");
            queue.push(&request).expect("push");
            queue.decide(&request.id, Verdict::Approved, None, scope).expect("decide");
            ids.push(request.id);
        }
        assert_eq!(queue.grants().expect("grants").len(), 2);
        queue.open_for_launch().expect("resume");
        let kept: Vec<String> = queue.grants().expect("grants").into_iter().map(|g| g.host).collect();
        assert_eq!(kept, ["always.org"]);
        assert_eq!(queue.decisions().expect("decisions").len(), 2, "the history stays");
    }

    #[test]
    fn a_push_request_grants_branches_and_bad_branches_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let queue = Queue::at(tmp.path());
        let push = |branches: &[&str]| Ask::RequestPush {
            branches: branches.iter().map(|b| b.to_string()).collect(),
            reason: "a fix".into(),
        };
        for bad in [&[][..], &["refs/heads/x"], &["a..b"], &["a b"], &["x:y"], &["\u{1b}"]] {
            assert!(push(bad).check().is_err(), "{bad:?}");
        }
        let request = Request::new("b1", push(&["fix/*", "agent/x"]), Duration::from_secs(60)).expect("request");
        queue.push(&request).expect("push");
        let grant = queue.decide(&request.id, Verdict::Approved, None, GrantScope::Always).expect("ok").expect("grant");
        assert!(grant.is_push() && grant.host.is_empty());
        assert_eq!(granted_branches(&queue.grants_path()), ["fix/*", "agent/x"]);
        assert!(
            grant.manifest_yaml().contains(r#"push: { branches: ["fix/*", "agent/x"] }"#),
            "{}",
            grant.manifest_yaml()
        );
    }

    #[test]
    fn verdicts_fit_their_tool_and_late_or_unknown_requests_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let queue = Queue::at(tmp.path());
        let question = Ask::AskOperator { question: "tabs?".into(), choices: vec!["yes".into(), "no".into()] };
        let asked = Request::new("b1", question, Duration::from_secs(60)).expect("request");
        let note = Request::new("b1", Ask::Notify { message: "done".into() }, Duration::from_secs(60)).expect("n");
        let late = Request::new("b1", egress("x.org"), Duration::from_secs(1)).expect("request");
        for r in [&asked, &note, &late] {
            queue.push(r).expect("push");
        }
        let refused = |id: &str, verdict: Verdict| {
            queue.decide(id, verdict, None, GrantScope::Session).expect_err("refused").to_string()
        };
        assert!(refused(&asked.id, Verdict::Approved).contains("answer it with"));
        assert!(refused(&note.id, Verdict::Denied).contains("notification"));
        assert!(refused(&late.id, Verdict::Approved).contains("about to expire"));
        assert!(refused("00000000", Verdict::Denied).contains("no request 00000000"));
        let answered = Verdict::Answered { answer: "no".into() };
        assert_eq!(queue.decide(&asked.id, answered, None, GrantScope::Session).expect("answer"), None);
        let standings: Vec<Standing> =
            queue.entries(late.deadline_ms).expect("entries").into_iter().map(|e| e.standing).collect();
        assert!(matches!(standings[0], Standing::Decided { .. }));
        assert_eq!(standings[1..], [Standing::Noted, Standing::Expired]);
        assert!(queue.grants().expect("grants").is_empty(), "nothing granted");
    }

    #[test]
    fn bad_asks_say_what_is_wrong_and_escape_hides_terminal_controls() {
        for host in ["", "https://x.org", "x.org:443", "x.org/path", "a b", "\u{1b}[2J"] {
            assert!(egress(host).check().is_err(), "{host:?}");
        }
        assert!(egress("*.example.com").check().is_ok());
        let empty = Ask::RequestEgress {
            host: "x.org".into(),
            methods: vec![],
            paths: vec![],
            ports: vec![],
            reason: " ".into(),
        };
        assert!(empty.check().expect_err("empty").contains("`reason` is empty"));
        let long = Ask::Notify { message: "x".repeat(MAX_TEXT_CHARS + 1) };
        assert!(long.check().expect_err("long").contains("longer than"));
        let bad_method = Ask::RequestEgress {
            host: "x.org".into(),
            methods: vec!["GE T".into()],
            paths: vec![],
            ports: vec![],
            reason: "r".into(),
        };
        assert!(bad_method.check().is_err());
        assert_eq!(escape("ok\u{1b}[31mred\r\n\u{202e}"), "ok\\u{1b}[31mred\\u{d}\\u{a}\\u{202e}");
        assert_eq!(escape("plain — text"), "plain — text");
    }

    #[test]
    fn requests_are_found_across_bottles_and_listed_oldest_first() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateRoot::at(tmp.path());
        let mut ids = Vec::new();
        for agent in ["a", "b"] {
            let (slug, _) = state.mint(agent).expect("mint");
            let meta = crate::state::tests::sample(&slug);
            state.write(&meta).expect("write");
            let queue = Queue::of(&state, &slug);
            queue.create().expect("create");
            let request = Request::new(&slug, egress("x.org"), Duration::from_secs(60)).expect("request");
            queue.push(&request).expect("push");
            ids.push((slug, request.id));
        }
        let (slug, _) = find(&state, &ids[1].1).expect("found");
        assert_eq!(slug, ids[1].0);
        assert_eq!(find(&state, "zz").expect_err("bad id").kind(), ErrorKind::InvalidInput);
        let all = all_entries(&state, 0).expect("all");
        assert_eq!(all.len(), 2);
        let json = serde_json::to_value(&all[0]).expect("json");
        assert_eq!((json["tool"].as_str(), json["state"].as_str()), (Some("request_egress"), Some("pending")));
    }
}
