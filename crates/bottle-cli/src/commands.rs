//! One function per command, each returning the process's exit code.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use bot_bottle::backend::Backend as _;
use bot_bottle::{
    ActiveAgent, BottleSpec, ByteSize, CheckStatus, CopySpec, DynBackend, EnvValue, ErrorKind, GuestUser, LogFormat,
    LogSource, Manifest, Session, Sidecar, StoppedBottle, session, sort_active,
};
use clap::CommandFactory;

use crate::args::{
    Cli, Command, EgressAction, GateAction, ImageAction, K8sAction, ListWhat, LogArgs, ManifestAction, PoolAction,
    RunArgs, StartArgs,
};
use crate::color::Paint;
use crate::context::Context;

/// The signal that interrupted this process (0 while none did).
static SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The exit code after an interrupt: 128 + the signal (130 for Ctrl-C,
/// 143 for SIGTERM, 129 for SIGHUP).
fn interrupted_code() -> i32 {
    match SIGNAL.load(std::sync::atomic::Ordering::SeqCst) {
        0 => 130,
        signal => 128 + signal,
    }
}

pub(crate) async fn run(cli: Cli) -> Result<i32> {
    let ctx = Context::new(cli.manifest.as_deref(), cli.backend)?;
    match cli.command {
        Command::Start(args) => start(&ctx, args).await,
        Command::Resume(args) => resume(&ctx, &args.identity, args.run).await,
        Command::List { what: ListWhat::Agents, json, .. } => list_agents(&ctx, json),
        Command::List { what: ListWhat::Active, json, pool } => list_active(&ctx, json, pool).await,
        Command::List { what: ListWhat::Stopped, json, .. } => list_stopped(&ctx, json).await,
        Command::Pool { action } => pool(&ctx, action).await,
        Command::Attach { slug } => attach(&ctx, &slug).await,
        Command::Dashboard => crate::dashboard::run(&ctx).await,
        Command::Exec { slug, user, command } => exec(&ctx, &slug, user.as_deref(), &command).await,
        Command::Cp { source, dest, limit } => cp(&ctx, &source, &dest, limit).await,
        Command::Doctor { json } => doctor(&ctx, json).await,
        Command::Stop { slug, yes } => stop(&ctx, &slug, yes).await,
        Command::Cleanup { yes, dry_run } => cleanup(&ctx, yes, dry_run).await,
        Command::Forget { slug } => forget(&ctx, &slug).await,
        Command::Prune { older_than, dry_run, yes } => prune(&ctx, older_than, dry_run, yes).await,
        Command::Egress { action: EgressAction::Log(args) } => sidecar_log(&ctx, args, Sidecar::Egress).await,
        Command::Gate { action: GateAction::Log(args) } => sidecar_log(&ctx, args, Sidecar::GitGate).await,
        Command::Supervise { action } => crate::supervise::run(&ctx, action).await,
        Command::K8s { action } => k8s(&ctx, action).await,
        Command::Image { action: ImageAction::Push { agent } } => {
            let cwd = std::env::current_dir().context("while reading the current directory")?;
            let spec = BottleSpec::new(ctx.manifest()?, agent, cwd);
            for pushed in bot_bottle::kubernetes::push_agent(&spec, &ctx.providers, &ctx.host).await? {
                println!("pushed {pushed}");
            }
            Ok(0)
        }
        Command::Manifest { action: ManifestAction::Check } => manifest_check(&ctx),
        Command::Manifest { action: ManifestAction::Schema } => {
            println!("{}", serde_json::to_string_pretty(&Manifest::json_schema())?);
            Ok(0)
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "bottle", &mut std::io::stdout());
            eprintln!("{}", completion_hint(shell));
            Ok(0)
        }
    }
}

