//! The dashboard's state and what each key does to it: plain data and pure
//! functions, so the key handling is tested without a terminal. What a key
//! asks of the world (attach, stop, decide a request) comes back as an
//! [`Action`] for the terminal loop to carry out.

use bot_bottle::supervise::{Ask, Entry, Grant, Standing, Verdict};
use bot_bottle::{ActiveAgent, BottleMetadata, PolicyRecord};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// One running bottle as its row shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    /// What its backend lists of it.
    pub(crate) bottle: ActiveAgent,
    /// How many of its supervise requests wait for the operator.
    pub(crate) pending: usize,
}

/// An agent of the manifest, which `bottle start NAME` starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManifestAgent {
    /// The agent's name.
    pub(crate) name: String,
    /// The bottle it runs in.
    pub(crate) bottle: String,
    /// The bottle's agent template (`shell`, `claude`, …).
    pub(crate) template: String,
}

/// A stopped bottle of this state folder, which `bottle resume SLUG` starts again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoppedRow {
    /// Its slug.
    pub(crate) slug: String,
    /// Its agent.
    pub(crate) agent: String,
    /// Its label, if it had one.
    pub(crate) label: Option<String>,
    /// Its colour, if it had one.
    pub(crate) color: Option<String>,
}

/// The colours the start window offers (`none` first).
pub(crate) const COLORS: [&str; 7] = ["none", "red", "green", "yellow", "blue", "magenta", "cyan"];

/// The longest text a window's input takes.
const INPUT_MAX: usize = 200;

/// Which egress log lines the egress tab shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Decisions {
    /// Every line.
    #[default]
    All,
    /// Only denials.
    Denied,
    /// Only what was allowed.
    Allowed,
}

impl Decisions {
    fn next(self) -> Decisions {
        match self {
            Decisions::All => Decisions::Denied,
            Decisions::Denied => Decisions::Allowed,
            Decisions::Allowed => Decisions::All,
        }
    }

    /// Its name in the tab's filter line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Decisions::All => "all",
            Decisions::Denied => "denied",
            Decisions::Allowed => "allowed",
        }
    }
}

/// The egress tab's filter: by decision (`f`) and by host (`/`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct LogFilter {
    /// Which decisions are shown.
    pub(crate) decisions: Decisions,
    /// Only lines holding this text (a host, or part of one); empty: every line.
    pub(crate) host: String,
}

impl LogFilter {
    /// Whether it shows every line.
    pub(crate) fn is_empty(&self) -> bool {
        self.decisions == Decisions::All && self.host.is_empty()
    }

    /// Whether `line` (the human format), denied or not, is shown.
    pub(crate) fn shows(&self, line: &str, denied: bool) -> bool {
        let decision = match self.decisions {
            Decisions::All => true,
            Decisions::Denied => denied,
            Decisions::Allowed => !denied,
        };
        decision && (self.host.is_empty() || line.contains(self.host.as_str()))
    }
}

/// The tabs of the selected bottle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tab {
    /// The egress proxy's audit log.
    Egress,
    /// The supervise queue.
    Requests,
    /// The git gate's push log.
    Gate,
    /// The bottle's metadata.
    Details,
}

impl Tab {
    /// Every tab, in the order the tab bar shows them.
    pub(crate) const ALL: [Tab; 4] = [Tab::Egress, Tab::Requests, Tab::Gate, Tab::Details];

    /// Its name in the tab bar.
    pub(crate) fn title(self) -> &'static str {
        match self {
            Tab::Egress => "egress",
            Tab::Requests => "requests",
            Tab::Gate => "gate",
            Tab::Details => "details",
        }
    }

    fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }

    fn step(self, by: isize) -> Tab {
        let len = Tab::ALL.len() as isize;
        Tab::ALL[(self.index() as isize + by).rem_euclid(len) as usize]
    }
}

/// The pane the arrow keys move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Focus {
    /// The running bottles.
    Agents,
    /// The selected bottle's tab (requests: which one; logs: scrolling).
    Tab,
    /// The manifest's agents.
    Manifest,
}

impl Focus {
    fn next(self) -> Focus {
        match self {
            Focus::Agents => Focus::Tab,
            Focus::Tab => Focus::Manifest,
            Focus::Manifest => Focus::Agents,
        }
    }

    fn previous(self) -> Focus {
        self.next().next()
    }
}

/// A sidecar's audit log as a tab shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogView {
    /// Not read yet.
    Loading,
    /// Its lines in the human format, oldest first.
    Lines(Vec<String>),
    /// Why there are no lines (no git gate, nothing saved, an error).
    Note(String),
}

/// What the selected bottle's tabs show, read for one bottle.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Detail {
    /// The bottle it was read for.
    pub(crate) slug: String,
    /// The egress proxy's audit log.
    pub(crate) egress: LogView,
    /// The git gate's push log.
    pub(crate) gate: LogView,
    /// The supervise queue, oldest first.
    pub(crate) requests: Vec<Entry>,
    /// The bottle's metadata, when its state folder has it.
    pub(crate) meta: Option<BottleMetadata>,
    /// The policy it was launched with, when its state folder has it.
    pub(crate) policy: Option<PolicyRecord>,
    /// The routes and branches granted live (approved requests, the operator's own).
    pub(crate) grants: Vec<Grant>,
}

impl Detail {
    /// Nothing read yet for bottle `slug`.
    pub(crate) fn empty(slug: &str) -> Detail {
        Detail {
            slug: slug.to_string(),
            egress: LogView::Loading,
            gate: LogView::Loading,
            requests: Vec::new(),
            meta: None,
            policy: None,
            grants: Vec::new(),
        }
    }
}

