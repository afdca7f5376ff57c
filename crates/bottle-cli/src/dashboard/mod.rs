//! `bottle dashboard`: one terminal screen over every running bottle. This
//! file is the terminal loop: it refreshes the [`App`] from the library
//! (the bottles as `list active` lists them, about once a second; the
//! selected bottle's tab a little less often), draws it, and carries out
//! the [`Action`]s its keys ask for. Leaving it never stops an agent: a
//! start or resume runs as a `bottle` process of its own, which finishes
//! even when the dashboard is gone.

mod app;
mod render;
#[cfg(test)]
mod snapshot;

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bot_bottle::supervise::{GrantScope, Queue, Standing, Verdict};
use bot_bottle::{LogFormat, LogSource, PolicyRecord, Sidecar, session};
use crossterm::event::{self, Event, KeyEventKind};
use ratatui::DefaultTerminal;

use self::app::{Action, App, Detail, LogView, ManifestAgent, Row, StoppedRow, Tab};
use self::render::Theme;
use crate::context::Context;

/// How often the agents pane is refreshed.
const REFRESH: Duration = Duration::from_secs(1);

/// How often the selected bottle's tab is read again.
const DETAIL_REFRESH: Duration = Duration::from_secs(2);

/// The most lines of a log a tab keeps (the newest).
const LOG_LINES: usize = 1000;

/// A stop running in the background, for bottle `.0`.
type StopTask = (String, tokio::task::JoinHandle<bot_bottle::Result<session::Stopped>>);

/// A `bottle start` or `bottle resume` running in the background.
struct Launch {
    /// What the status line calls it (`shell (PR 42)`, a slug).
    what: String,
    /// The `bottle` process, in a process group of its own, so that
    /// neither a Ctrl-C on this terminal nor the dashboard's end stops it.
    child: std::process::Child,
    /// Its stdout and stderr.
    output: tempfile::NamedTempFile,
}

/// Run the dashboard until `q`; 0 then.
pub(crate) async fn run(ctx: &Context) -> Result<i32> {
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        bail!("bottle dashboard needs a terminal; `bottle list active` and `bottle supervise list` print the same");
    }
    let theme = Theme::from_env(std::env::var_os("NO_COLOR").as_deref(), std::env::var_os("TERM").as_deref());
    let mut app = App::new(manifest_agents(ctx));
    let mut terminal = ratatui::try_init().context("while setting up the terminal")?;
    let mut launches = Vec::new();
    let ended = event_loop(ctx, &mut app, &mut terminal, theme, &mut launches).await;
    ratatui::restore();
    let running: Vec<&str> = launches.iter().map(|l| l.what.as_str()).collect();
    if !running.is_empty() {
        eprintln!(
            "still starting in the background: {}; `bottle list active` shows them when they are up",
            running.join(", ")
        );
    }
    ended
}

/// The manifest's agents, or why it cannot be read.
fn manifest_agents(ctx: &Context) -> Result<Vec<ManifestAgent>, String> {
    let manifest = ctx.manifest().map_err(|e| format!("{e:#}"))?;
    Ok(manifest
        .agents
        .iter()
        .map(|(name, agent)| ManifestAgent {
            name: name.clone(),
            bottle: agent.bottle.clone(),
            template: manifest.bottles.get(&agent.bottle).map_or("?".into(), |b| b.agent_provider.template.clone()),
        })
        .collect())
}