/// `bottle k8s render|rbac`: what the Kubernetes backend would create, printed.
async fn k8s(ctx: &Context, action: K8sAction) -> Result<i32> {
    use bot_bottle::kubernetes::{Mode, rbac_yaml, render_agent};
    let manifest = ctx.manifest()?;
    match action {
        K8sAction::Render { agent, agent_sandbox } => {
            let cwd = std::env::current_dir().context("while reading the current directory")?;
            let spec = BottleSpec::new(Arc::clone(&manifest), agent, cwd);
            let mode = if agent_sandbox { Mode::AgentSandbox } else { Mode::Native };
            print!("{}", render_agent(&spec, &ctx.providers, &ctx.host, mode).await?);
        }
        K8sAction::Rbac { namespace, user } => {
            let namespace = namespace
                .or_else(|| manifest.kubernetes.as_ref().map(|k| k.namespace.clone()))
                .unwrap_or_else(|| bot_bottle::DEFAULT_NAMESPACE.to_string());
            print!("{}", rbac_yaml(&namespace, &user));
        }
    }
    Ok(0)
}

/// Resolves when the process is asked to stop (Ctrl-C, SIGTERM, SIGHUP),
/// noting which signal it was for [`interrupted_code`].
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        let _ = tokio::signal::ctrl_c().await;
        SIGNAL.store(2, std::sync::atomic::Ordering::SeqCst);
        return;
    };
    let signal = tokio::select! {
        _ = tokio::signal::ctrl_c() => 2,
        _ = term.recv() => 15,
        _ = hup.recv() => 1,
    };
    SIGNAL.store(signal, std::sync::atomic::Ordering::SeqCst);
}

/// Where a completion script of `shell` goes, for stderr.
fn completion_hint(shell: clap_complete::Shell) -> String {
    use clap_complete::Shell;
    let place = match shell {
        Shell::Bash => "save it as ~/.local/share/bash-completion/completions/bottle",
        Shell::Zsh => {
            "save it as _bottle in a folder on $fpath (e.g. ~/.zfunc, with `fpath+=~/.zfunc` before `compinit`)"
        }
        Shell::Fish => "save it as ~/.config/fish/completions/bottle.fish",
        Shell::Elvish => "add it to ~/.config/elvish/rc.elv (or `eval` it there)",
        Shell::PowerShell => "add it to your PowerShell profile ($PROFILE)",
        _ => "save it where your shell loads completions from",
    };
    format!("# bottle completions for {shell}: {place}")
}

/// Ask y/N on the terminal; without one, refuse unless `yes`.
fn confirm(question: &str, yes: bool) -> Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to go on without confirmation: stdin is not a terminal; pass --yes to confirm non-interactively"
        );
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

async fn start(ctx: &Context, args: StartArgs) -> Result<i32> {
    let spec = BottleSpec {
        manifest: ctx.manifest()?,
        agent: args.agent,
        copy_cwd: args.copy_cwd,
        user_cwd: std::env::current_dir()?,
        identity: None,
        label: args.label,
        color: args.color,
        detached: args.run.detach,
        host_ca: !args.run.no_host_ca,
        agent_args: args.run.agent_args.clone(),
    };
    if let Some(code) = claim(ctx, &spec, &args.run).await? {
        return Ok(code);
    }
    run_bottle(ctx, spec, &args.run).await
}

/// `bottle start` of an agent with a warm pool: a waiting member claimed
/// and run as a fresh bottle would be, and the pool filled again in the
/// background. `None` when no member matches (start a fresh bottle).
async fn claim(ctx: &Context, spec: &BottleSpec, run: &RunArgs) -> Result<Option<i32>> {
    if spec.manifest.agents.get(&spec.agent).is_none_or(|a| a.pool.is_none()) {
        return Ok(None);
    }
    if !run.yes && !confirm(&format!("Hand out a bottle of agent {}'s warm pool when one waits?", spec.agent), false)? {
        return Ok(None);
    }
    let backend = ctx.backend()?;
    let Some(running) = bot_bottle::pool::claim(spec, &ctx.providers, &ctx.host, Arc::clone(&backend)).await? else {
        return Ok(None);
    };
    let slug = running.slug().to_string();
    eprintln!("bottle {slug}: claimed from the warm pool of agent {}", spec.agent);
    refill(&spec.manifest, &spec.agent, backend.name_dyn());
    Ok(Some(after_launch(running, run).await?))
}