/// A window over the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Modal {
    /// The keys and what they do.
    Help,
    /// `s` asks before it stops bottle `slug`; `warning` is unsaved work found in it.
    ConfirmStop {
        /// The bottle to stop.
        slug: String,
        /// Uncommitted or unpushed work in its workspace.
        warning: Option<String>,
    },
    /// Start agent `agent` of the manifest, with a label (typed) and a colour (←→).
    Start {
        /// The manifest's agent.
        agent: String,
        /// The label typed so far.
        label: String,
        /// The colour, an index into [`COLORS`].
        color: usize,
    },
    /// Answer question `id` of bottle `slug`.
    Answer {
        /// The bottle that asked.
        slug: String,
        /// The request's id.
        id: String,
        /// The question (escaped when drawn).
        question: String,
        /// The choices the agent offered (↑↓ picks one).
        choices: Vec<String>,
        /// The answer typed so far.
        text: String,
    },
    /// Grant bottle `slug` a route (or branches) live.
    Grant {
        /// The bottle.
        slug: String,
        /// What was typed: `HOST [METHOD…] [/PATH…] [:PORT…]` or `push BRANCH…`.
        text: String,
        /// Why the last Enter was refused.
        error: Option<String>,
    },
    /// The egress tab's host filter, being typed.
    Filter {
        /// The text typed so far.
        text: String,
    },
}

/// What a key asks the terminal loop to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Leave the dashboard (no bottle is stopped).
    Quit,
    /// Connect the terminal to bottle `slug`'s agent session.
    Attach(String),
    /// Look for unsaved work in bottle `slug`, then ask ([`App::ask_stop`]).
    CheckStop(String),
    /// Stop bottle `slug` (confirmed).
    Stop(String),
    /// Start agent `agent` of the manifest, detached.
    Start {
        /// The manifest's agent.
        agent: String,
        /// Its label.
        label: Option<String>,
        /// Its colour.
        color: Option<String>,
    },
    /// Resume stopped bottle `.0`, detached.
    Resume(String),
    /// Open a shell in bottle `.0`.
    Shell(String),
    /// Answer question `id` of bottle `slug` with `text`.
    Answer {
        /// The bottle that asked.
        slug: String,
        /// The request's id.
        id: String,
        /// The answer.
        text: String,
    },
    /// Grant bottle `slug` what `ask` asks for, live.
    Grant {
        /// The bottle.
        slug: String,
        /// The route or branches, as a request would ask for them.
        ask: Ask,
    },
    /// Decide request `id` of bottle `slug`.
    Decide {
        /// The bottle that asked.
        slug: String,
        /// The request's id.
        id: String,
        /// Approved or denied.
        verdict: Verdict,
    },
}

/// Everything the dashboard shows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct App {
    /// The running bottles, in `list active`'s order.
    pub(crate) rows: Vec<Row>,
    /// The selected row.
    pub(crate) selected: usize,
    /// The selected bottle's tab.
    pub(crate) tab: Tab,
    /// The pane the arrow keys move in.
    pub(crate) focus: Focus,
    /// What the tabs show, for the bottle it was read for.
    pub(crate) detail: Option<Detail>,
    /// The selected request in the requests tab.
    pub(crate) request: usize,
    /// How many lines a log tab is scrolled up from its end.
    pub(crate) scroll: usize,
    /// The manifest's agents, or why there are none.
    pub(crate) manifest: Result<Vec<ManifestAgent>, String>,
    /// The stopped bottles of this state folder, newest first.
    pub(crate) stopped: Vec<StoppedRow>,
    /// The selected entry of the manifest pane: an agent, then a stopped bottle.
    pub(crate) manifest_selected: usize,
    /// The starts and resumes running now, as the status line names them.
    pub(crate) starting: Vec<String>,
    /// The egress tab's filter.
    pub(crate) filter: LogFilter,
    /// The window over the dashboard, if one is open.
    pub(crate) modal: Option<Modal>,
    /// The bottles being stopped now.
    pub(crate) stopping: Vec<String>,
    /// The last thing a verb said (done, refused, failed).
    pub(crate) message: Option<String>,
    /// What the last refresh noted (a backend skipped, an engine error).
    pub(crate) notice: Option<String>,
    /// The time of the last refresh, in milliseconds since the Unix epoch.
    pub(crate) now_ms: u64,
}

impl App {
    /// A dashboard with no bottles yet and the manifest's agents.
    pub(crate) fn new(manifest: Result<Vec<ManifestAgent>, String>) -> App {
        App {
            rows: Vec::new(),
            selected: 0,
            tab: Tab::Egress,
            focus: Focus::Agents,
            detail: None,
            request: 0,
            scroll: 0,
            manifest,
            stopped: Vec::new(),
            manifest_selected: 0,
            starting: Vec::new(),
            filter: LogFilter::default(),
            modal: None,
            stopping: Vec::new(),
            message: None,
            notice: None,
            now_ms: 0,
        }
    }

    /// The selected bottle's row.
    pub(crate) fn selected_row(&self) -> Option<&Row> {
        self.rows.get(self.selected)
    }

    /// The selected bottle's slug.
    pub(crate) fn selected_slug(&self) -> Option<&str> {
        self.selected_row().map(|r| r.bottle.slug.as_str())
    }

