//! One function per command, each returning the process's exit code.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use bot_bottle::backend::Backend as _;
use bot_bottle::{
    ActiveAgent, BottleSpec, ByteSize, CheckStatus, CopySpec, DynBackend, EnvValue, ErrorKind, GuestUser, Manifest,
    Session, Sidecar, session, sort_active,
};
use clap::CommandFactory;

use crate::args::{Cli, Command, ListWhat, LogAction, ManifestAction, RunArgs, StartArgs};
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
        Command::List { what: ListWhat::Agents, json } => list_agents(&ctx, json),
        Command::List { what: ListWhat::Active, json } => list_active(&ctx, json).await,
        Command::Attach { slug } => attach(&ctx, &slug).await,
        Command::Exec { slug, user, command } => exec(&ctx, &slug, user.as_deref(), &command).await,
        Command::Cp { source, dest, limit } => cp(&ctx, &source, &dest, limit).await,
        Command::Doctor { json } => doctor(&ctx, json).await,
        Command::Stop { slug, yes } => stop(&ctx, &slug, yes).await,
        Command::Cleanup { yes, dry_run } => cleanup(&ctx, yes, dry_run).await,
        Command::Egress { action: LogAction::Log { slug, follow } } => {
            sidecar_log(&ctx, &slug, Sidecar::Egress, follow).await
        }
        Command::Gate { action: LogAction::Log { slug, follow } } => {
            sidecar_log(&ctx, &slug, Sidecar::GitGate, follow).await
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
    run_bottle(ctx, spec, &args.run).await
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
fn note_unavailable(ctx: &Context, backend: &dyn DynBackend, e: bot_bottle::Error) -> Result<()> {
    let name = backend.name_dyn();
    if ctx.named_backend().is_some_and(|named| named.name() == name) {
        return Err(e.into());
    }
    if ctx.backend().is_ok_and(|selected| selected.name() == name) {
        eprintln!("note: skipping backend {name}: {e}");
    }
    Ok(())
}

/// Every available backend's bottles; an unavailable backend is skipped with a note.
async fn all_active(ctx: &Context) -> Result<Vec<ActiveAgent>> {
    let mut all = Vec::new();
    for backend in ctx.registry.all() {
        if let Err(e) = backend.is_available().await {
            note_unavailable(ctx, backend.as_ref(), e)?;
            continue;
        }
        all.extend(backend.enumerate_active().await?);
    }
    sort_active(&mut all);
    Ok(all)
}

async fn list_active(ctx: &Context, json: bool) -> Result<i32> {
    let active = all_active(ctx).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&active)?);
        return Ok(0);
    }
    if active.is_empty() {
        eprintln!("no bottles running; `bottle start shell` starts one");
        return Ok(0);
    }
    let now = bot_bottle::backend::now_ms();
    let header = ["SLUG", "AGENT", "BACKEND", "STATUS", "UP", "LABEL"].map(String::from);
    let rows: Vec<[String; 6]> = active
        .into_iter()
        .map(|a| {
            let up = age(now.saturating_sub(a.started_at_ms));
            [a.slug, a.agent, a.backend, a.status, up, a.label.unwrap_or_default()]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
    Ok(0)
}

fn age(ms: u64) -> String {
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

async fn sidecar_log(ctx: &Context, slug: &str, sidecar: Sidecar, follow: bool) -> Result<i32> {
    bot_bottle::validate_slug(slug)?;
    let backend = ctx.backend_of(slug)?;
    backend.is_available().await?;
    let bottle = backend.attach(slug).await?;
    let mut stdout = std::io::stdout();
    tokio::select! {
        done = bottle.sidecar_log(sidecar, follow, &mut stdout) => done?,
        _ = interrupted() => {}
    }
    Ok(0)
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
            if bottle.supervise { "on" } else { "off" }
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