/// Fill `agent`'s pool again in a process of its own (its own process
/// group, no terminal), which outlives this one; `bottle pool drain` stops it.
fn refill(manifest: &Manifest, agent: &str, backend: &str) {
    use std::os::unix::process::CommandExt as _;
    let Ok(exe) = std::env::current_exe() else { return };
    let spawned = std::process::Command::new(exe)
        .args(bot_bottle::pool::refill_args(manifest, agent, backend))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    if let Err(e) = spawned {
        eprintln!("warning: the pool of agent {agent} was not filled again ({e}); `bottle pool fill {agent}` does it");
    }
}

async fn resume(ctx: &Context, identity: &str, run: RunArgs) -> Result<i32> {
    let meta = ctx.host.state.read(identity)?;
    let backend = ctx.registry.get(&meta.backend)?;
    backend.is_available().await?;
    if backend.attach(identity).await.is_ok() {
        bail!(
            "bottle `{identity}` is still running; attach with `bottle exec {identity} -- bash` or stop it first with `bottle stop {identity}`"
        );
    }
    let (manifest, note) = ctx.manifest_for_resume(&meta)?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    let spec = BottleSpec {
        manifest,
        agent: meta.agent,
        copy_cwd: false,
        user_cwd: std::env::current_dir()?,
        identity: Some(identity.to_string()),
        label: meta.label,
        color: meta.color,
        detached: run.detach,
        host_ca: !run.no_host_ca,
        agent_args: run.agent_args.clone(),
    };
    run_bottle(ctx, spec, &run).await
}

/// The library's session, with the confirmation, the signals and the printing.
async fn run_bottle(ctx: &Context, spec: BottleSpec, run: &RunArgs) -> Result<i32> {
    let session = Session::prepare(&spec, &ctx.providers, &ctx.host, ctx.backend()?).await?;
    let slug = session.slug().to_string();
    eprintln!("bottle {slug}:\n{}", session.summary());
    if !confirm("Start this bottle?", run.yes)? {
        eprintln!("not started");
        return Ok(1);
    }
    let running = match session.launch(interrupted()).await {
        Ok(running) => running,
        Err(e) if e.kind() == ErrorKind::Interrupted => {
            eprintln!("{e}");
            return Ok(interrupted_code());
        }
        Err(e) => return Err(e.into()),
    };
    after_launch(running, run).await
}

/// A launched bottle run as `run` asks: its slug printed when detached,
/// else the agent attached until it ends or the operator detaches.
async fn after_launch(running: bot_bottle::Running, run: &RunArgs) -> Result<i32> {
    let slug = running.slug().to_string();
    if run.timings {
        eprintln!("timings: {}", running.timings());
    }
    if run.detach {
        eprintln!(
            "bottle {slug} is running its agent; `bottle attach {slug}` connects to it, `bottle exec {slug} -- CMD` \
             runs commands, `bottle stop {slug}` removes it"
        );
        println!("{}", running.detach());
        return Ok(0);
    }
    let ended = running.attach(interrupted()).await.with_context(|| format!("while running bottle {slug}"))?;
    if ended.detached {
        eprintln!(
            "detached: bottle {slug} keeps running; `bottle attach {slug}` reconnects, `bottle stop {slug}` removes it"
        );
        return Ok(0);
    }
    warn_all(&ended.notes);
    let interrupted = SIGNAL.load(std::sync::atomic::Ordering::SeqCst) != 0;
    Ok(if interrupted { interrupted_code() } else { ended.code })
}

