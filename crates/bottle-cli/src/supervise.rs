//! `bottle supervise …`: the operator's side of the supervise queue — list
//! what the agents ask, approve, deny or answer it. The queue lives in each
//! bottle's state folder (see `bot_bottle::supervise`), so any terminal, or
//! a restarted CLI, sees the same requests.

use anyhow::Result;
use bot_bottle::supervise::{self, Ask, Entry, GrantScope, Standing, Verdict, escape};
use clap::{Args, Subcommand};

use crate::context::Context;

/// `bottle supervise`'s subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum SuperviseAction {
    /// The requests of every bottle, pending and recent, oldest first.
    #[command(after_help = "Columns: ID (what approve/deny/answer take), BOTTLE, AGE, TOOL, STATE (pending, \
approved, denied, answered, expired — a request nobody decided before its deadline counts as denied — or noted for \
a notification) and what was asked. Text the agent wrote is shown with control characters escaped.\n\n\
Examples:\n  bottle supervise list\n  bottle supervise list --follow\n  bottle supervise list --json")]
    List {
        /// Keep printing new requests and decisions until Ctrl-C.
        #[arg(long, short)]
        follow: bool,
        /// Print JSON (one array; with --follow, one JSON object per line).
        #[arg(long)]
        json: bool,
        /// Only the pending requests.
        #[arg(long)]
        pending: bool,
    },
    /// Approve a request: a `request_egress` route is allowed live, at once.
    #[command(after_help = "The bottle's egress proxy allows the route from now on (no restart; open connections \
are unaffected) and the agent's tool call returns `approved`, with your note.\n\
--always also keeps the route for every `resume` of the bottle and prints the manifest lines that make it \
permanent.\n\nExample:\n  bottle supervise approve 1a2b3c4d --note 'docs only'")]
    Approve(DecideArgs),
    /// Deny a request: the agent's tool call returns `denied`, with your note.
    #[command(after_help = "Example:\n  bottle supervise deny 1a2b3c4d --note 'use the vendored copy'")]
    Deny(DecideArgs),
    /// Answer an `ask_operator` question: the agent's tool call returns your text.
    #[command(after_help = "Example:\n  bottle supervise answer 1a2b3c4d 'yes, squash them'")]
    Answer {
        /// The request's id (see `bottle supervise list`).
        id: String,
        /// The answer.
        text: String,
    },
    /// Grant a bottle a route or branches live, without a request of the agent's.
    #[command(after_help = "The same control channel as an approved request: the bottle's egress proxy allows \
the route from now on (the git gate, the branches), with no restart. The bottle must run with supervise \
(`supervise: true` in the manifest). --always keeps the grant for every `resume` of the bottle.\n\n\
Examples:\n  bottle supervise grant shell-1a2b3c4d --host pypi.org --method GET --path '/simple/*'\n  \
bottle supervise grant shell-1a2b3c4d --host '*.githubusercontent.com' --always\n  \
bottle supervise grant shell-1a2b3c4d --branch 'fix/*'")]
    Grant(GrantArgs),
}

/// `grant`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct GrantArgs {
    /// The bottle (see `bottle list active`).
    slug: String,
    /// The host (or `*.domain`) to allow.
    #[arg(long, required_unless_present = "branch", conflicts_with = "branch")]
    host: Option<String>,
    /// Only these methods (repeat; default any).
    #[arg(long = "method", requires = "host")]
    methods: Vec<String>,
    /// Only these path patterns (repeat; default any).
    #[arg(long = "path", requires = "host")]
    paths: Vec<String>,
    /// Only these ports (repeat; default 443 and 80).
    #[arg(long = "port", requires = "host")]
    ports: Vec<u16>,
    /// Branch names or globs a push may update (repeat), instead of a route.
    #[arg(long)]
    branch: Vec<String>,
    /// The grant also holds for every `resume` of this bottle.
    #[arg(long)]
    always: bool,
}

impl GrantArgs {
    /// What is granted, as the request that would have asked for it.
    fn ask(self) -> Ask {
        let reason = "granted by the operator".to_string();
        match self.host {
            Some(host) => {
                Ask::RequestEgress { host, methods: self.methods, paths: self.paths, ports: self.ports, reason }
            }
            None => Ask::RequestPush { branches: self.branch, reason },
        }
    }
}

/// What granting `grant` to bottle `slug` did, in a line.
pub(crate) fn granted(slug: &str, grant: &supervise::Grant) -> String {
    let what = if grant.is_push() {
        format!("may push to {}", grant.branches.join(", "))
    } else {
        format!("may reach {}", grant.host)
    };
    let id = if grant.id == supervise::OPERATOR_GRANT { String::new() } else { format!("approved {}: ", grant.id) };
    format!("{id}bottle {slug} {what} from now on")
}

/// `approve` and `deny`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct DecideArgs {
    /// The request's id (see `bottle supervise list`).
    id: String,
    /// A note for the agent (why, or what to do instead).
    #[arg(long)]
    note: Option<String>,
    /// The grant holds while the bottle runs (the default).
    #[arg(long, conflicts_with = "always")]
    for_session: bool,
    /// The grant also holds for every `resume` of this bottle.
    #[arg(long)]
    always: bool,
}