    /// A refresh's rows, at `now_ms`. The selection stays on its bottle;
    /// when that one is gone, on the row that took its place.
    pub(crate) fn set_rows(&mut self, rows: Vec<Row>, now_ms: u64) {
        let kept = self.selected_slug().and_then(|slug| rows.iter().position(|r| r.bottle.slug == slug));
        self.selected = kept.unwrap_or(self.selected).min(rows.len().saturating_sub(1));
        self.rows = rows;
        self.now_ms = now_ms;
        let present = |slug: &String| self.rows.iter().any(|r| &r.bottle.slug == slug);
        self.stopping.retain(present);
        if self.detail.as_ref().is_some_and(|d| Some(d.slug.as_str()) != self.selected_slug()) {
            self.detail = None;
        }
    }

    /// Freshly read tab contents. A new bottle's requests tab starts on its
    /// first pending request.
    pub(crate) fn set_detail(&mut self, detail: Detail) {
        if Some(detail.slug.as_str()) != self.selected_slug() {
            return;
        }
        let same_bottle = self.detail.as_ref().is_some_and(|d| d.slug == detail.slug);
        if !same_bottle {
            self.request = detail.requests.iter().position(|e| e.standing == Standing::Pending).unwrap_or(0);
            self.scroll = 0;
        }
        self.request = self.request.min(detail.requests.len().saturating_sub(1));
        self.detail = Some(detail);
    }

    /// The selected request of the requests tab.
    pub(crate) fn selected_request(&self) -> Option<&Entry> {
        self.detail.as_ref().and_then(|d| d.requests.get(self.request))
    }

    /// After [`Action::CheckStop`]: ask whether to stop `slug`.
    pub(crate) fn ask_stop(&mut self, slug: String, warning: Option<String>) {
        self.modal = Some(Modal::ConfirmStop { slug, warning });
    }

    /// A stop of `slug` ended, saying `message`.
    pub(crate) fn stop_ended(&mut self, slug: &str, message: String) {
        self.stopping.retain(|s| s != slug);
        self.message = Some(message);
    }