fn list_agents(ctx: &Context, json: bool) -> Result<i32> {
    let manifest = ctx.manifest()?;
    let rows: Vec<serde_json::Value> = manifest
        .agents
        .iter()
        .map(|(name, agent)| {
            let template = manifest.bottles.get(&agent.bottle).map(|b| b.agent_provider.template.clone());
            serde_json::json!({ "name": name, "bottle": agent.bottle, "template": template, "skills": agent.skills })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{:<24} {:<16} {:<10} SKILLS", "AGENT", "BOTTLE", "TEMPLATE");
        for r in &rows {
            let skills: Vec<&str> = r["skills"].as_array().into_iter().flatten().filter_map(|s| s.as_str()).collect();
            println!(
                "{:<24} {:<16} {:<10} {}",
                r["name"].as_str().unwrap_or_default(),
                r["bottle"].as_str().unwrap_or_default(),
                r["template"].as_str().unwrap_or("?"),
                skills.join(",")
            );
        }
    }
    Ok(0)
}

/// An unavailable backend: an error when the operator named it (`--backend`,
/// `$BOT_BOTTLE_BACKEND`), a note when it is the default, skipped quietly
/// otherwise (smolvm on a Docker-only host).
fn unavailable_note(ctx: &Context, backend: &dyn DynBackend, e: bot_bottle::Error) -> Result<Option<String>> {
    let name = backend.name_dyn();
    if ctx.named_backend().is_some_and(|named| named.name() == name) {
        return Err(e.into());
    }
    Ok(ctx.backend().is_ok_and(|selected| selected.name() == name).then(|| format!("skipping backend {name}: {e}")))
}

/// [`unavailable_note`], the note printed on stderr.
fn note_unavailable(ctx: &Context, backend: &dyn DynBackend, e: bot_bottle::Error) -> Result<()> {
    if let Some(note) = unavailable_note(ctx, backend, e)? {
        eprintln!("note: {note}");
    }
    Ok(())
}

/// Every available backend's bottles in `list active`'s order (start time,
/// then slug), and a note for each backend skipped as unavailable (see
/// [`unavailable_note`]).
pub(crate) async fn active_bottles(ctx: &Context) -> Result<(Vec<ActiveAgent>, Vec<String>)> {
    let (mut all, mut notes) = (Vec::new(), Vec::new());
    for backend in ctx.registry.all() {
        if let Err(e) = backend.is_available().await {
            notes.extend(unavailable_note(ctx, backend.as_ref(), e)?);
            continue;
        }
        all.extend(backend.enumerate_active().await?);
    }
    bot_bottle::pool::settle(&mut all, &ctx.host.state);
    sort_active(&mut all);
    Ok((all, notes))
}

/// Every available backend's bottles; an unavailable backend is skipped with a note.
async fn all_active(ctx: &Context) -> Result<Vec<ActiveAgent>> {
    let (all, notes) = active_bottles(ctx).await?;
    for note in notes {
        eprintln!("note: {note}");
    }
    Ok(all)
}

async fn list_active(ctx: &Context, json: bool, pool: bool) -> Result<i32> {
    let mut active = all_active(ctx).await?;
    if !pool {
        active.retain(|a| a.pool != Some(bot_bottle::PoolState::Waiting));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&active)?);
        return Ok(0);
    }
    if active.is_empty() {
        eprintln!("no bottles running; `bottle start shell` starts one");
        return Ok(0);
    }
    let now = bot_bottle::backend::now_ms();
    let header = ["SLUG", "AGENT", "BACKEND", "STATUS", "UP", "OWNER", "SIDECARS", "COLOR", "LABEL"];
    let rows = active.into_iter().map(|a| {
        let sidecars: Vec<String> =
            a.sidecars.iter().map(|(name, up)| format!("{name} {}", if *up { "up" } else { "down" })).collect();
        let status = match a.pool {
            Some(bot_bottle::PoolState::Waiting) => format!("{} (pool: waiting)", a.status),
            _ => a.status,
        };
        let row = vec![
            a.slug,
            a.agent,
            a.backend,
            status,
            age(now.saturating_sub(a.started_at_ms)),
            a.owner.name().to_string(),
            sidecars.join(", "),
            a.color.clone().unwrap_or_default(),
            a.label.unwrap_or_default(),
        ];
        (row, a.color)
    });
    print_table(&header, rows, true);
    Ok(0)
}