pub(crate) async fn run(ctx: &Context, action: SuperviseAction) -> Result<i32> {
    let state = &ctx.host.state;
    match action {
        SuperviseAction::List { follow, json, pending } => list(ctx, follow, json, pending).await,
        SuperviseAction::Approve(args) => {
            let scope = if args.always { GrantScope::Always } else { GrantScope::Session };
            let (slug, queue) = supervise::find(state, &args.id)?;
            let grant = queue.decide(&args.id, Verdict::Approved, args.note, scope)?;
            match grant {
                Some(grant) => {
                    eprintln!("{}", granted(&slug, &grant));
                    if scope == GrantScope::Always {
                        always_note(&slug, &grant);
                    }
                }
                None => eprintln!("approved {} (bottle {slug})", args.id),
            }
            Ok(0)
        }
        SuperviseAction::Deny(args) => {
            let (slug, queue) = supervise::find(state, &args.id)?;
            queue.decide(&args.id, Verdict::Denied, args.note, GrantScope::Session)?;
            eprintln!("denied {} (bottle {slug})", args.id);
            Ok(0)
        }
        SuperviseAction::Grant(args) => {
            bot_bottle::validate_slug(&args.slug)?;
            state.read(&args.slug)?;
            let scope = if args.always { GrantScope::Always } else { GrantScope::Session };
            let slug = args.slug.clone();
            let grant = supervise::Queue::of(state, &slug).grant(&args.ask(), scope)?;
            eprintln!("{}", granted(&slug, &grant));
            if scope == GrantScope::Always {
                always_note(&slug, &grant);
            }
            Ok(0)
        }
        SuperviseAction::Answer { id, text } => {
            let (slug, queue) = supervise::find(state, &id)?;
            queue.decide(&id, Verdict::Answered { answer: text }, None, GrantScope::Session)?;
            eprintln!("answered {id} (bottle {slug})");
            Ok(0)
        }
    }
}

/// For a grant kept with `--always`: that it is, and the manifest lines that make it permanent.
fn always_note(slug: &str, grant: &supervise::Grant) {
    eprintln!("kept for every resume of {slug}; to allow it for good, add to the bottle in the manifest:");
    print!("{}", grant.manifest_yaml());
}

async fn list(ctx: &Context, follow: bool, json: bool, pending: bool) -> Result<i32> {
    let state = &ctx.host.state;
    let wanted = |e: &Entry| !pending || e.standing == Standing::Pending;
    let entries: Vec<Entry> =
        supervise::all_entries(state, bot_bottle::backend::now_ms())?.into_iter().filter(wanted).collect();
    if !follow {
        if json {
            println!("{}", serde_json::to_string_pretty(&entries)?);
        } else if entries.is_empty() {
            eprintln!("no supervise requests{}", if pending { " pending" } else { "" });
        } else {
            print_rows(&entries, true);
        }
        return Ok(0);
    }
    // --follow: what is there, then each new request or change of state.
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut header = !json;
    loop {
        let now = bot_bottle::backend::now_ms();
        let fresh: Vec<Entry> = supervise::all_entries(state, now)?
            .into_iter()
            .filter(wanted)
            .filter(|e| {
                let key = (e.request.id.clone(), state_name(e));
                let new = !seen.contains(&key);
                if new {
                    seen.push(key);
                }
                new
            })
            .collect();
        if json {
            for entry in &fresh {
                println!("{}", serde_json::to_string(entry)?);
            }
        } else if !fresh.is_empty() {
            print_rows(&fresh, header);
            header = false;
        }
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
    }
}

/// The state column: `pending`, `approved`, `denied`, `answered`, `expired`, `noted`.
pub(crate) fn state_name(entry: &Entry) -> String {
    match &entry.standing {
        Standing::Pending => "pending".into(),
        Standing::Expired => "expired".into(),
        Standing::Noted => "noted".into(),
        Standing::Decided { decision } => match decision.verdict {
            Verdict::Approved => "approved".into(),
            Verdict::Denied => "denied".into(),
            Verdict::Answered { .. } => "answered".into(),
        },
    }
}

/// What was asked, escaped, in a line.
pub(crate) fn what(entry: &Entry) -> String {
    let text = match &entry.request.ask {
        Ask::RequestEgress { host, methods, paths, ports, reason } => {
            let mut route = host.clone();
            if !ports.is_empty() {
                let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                route.push_str(&format!(":{}", ports.join(",")));
            }
            if !methods.is_empty() {
                route.push_str(&format!(" {}", methods.join(",")));
            }
            if !paths.is_empty() {
                route.push_str(&format!(" {}", paths.join(",")));
            }
            format!("{route}: {reason}")
        }
        Ask::RequestPush { branches, reason } => format!("{}: {reason}", branches.join(", ")),
        Ask::AskOperator { question, choices } if choices.is_empty() => question.clone(),
        Ask::AskOperator { question, choices } => format!("{question} [{}]", choices.join(" | ")),
        Ask::Notify { message } => message.clone(),
    };
    let mut line = escape(&text);
    if let Standing::Decided { decision } = &entry.standing {
        line.push_str(&format!(" → {}", supervise::describe(decision)));
    }
    line
}

fn print_rows(entries: &[Entry], header: bool) {
    let now = bot_bottle::backend::now_ms();
    let rows = entries.iter().map(|e| {
        let age = crate::commands::age(now.saturating_sub(e.request.time_ms));
        let row = vec![
            e.request.id.clone(),
            escape(&e.request.bottle),
            age,
            e.request.ask.tool().into(),
            state_name(e),
            what(e),
        ];
        (row, None)
    });
    crate::commands::print_table(&["ID", "BOTTLE", "AGE", "TOOL", "STATE", "WHAT"], rows, header);
}
