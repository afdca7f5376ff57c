//! Drawing the dashboard: the agents pane, the selected bottle's tabs, the
//! manifest pane, the status line, the key footer and the windows over them
//! (help, stop confirmation, start, answer, grant, filter), from an [`App`] alone, so a test draws it on
//! ratatui's `TestBackend`. Text an agent wrote is escaped before it is drawn.

use bot_bottle::supervise::{Standing, escape};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, List, ListItem, ListState, Paragraph, Row, Table, TableState, Tabs, Wrap};

use super::app::{App, COLORS, Focus, LogView, Modal, Tab};
use crate::color::Paint;
use crate::commands::age;

/// The keys the footer names for what is focused and selected: only the
/// verbs the selected bottle's services allow (a grant or a decision only
/// where supervise runs).
pub(crate) fn footer(app: &App) -> String {
    let bottle = app.selected_row().is_some();
    let supervise = app.selected_runs("supervise");
    let mut keys: Vec<&str> = Vec::new();
    match (app.focus, app.tab) {
        (Focus::Manifest, _) => keys.extend(["↑↓ move", "Enter start agent / resume stopped", "Tab pane"]),
        (Focus::Tab, Tab::Requests) if supervise => {
            keys.extend(["↑↓ request", "y/Enter approve or answer", "n deny", "←→ tab", "Tab pane"]);
        }
        (Focus::Tab, Tab::Egress) if bottle => {
            keys.extend(["↑↓ scroll", "f decisions", "/ host", "←→ tab", "Tab pane", "s stop"]);
        }
        (Focus::Tab, _) => keys.extend(["↑↓ scroll", "←→ tab", "Tab pane", "a attach", "e shell", "s stop"]),
        (Focus::Agents, _) if bottle => {
            keys.extend(["↑↓ move", "←→ tab", "Tab pane", "a attach", "e shell", "s stop"]);
            if supervise {
                keys.push("g grant");
            }
        }
        (Focus::Agents, _) => keys.extend(["Tab pane", "Enter in the manifest pane starts an agent"]),
    }
    keys.extend(["? help", "q quit"]);
    keys.join("  ")
}

/// Every key and what it does, for the help window.
const HELP: &[(&str, &str)] = &[
    ("↑ ↓  j k", "move in the focused pane (bottles, requests, log)"),
    ("← →  h l  1-4", "switch tab: egress, requests, gate, details"),
    ("Tab  Shift-Tab", "focus the next / previous pane"),
    ("Enter  r", "manifest pane: start the agent (label, colour) or resume"),
    ("a", "attach to the bottle's agent (C-b d comes back)"),
    ("e", "open a shell in the bottle (exit comes back)"),
    ("s", "stop the bottle (asks y/N; its state is saved)"),
    ("y  n", "approve / deny the selected request; y answers a question"),
    ("g", "grant live: HOST [METHOD] [/PATH] [:PORT], or push BRANCH"),
    ("f  /", "egress tab: filter by decision, by host"),
    ("?", "this help (any key closes it)"),
    ("q  Esc", "quit; every agent keeps running"),
];

/// How the dashboard is drawn: with colours, or without (`NO_COLOR`, a dumb terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Theme {
    /// Whether colours are drawn; emphasis (bold, reversed) is drawn either way.
    pub(crate) colored: bool,
}

impl Theme {
    /// The theme for `$NO_COLOR` (<https://no-color.org>: set and not
    /// empty means no colour) and `$TERM` (`dumb` draws no colour).
    pub(crate) fn from_env(no_color: Option<&std::ffi::OsStr>, term: Option<&std::ffi::OsStr>) -> Theme {
        let no_color = no_color.is_some_and(|v| !v.is_empty());
        let dumb = term.is_some_and(|t| t == "dumb");
        Theme { colored: !no_color && !dumb }
    }

    fn fg(self, color: Color) -> Style {
        if self.colored { Style::new().fg(color) } else { Style::new() }
    }

    /// A bottle's `--color`, when it names one and colours are drawn.
    fn bottle(self, color: Option<&str>) -> Style {
        let paint = color.filter(|_| self.colored).and_then(Paint::named);
        paint.map_or_else(Style::new, |paint| {
            Style::new().fg(match paint {
                Paint::Basic(n) | Paint::Indexed(n) => Color::Indexed(n),
                Paint::Rgb(r, g, b) => Color::Rgb(r, g, b),
            })
        })
    }