async fn list_stopped(ctx: &Context, json: bool) -> Result<i32> {
    let stopped = ctx.host.state.stopped(&all_active(ctx).await?);
    if json {
        println!("{}", serde_json::to_string_pretty(&stopped)?);
        return Ok(0);
    }
    if stopped.is_empty() {
        eprintln!("no stopped bottles in {}", ctx.host.state.dir().display());
        return Ok(0);
    }
    let now = bot_bottle::backend::now_ms();
    let header = ["SLUG", "AGENT", "MANIFEST", "LAST STOP", "SAVED"];
    let rows = stopped.into_iter().map(|b| {
        let row =
            vec![b.meta.slug.clone(), b.meta.agent.clone(), b.meta.manifest.clone(), last_stop(&b, now), saved(&b)];
        (row, b.meta.color)
    });
    print_table(&header, rows, true);
    Ok(0)
}

/// When `bottle` last stopped, for a person: `3h ago`, `never stopped`, `not launched`.
fn last_stop(bottle: &StoppedBottle, now: u64) -> String {
    match bottle.meta.stopped_ms {
        Some(ms) => format!("{} ago", age(now.saturating_sub(ms))),
        None if bottle.meta.ready => "never stopped".into(),
        None => "not launched".into(),
    }
}

/// What `bottle` saved for `resume`: its paths and their total size.
fn saved(bottle: &StoppedBottle) -> String {
    if bottle.saved.is_empty() {
        return "nothing saved".into();
    }
    let paths: Vec<&str> = bottle.saved.iter().map(|s| s.path.as_str()).collect();
    format!("{} ({})", paths.join(", "), bottle.saved_bytes)
}

/// Print `rows` in aligned columns, under `header` when `show_header` (the
/// columns are as wide as the header either way); on a terminal each row's
/// first cell is drawn in its colour (the bottle's `--color`), when it names
/// one and `NO_COLOR` is not set (<https://no-color.org>).
pub(crate) fn print_table(
    header: &[&str],
    rows: impl Iterator<Item = (Vec<String>, Option<String>)>,
    show_header: bool,
) {
    let rows: Vec<(Vec<String>, Option<String>)> = rows.collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for (row, _) in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let colored = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let header = (header.iter().map(|h| h.to_string()).collect::<Vec<_>>(), None);
    for (row, color) in show_header.then_some(&header).into_iter().chain(&rows) {
        let paint = color.as_deref().filter(|_| colored).and_then(Paint::named).map(Paint::sgr);
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, &w))| match (&paint, i) {
                (Some(code), 0) => format!("\x1b[{code}m{cell}\x1b[0m{:pad$}", "", pad = w - cell.chars().count()),
                _ => format!("{cell:<w$}"),
            })
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

pub(crate) fn age(ms: u64) -> String {
    match ms / 1000 {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}d", s / 86400),
    }
}

async fn attach(ctx: &Context, slug: &str) -> Result<i32> {
    bot_bottle::validate_slug(slug)?;
    let backend = ctx.backend_of(slug)?;
    backend.is_available().await?;
    match session::attach(backend.as_ref(), slug, interrupted()).await? {
        session::Detach::AgentRuns => {
            eprintln!("detached from bottle {slug}; its agent keeps running (`bottle attach {slug}` reconnects)");
            Ok(0)
        }
        session::Detach::AgentEnded(code) => {
            let code_text = code.map_or("ended".to_string(), |c| format!("exited with {c}"));
            eprintln!(
                "the agent of bottle {slug} {code_text}; the bottle runs on: `bottle exec {slug} -- CMD` runs commands, \
                 `bottle stop {slug}` removes it (saving the agent's state)"
            );
            Ok(code.unwrap_or(0))
        }
    }
}