async fn event_loop(
    ctx: &Context,
    app: &mut App,
    terminal: &mut DefaultTerminal,
    theme: Theme,
    launches: &mut Vec<Launch>,
) -> Result<i32> {
    let mut refreshed: Option<Instant> = None;
    let mut detail_read: Option<(Instant, String, Tab)> = None;
    let mut stops: Vec<StopTask> = Vec::new();
    loop {
        if finish_stops(app, &mut stops).await | finish_launches(app, launches) {
            refreshed = None;
        }
        if refreshed.is_none_or(|at| at.elapsed() >= REFRESH) {
            refresh_rows(ctx, app).await;
            refreshed = Some(Instant::now());
        }
        if let Some(slug) = app.selected_slug().map(str::to_string) {
            let fresh = detail_read.as_ref().is_some_and(|(at, read, tab)| {
                *read == slug && *tab == app.tab && app.detail.is_some() && at.elapsed() < DETAIL_REFRESH
            });
            if !fresh {
                let detail = read_detail(ctx, &slug, app.tab, app.detail.as_ref(), app.now_ms).await;
                app.set_detail(detail);
                detail_read = Some((Instant::now(), slug, app.tab));
            }
        }
        terminal.draw(|frame| render::draw(frame, app, theme)).context("while drawing the dashboard")?;
        let wait = REFRESH.saturating_sub(refreshed.map_or(REFRESH, |at| at.elapsed())).min(Duration::from_millis(250));
        let key = tokio::task::block_in_place(|| -> std::io::Result<Option<Event>> {
            if event::poll(wait)? { event::read().map(Some) } else { Ok(None) }
        })
        .context("while reading the keyboard")?;
        let Some(Event::Key(key)) = key else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        match app.on_key(key) {
            None => {}
            Some(Action::Quit) => return Ok(0),
            Some(Action::Attach(slug)) => {
                app.message = Some(open_in_terminal(&slug, Verb::Attach, terminal)?);
                terminal.clear().context("while drawing the dashboard")?;
            }
            Some(Action::Shell(slug)) => {
                app.message = Some(open_in_terminal(&slug, Verb::Shell, terminal)?);
                terminal.clear().context("while drawing the dashboard")?;
            }
            Some(Action::Start { agent, label, color }) => {
                let what = app::start_name(&agent, label.as_deref());
                let mut args: Vec<std::ffi::OsString> = vec!["start".into(), agent.into()];
                args.extend(label.into_iter().flat_map(|l| ["--label".into(), l.into()]));
                args.extend(color.into_iter().flat_map(|c| ["--color".into(), c.into()]));
                launch(ctx, app, launches, what, args);
            }
            Some(Action::Resume(slug)) => {
                launch(ctx, app, launches, slug.clone(), vec!["resume".into(), slug.into()]);
            }
            Some(Action::Answer { slug, id, text }) => {
                let queue = Queue::of(&ctx.host.state, &slug);
                app.message =
                    Some(match queue.decide(&id, Verdict::Answered { answer: text }, None, GrantScope::Session) {
                        Ok(_) => format!("answered {id} (bottle {slug})"),
                        Err(e) => format!("request {id} not answered: {e}"),
                    });
                detail_read = None;
                refreshed = None;
            }
            Some(Action::Grant { slug, ask }) => {
                app.message = Some(match Queue::of(&ctx.host.state, &slug).grant(&ask, GrantScope::Session) {
                    Ok(grant) => crate::supervise::granted(&slug, &grant),
                    Err(e) => format!("nothing granted to {slug}: {e}"),
                });
                detail_read = None;
            }
            Some(Action::CheckStop(slug)) => {
                let warning = match ctx.backend_of(&slug) {
                    Ok(backend) => session::unsaved_work(backend.as_ref(), &slug, &ctx.host.state).await,
                    Err(_) => None,
                };
                app.ask_stop(slug, warning);
            }
            Some(Action::Stop(slug)) => match ctx.backend_of(&slug) {
                Ok(backend) => {
                    let state = ctx.host.state.clone();
                    let stopping = slug.clone();
                    let task = tokio::spawn(async move { session::stop(backend.as_ref(), &stopping, &state).await });
                    stops.push((slug, task));
                }
                Err(e) => app.stop_ended(&slug, format!("bottle {slug} not stopped: {e:#}")),
            },
            Some(Action::Decide { slug, id, verdict }) => {
                app.message = Some(decide(ctx, &slug, &id, verdict));
                detail_read = None;
                refreshed = None;
            }
        }
    }
}

/// Run `bottle ARGS… --detach --yes` in the background as `what`; [`finish_launches`] reports its end.
fn launch(ctx: &Context, app: &mut App, launches: &mut Vec<Launch>, what: String, args: Vec<std::ffi::OsString>) {
    use std::os::unix::process::CommandExt as _;
    let started = (|| -> Result<Launch> {
        let output = tempfile::NamedTempFile::new().context("while making a file for its output")?;
        let mut command = std::process::Command::new(std::env::current_exe().context("while finding bottle")?);
        command
            .args(ctx.global_args())
            .args(&args)
            .args(["--detach", "--yes"])
            .stdin(std::process::Stdio::null())
            .stdout(output.reopen().context("while opening its output")?)
            .stderr(output.reopen().context("while opening its output")?)
            .process_group(0);
        let child = command.spawn().context("while running bottle")?;
        Ok(Launch { what: what.clone(), child, output })
    })();
    match started {
        Ok(launch) => launches.push(launch),
        Err(e) => app.start_ended(&what, format!("{what} not started: {e:#}")),
    }
}

