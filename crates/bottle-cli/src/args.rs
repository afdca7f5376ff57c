//! The command line: every command and flag of `bottle`, with the help text
//! that teaches it.

use std::path::PathBuf;

use bot_bottle::ByteSize;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// `bottle --version`: the version and the commit it was built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("BOT_BOTTLE_COMMIT"), ")");

/// Run AI coding agents in isolated bottles: a container (or microVM) with a
/// copy of your workspace and only the network paths and credentials your
/// manifest grants.
#[derive(Debug, Parser)]
#[command(name = "bottle", version = VERSION, propagate_version = true, max_term_width = 100)]
#[command(after_help = "Manifest discovery: --manifest, then $BOT_BOTTLE_MANIFEST, then ./bot-bottle.yaml, \
then $XDG_CONFIG_HOME/bot-bottle/manifest.yaml, else the embedded default (one agent `shell`).\n\
Backend selection: --backend, then $BOT_BOTTLE_BACKEND, then docker.\n\n\
Start here: `bottle start shell` opens a shell in a fresh Docker bottle.")]
pub(crate) struct Cli {
    /// Manifest to use instead of the discovered one.
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) manifest: Option<PathBuf>,
    /// Backend to run bottles on (docker).
    #[arg(long, global = true, value_name = "NAME")]
    pub(crate) backend: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Start an agent in a new bottle (shows what will run, then asks y/N).
    #[command(after_help = "An agent with a warm pool (`pool: { size: N }` in the manifest) is handed a bottle \
that waits in it, made from the same plan, when one does (asked first on a terminal, unless --yes), and the pool is \
filled again in the background; see `bottle pool --help`.\n\n\
Examples:\n  bottle start shell\n  bottle start shell --yes --detach\n  \
bottle start reviewer --copy-cwd --label 'PR 42'\n  bottle start shell --yes -- -c 'git --version'")]
    Start(StartArgs),
    /// Start a new bottle for an earlier bottle's agent, with its saved state (the conversation goes on).
    Resume(ResumeArgs),
    /// List the manifest's agents, the bottles running now, or the stopped ones you can resume.
    #[command(after_help = "active: each bottle's status (`running (egress down)` when a sidecar died), how long \
it has been up, whether the `bottle` process that started it still runs (OWNER: alive, gone — normal for a detached \
bottle —, other-host, unknown), each sidecar up or down, its --color (its slug drawn in it on a terminal, unless NO_COLOR is \
set) and --label.\n\
stopped: every bottle with a state folder that runs on no available backend: when it last stopped (`never stopped` \
when its launcher died, `not launched` when its start did not finish) and the agent state saved for `resume`.")]
    List {
        #[arg(value_enum)]
        what: ListWhat,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// With `active`: also the bottles waiting in warm pools (hidden by default; `bottle pool status` counts them).
        #[arg(long)]
        pool: bool,
    },
    /// Connect this terminal to a running bottle's agent session (detach with C-b d).
    #[command(after_help = "A detached bottle (`bottle start AGENT --detach`) runs its agent in a tmux session; \