/// `exec`: the command's exit code; interrupted, the command stopped in the
/// bottle too and 128 + the signal.
async fn exec(ctx: &Context, slug: &str, user: Option<&str>, command: &[String]) -> Result<i32> {
    bot_bottle::validate_slug(slug)?;
    let backend = ctx.backend_of(slug)?;
    backend.is_available().await?;
    let user = user.map_or(GuestUser::Agent, |u| GuestUser::Named(u.to_string()));
    match session::exec(backend.as_ref(), slug, command, user, interrupted()).await {
        Ok(code) => Ok(code),
        Err(e) if e.kind() == ErrorKind::Interrupted => {
            eprintln!("{e}");
            Ok(interrupted_code())
        }
        Err(e) => Err(e.into()),
    }
}

/// The most entries left in a bottle that `cp` names one by one.
const SKIPPED_SHOWN: usize = 20;

async fn cp(ctx: &Context, source: &str, dest: &str, limit: ByteSize) -> Result<i32> {
    match CopySpec::parse(source, dest)? {
        CopySpec::In { host, slug, guest } => {
            let backend = ctx.backend_of(&slug)?;
            backend.is_available().await?;
            let target = session::copy_in(backend.as_ref(), &ctx.host.state, &slug, &host, &guest).await?;
            eprintln!("copied {} to {slug}:{target}", host.display());
        }
        CopySpec::Out { slug, guest, host } => {
            let backend = ctx.backend_of(&slug)?;
            backend.is_available().await?;
            let copied = session::copy_out(backend.as_ref(), &ctx.host.state, &slug, &guest, &host, limit).await?;
            for skipped in copied.skipped.iter().take(SKIPPED_SHOWN) {
                eprintln!("warning: left in the bottle: {skipped}; only regular files and folders come out");
            }
            if copied.skipped.len() > SKIPPED_SHOWN {
                eprintln!("warning: left in the bottle: {} more like these", copied.skipped.len() - SKIPPED_SHOWN);
            }
            eprintln!(
                "copied {slug}:{} to {} ({} of files)",
                copied.guest,
                copied.host.display(),
                ByteSize(copied.bytes)
            );
        }
    }
    Ok(0)
}

/// `doctor`: one line per check on stdout (or a JSON array); 1 when one fails.
async fn doctor(ctx: &Context, json: bool) -> Result<i32> {
    let checks = bot_bottle::diagnose(&ctx.registry, &ctx.providers, &ctx.host).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for check in &checks {
            println!("{check}");
        }
    }
    let count = |status| checks.iter().filter(|c| c.status == status).count();
    let (failed, warned) = (count(CheckStatus::Fail), count(CheckStatus::Warn));
    eprintln!("{} checks: {failed} failed, {warned} warned", checks.len());
    Ok(if failed > 0 { 1 } else { 0 })
}

async fn sidecar_log(ctx: &Context, args: LogArgs, sidecar: Sidecar) -> Result<i32> {
    let slug = args.slug.as_str();
    bot_bottle::validate_slug(slug)?;
    let backend = ctx.backend_of(slug)?;
    let mut stdout = std::io::stdout();
    let format = if args.json || !stdout.is_terminal() { LogFormat::Json } else { LogFormat::Human };
    let copied =
        bot_bottle::copy_log(backend.as_ref(), &ctx.host.state, slug, sidecar, args.follow, format, &mut stdout);
    let source = tokio::select! {
        done = copied => done?,
        _ = interrupted() => return Ok(0),
    };
    match source {
        LogSource::NoGate => {
            eprintln!("bottle {slug} has no git gate: its manifest lists no git upstreams");
            return Ok(1);
        }
        LogSource::NothingSaved => eprintln!(
            "bottle {slug} is stopped and its state folder keeps no {} log (it never launched, or stopped before \
             logs were kept)",
            sidecar.name()
        ),
        LogSource::Live | LogSource::Saved => {}
    }
    Ok(0)
}

async fn forget(ctx: &Context, slug: &str) -> Result<i32> {
    session::forget(&ctx.registry, slug, &ctx.host.state).await?;
    eprintln!("bottle {slug} forgotten: its state folder (saved agent state, audit logs) is removed");
    Ok(0)
}