    /// What `key` does: the state changes here; what the world must do
    /// comes back as an [`Action`].
    pub(crate) fn on_key(&mut self, key: KeyEvent) -> Option<Action> {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return Some(Action::Quit);
        }
        match self.modal.take() {
            Some(Modal::Help) => None,
            Some(Modal::ConfirmStop { slug, .. }) => self.confirm_stop(key.code, slug),
            Some(Modal::Start { agent, mut label, mut color }) => {
                match key.code {
                    KeyCode::Left => color = (color + COLORS.len() - 1) % COLORS.len(),
                    KeyCode::Right => color = (color + 1) % COLORS.len(),
                    code => match edit(&mut label, code) {
                        Edited::Cancel => return None,
                        Edited::Submit => {
                            let label = Some(label.trim().to_string()).filter(|l| !l.is_empty());
                            let color = (color > 0).then(|| COLORS[color].to_string());
                            let what = start_name(&agent, label.as_deref());
                            self.message = Some(format!("starting {what}…"));
                            self.starting.push(what);
                            return Some(Action::Start { agent, label, color });
                        }
                        Edited::Changed => {}
                    },
                }
                self.modal = Some(Modal::Start { agent, label, color });
                None
            }
            Some(Modal::Answer { slug, id, question, choices, mut text }) => {
                let picked = choices.iter().position(|c| *c == text);
                match key.code {
                    KeyCode::Up | KeyCode::Down if !choices.is_empty() => {
                        let by = if key.code == KeyCode::Up { choices.len() - 1 } else { 1 };
                        let at = picked.map_or(if key.code == KeyCode::Up { choices.len() - 1 } else { 0 }, |at| {
                            (at + by) % choices.len()
                        });
                        text = choices[at].clone();
                    }
                    code => match edit(&mut text, code) {
                        Edited::Cancel => return None,
                        Edited::Submit if !text.trim().is_empty() => return Some(Action::Answer { slug, id, text }),
                        Edited::Submit | Edited::Changed => {}
                    },
                }
                self.modal = Some(Modal::Answer { slug, id, question, choices, text });
                None
            }
            Some(Modal::Grant { slug, mut text, error }) => {
                let error = match edit(&mut text, key.code) {
                    Edited::Cancel => return None,
                    Edited::Submit => match grant_ask(&text) {
                        Ok(ask) => return Some(Action::Grant { slug, ask }),
                        Err(why) => Some(why),
                    },
                    Edited::Changed => error,
                };
                self.modal = Some(Modal::Grant { slug, text, error });
                None
            }
            Some(Modal::Filter { mut text }) => {
                match edit(&mut text, key.code) {
                    Edited::Cancel => {}
                    Edited::Submit => {
                        self.filter.host = text.trim().to_string();
                        self.scroll = 0;
                    }
                    Edited::Changed => self.modal = Some(Modal::Filter { text }),
                }
                None
            }
            None => self.on_dashboard_key(key.code),
        }
    }

    fn confirm_stop(&mut self, code: KeyCode, slug: String) -> Option<Action> {
        if matches!(code, KeyCode::Char('y' | 'Y')) {
            self.message = Some(format!("stopping bottle {slug} (its agent's state is saved for resume)…"));
            self.stopping.push(slug.clone());
            return Some(Action::Stop(slug));
        }
        self.message = Some(format!("bottle {slug} not stopped"));
        None
    }

    fn on_dashboard_key(&mut self, code: KeyCode) -> Option<Action> {
        match code {
            KeyCode::Char('q') | KeyCode::Esc => return Some(Action::Quit),
            KeyCode::Char('?') => self.modal = Some(Modal::Help),
            KeyCode::Tab => self.focus = self.focus.next(),
            KeyCode::BackTab => self.focus = self.focus.previous(),
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::Left | KeyCode::Char('h') => self.show_tab(self.tab.step(-1)),
            KeyCode::Right | KeyCode::Char('l') => self.show_tab(self.tab.step(1)),
            KeyCode::Char(digit @ '1'..='4') => self.show_tab(Tab::ALL[digit as usize - '1' as usize]),
            KeyCode::Enter if self.focus == Focus::Manifest => return self.start_or_resume(),
            KeyCode::Char('r') if self.focus == Focus::Manifest => return self.start_or_resume(),
            KeyCode::Enter if self.focus == Focus::Tab && self.tab == Tab::Requests => {
                return self.decide(Verdict::Approved);
            }
            KeyCode::Char('a') => return self.with_selected(|slug| Some(Action::Attach(slug.to_string()))),
            KeyCode::Char('e') => return self.with_selected(|slug| Some(Action::Shell(slug.to_string()))),
            KeyCode::Char('s') => return self.stop_selected(),
            KeyCode::Char('g') => self.open_grant(),
            KeyCode::Char('y') => return self.decide(Verdict::Approved),
            KeyCode::Char('n') => return self.decide(Verdict::Denied),
            KeyCode::Char('f') if self.tab == Tab::Egress => {
                self.filter.decisions = self.filter.decisions.next();
                self.scroll = 0;
            }
            KeyCode::Char('/') if self.tab == Tab::Egress => {
                self.modal = Some(Modal::Filter { text: self.filter.host.clone() });
            }
            _ => {}
        }
        None
    }

    /// The manifest pane's entries: its agents, then the stopped bottles.
    pub(crate) fn manifest_len(&self) -> usize {
        self.manifest.as_ref().map_or(0, Vec::len) + self.stopped.len()
    }

    /// Stopped bottles for the manifest pane (newest first); the selection stays in the pane.
    pub(crate) fn set_stopped(&mut self, stopped: Vec<StoppedRow>) {
        self.stopped = stopped;
        self.manifest_selected = self.manifest_selected.min(self.manifest_len().saturating_sub(1));
    }

    /// A start or resume named `what` ended, saying `message`.
    pub(crate) fn start_ended(&mut self, what: &str, message: String) {
        // The first of that name only: two starts of one agent without a label share it.
        if let Some(at) = self.starting.iter().position(|s| s == what) {
            self.starting.drain(at..=at);
        }
        self.message = Some(message);
    }

    /// Whether the selected bottle runs sidecar `name` (`supervise`, `gate`, …).
    pub(crate) fn selected_runs(&self, name: &str) -> bool {
        self.selected_row().is_some_and(|r| r.bottle.sidecars.contains_key(name))
    }

    /// Enter (or r) in the manifest pane: the start window for an agent, a resume for a stopped bottle.
    fn start_or_resume(&mut self) -> Option<Action> {
        let agents = self.manifest.as_ref().map_or(&[][..], |a| &a[..]);
        if let Some(agent) = agents.get(self.manifest_selected) {
            self.modal = Some(Modal::Start { agent: agent.name.clone(), label: String::new(), color: 0 });
            return None;
        }
        let Some(stopped) = self.stopped.get(self.manifest_selected - agents.len()) else {
            self.message = Some("nothing to start: the manifest defines no agents".into());
            return None;
        };
        let slug = stopped.slug.clone();
        if self.starting.contains(&slug) {
            self.message = Some(format!("bottle {slug} is being resumed"));
            return None;
        }
        self.starting.push(slug.clone());
        self.message = Some(format!("resuming bottle {slug}…"));
        Some(Action::Resume(slug))
    }

    /// `g`: the grant window, where the bottle runs supervise (whose grants its proxy reads).
    fn open_grant(&mut self) {
        let Some(slug) = self.selected_slug().map(str::to_string) else {
            self.message = Some("no bottle selected; `bottle start AGENT --detach` starts one".into());
            return;
        };
        if !self.selected_runs("supervise") {
            self.message = Some(format!(
                "bottle {slug} runs without supervise, so its proxy takes no live grants; add `supervise: true` to \
                 its bottle in the manifest"
            ));
            return;
        }
        self.modal = Some(Modal::Grant { slug, text: String::new(), error: None });
    }

    fn show_tab(&mut self, tab: Tab) {
        if tab != self.tab {
            self.tab = tab;
            self.scroll = 0;
        }
    }

    /// Move the selection of the focused pane by `by` rows, within it.
    fn move_by(&mut self, by: isize) {
        let step = |at: usize, len: usize| at.saturating_add_signed(by).min(len.saturating_sub(1));
        match (self.focus, self.tab) {
            (Focus::Agents, _) => {
                self.selected = step(self.selected, self.rows.len());
                if self.detail.as_ref().is_some_and(|d| Some(d.slug.as_str()) != self.selected_slug()) {
                    self.detail = None;
                }
            }
            (Focus::Tab, Tab::Requests) => {
                let len = self.detail.as_ref().map_or(0, |d| d.requests.len());
                self.request = step(self.request, len);
            }
            // Up scrolls back into the log, down towards its end.
            (Focus::Tab, Tab::Egress | Tab::Gate) => self.scroll = self.scroll.saturating_add_signed(-by),
            // The details read from the top: down scrolls into them.
            (Focus::Tab, Tab::Details) => self.scroll = self.scroll.saturating_add_signed(by),
            (Focus::Manifest, _) => self.manifest_selected = step(self.manifest_selected, self.manifest_len()),
        }
    }

    fn with_selected(&mut self, verb: impl FnOnce(&str) -> Option<Action>) -> Option<Action> {
        match self.selected_slug().map(str::to_string) {
            Some(slug) => verb(&slug),
            None => {
                self.message = Some("no bottle selected; `bottle start AGENT --detach` starts one".into());
                None
            }
        }
    }

    fn stop_selected(&mut self) -> Option<Action> {
        let Some(slug) = self.selected_slug().map(str::to_string) else {
            return self.with_selected(|_| None);
        };
        if self.stopping.contains(&slug) {
            self.message = Some(format!("bottle {slug} is being stopped"));
            return None;
        }
        Some(Action::CheckStop(slug))
    }

    /// `y`/`n`: approve or deny the selected request of the requests tab.
    fn decide(&mut self, verdict: Verdict) -> Option<Action> {
        if self.selected_row().is_some() && !self.selected_runs("supervise") {
            let slug = self.selected_slug().unwrap_or_default();
            self.message = Some(format!("bottle {slug} runs without supervise: it asks for nothing"));
            return None;
        }
        if self.tab != Tab::Requests {
            self.message = Some("y/n approve or deny a request: open the requests tab (2) first".into());
            return None;
        }
        let Some(entry) = self.selected_request() else {
            self.message = Some("no request selected".into());
            return None;
        };
        if entry.standing != Standing::Pending {
            let id = entry.request.id.clone();
            let state = crate::supervise::state_name(entry);
            self.message = Some(format!("request {id} is {state}; only a pending request can be decided"));
            return None;
        }
        if let Ask::AskOperator { question, choices } = &entry.request.ask
            && verdict == Verdict::Approved
        {
            self.modal = Some(Modal::Answer {
                slug: entry.request.bottle.clone(),
                id: entry.request.id.clone(),
                question: question.clone(),
                choices: choices.clone(),
                text: String::new(),
            });
            return None;
        }
        Some(Action::Decide { slug: entry.request.bottle.clone(), id: entry.request.id.clone(), verdict })
    }
}