/// Note the starts and resumes that ended; whether one did.
fn finish_launches(app: &mut App, launches: &mut Vec<Launch>) -> bool {
    let mut ended = false;
    let mut at = 0;
    while at < launches.len() {
        let status = match launches[at].child.try_wait() {
            Ok(None) => {
                at += 1;
                continue;
            }
            Ok(Some(status)) => Ok(status),
            Err(e) => Err(e),
        };
        let launch = launches.swap_remove(at);
        let output = std::fs::read_to_string(launch.output.path()).unwrap_or_default();
        let last =
            |pick: &dyn Fn(&&str) -> bool| output.lines().rev().find(|l| pick(l)).unwrap_or("").trim().to_string();
        let message = match status {
            // `--detach` prints the slug alone on its last line.
            Ok(status) if status.success() => {
                let slug = last(&|l| bot_bottle::validate_slug(l.trim()).is_ok());
                format!("bottle {slug} is up ({}); a attaches to its agent", launch.what)
            }
            Ok(status) => {
                let error = last(&|l| l.starts_with("error"));
                let error = if error.is_empty() { format!("bottle exited with {status}") } else { error };
                format!("{} not started: {error}", launch.what)
            }
            Err(e) => format!("{}: cannot wait for bottle: {e}", launch.what),
        };
        app.start_ended(&launch.what, message);
        ended = true;
    }
    ended
}

/// Note the stops that ended; whether one did.
async fn finish_stops(app: &mut App, stops: &mut Vec<StopTask>) -> bool {
    let mut ended = false;
    while let Some(at) = stops.iter().position(|(_, task)| task.is_finished()) {
        let (slug, task) = stops.swap_remove(at);
        let message = match task.await {
            Ok(Ok(stopped)) if stopped.already => format!("bottle {slug} was already stopped"),
            Ok(Ok(stopped)) => {
                let notes = stopped.notes.iter().map(|n| format!("; {n}")).collect::<String>();
                format!("bottle {slug} stopped and removed; `bottle resume {slug}` starts it again{notes}")
            }
            Ok(Err(e)) => format!("bottle {slug} not stopped: {e}"),
            Err(e) => format!("bottle {slug}: the stop failed: {e}"),
        };
        app.stop_ended(&slug, message);
        ended = true;
    }
    ended
}

/// The rows as `list active` lists them, with each bottle's pending requests.
async fn refresh_rows(ctx: &Context, app: &mut App) {
    let now = bot_bottle::backend::now_ms();
    match crate::commands::active_bottles(ctx).await {
        Ok((bottles, notes)) => {
            let mut stopped = ctx.host.state.stopped(&bottles);
            stopped.sort_by_key(|b| std::cmp::Reverse(b.meta.stopped_ms.unwrap_or(b.meta.owner.created_ms)));
            // As `list active` by default: the bottles waiting in warm pools are no one's yet.
            let rows = bottles
                .into_iter()
                .filter(|bottle| bottle.pool != Some(bot_bottle::PoolState::Waiting))
                .map(|bottle| {
                    let entries = Queue::of(&ctx.host.state, &bottle.slug).entries(now).unwrap_or_default();
                    let pending = entries.iter().filter(|e| e.standing == Standing::Pending).count();
                    Row { bottle, pending }
                })
                .collect();
            app.set_rows(rows, now);
            app.set_stopped(
                stopped
                    .into_iter()
                    .map(|b| StoppedRow {
                        slug: b.meta.slug,
                        agent: b.meta.agent,
                        label: b.meta.label,
                        color: b.meta.color,
                    })
                    .collect(),
            );
            app.notice = notes.into_iter().next();
        }
        Err(e) => app.notice = Some(format!("cannot list the bottles: {e:#}")),
    }
}

/// Bottle `slug`'s tabs: its requests and metadata, and the log `tab`
/// shows (the other log as `before` had it).
async fn read_detail(ctx: &Context, slug: &str, tab: Tab, before: Option<&Detail>, now: u64) -> Detail {
    let before = before.filter(|d| d.slug == slug);
    let kept = |log: fn(&Detail) -> &LogView| before.map_or(LogView::Loading, |d| log(d).clone());
    let mut detail = Detail {
        egress: kept(|d| &d.egress),
        gate: kept(|d| &d.gate),
        requests: Queue::of(&ctx.host.state, slug).entries(now).unwrap_or_default(),
        meta: ctx.host.state.read(slug).ok(),
        policy: PolicyRecord::read(&ctx.host.state, slug).ok().flatten(),
        grants: Queue::of(&ctx.host.state, slug).grants().unwrap_or_default(),
        ..Detail::empty(slug)
    };
    match tab {
        Tab::Egress => detail.egress = read_log(ctx, slug, Sidecar::Egress).await,
        Tab::Gate => detail.gate = read_log(ctx, slug, Sidecar::GitGate).await,
        Tab::Requests | Tab::Details => {}
    }
    detail
}