async fn prune(ctx: &Context, older_than: std::time::Duration, dry_run: bool, yes: bool) -> Result<i32> {
    let now = bot_bottle::backend::now_ms();
    let stopped = ctx.host.state.stopped(&all_active(ctx).await?);
    let old = bot_bottle::prunable(stopped, older_than, now);
    let older = age(u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX));
    if old.is_empty() {
        eprintln!("nothing to prune: no stopped bottle last stopped more than {older} ago");
        return Ok(0);
    }
    for bottle in &old {
        println!("{}: {}, {}, {}", bottle.meta.slug, bottle.meta.agent, last_stop(bottle, now), saved(bottle));
    }
    if dry_run {
        eprintln!("dry run: nothing removed");
        return Ok(0);
    }
    let question = format!("Remove the state of these {} bottle(s)? They cannot be resumed after.", old.len());
    if !confirm(&question, yes)? {
        eprintln!("nothing removed");
        return Ok(1);
    }
    let slugs: Vec<String> = old.into_iter().map(|b| b.meta.slug).collect();
    let mut failed = false;
    for (slug, done) in session::prune(&ctx.registry, &slugs, &ctx.host.state).await {
        match done {
            Ok(()) => eprintln!("{slug}: forgotten"),
            // Started again, or its backend cannot tell, since it was listed: kept.
            Err(e) if e.kind() == ErrorKind::InvalidInput => eprintln!("{slug}: kept: {}", e.message()),
            Err(e) => {
                failed = true;
                eprintln!("{slug}: not removed: {e}");
            }
        }
    }
    Ok(i32::from(failed))
}

async fn stop(ctx: &Context, slug: &str, yes: bool) -> Result<i32> {
    bot_bottle::validate_slug(slug)?;
    let backend = ctx.backend_of(slug)?;
    backend.is_available().await?;
    if let Some(line) = session::unsaved_work(backend.as_ref(), slug, &ctx.host.state).await {
        eprintln!("warning: {line}");
        if !yes && std::io::stdin().is_terminal() && !confirm("Stop it anyway?", false)? {
            eprintln!("not stopped");
            return Ok(1);
        }
    }
    let stopped = session::stop(backend.as_ref(), slug, &ctx.host.state).await?;
    warn_all(&stopped.notes);
    if stopped.already {
        eprintln!("bottle {slug} is already stopped; `bottle resume {slug}` starts it again with its saved state");
        return Ok(0);
    }
    eprintln!("bottle {slug} stopped and removed; `bottle resume {slug}` starts it again with its saved state");
    Ok(0)
}

/// Print what a library step wants the operator to know, one line each.
fn warn_all(notes: &[String]) {
    for note in notes {
        eprintln!("warning: {note}");
    }
}

async fn cleanup(ctx: &Context, yes: bool, dry_run: bool) -> Result<i32> {
    let mut plans = Vec::new();
    for backend in ctx.registry.all() {
        if let Err(e) = backend.is_available().await {
            note_unavailable(ctx, backend.as_ref(), e)?;
            continue;
        }
        let plan = backend.prepare_cleanup().await?;
        for line in plan.describe() {
            println!("{}: {line}", backend.name());
        }
        if !plan.describe().is_empty() {
            plans.push((Arc::clone(backend), plan));
        }
    }
    if plans.is_empty() {
        eprintln!("nothing to clean up");
        return Ok(0);
    }
    if dry_run {
        eprintln!("dry run: nothing removed");
        return Ok(0);
    }
    if !confirm("Remove these?", yes)? {
        eprintln!("nothing removed");
        return Ok(1);
    }
    for (backend, plan) in plans {
        let count = plan.describe().len();
        for line in session::cleanup(backend.as_ref(), plan, &ctx.host.state).await? {
            eprintln!("{}: {line}", backend.name());
        }
        eprintln!("{}: removed {count} resource(s)", backend.name());
    }
    Ok(0)
}