attach as often as you like, from several terminals in turn or at once. C-b d detaches and leaves the agent running; \
`bottle stop SLUG` removes the bottle (saving the agent's state).\n\nExample:\n  bottle attach shell-1a2b3c4d")]
    Attach {
        /// The bottle's slug (see `bottle list active`).
        slug: String,
    },
    /// A terminal screen over every running bottle: their logs and requests, and verbs to act on them.
    #[command(after_help = "The agents pane lists every running bottle on every available backend, as `bottle list \
active` does, refreshed every second; the selected bottle's tabs show its egress log (denials highlighted; f filters \
by decision, / by host), its supervise requests, its git gate's pushes and its details (the policy it was launched \
with, routes granted live marked +); the manifest pane lists the agents `bottle start` can start and the stopped \
bottles `bottle resume` can start again (bottles waiting in warm pools are left out, as by `bottle list active`).\n\nKeys: ↑↓ move, ←→ switch tab, Tab switch pane, Enter start the \
selected agent (with a label and colour; several may start at once) or resume a stopped bottle, a attach, e open a \
shell (both in a new tmux window when run inside tmux), s stop (asks y/N), y/n approve/deny the selected request (y \
on a question asks for the answer), g grant a route live (HOST [METHOD] [/PATH] [:PORT] or push BRANCH), ? help, q \
quit. The footer names only the verbs the selected bottle's services allow. Quitting never stops an agent, nor a \
start under way. Colours are left out when NO_COLOR is set or TERM=dumb.")]
    Dashboard,
    /// Run a command in a running bottle; exits with the command's exit code.
    #[command(after_help = "Interrupted (Ctrl-C without a terminal, SIGTERM, SIGHUP), bottle exec stops the \
command inside the bottle too, with every process it started (SIGINT, then SIGTERM, then SIGKILL, 2 s apart) and \
exits 128 + the signal (130, 143, 129). On a \
terminal Ctrl-C goes to the command itself.\n\nExample:\n  bottle exec shell-1a2b3c4d -- id -un")]
    Exec {
        /// The bottle's slug (see `bottle list active`).
        slug: String,
        /// User to run as (default: the agent's user).
        #[arg(long, short)]
        user: Option<String>,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Copy files between the host and a running bottle (SLUG:PATH on one side).
    #[command(after_help = "A guest PATH that does not start with / is relative to the agent's workdir. A DEST that \
is an existing folder gets the copy inside it, under the source's name; nothing on the host is overwritten. Files keep \
their modification times both ways. Out of a bottle come only regular files and folders, owner-only (links, devices \
and FIFOs stay behind, and bottle cp lists them), at most --limit bytes; over it, nothing is copied. Write a host path \
with a colon as ./a:b.\n\nExamples:\n  bottle cp shell-1a2b3c4d:notes.txt .\n  \
bottle cp shell-1a2b3c4d:/home/agent/workspace ./work-copy\n  bottle cp ./data shell-1a2b3c4d:input/")]
    Cp {
        /// What to copy: SLUG:PATH in a bottle, or a host path.
        source: String,
        /// Where it goes: a host path, or SLUG:PATH in a bottle.
        dest: String,
        /// The most a copy out of a bottle may take (512m, 4g, 1.5g; binary units).
        #[arg(long, value_name = "SIZE", default_value_t = bot_bottle::session::COPY_OUT_LIMIT, value_parser = parse_size)]
        limit: ByteSize,
    },
    /// Check this machine for bottles: the engine, images, runtimes, KVM, smolvm; exits 1 when a check fails.
    #[command(after_help = "One line per check: `ok|info|warn|fail  WHAT: finding[; fix]`. Nothing is changed and \
no network is used beyond the engine's own socket. Exits 1 only when a check fails (a blocker: no engine); warnings \
and information never change the exit status. --json prints the checks as a JSON array of {status, what, finding, \
fix}.")]
    Doctor {
        /// Print the checks as JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Stop a bottle: save the agent's state and the audit logs for `resume`, then remove everything it owns.
    #[command(after_help = "Stopping twice, or from two terminals at once, is fine: the second says the bottle is \
already stopped. When the workspace has uncommitted changes or unpushed commits, stop says so and, on a terminal, asks \
first (--yes does not ask).")]
    Stop {
        /// The bottle's slug (see `bottle list active`).
        slug: String,
        /// Do not ask when the workspace holds unsaved work.
        #[arg(long, short)]
        yes: bool,
    },
    /// Remove what killed or crashed runs left behind (containers, networks).
    Cleanup {
        /// Do not ask before removing.
        #[arg(long, short)]
        yes: bool,
        /// Only show what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove a stopped bottle's state folder: its identity, saved agent state and audit logs (it cannot be resumed after).
    #[command(after_help = "Refuses a bottle that runs (`bottle stop SLUG` first). `bottle list stopped` shows \
the stopped ones.\n\nExample:\n  bottle forget shell-1a2b3c4d")]
    Forget {
        /// The bottle's slug (see `bottle list stopped`).
        slug: String,
    },
    /// Remove the state folders of bottles stopped longer ago than --older-than (asks y/N first).
    #[command(after_help = "A bottle that never stopped counts from when it was created. Running bottles are \
never removed. Without a terminal, --yes is required.\n\nExamples:\n  bottle prune --dry-run\n  \
bottle prune --older-than 7d --yes")]
    Prune {
        /// How long ago a bottle must have stopped: a whole number and a unit, `90m`, `12h`, `7d`, `2w`.
        #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = parse_duration)]
        older_than: std::time::Duration,
        /// Only show what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask before removing.
        #[arg(long, short)]
        yes: bool,
    },
    /// The egress proxy's audit log: one line per request, allowed or denied.
    Egress {
        #[command(subcommand)]
        action: EgressAction,
    },
    /// The git gate's audit log: one line per push.
    Gate {
        #[command(subcommand)]
        action: GateAction,
    },
    /// The supervise queue: what agents ask their operator (routes, answers), and your decisions.
    #[command(after_help = "A bottle whose manifest says `supervise: true` runs an MCP server its agent calls: \
request_egress (a host the proxy denies), ask_operator (a question), notify (a message). Each request waits here \
until you decide it (10 minutes, then it counts as denied).\n\nExamples:\n  bottle supervise list --follow\n  \
bottle supervise approve 1a2b3c4d\n  bottle supervise deny 1a2b3c4d --note 'not needed'\n  \
bottle supervise answer 1a2b3c4d 'yes'")]
    Supervise {
        #[command(subcommand)]
        action: crate::supervise::SuperviseAction,
    },
    /// The Kubernetes backend: print the objects a bottle is made of, or the Role it needs.
    #[command(after_help = "render prints every object `--backend kubernetes` creates for AGENT, as YAML you can \
read and `kubectl apply -f -` (secrets and the bottle's token as placeholders; the namespace and images from the \
manifest's `kubernetes:` section). rbac prints the least-privilege Role (and its RoleBinding) the backend needs in \
that namespace.\n\nExamples:\n  bottle k8s render shell\n  bottle k8s render shell --agent-sandbox\n  \
bottle k8s rbac --user alice | kubectl apply -f -")]
    K8s {
        #[command(subcommand)]
        action: K8sAction,
    },
    /// The images bottles run: build them and push them where a cluster pulls them.
    #[command(after_help = "push builds AGENT's image and the sidecar image with Docker when the engine lacks \
them (the same content-hashed tags the Docker backend builds), tags them under the manifest's \
`kubernetes.image_registry` and pushes them there, for `--backend kubernetes`. Log in first (`docker login \
REGISTRY`).\n\nExample:\n  bottle image push shell")]
    Image {
        #[command(subcommand)]
        action: ImageAction,
    },
    /// Warm pools: bottles made ahead of time that `bottle start` hands out at once.
    #[command(after_help = "An agent whose manifest entry says `pool: { size: 2 }` can have that many bottles \
made ahead of time: sidecars up, its own CA and client token, provisioned up to the workspace, no agent running. \
`bottle start AGENT` then claims one (the working directory copied in with --copy-cwd, the label and colour set, \
the session started) instead of making a bottle, and fills the pool again in the background. A member made \
before the manifest or the host changed (another image, env value, credential, route) is stale: never handed \
out, removed by `fill` and `drain`. Without an AGENT, each command works on every agent with a pool.\n\n\
Examples:\n  bottle pool fill\n  bottle pool status\n  bottle pool drain reviewer")]
    Pool {
        #[command(subcommand)]
        action: PoolAction,
    },
    /// Check the manifest or print its JSON Schema.
    Manifest {
        #[command(subcommand)]
        action: ManifestAction,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(after_help = "Where the script goes (it is printed to stdout; the hint goes to stderr):\n  \
bash: bottle completions bash > ~/.local/share/bash-completion/completions/bottle\n  \
zsh:  bottle completions zsh > ~/.zfunc/_bottle   (with `fpath+=~/.zfunc` before `compinit` in ~/.zshrc)\n  \
fish: bottle completions fish > ~/.config/fish/completions/bottle.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub(crate) struct StartArgs {
    /// The agent to start (see `bottle list agents`).
    pub(crate) agent: String,
    #[command(flatten)]
    pub(crate) run: RunArgs,
    /// Copy the current directory into the bottle's workspace.
    #[arg(long)]
    pub(crate) copy_cwd: bool,
    /// A label shown by `bottle list active`.
    #[arg(long)]
    pub(crate) label: Option<String>,
    /// A colour shown by `bottle list active`.
    #[arg(long)]
    pub(crate) color: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ResumeArgs {
    /// The identity (slug) of the earlier bottle.
    pub(crate) identity: String,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Do not ask for confirmation (required without a terminal).
    #[arg(long, short)]
    pub(crate) yes: bool,
    /// Run the agent in the background (its session outlives this command) and print the slug; `bottle attach SLUG` connects to it.
    #[arg(long, short)]
    pub(crate) detach: bool,
    /// Do not trust the host's CA bundle ($SSL_CERT_FILE / $NODE_EXTRA_CA_CERTS) in image builds.
    #[arg(long)]
    pub(crate) no_host_ca: bool,
    /// Print how long each phase of the start took (prepare, launch, each provisioning step, session).
    #[arg(long)]
    pub(crate) timings: bool,
    /// Arguments for the agent.
    #[arg(last = true, value_name = "ARGS")]
    pub(crate) agent_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ListWhat {
    /// The agents the manifest defines.
    Agents,
    /// The bottles running now, on every available backend.
    Active,
    /// The bottles that have a state folder and run nowhere: what `bottle resume` can start again.
    Stopped,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ImageAction {
    /// Build (when missing) and push AGENT's image and the sidecar image to the manifest's registry.
    Push {
        /// The agent (see `bottle list agents`).
        agent: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum K8sAction {
    /// Print every object a bottle of AGENT is made of on a cluster, as YAML.
    Render {
        /// The agent (see `bottle list agents`).
        agent: String,
        /// Render the agent as an agent-sandbox Sandbox (what the backend does where agent-sandbox is installed).
        #[arg(long)]
        agent_sandbox: bool,
    },
    /// Print the least-privilege Role (and RoleBinding) the backend needs, as YAML.
    Rbac {
        /// The namespace (default: the manifest's `kubernetes.namespace`).
        #[arg(long)]
        namespace: Option<String>,
        /// The user the RoleBinding grants it to.
        #[arg(long, default_value = "bot-bottle")]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum PoolAction {
    /// Make bottles until each pool holds its size (stale members removed first); prints their slugs.
    #[command(after_help = "One pool is filled by one process at a time: a fill that finds another at work \
leaves that pool to it. Each member is made as `bottle start AGENT --detach` would make it, and so takes as long.\n\n\
Example:\n  bottle pool fill reviewer")]
    Fill {
        /// The agents whose pools to fill (default: every agent with a pool).
        agents: Vec<String>,
    },
    /// Show each pool: its size, the members ready to hand out, the stale ones, the fill at work.
    Status {
        /// The agents whose pools to show (default: every agent with a pool).
        agents: Vec<String>,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Remove every member not claimed yet (stopping a fill at work first); claimed bottles stay.
    #[command(after_help = "Nothing of a drained pool is left running: its members' containers, networks and \
state folders are removed, and a background fill is stopped.\n\nExample:\n  bottle pool drain")]
    Drain {
        /// The agents whose pools to drain (default: every agent with a pool).
        agents: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ManifestAction {
    /// Validate the manifest: every error with file:line:col, or a summary.
    Check,
    /// Print the manifest format as JSON Schema (for editors).
    Schema,
}

#[derive(Debug, Subcommand)]
pub(crate) enum EgressAction {
    /// Print the egress proxy's audit log of a bottle, running or stopped.
    #[command(after_help = "On a terminal, one line per request: TIME DECISION METHOD HOST PATH STATUS (REASON), \
the time as HH:MM:SS in UTC. With --json, or when stdout is not a terminal, the JSON lines as the proxy wrote them \
(time, bottle, method, host, path, status, bytes_up, bytes_down, rule, decision, reason, duration_ms). A line that \
is not JSON is printed as it is.\n\n\
A running bottle's log comes from its proxy; a stopped one's from its state folder, where `stop` keeps it \
(--follow then prints it and exits).\n\nExample:\n  bottle egress log shell-1a2b3c4d --follow")]
    Log(LogArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum GateAction {
    /// Print the git gate's audit log of a bottle, running or stopped.
    #[command(after_help = "On a terminal, one line per push: TIME VERDICT UPSTREAM REFS (REASON), the time as \
HH:MM:SS in UTC, the reason shown when the push was refused (by the policy or the upstream). With --json, or when \
stdout is not a terminal, the JSON lines as the gate wrote them (time, bottle, upstream, refs, verdict, reason, \
upstream_result, duration_ms). A line that is not JSON is printed as it is.\n\n\
A running bottle's log comes from its gate; a stopped one's from its state folder, where `stop` keeps it \
(--follow then prints it and exits). A bottle whose manifest lists no git upstreams has no gate and no log: \
one line says so and the exit code is 1.")]
    Log(LogArgs),
}

#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// The bottle's slug (see `bottle list active` and `bottle list stopped`).
    pub(crate) slug: String,
    /// Keep printing new lines until the bottle stops.
    #[arg(long, short)]
    pub(crate) follow: bool,
    /// Print the JSON lines as they are, also on a terminal.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `--older-than`: a duration such as `90m`, `12h`, `7d`, `2w`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    bot_bottle::parse_duration(text).map_err(|e| e.message().to_string())
}

/// `--limit SIZE`: a size as the manifest writes them (`512m`, `4g`).
fn parse_size(text: &str) -> Result<ByteSize, String> {
    ByteSize::parse(text).ok_or_else(|| format!("`{text}` is not a size; write it like 512m, 4g or 1.5g"))
}