/// Bottle `slug`'s `sidecar` audit log in the human format, as `bottle egress log` prints it.
async fn read_log(ctx: &Context, slug: &str, sidecar: Sidecar) -> LogView {
    let backend = match ctx.backend_of(slug) {
        Ok(backend) => backend,
        Err(e) => return LogView::Note(format!("{e:#}")),
    };
    let mut out = Vec::new();
    match bot_bottle::copy_log(backend.as_ref(), &ctx.host.state, slug, sidecar, false, LogFormat::Human, &mut out)
        .await
    {
        Ok(LogSource::NoGate) => LogView::Note("no git gate: the bottle's manifest lists no git upstreams".into()),
        Ok(LogSource::NothingSaved) => LogView::Note(format!("no {} log kept", sidecar.name())),
        Ok(LogSource::Live | LogSource::Saved) => {
            let text = String::from_utf8_lossy(&out);
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            LogView::Lines(lines[lines.len().saturating_sub(LOG_LINES)..].to_vec())
        }
        Err(e) => LogView::Note(format!("cannot read the {} log: {e}", sidecar.name())),
    }
}

/// Approve or deny request `id` of bottle `slug`; what happened, in a line.
fn decide(ctx: &Context, slug: &str, id: &str, verdict: Verdict) -> String {
    let word = if verdict == Verdict::Approved { "approved" } else { "denied" };
    match Queue::of(&ctx.host.state, slug).decide(id, verdict, None, GrantScope::Session) {
        Ok(Some(grant)) => crate::supervise::granted(slug, &grant),
        Ok(None) => format!("{word} {id} (bottle {slug})"),
        Err(e) => format!("request {id} not {word}: {e}"),
    }
}

/// What [`open_in_terminal`] runs for a bottle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    /// `bottle attach SLUG`: the agent's session.
    Attach,
    /// `bottle exec SLUG -- bash`: a shell of the agent's user, in its workspace.
    Shell,
}

impl Verb {
    /// The `bottle` arguments, and the tmux window's name.
    fn args(self, slug: &str) -> (Vec<String>, String) {
        match self {
            Verb::Attach => (vec!["attach".into(), slug.into()], slug.to_string()),
            Verb::Shell => (["exec", slug, "--", "bash"].map(String::from).to_vec(), format!("{slug}-shell")),
        }
    }

    /// What the operator does to come back.
    fn back(self) -> &'static str {
        match self {
            Verb::Attach => "C-b d there detaches",
            Verb::Shell => "exit there closes it",
        }
    }
}

/// The variables a `bottle` started by tmux needs from this one: tmux runs
/// a new window's command in its server's environment, not ours.
fn passed_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(key, _)| {
            ["XDG_", "BOT_BOTTLE_", "DOCKER_"].iter().any(|prefix| key.starts_with(prefix))
                || matches!(key.as_str(), "HOME" | "PATH" | "NO_COLOR")
        })
        .collect()
}

/// `a` and `e`: inside tmux, `verb` runs this very `bottle` (the same
/// state and engine) in a new tmux window; else the dashboard gives the
/// terminal to it (leaving raw mode and the alternate screen) and takes it
/// back when it exits. What happened, in a line.
fn open_in_terminal(slug: &str, verb: Verb, terminal: &mut DefaultTerminal) -> Result<String> {
    let bottle = std::env::current_exe().context("while finding the bottle executable")?;
    let (args, window) = verb.args(slug);
    if std::env::var_os("TMUX").is_some_and(|v| !v.is_empty()) {
        let mut tmux = std::process::Command::new("tmux");
        tmux.args(["new-window", "-n", &window]);
        for (key, value) in passed_env() {
            tmux.arg("-e").arg(format!("{key}={value}"));
        }
        tmux.arg(&bottle).args(&args);
        let out = tmux.output().context("while running tmux new-window")?;
        return Ok(if out.status.success() {
            format!("bottle {slug}: `bottle {}` is in a new tmux window ({window}); {}", args.join(" "), verb.back())
        } else {
            format!("tmux new-window failed: {}", String::from_utf8_lossy(&out.stderr).trim())
        });
    }
    ratatui::restore();
    let status = tokio::task::block_in_place(|| {
        let status = std::process::Command::new(&bottle).args(&args).status();
        if !status.as_ref().is_ok_and(std::process::ExitStatus::success) {
            // Its error is on the terminal: leave it there until the operator has read it.
            eprint!("press Enter to go back to the dashboard ");
            let _ = std::io::stdin().read_line(&mut String::new());
        }
        status
    });
    *terminal = ratatui::try_init().context("while setting up the terminal again")?;
    Ok(match status {
        Ok(status) if status.success() => format!("back from bottle {slug}; its agent keeps running"),
        Ok(status) => format!("bottle {} ended: {status}", args.join(" ")),
        Err(e) => format!("cannot run bottle {}: {e}", args.join(" ")),
    })
}