/// `bottle pool fill|status|drain`.
async fn pool(ctx: &Context, action: PoolAction) -> Result<i32> {
    let manifest = ctx.manifest()?;
    let backend = ctx.backend()?;
    match action {
        PoolAction::Fill { agents } => {
            // One watch on the signals for the whole fill, so that none is
            // missed between two members' launches.
            let (signalled, watch) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                interrupted().await;
                let _ = signalled.send(true);
            });
            let cancel = || {
                let mut watch = watch.clone();
                async move {
                    let _ = watch.wait_for(|signalled| *signalled).await;
                }
            };
            let filled =
                bot_bottle::pool::fill(&manifest, &agents, &ctx.providers, &ctx.host, Arc::clone(&backend), cancel)
                    .await;
            let filled = match filled {
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    eprintln!("{e}");
                    return Ok(interrupted_code());
                }
                other => other?,
            };
            for f in filled {
                if f.busy {
                    eprintln!("pool {}: another `bottle pool fill` is filling it", f.agent);
                    continue;
                }
                for slug in &f.removed {
                    eprintln!("pool {}: removed {slug} (stale, or its bottle was gone)", f.agent);
                }
                eprintln!("pool {}: made {} bottle(s)", f.agent, f.made.len());
                for slug in f.made {
                    println!("{slug}");
                }
            }
            Ok(0)
        }
        PoolAction::Status { agents, json } => {
            let all = bot_bottle::pool::status(&manifest, &agents, &ctx.providers, &ctx.host, backend.name_dyn())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(0);
            }
            if all.is_empty() {
                eprintln!("no agent of {} has a pool; add `pool: {{ size: 2 }}` to one", manifest.source);
            }
            for p in all {
                let filling = p.filling.map(|pid| format!("; filling (pid {pid})")).unwrap_or_default();
                println!(
                    "pool {}: {} of {} ready{}{}{filling}",
                    p.agent,
                    p.ready.len(),
                    p.size,
                    if p.stale.is_empty() { String::new() } else { format!(", {} stale", p.stale.len()) },
                    if p.making.is_empty() { String::new() } else { format!(", {} being made", p.making.len()) },
                );
                for (what, slugs) in [("ready", &p.ready), ("stale", &p.stale), ("being made", &p.making)] {
                    for slug in slugs {
                        println!("  {slug} ({what})");
                    }
                }
            }
            Ok(0)
        }
        PoolAction::Drain { agents } => {
            let removed = bot_bottle::pool::drain(&manifest, &agents, &ctx.host.state, backend.as_ref()).await?;
            for slug in &removed {
                println!("{slug}");
            }
            eprintln!("removed {} pooled bottle(s)", removed.len());
            Ok(0)
        }
    }
}

fn manifest_check(ctx: &Context) -> Result<i32> {
    let manifest = ctx.manifest()?;
    println!("manifest {}: valid", manifest.source);
    println!("agents:");
    for (name, agent) in &manifest.agents {
        let template = manifest.bottles.get(&agent.bottle).map_or("?", |b| b.agent_provider.template.as_str());
        let skills =
            if agent.skills.is_empty() { String::new() } else { format!(", skills {}", agent.skills.join(",")) };
        println!("  {name} → bottle {} ({template}{skills})", agent.bottle);
    }
    println!("bottles:");
    for (name, bottle) in &manifest.bottles {
        let secrets = bottle.env.values().filter(|v| matches!(v, EnvValue::FromHost { secret: true, .. })).count();
        println!(
            "  {name}: template {}, {} env ({secrets} secret), {} egress route(s), {} git upstream(s), supervise {}",
            bottle.agent_provider.template,
            bottle.env.len(),
            bottle.egress.len(),
            bottle.git.len(),
            if bottle.supervise.enabled { "on" } else { "off" }
        );
    }
    warn_unset_host_vars(ctx, &manifest);
    Ok(0)
}

/// One warning on stderr per place the manifest reads a host variable that is
/// not set here: the manifest is valid, but `start` would refuse.
fn warn_unset_host_vars(ctx: &Context, manifest: &Manifest) {
    for reference in manifest.host_vars().iter().filter(|reference| ctx.host.var(&reference.name).is_none()) {
        eprintln!("warning: {}; `bottle start` of an agent using it will refuse to start", reference.not_set_message());
    }
}