    /// What needs the operator: a denial, a pending request, a sidecar down.
    fn alert(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    fn pending(self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    }

    fn dim(self) -> Style {
        self.fg(Color::DarkGray)
    }

    fn border(self, focused: bool) -> Style {
        if focused { self.fg(Color::Cyan).add_modifier(Modifier::BOLD) } else { Style::new() }
    }
}

/// Draw `app` on `frame`.
pub(crate) fn draw(frame: &mut Frame<'_>, app: &App, theme: Theme) {
    let area = frame.area();
    let agents_height = (app.rows.len().max(1) as u16 + 3).clamp(4, (area.height * 2 / 5).max(4));
    let [agents, lower, status, footer] = Layout::vertical([
        Constraint::Length(agents_height),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_agents(frame, agents, app, theme);
    if lower.width >= 64 {
        let [tabs, manifest] = Layout::horizontal([Constraint::Min(40), Constraint::Length(22)]).areas(lower);
        draw_tabs(frame, tabs, app, theme);
        draw_manifest(frame, manifest, app, theme);
    } else {
        draw_tabs(frame, lower, app, theme);
    }
    let line = app.message.as_deref().or(app.notice.as_deref()).unwrap_or("");
    frame.render_widget(Paragraph::new(escape(line)), status);
    frame.render_widget(Paragraph::new(self::footer(app)).style(theme.dim()), footer);
    match &app.modal {
        Some(Modal::Help) => draw_help(frame, area),
        Some(Modal::ConfirmStop { slug, warning }) => draw_confirm(frame, area, slug, warning.as_deref(), theme),
        Some(Modal::Start { agent, label, color }) => {
            let colors: Vec<Span<'_>> = COLORS
                .iter()
                .enumerate()
                .flat_map(|(at, name)| {
                    let style = if at == *color {
                        theme.bottle(Some(name)).add_modifier(Modifier::REVERSED)
                    } else {
                        theme.bottle(Some(name))
                    };
                    [Span::styled(*name, style), Span::raw(" ")]
                })
                .collect();
            let above = vec![Line::from(format!("Start agent {} (detached).", escape(agent))), Line::from(colors)];
            let hint = "type a label  ←→ colour  Enter start  Esc cancel";
            InputWindow { title: " Start ", lines: above, name: "label", text: label, error: None, hint }
                .draw(frame, area, theme);
        }
        Some(Modal::Answer { id, question, choices, text, .. }) => {
            let mut above = vec![Line::from(format!("Request {id} asks: {}", escape(question)))];
            if !choices.is_empty() {
                let choices: Vec<String> = choices.iter().map(|c| escape(c)).collect();
                above.push(Line::from(format!("choices: {}", choices.join(" | "))));
            }
            let hint = if choices.is_empty() {
                "type the answer  Enter send  Esc cancel"
            } else {
                "type, or ↑↓ pick a choice  Enter send  Esc cancel"
            };
            InputWindow { title: " Answer ", lines: above, name: "answer", text, error: None, hint }
                .draw(frame, area, theme);
        }
        Some(Modal::Grant { slug, text, error }) => {
            let above = vec![
                Line::from(format!("Grant bottle {} live (until it stops):", escape(slug))),
                Line::from("HOST [METHOD…] [/PATH…] [:PORT…]  or  push BRANCH…"),
            ];
            let hint = "Enter grant  Esc cancel";
            InputWindow { title: " Grant ", lines: above, name: "grant", text, error: error.as_deref(), hint }
                .draw(frame, area, theme);
        }
        Some(Modal::Filter { text }) => {
            let above = vec![Line::from("Show only the egress lines holding (empty: all):")];
            let hint = "Enter apply  Esc cancel";
            InputWindow { title: " Filter ", lines: above, name: "host", text, error: None, hint }
                .draw(frame, area, theme);
        }
        None => {}
    }
}

/// A window over the dashboard with a text input.
struct InputWindow<'a> {
    /// Its title.
    title: &'a str,
    /// What it says above the input.
    lines: Vec<Line<'a>>,
    /// The input's name.
    name: &'a str,
    /// What was typed.
    text: &'a str,
    /// Why the last Enter was refused.
    error: Option<&'a str>,
    /// The keys it takes.
    hint: &'a str,
}

impl InputWindow<'_> {
    fn draw(self, frame: &mut Frame<'_>, area: Rect, theme: Theme) {
        let mut lines = self.lines;
        lines.push(Line::from(""));
        lines.push(Line::from(vec![
            Span::styled(format!("{}: ", self.name), Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(escape(self.text)),
            Span::raw("▏"),
        ]));
        if let Some(error) = self.error {
            lines.push(Line::styled(escape(error), theme.alert()));
        }
        lines.push(Line::from(""));
        lines.push(Line::styled(self.hint.to_string(), theme.dim()));
        let window = centered(area, 72, lines.len() as u16 + 4);
        frame.render_widget(Clear, window);
        let block = Block::bordered().title(self.title);
        frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(block), window);
    }
}

/// `text` in at most `width` columns, cut with `…`.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A bottle's sidecars in a few words: `egress relay`, `egress:down relay`.
fn services(sidecars: &std::collections::BTreeMap<String, bool>) -> String {
    let names: Vec<String> =
        sidecars.iter().map(|(name, up)| if *up { name.clone() } else { format!("{name}:down") }).collect();
    if names.is_empty() { "-".into() } else { names.join(" ") }
}

fn draw_agents(frame: &mut Frame<'_>, area: Rect, app: &App, theme: Theme) {
    let focused = app.focus == Focus::Agents;
    let block = Block::bordered().title(format!(" Agents ({}) ", app.rows.len())).border_style(theme.border(focused));
    if app.rows.is_empty() {
        let empty = Paragraph::new("no bottles running; `bottle start AGENT --detach` starts one").style(theme.dim());
        frame.render_widget(empty.block(block), area);
        return;
    }
    let header = ["SLUG", "AGENT", "BACKEND", "UP", "SERVICES", "REQ", "LABEL"];
    let cells: Vec<[String; 7]> = app
        .rows
        .iter()
        .map(|row| {
            let a = &row.bottle;
            let stopping = app.stopping.contains(&a.slug);
            let services = if stopping { "stopping…".into() } else { services(&a.sidecars) };
            let up =
                if a.status == "running" { age(app.now_ms.saturating_sub(a.started_at_ms)) } else { a.status.clone() };
            [
                escape(&a.slug),
                escape(&a.agent),
                escape(&a.backend),
                up,
                services,
                row.pending.to_string(),
                escape(a.label.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    // Each column as wide as its widest cell, within a cap; the label takes the rest.
    let caps = [24, 12, 8, 8, 22, 3];
    let widths: Vec<usize> = caps
        .iter()
        .enumerate()
        .map(|(i, cap)| {
            cells.iter().map(|c| c[i].chars().count()).chain([header[i].len()]).max().unwrap_or(0).min(*cap)
        })
        .collect();
    let rows = app.rows.iter().zip(&cells).map(|(row, cells)| {
        let paint = theme.bottle(row.bottle.color.as_deref());
        let styled = cells.iter().enumerate().map(|(i, text)| {
            let text = widths.get(i).map_or_else(|| text.clone(), |w| fit(text, *w));
            let style = match i {
                0 | 6 => paint,
                4 if row.bottle.sidecars.values().any(|up| !up) => theme.alert(),
                5 if row.pending > 0 => theme.pending(),
                _ => Style::new(),
            };
            Cell::from(text).style(style)
        });
        Row::new(styled.collect::<Vec<_>>())
    });
    let constraints: Vec<Constraint> =
        widths.iter().map(|w| Constraint::Length(*w as u16)).chain([Constraint::Fill(1)]).collect();
    let selected = if focused { Modifier::REVERSED } else { Modifier::BOLD };
    let table = Table::new(rows, constraints)
        .header(Row::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(block)
        .row_highlight_style(Style::new().add_modifier(selected))
        .highlight_symbol("> ");
    let mut state = TableState::new().with_selected(Some(app.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_tabs(frame: &mut Frame<'_>, area: Rect, app: &App, theme: Theme) {
    let focused = app.focus == Focus::Tab;
    let title = app.selected_slug().map_or(" no bottle selected ".to_string(), |slug| format!(" {} ", escape(slug)));
    let block = Block::bordered().title(title).border_style(theme.border(focused));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [bar, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inner);
    let pending = app.selected_row().map_or(0, |r| r.pending);
    let titles = Tab::ALL.map(|tab| match tab {
        Tab::Requests if pending > 0 => format!("requests ({pending})"),
        tab => tab.title().to_string(),
    });
    let selected = Tab::ALL.iter().position(|t| *t == app.tab);
    let tabs = Tabs::new(titles).select(selected).highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    frame.render_widget(tabs, bar);
    let Some(row) = app.selected_row() else {
        return;
    };
    let Some(detail) = app.detail.as_ref().filter(|d| d.slug == row.bottle.slug) else {
        frame.render_widget(Paragraph::new("reading…").style(theme.dim()), body);
        return;
    };
    match app.tab {
        Tab::Egress if !app.filter.is_empty() => {
            let [line, rest] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(body);
            let host =
                if app.filter.host.is_empty() { String::new() } else { format!(", holding {:?}", app.filter.host) };
            let text = format!("showing {}{host} (f, / change it)", app.filter.decisions.name());
            frame.render_widget(Paragraph::new(escape(&text)).style(theme.pending()), line);
            let shown = match &detail.egress {
                LogView::Lines(lines) => {
                    LogView::Lines(lines.iter().filter(|l| app.filter.shows(l, is_denial(l))).cloned().collect())
                }
                other => other.clone(),
            };
            draw_log(frame, rest, &shown, app.scroll, "no line of the egress log matches", theme)
        }
        Tab::Egress => {
            draw_log(frame, body, &detail.egress, app.scroll, "no requests through the egress proxy yet", theme)
        }
        Tab::Gate => draw_log(frame, body, &detail.gate, app.scroll, "no pushes through the git gate yet", theme),
        Tab::Requests => draw_requests(frame, body, app, theme),
        Tab::Details => draw_details(frame, body, app, theme),
    }
}

/// Whether a log line in the human format is a denial (`HH:MM:SS deny …`).
pub(crate) fn is_denial(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let clock = words.next().is_some_and(|t| t.len() == 8 && t.bytes().all(|b| b.is_ascii_digit() || b == b':'));
    clock && words.next() == Some("deny")
}

fn draw_log(frame: &mut Frame<'_>, area: Rect, log: &LogView, scroll: usize, none: &str, theme: Theme) {
    let lines = match log {
        LogView::Loading => return frame.render_widget(Paragraph::new("reading the log…").style(theme.dim()), area),
        LogView::Note(note) => {
            let note = Paragraph::new(escape(note)).wrap(Wrap { trim: true }).style(theme.dim());
            return frame.render_widget(note, area);
        }
        LogView::Lines(lines) if lines.is_empty() => {
            return frame.render_widget(Paragraph::new(none).style(theme.dim()), area);
        }
        LogView::Lines(lines) => lines,
    };
    let end = lines.len() - scroll.min(lines.len().saturating_sub(1));
    let start = end.saturating_sub(usize::from(area.height));
    let shown: Vec<Line<'_>> = lines[start..end]
        .iter()
        .map(|line| {
            let style = if is_denial(line) { theme.alert() } else { Style::new() };
            Line::styled(line.as_str(), style)
        })
        .collect();
    frame.render_widget(Paragraph::new(shown), area);
}

fn draw_requests(frame: &mut Frame<'_>, area: Rect, app: &App, theme: Theme) {
    let requests = app.detail.as_ref().map_or(&[][..], |d| &d.requests[..]);
    if requests.is_empty() {
        let none = "no supervise requests (an agent asks through supervise when its manifest says `supervise: true`)";
        return frame.render_widget(Paragraph::new(none).wrap(Wrap { trim: true }).style(theme.dim()), area);
    }
    let items: Vec<ListItem<'_>> = requests
        .iter()
        .map(|entry| {
            let state = crate::supervise::state_name(entry);
            let style = if entry.standing == Standing::Pending { theme.pending() } else { Style::new() };
            ListItem::new(Line::from(vec![
                Span::raw(format!("{} ", entry.request.id)),
                Span::raw(format!("{:>4} ", age(app.now_ms.saturating_sub(entry.request.time_ms)))),
                Span::styled(format!("{state:<8} "), style),
                Span::raw(format!("{} ", entry.request.ask.tool())),
                Span::raw(crate::supervise::what(entry)),
            ]))
        })
        .collect();
    let selected = if app.focus == Focus::Tab { Modifier::REVERSED } else { Modifier::BOLD };
    let list = List::new(items).highlight_symbol("> ").highlight_style(Style::new().add_modifier(selected));
    let mut state = ListState::default().with_selected(Some(app.request));
    frame.render_stateful_widget(list, area, &mut state);
}

/// `line` in pieces of at most `width` columns, broken between words
/// where it can be (a word longer than `width` is cut); the pieces after
/// the first keep the line's indent.
fn wrap(line: &str, width: usize) -> Vec<String> {
    let indent: String = line.chars().take_while(|c| *c == ' ').collect();
    let mut pieces: Vec<String> = Vec::new();
    let mut current = String::new();
    for word in line.split(' ').filter(|w| !w.is_empty()) {
        let lead = indent.as_str();
        let len = current.chars().count();
        if len > 0 && len + 1 + word.chars().count() > width {
            pieces.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            current.push_str(lead);
        } else {
            current.push(' ');
        }
        let mut rest: Vec<char> = word.chars().collect();
        while current.chars().count() + rest.len() > width && current.trim().is_empty() {
            let take = width.saturating_sub(current.chars().count()).max(1);
            current.extend(rest.drain(..take.min(rest.len())));
            pieces.push(std::mem::replace(&mut current, lead.to_string()));
        }
        current.extend(rest);
    }
    if !current.trim().is_empty() || pieces.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// A live grant as a route line: `host METHODS PATHS ports P` or `push BRANCHES`.
fn grant_line(grant: &bot_bottle::supervise::Grant) -> String {
    let line = if grant.is_push() { format!("push {}", grant.branches.join(",")) } else { grant.rule().line() };
    let by = if grant.id == bot_bottle::supervise::OPERATOR_GRANT {
        "by the operator".to_string()
    } else {
        format!("request {}", grant.id)
    };
    let scope = match grant.scope {
        bot_bottle::supervise::GrantScope::Session => "this run",
        bot_bottle::supervise::GrantScope::Always => "every resume",
    };
    format!("{line}  (granted live, {by}, {scope})")
}

/// The details tab: the policy the bottle was launched with (live grants
/// marked `+`), then what its backend and state folder say of it.
fn draw_details(frame: &mut Frame<'_>, area: Rect, app: &App, theme: Theme) {
    let Some(row) = app.selected_row() else {
        return;
    };
    let a = &row.bottle;
    let detail = app.detail.as_ref();
    let mut lines: Vec<Line<'_>> = Vec::new();
    // A fact is its key, then its value wrapped to the room beside it.
    let room = usize::from(area.width).saturating_sub(11).max(10);
    let fact = |key: &str, value: &str, style: Style| {
        let mut lines = Vec::new();
        let mut key = key.to_string();
        for part in value.lines().flat_map(|l| wrap(&escape(l), room)) {
            lines.push(Line::from(vec![Span::raw(format!("{key:<10} ")), Span::styled(part, style)]));
            key.clear();
        }
        lines
    };
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let granted = theme.pending();
    match detail.and_then(|d| d.policy.as_ref()) {
        Some(policy) => {
            lines.push(Line::styled("policy, as launched", bold));
            let grants = detail.map_or(&[][..], |d| &d.grants[..]);
            let routes: Vec<&str> = if policy.routes.is_empty() && grants.iter().all(|g| g.is_push()) {
                vec!["none (every request is denied)"]
            } else {
                policy.routes.iter().map(String::as_str).collect()
            };
            let mut key = "egress";
            for route in routes {
                lines.extend(fact(key, route, Style::new()));
                key = "";
            }
            for grant in grants.iter().filter(|g| !g.is_push()) {
                lines.extend(fact(key, &format!("+ {}", grant_line(grant)), granted));
                key = "";
            }
            key = "git";
            for (upstream, push) in &policy.upstreams {
                lines.extend(fact(key, &format!("{upstream}\n  push: {push}"), Style::new()));
                key = "";
            }
            for grant in grants.iter().filter(|g| g.is_push()) {
                lines.extend(fact(key, &format!("+ {}", grant_line(grant)), granted));
                key = "";
            }
            if key == "git" {
                lines.extend(fact(key, "no upstreams (no git gate)", Style::new()));
            }
            lines.extend(fact("limits", &policy.limits, Style::new()));
            for (name, value) in &policy.isolation {
                lines.extend(fact(name, value, Style::new()));
            }
            lines.extend(fact("supervise", &policy.supervise, Style::new()));
        }
        None => {
            lines.extend(fact("policy", "not recorded (started by an older bottle, or on another host)", theme.dim()))
        }
    }
    let sidecars: Vec<String> =
        a.sidecars.iter().map(|(name, up)| format!("{name} {}", if *up { "up" } else { "down" })).collect();
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    let mut facts: Vec<(&str, String)> = vec![
        ("agent", a.agent.clone()),
        ("backend", a.backend.clone()),
        ("status", a.status.clone()),
        ("up", age(app.now_ms.saturating_sub(a.started_at_ms))),
        ("owner", a.owner.name().to_string()),
        ("sidecars", sidecars.join(", ")),
        ("image", a.image.clone()),
        ("label", a.label.clone().unwrap_or_default()),
        ("color", a.color.clone().unwrap_or_default()),
    ];
    match detail.and_then(|d| d.meta.as_ref()) {
        Some(meta) => facts.extend([
            ("template", meta.provider.clone()),
            ("manifest", meta.manifest.clone()),
            ("workdir", meta.workdir.clone()),
            ("git gate", yes_no(meta.gate)),
            ("detached", yes_no(meta.detached)),
            ("resumes", meta.resumes.to_string()),
            ("state max", meta.state_limit.to_string()),
        ]),
        None => facts.push(("metadata", "none in this state folder (started by another user or host)".into())),
    }
    lines.push(Line::styled("bottle", bold));
    for (key, value) in facts {
        lines.extend(fact(key, &value, Style::new()));
    }
    let scroll = u16::try_from(app.scroll.min(lines.len().saturating_sub(1))).unwrap_or(u16::MAX);
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).scroll((scroll, 0)), area);
}

fn draw_manifest(frame: &mut Frame<'_>, area: Rect, app: &App, theme: Theme) {
    let focused = app.focus == Focus::Manifest;
    let block = Block::bordered().title(" Manifest ").border_style(theme.border(focused));
    let agents = match &app.manifest {
        Ok(agents) => agents,
        Err(e) => {
            let error = Paragraph::new(escape(e)).wrap(Wrap { trim: true }).style(theme.alert());
            return frame.render_widget(error.block(block), area);
        }
    };
    let mut items: Vec<ListItem<'_>> = agents
        .iter()
        .map(|agent| {
            ListItem::new(Line::from(vec![
                Span::raw(escape(&agent.name)),
                Span::styled(format!(" {}", escape(&agent.template)), theme.dim()),
            ]))
        })
        .collect();
    // The stopped bottles follow under a heading, which is no entry: the
    // selection skips it.
    let mut selected = app.manifest_selected;
    if !app.stopped.is_empty() {
        items.push(ListItem::new(Line::styled("stopped (resume):", theme.dim())));
        if selected >= agents.len() {
            selected += 1;
        }
        items.extend(app.stopped.iter().map(|b| {
            let resuming = app.starting.contains(&b.slug);
            let name = if resuming { format!("{} …", b.slug) } else { b.slug.clone() };
            ListItem::new(Line::styled(escape(&name), theme.bottle(b.color.as_deref())))
        }));
    }
    let highlight = if focused { Modifier::REVERSED } else { Modifier::empty() };
    let list = List::new(items).block(block).highlight_style(Style::new().add_modifier(highlight));
    let mut state = ListState::default().with_selected(focused.then_some(selected));
    frame.render_stateful_widget(list, area, &mut state);
}

/// A `width` × `height` rectangle in the middle of `area` (smaller when `area` is).
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let (width, height) = (width.min(area.width), height.min(area.height));
    Rect { x: area.x + (area.width - width) / 2, y: area.y + (area.height - height) / 2, width, height }
}

fn draw_help(frame: &mut Frame<'_>, area: Rect) {
    let lines: Vec<Line<'_>> = HELP.iter().map(|(keys, what)| Line::from(format!("{keys:<15} {what}"))).collect();
    let window = centered(area, 76, lines.len() as u16 + 2);
    frame.render_widget(Clear, window);
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(" Keys ")), window);
}

fn draw_confirm(frame: &mut Frame<'_>, area: Rect, slug: &str, warning: Option<&str>, theme: Theme) {
    let slug = escape(slug);
    let mut lines = vec![Line::from(format!("Stop bottle {slug}?"))];
    if let Some(warning) = warning {
        lines.push(Line::styled(format!("warning: {}", escape(warning)), theme.alert()));
    }
    lines.push(Line::from(format!("Its agent's state is saved; `bottle resume {slug}` starts it again.")));
    lines.push(Line::from(""));
    lines.push(Line::from("y: stop it    any other key: keep it running"));
    let window = centered(area, 64, lines.len() as u16 + 4);
    frame.render_widget(Clear, window);
    let paragraph = Paragraph::new(lines).wrap(Wrap { trim: true }).block(Block::bordered().title(" Stop? [y/N] "));
    frame.render_widget(paragraph, window);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::app::tests::{bottle, egress_ask, entry, rows};
    use crate::dashboard::app::{Detail, ManifestAgent, Row as AppRow};
    use crate::dashboard::snapshot;
    use bot_bottle::supervise::{Ask, Decision, GrantScope, Verdict};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    const PLAIN: Theme = Theme { colored: false };
    const COLORED: Theme = Theme { colored: true };

    /// 12:00:00 on 2026-05-01, in milliseconds: "now" in these screens.
    const NOW: u64 = 1_777_636_800_000;

    fn draw_on(app: &App, theme: Theme, width: u16, height: u16) -> ratatui::buffer::Buffer {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("a test terminal");
        terminal.draw(|frame| draw(frame, app, theme)).expect("drawing");
        terminal.backend().buffer().clone()
    }

    /// Draw `app` in 80×24 without colour and compare it with snapshot `name`.
    fn check(name: &str, app: &App) {
        snapshot::check(name, &snapshot::screen_text(&draw_on(app, PLAIN, 80, 24)));
    }

    fn manifest(names: &[&str]) -> Result<Vec<ManifestAgent>, String> {
        Ok(names
            .iter()
            .map(|n| ManifestAgent { name: n.to_string(), bottle: "b".into(), template: "shell".into() })
            .collect())
    }

    fn egress_lines() -> LogView {
        LogView::Lines(vec![
            "11:58:01 allow GET api.anthropic.com /v1/messages 200".into(),
            "11:58:30 deny  CONNECT evil.example - 403 (evil.example is not in this bottle's egress routes)".into(),
            "11:59:02 allow POST api.anthropic.com /v1/messages 200".into(),
        ])
    }

    /// A dashboard of `rows` at [`NOW`], the first selected with `detail` read for it.
    fn app(rows: Vec<AppRow>, detail: impl FnOnce(&str) -> Detail) -> App {
        let mut app = App::new(manifest(&["shell", "reviewer", "claude"]));
        app.set_rows(rows, NOW);
        if let Some(slug) = app.selected_slug().map(str::to_string) {
            app.set_detail(detail(&slug));
        }
        app
    }

    fn one_bottle() -> Vec<AppRow> {
        let mut a = bottle("shell-1a2b3c4d", NOW - 754_000);
        a.label = Some("PR 42".into());
        a.color = Some("green".into());
        vec![AppRow { bottle: a, pending: 0 }]
    }

    #[test]
    fn an_empty_dashboard_says_how_to_start_a_bottle() {
        check("empty", &app(Vec::new(), Detail::empty));
    }

    #[test]
    fn the_egress_tab_shows_the_audit_log() {
        check("egress", &app(one_bottle(), |slug| Detail { egress: egress_lines(), ..Detail::empty(slug) }));
    }

    #[test]
    fn many_bottles_scroll_to_the_selected_one_in_start_order() {
        let slugs: Vec<String> = (0..15).map(|n| format!("shell-{n:08x}")).collect();
        let mut rows = rows(&slugs.iter().map(String::as_str).collect::<Vec<_>>());
        for (n, row) in rows.iter_mut().enumerate() {
            row.bottle.started_at_ms = NOW - 3_600_000 + 60_000 * n as u64;
            row.pending = n % 4;
            row.bottle.label = (n % 3 == 0).then(|| format!("task {n}"));
        }
        rows[3].bottle.sidecars.insert("egress".into(), false);
        rows[5].bottle.sidecars.insert("gate".into(), true);
        let mut app = app(rows, Detail::empty);
        for _ in 0..8 {
            app.on_key(crossterm::event::KeyCode::Down.into());
        }
        app.set_detail(Detail { egress: LogView::Lines(Vec::new()), ..Detail::empty("shell-00000008") });
        app.stopping.push("shell-00000007".into());
        check("many_bottles", &app);
    }

    #[test]
    fn long_names_are_cut_and_the_details_tab_shows_the_metadata() {
        let mut a = bottle("reviewer-of-the-whole-workspace-and-more-1a2b3c4d", NOW - 90_061_000);
        a.agent = "reviewer-of-the-whole-workspace-and-more".into();
        a.label = Some("a label that is much longer than the agents pane has room for, by far".into());
        let slug = a.slug.clone();
        let meta = bot_bottle::BottleMetadata {
            slug: slug.clone(),
            agent: a.agent.clone(),
            backend: "docker".into(),
            provider: "shell".into(),
            manifest: "/home/operator/projects/a-project-with-a-long-name/bot-bottle.yaml".into(),
            owner: bot_bottle::backend::Owner { host: "host".into(), pid: 1, pid_start: 0, created_ms: NOW },
            guest_user: "agent".into(),
            resume_paths: Vec::new(),
            label: a.label.clone(),
            color: None,
            detached: true,
            ready: true,
            resumes: 2,
            state_limit: bot_bottle::ByteSize(512 * 1024 * 1024),
            workdir: "/home/agent/workspace".into(),
            gate: false,
            stopped_ms: None,
            pool: None,
        };
        let mut app = App::new(manifest(&["shell", "an-agent-whose-name-is-longer-than-the-pane"]));
        app.set_rows(vec![AppRow { bottle: a, pending: 1 }], NOW);
        app.tab = Tab::Details;
        app.set_detail(Detail { meta: Some(meta), ..Detail::empty(&slug) });
        check("long_names", &app);
    }

    #[test]
    fn pending_requests_show_in_the_requests_tab_escaped() {
        let decided = Standing::Decided {
            decision: Decision {
                id: "0000000a".into(),
                time_ms: NOW - 50_000,
                verdict: Verdict::Approved,
                note: None,
                scope: GrantScope::Session,
            },
        };
        let question = Ask::AskOperator {
            question: "squash\x1b[2J the commits?".into(),
            choices: vec!["yes".into(), "no".into()],
        };
        let mut rows = one_bottle();
        rows[0].pending = 2;
        let mut app = app(rows, |slug| Detail {
            requests: vec![
                entry(slug, "0000000a", NOW - 60_000, egress_ask("docs.rs"), decided),
                entry(slug, "0000000b", NOW - 30_000, egress_ask("crates.io"), Standing::Pending),
                entry(slug, "0000000c", NOW - 5_000, question, Standing::Pending),
                entry(slug, "0000000d", NOW - 2_000, Ask::Notify { message: "done".into() }, Standing::Noted),
            ],
            ..Detail::empty(slug)
        });
        app.tab = Tab::Requests;
        check("pending_requests", &app);
    }

    #[test]
    fn a_bottle_without_a_gate_says_so_in_the_gate_tab() {
        let mut app = app(one_bottle(), |slug| Detail {
            gate: LogView::Note("no git gate: the bottle's manifest lists no git upstreams".into()),
            ..Detail::empty(slug)
        });
        app.tab = Tab::Gate;
        check("no_gate", &app);
    }

    #[test]
    fn help_lists_every_key_over_the_dashboard() {
        let mut app = app(one_bottle(), Detail::empty);
        app.modal = Some(Modal::Help);
        check("help", &app);
    }

    #[test]
    fn stop_asks_with_the_unsaved_work_it_found() {
        let mut app = app(one_bottle(), |slug| Detail { egress: egress_lines(), ..Detail::empty(slug) });
        app.ask_stop("shell-1a2b3c4d".into(), Some("bottle shell-1a2b3c4d has uncommitted changes".into()));
        check("confirm_stop", &app);
    }

    #[test]
    fn the_details_tab_shows_the_policy_as_launched_with_live_grants_marked() {
        let mut rows = one_bottle();
        rows[0].bottle.sidecars.insert("supervise".into(), true);
        let grant = |id: &str, host: &str, branches: &[&str], scope| bot_bottle::supervise::Grant {
            id: id.into(),
            time_ms: NOW,
            host: host.into(),
            branches: branches.iter().map(|b| b.to_string()).collect(),
            methods: if host.is_empty() { vec![] } else { vec!["GET".into()] },
            paths: vec![],
            ports: vec![],
            scope,
        };
        let mut app = app(rows, |slug| Detail {
            policy: Some(bot_bottle::PolicyRecord {
                routes: vec!["api.anthropic.com [auth:x-api-key from ANTHROPIC_API_KEY]".into()],
                upstreams: vec![(
                    "origin → git@github.com:22 acme/app.git".into(),
                    "branches agent/*; no force, no delete, no tags".into(),
                )],
                limits: "memory 4.0 GiB, cpus 2, processes 1024, disk 20.0 GiB, saved state 1.0 GiB".into(),
                isolation: vec![("isolation".into(), "container, no network but the sidecars".into())],
                supervise: "on: a request waits 10m for the operator".into(),
            }),
            grants: vec![
                grant("0000000b", "pypi.org", &[], GrantScope::Session),
                grant("operator", "", &["fix/*"], GrantScope::Always),
            ],
            ..Detail::empty(slug)
        });
        app.tab = Tab::Details;
        check("details_policy", &app);
    }

    #[test]
    fn the_egress_filter_shows_only_the_lines_it_holds_and_says_so() {
        let mut app = app(one_bottle(), |slug| Detail { egress: egress_lines(), ..Detail::empty(slug) });
        app.filter.decisions = crate::dashboard::app::Decisions::Allowed;
        app.filter.host = "anthropic".into();
        check("egress_filtered", &app);
    }

    #[test]
    fn the_start_window_takes_a_label_and_a_colour_and_the_manifest_pane_lists_stopped_bottles() {
        let mut app = app(one_bottle(), Detail::empty);
        app.set_stopped(vec![crate::dashboard::app::StoppedRow {
            slug: "shell-0ld0ne00".into(),
            agent: "shell".into(),
            label: None,
            color: Some("blue".into()),
        }]);
        app.focus = Focus::Manifest;
        app.modal = Some(Modal::Start { agent: "reviewer".into(), label: "PR 43".into(), color: 2 });
        check("start", &app);
        app.modal = None;
        app.manifest_selected = 3;
        app.starting.push("shell-0ld0ne00".into());
        check("manifest_stopped", &app);
    }

    #[test]
    fn the_grant_and_answer_windows_show_what_was_typed_and_why_it_was_refused() {
        let mut app = app(one_bottle(), Detail::empty);
        app.modal = Some(Modal::Grant {
            slug: "shell-1a2b3c4d".into(),
            text: "https://x".into(),
            error: Some("host \"https://x\" is not a host name".into()),
        });
        check("grant", &app);
        app.modal = Some(Modal::Answer {
            slug: "shell-1a2b3c4d".into(),
            id: "0000000c".into(),
            question: "squash\x1b[2J the commits?".into(),
            choices: vec!["yes".into(), "no".into()],
            text: "yes".into(),
        });
        check("answer", &app);
    }

    #[test]
    fn every_footer_fits_in_80_columns_and_offers_only_what_the_bottle_runs() {
        let mut with_supervise = one_bottle();
        with_supervise[0].bottle.sidecars.insert("supervise".into(), true);
        for rows in [Vec::new(), one_bottle(), with_supervise] {
            let supervise = rows.first().is_some_and(|r| r.bottle.sidecars.contains_key("supervise"));
            let mut app = app(rows, Detail::empty);
            for focus in [Focus::Agents, Focus::Tab, Focus::Manifest] {
                for tab in Tab::ALL {
                    (app.focus, app.tab) = (focus, tab);
                    let footer = footer(&app);
                    assert!(footer.chars().count() <= 80, "{} columns: {footer}", footer.chars().count());
                    assert!(footer.ends_with("? help  q quit"), "{footer}");
                    if !supervise {
                        assert!(!footer.contains("grant") && !footer.contains("approve"), "{footer}");
                    }
                }
            }
            app.focus = Focus::Agents;
            assert_eq!(footer(&app).contains("g grant"), supervise, "{}", footer(&app));
        }
    }

    /// Where `text` starts on the screen.
    fn find(buffer: &ratatui::buffer::Buffer, text: &str) -> (u16, u16) {
        let screen = snapshot::screen_text(buffer);
        screen
            .lines()
            .enumerate()
            .find_map(|(y, line)| line.find(text).map(|x| (line[..x].chars().count() as u16, y as u16)))
            .unwrap_or_else(|| panic!("{text:?} is not on the screen:\n{screen}"))
    }

    #[test]
    fn denials_and_colours_are_drawn_in_colour_unless_no_color() {
        let app = app(one_bottle(), |slug| Detail { egress: egress_lines(), ..Detail::empty(slug) });
        let colored = draw_on(&app, COLORED, 80, 24);
        let plain = draw_on(&app, PLAIN, 80, 24);
        let denial = find(&colored, "11:58:30 deny");
        let allowed = find(&colored, "11:58:01 allow");
        let (x, y) = find(&colored, "> shell-1a2b3c4d");
        let slug = (x + 2, y);
        assert_eq!(colored[denial].fg, Color::Red);
        assert!(colored[denial].modifier.contains(Modifier::BOLD));
        assert_eq!(colored[allowed].fg, Color::Reset);
        assert_eq!(colored[slug].fg, Color::Indexed(2), "the bottle's --color green");
        assert_eq!(plain[denial].fg, Color::Reset, "no colour with NO_COLOR");
        assert!(plain[denial].modifier.contains(Modifier::BOLD), "a denial still stands out");
        assert_eq!(plain[slug].fg, Color::Reset);
        let all_cells =
            |b: &ratatui::buffer::Buffer| b.content().iter().all(|c| c.fg == Color::Reset && c.bg == Color::Reset);
        assert!(all_cells(&plain), "no cell has a colour without colours");
    }

    #[test]
    fn no_color_set_and_a_dumb_terminal_draw_no_colour() {
        let check = |no_color: Option<&str>, term: Option<&str>, colored: bool| {
            let theme = Theme::from_env(no_color.map(std::ffi::OsStr::new), term.map(std::ffi::OsStr::new));
            assert_eq!(theme.colored, colored, "NO_COLOR={no_color:?} TERM={term:?}");
        };
        check(None, Some("xterm-256color"), true);
        check(Some(""), Some("xterm"), true);
        check(Some("1"), Some("xterm"), false);
        check(None, Some("dumb"), false);
        check(None, None, true);
    }

    #[test]
    fn wrap_breaks_between_words_keeps_the_indent_and_cuts_long_words() {
        assert_eq!(wrap("memory 4 GiB, cpus 2", 12), ["memory 4", "GiB, cpus 2"]);
        assert_eq!(wrap("  push: branches agent/*", 16), ["  push: branches", "  agent/*"]);
        assert_eq!(wrap("/a/very/long/path", 6), ["/a/ver", "y/long", "/path"]);
        assert_eq!(wrap("", 10), [""]);
        for piece in wrap("a b c dddddddddddddddd e", 5) {
            assert!(piece.chars().count() <= 5, "{piece:?}");
        }
    }

    #[test]
    fn a_denial_is_a_line_whose_decision_is_deny() {
        assert!(is_denial("11:58:30 deny  CONNECT evil.example - 403 (not allowed)"));
        assert!(is_denial("00:00:00 deny  project main (refs/heads/main is not an allowed branch)"));
        assert!(!is_denial("11:58:01 allow GET deny.example / 200"));
        assert!(!is_denial("egress: deny everything"));
    }
}