/// What the status line and [`App::starting`] call a start of `agent`
/// labelled `label`: `shell (PR 42)`, or `shell`.
pub(crate) fn start_name(agent: &str, label: Option<&str>) -> String {
    label.map_or_else(|| agent.to_string(), |l| format!("{agent} ({l})"))
}

/// What a key did to a window's text input.
enum Edited {
    /// Enter.
    Submit,
    /// Esc.
    Cancel,
    /// A character typed or erased (or a key the input ignores).
    Changed,
}

/// Apply `code` to `text`: printable characters are typed (up to
/// [`INPUT_MAX`]), Backspace erases, Enter submits, Esc cancels.
fn edit(text: &mut String, code: KeyCode) -> Edited {
    match code {
        KeyCode::Enter => return Edited::Submit,
        KeyCode::Esc => return Edited::Cancel,
        KeyCode::Backspace => {
            text.pop();
        }
        KeyCode::Char(c) if !c.is_control() && text.chars().count() < INPUT_MAX => text.push(c),
        _ => {}
    }
    Edited::Changed
}

/// What the grant window's `text` asks for: `HOST [METHOD…] [/PATH…]
/// [:PORT…]` a route, `push BRANCH…` branches; checked as an agent's
/// request is.
pub(crate) fn grant_ask(text: &str) -> Result<Ask, String> {
    let reason = "granted by the operator from the dashboard".to_string();
    let mut words = text.split_whitespace();
    let ask = match words.next() {
        None => return Err("type a host (`pypi.org GET /simple/*`) or `push BRANCH`".into()),
        Some("push") => Ask::RequestPush { branches: words.map(str::to_string).collect(), reason },
        Some(host) => {
            let (mut methods, mut paths, mut ports) = (Vec::new(), Vec::new(), Vec::new());
            for word in words {
                if word.starts_with('/') {
                    paths.push(word.to_string());
                } else if let Some(port) = word.strip_prefix(':') {
                    ports.push(port.parse().map_err(|_| format!("{port:?} is no port (write :8443)"))?);
                } else {
                    methods.push(word.to_ascii_uppercase());
                }
            }
            Ask::RequestEgress { host: host.to_string(), methods, paths, ports, reason }
        }
    };
    ask.check().map(|()| ask).map_err(|why| why.replace('`', ""))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bot_bottle::OwnerState;
    use bot_bottle::supervise::{Ask, Request};

    /// A running docker bottle `slug` started at `started_at_ms`.
    pub(crate) fn bottle(slug: &str, started_at_ms: u64) -> ActiveAgent {
        ActiveAgent {
            slug: slug.to_string(),
            agent: "shell".into(),
            backend: "docker".into(),
            started_at_ms,
            status: "running".into(),
            image: "bot-bottle/shell:latest".into(),
            label: None,
            color: None,
            owner: OwnerState::Gone,
            sidecars: [("egress".to_string(), true), ("relay".to_string(), true)].into(),
            pool: None,
        }
    }

    /// Rows of `slugs`, started a second apart, none pending.
    pub(crate) fn rows(slugs: &[&str]) -> Vec<Row> {
        slugs.iter().zip(0..).map(|(slug, n)| Row { bottle: bottle(slug, 1_000 * n), pending: 0 }).collect()
    }

    /// Bottle `slug`'s request `id` asking `ask`, at `time_ms`, standing `standing`.
    pub(crate) fn entry(slug: &str, id: &str, time_ms: u64, ask: Ask, standing: Standing) -> Entry {
        Entry {
            request: Request { id: id.into(), bottle: slug.into(), time_ms, deadline_ms: time_ms + 600_000, ask },
            standing,
        }
    }

    /// An egress request for `host`.
    pub(crate) fn egress_ask(host: &str) -> Ask {
        Ask::RequestEgress {
            host: host.into(),
            methods: Vec::new(),
            paths: Vec::new(),
            ports: Vec::new(),
            reason: "docs".into(),
        }
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::from(code)
    }

    fn app_with(slugs: &[&str]) -> App {
        let mut app =
            App::new(Ok(vec![ManifestAgent { name: "shell".into(), bottle: "b".into(), template: "shell".into() }]));
        app.set_rows(rows(slugs), 10_000);
        app
    }

    fn press(app: &mut App, codes: &[KeyCode]) -> Vec<Action> {
        codes.iter().filter_map(|code| app.on_key(key(*code))).collect()
    }

    #[test]
    fn up_and_down_move_the_selection_within_the_rows() {
        let mut app = app_with(&["a-1", "b-2", "c-3"]);
        assert_eq!(app.selected_slug(), Some("a-1"));
        press(&mut app, &[KeyCode::Down, KeyCode::Char('j')]);
        assert_eq!(app.selected_slug(), Some("c-3"));
        press(&mut app, &[KeyCode::Down]);
        assert_eq!(app.selected_slug(), Some("c-3"), "stays on the last row");
        press(&mut app, &[KeyCode::Up, KeyCode::Char('k'), KeyCode::Up]);
        assert_eq!(app.selected_slug(), Some("a-1"), "stays on the first row");
    }

    #[test]
    fn a_refresh_keeps_the_selection_on_its_bottle_and_on_its_place_when_it_is_gone() {
        let mut app = app_with(&["a-1", "b-2", "c-3"]);
        press(&mut app, &[KeyCode::Down]);
        app.set_rows(rows(&["0-0", "a-1", "b-2", "c-3"]), 11_000);
        assert_eq!(app.selected_slug(), Some("b-2"), "a new bottle above does not move the selection");
        app.set_rows(rows(&["0-0", "a-1", "c-3"]), 12_000);
        assert_eq!(app.selected_slug(), Some("c-3"), "the row that took its place");
        app.set_rows(rows(&["0-0"]), 13_000);
        assert_eq!(app.selected_slug(), Some("0-0"));
        app.set_rows(Vec::new(), 14_000);
        assert_eq!(app.selected_slug(), None);
        assert_eq!(app.on_key(key(KeyCode::Char('a'))), None, "no bottle: nothing to attach to");
        assert!(app.message.as_deref().is_some_and(|m| m.starts_with("no bottle selected")));
    }

    #[test]
    fn left_right_and_digits_switch_tabs_around_the_bar() {
        let mut app = app_with(&["a-1"]);
        assert_eq!(app.tab, Tab::Egress);
        press(&mut app, &[KeyCode::Right]);
        assert_eq!(app.tab, Tab::Requests);
        press(&mut app, &[KeyCode::Char('l'), KeyCode::Right]);
        assert_eq!(app.tab, Tab::Details);
        press(&mut app, &[KeyCode::Right]);
        assert_eq!(app.tab, Tab::Egress, "wraps around");
        press(&mut app, &[KeyCode::Left]);
        assert_eq!(app.tab, Tab::Details);
        press(&mut app, &[KeyCode::Char('3')]);
        assert_eq!(app.tab, Tab::Gate);
        press(&mut app, &[KeyCode::Char('h')]);
        assert_eq!(app.tab, Tab::Requests);
    }

    #[test]
    fn tab_moves_the_focus_so_the_arrows_move_in_that_pane() {
        let mut app = app_with(&["a-1", "b-2"]);
        app.manifest = Ok(["x", "y"]
            .map(|n| ManifestAgent { name: n.into(), bottle: "b".into(), template: "shell".into() })
            .to_vec());
        press(&mut app, &[KeyCode::Tab, KeyCode::Tab]);
        assert_eq!(app.focus, Focus::Manifest);
        press(&mut app, &[KeyCode::Down, KeyCode::Down]);
        assert_eq!((app.manifest_selected, app.selected), (1, 0), "the manifest pane moved, not the bottles");
        press(&mut app, &[KeyCode::Tab]);
        assert_eq!(app.focus, Focus::Agents);
        press(&mut app, &[KeyCode::BackTab]);
        assert_eq!(app.focus, Focus::Manifest);
        press(&mut app, &[KeyCode::BackTab]);
        assert_eq!(app.focus, Focus::Tab);
        press(&mut app, &[KeyCode::Up, KeyCode::Up]);
        assert_eq!(app.scroll, 2, "up in a log tab scrolls back");
        press(&mut app, &[KeyCode::Down, KeyCode::Down, KeyCode::Down]);
        assert_eq!(app.scroll, 0, "down stops at the end of the log");
    }

    #[test]
    fn stop_asks_first_and_only_y_stops() {
        let mut app = app_with(&["a-1", "b-2"]);
        press(&mut app, &[KeyCode::Down]);
        assert_eq!(press(&mut app, &[KeyCode::Char('s')]), [Action::CheckStop("b-2".into())]);
        app.ask_stop("b-2".into(), Some("uncommitted changes".into()));
        assert_eq!(
            app.modal,
            Some(Modal::ConfirmStop { slug: "b-2".into(), warning: Some("uncommitted changes".into()) })
        );
        // Anything but y says no, and is not taken as a key of the dashboard.
        assert_eq!(press(&mut app, &[KeyCode::Char('q')]), []);
        assert_eq!(app.modal, None);
        assert_eq!(app.message.as_deref(), Some("bottle b-2 not stopped"));
        app.ask_stop("b-2".into(), None);
        assert_eq!(press(&mut app, &[KeyCode::Enter]), [], "Enter takes the default, N");
        app.ask_stop("b-2".into(), None);
        assert_eq!(press(&mut app, &[KeyCode::Char('y')]), [Action::Stop("b-2".into())]);
        assert_eq!(app.stopping, ["b-2"]);
        assert_eq!(press(&mut app, &[KeyCode::Char('s')]), [], "a second s while it stops does nothing");
        assert_eq!(app.message.as_deref(), Some("bottle b-2 is being stopped"));
        app.set_rows(rows(&["a-1"]), 20_000);
        assert!(app.stopping.is_empty(), "a bottle that is gone is no longer stopping");
    }

    /// [`app_with`], each bottle running supervise.
    fn supervised(slugs: &[&str]) -> App {
        let mut app = app_with(slugs);
        let mut rows = app.rows.clone();
        rows.iter_mut().for_each(|r| _ = r.bottle.sidecars.insert("supervise".into(), true));
        app.set_rows(rows, 10_000);
        app
    }

    #[test]
    fn y_and_n_decide_the_selected_pending_request_in_the_requests_tab() {
        let mut app = supervised(&["a-1"]);
        let decided = Standing::Expired;
        app.set_detail(Detail {
            requests: vec![
                entry("a-1", "00000001", 1, egress_ask("old.example"), decided),
                entry("a-1", "00000002", 2, egress_ask("docs.rs"), Standing::Pending),
                entry(
                    "a-1",
                    "00000003",
                    3,
                    Ask::AskOperator { question: "ok?".into(), choices: vec![] },
                    Standing::Pending,
                ),
            ],
            ..Detail::empty("a-1")
        });
        assert_eq!(app.request, 1, "the first pending request is selected");
        assert_eq!(press(&mut app, &[KeyCode::Char('y')]), [], "not in the requests tab");
        press(&mut app, &[KeyCode::Char('2')]);
        assert_eq!(
            press(&mut app, &[KeyCode::Char('y')]),
            [Action::Decide { slug: "a-1".into(), id: "00000002".into(), verdict: Verdict::Approved }]
        );
        press(&mut app, &[KeyCode::Tab, KeyCode::Up]);
        assert_eq!(press(&mut app, &[KeyCode::Char('n')]), [], "an expired request cannot be decided");
        assert_eq!(app.message.as_deref(), Some("request 00000001 is expired; only a pending request can be decided"));
        press(&mut app, &[KeyCode::Down, KeyCode::Down, KeyCode::Down]);
        assert_eq!(
            press(&mut app, &[KeyCode::Char('n')]),
            [Action::Decide { slug: "a-1".into(), id: "00000003".into(), verdict: Verdict::Denied }]
        );
        let mut plain = app_with(&["b-2"]);
        press(&mut plain, &[KeyCode::Char('2')]);
        assert_eq!(press(&mut plain, &[KeyCode::Char('y')]), [], "no supervise, no decision");
        assert_eq!(plain.message.as_deref(), Some("bottle b-2 runs without supervise: it asks for nothing"));
    }

    #[test]
    fn y_on_a_question_opens_the_answer_window_where_arrows_pick_a_choice() {
        let mut app = supervised(&["a-1"]);
        let question = Ask::AskOperator { question: "tabs?".into(), choices: vec!["tabs".into(), "spaces".into()] };
        app.set_detail(Detail {
            requests: vec![entry("a-1", "00000003", 3, question, Standing::Pending)],
            ..Detail::empty("a-1")
        });
        press(&mut app, &[KeyCode::Char('2'), KeyCode::Char('y')]);
        assert!(matches!(app.modal, Some(Modal::Answer { .. })), "{:?}", app.modal);
        assert_eq!(press(&mut app, &[KeyCode::Enter]), [], "an empty answer is not sent");
        press(&mut app, &[KeyCode::Down, KeyCode::Down]);
        assert!(matches!(&app.modal, Some(Modal::Answer { text, .. }) if text == "spaces"), "{:?}", app.modal);
        press(&mut app, &[KeyCode::Backspace, KeyCode::Char('!')]);
        assert_eq!(
            press(&mut app, &[KeyCode::Enter]),
            [Action::Answer { slug: "a-1".into(), id: "00000003".into(), text: "space!".into() }]
        );
        assert_eq!(app.modal, None);
        press(&mut app, &[KeyCode::Char('y'), KeyCode::Char('x'), KeyCode::Esc]);
        assert_eq!(app.modal, None, "Esc closes it, nothing sent");
    }

    #[test]
    fn enter_in_the_manifest_pane_starts_an_agent_with_a_label_and_colour_or_resumes_a_stopped_one() {
        let mut app = app_with(&["a-1"]);
        app.set_stopped(vec![StoppedRow {
            slug: "shell-0ld0ne00".into(),
            agent: "shell".into(),
            label: None,
            color: None,
        }]);
        press(&mut app, &[KeyCode::Tab, KeyCode::Tab, KeyCode::Enter]);
        assert!(matches!(app.modal, Some(Modal::Start { .. })), "{:?}", app.modal);
        // Typed keys are the label's, not the dashboard's (q does not quit).
        press(&mut app, &[KeyCode::Char('q'), KeyCode::Char('1'), KeyCode::Right, KeyCode::Right]);
        assert_eq!(
            press(&mut app, &[KeyCode::Enter]),
            [Action::Start { agent: "shell".into(), label: Some("q1".into()), color: Some("green".into()) }]
        );
        assert_eq!(app.starting, ["shell (q1)"]);
        press(&mut app, &[KeyCode::Enter, KeyCode::Left]);
        assert_eq!(
            press(&mut app, &[KeyCode::Enter]),
            [Action::Start { agent: "shell".into(), label: None, color: Some("cyan".into()) }],
            "several start at once; ← wraps to the last colour"
        );
        app.start_ended("shell (q1)", "bottle shell-1 is up".into());
        assert_eq!(app.starting, ["shell"]);
        press(&mut app, &[KeyCode::Down]);
        assert_eq!(press(&mut app, &[KeyCode::Char('r')]), [Action::Resume("shell-0ld0ne00".into())]);
        assert_eq!(press(&mut app, &[KeyCode::Enter]), [], "not twice while it resumes");
        assert_eq!(app.message.as_deref(), Some("bottle shell-0ld0ne00 is being resumed"));
        app.set_stopped(Vec::new());
        assert_eq!(app.manifest_selected, 0, "the selection stays in the pane");
    }

    #[test]
    fn g_grants_only_where_supervise_runs_and_refuses_what_is_no_route() {
        let mut plain = app_with(&["a-1"]);
        press(&mut plain, &[KeyCode::Char('g')]);
        assert_eq!(plain.modal, None);
        assert!(plain.message.as_deref().is_some_and(|m| m.contains("runs without supervise")));
        let mut app = supervised(&["a-1"]);
        press(&mut app, &[KeyCode::Char('g')]);
        for c in "https://x".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        assert_eq!(press(&mut app, &[KeyCode::Enter]), []);
        assert!(
            matches!(&app.modal, Some(Modal::Grant { error: Some(e), .. }) if e.contains("is not a host name")),
            "the window stays open with why: {:?}",
            app.modal
        );
        for _ in 0..9 {
            app.on_key(key(KeyCode::Backspace));
        }
        for c in "pypi.org get /simple/* :8443".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        let [Action::Grant { slug, ask }] = &press(&mut app, &[KeyCode::Enter])[..] else {
            panic!("no grant: {:?}", app.modal);
        };
        assert_eq!(slug, "a-1");
        assert_eq!(
            ask,
            &Ask::RequestEgress {
                host: "pypi.org".into(),
                methods: vec!["GET".into()],
                paths: vec!["/simple/*".into()],
                ports: vec![8443],
                reason: "granted by the operator from the dashboard".into(),
            }
        );
        assert!(matches!(grant_ask("push fix/*"), Ok(Ask::RequestPush { branches, .. }) if branches == ["fix/*"]));
        assert!(grant_ask("push").is_err_and(|e| e.contains("branches")));
        assert!(grant_ask("pypi.org :x").is_err_and(|e| e.contains("is no port")));
        assert!(grant_ask("  ").is_err_and(|e| e.contains("type a host")));
    }

    #[test]
    fn f_and_slash_filter_the_egress_log_by_decision_and_host() {
        let mut app = app_with(&["a-1"]);
        assert!(app.filter.is_empty());
        press(&mut app, &[KeyCode::Char('f')]);
        assert_eq!(app.filter.decisions, Decisions::Denied);
        assert!(app.filter.shows("x deny", true) && !app.filter.shows("x allow", false));
        press(&mut app, &[KeyCode::Char('f')]);
        assert!(!app.filter.shows("x deny", true) && app.filter.shows("x allow", false));
        press(&mut app, &[KeyCode::Char('f'), KeyCode::Char('/')]);
        for c in "pypi".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        press(&mut app, &[KeyCode::Enter]);
        assert_eq!(app.filter.host, "pypi");
        assert!(app.filter.shows("GET pypi.org /simple", false) && !app.filter.shows("GET docs.rs /", false));
        press(&mut app, &[KeyCode::Char('/'), KeyCode::Backspace, KeyCode::Esc]);
        assert_eq!(app.filter.host, "pypi", "Esc keeps the filter as it was");
        press(&mut app, &[KeyCode::Char('3'), KeyCode::Char('f')]);
        assert_eq!(app.filter.decisions, Decisions::All, "f filters only in the egress tab");
    }

    #[test]
    fn help_opens_on_question_mark_and_any_key_closes_it_and_q_quits() {
        let mut app = app_with(&["a-1"]);
        press(&mut app, &[KeyCode::Char('?')]);
        assert_eq!(app.modal, Some(Modal::Help));
        assert_eq!(press(&mut app, &[KeyCode::Char('q')]), [], "q closes the help, it does not quit");
        assert_eq!(app.modal, None);
        assert_eq!(press(&mut app, &[KeyCode::Char('q')]), [Action::Quit]);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(app.on_key(ctrl_c), Some(Action::Quit));
        assert_eq!(press(&mut app, &[KeyCode::Char('a')]), [Action::Attach("a-1".into())]);
        assert_eq!(press(&mut app, &[KeyCode::Char('e')]), [Action::Shell("a-1".into())]);
    }
}
