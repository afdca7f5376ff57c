//! The dashboard's state and what each key does to it: plain data and pure
//! functions, so the key handling is tested without a terminal. What a key
//! asks of the world (attach, stop, decide a request) comes back as an
//! [`Action`] for the terminal loop to carry out.

use bot_bottle::supervise::{Entry, Standing, Verdict};
use bot_bottle::{ActiveAgent, BottleMetadata};
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
    /// The selected agent of the manifest pane.
    pub(crate) manifest_selected: usize,
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
            manifest_selected: 0,
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
            KeyCode::Char('a') => return self.with_selected(|slug| Some(Action::Attach(slug.to_string()))),
            KeyCode::Char('s') => return self.stop_selected(),
            KeyCode::Char('y') => return self.decide(Verdict::Approved),
            KeyCode::Char('n') => return self.decide(Verdict::Denied),
            _ => {}
        }
        None
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
            (Focus::Tab, Tab::Details) => {}
            (Focus::Manifest, _) => {
                let len = self.manifest.as_ref().map_or(0, Vec::len);
                self.manifest_selected = step(self.manifest_selected, len);
            }
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
        if matches!(entry.request.ask, bot_bottle::supervise::Ask::AskOperator { .. }) && verdict == Verdict::Approved {
            let id = entry.request.id.clone();
            self.message = Some(format!("request {id} is a question: `bottle supervise answer {id} TEXT` answers it"));
            return None;
        }
        Some(Action::Decide { slug: entry.request.bottle.clone(), id: entry.request.id.clone(), verdict })
    }
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

    #[test]
    fn y_and_n_decide_the_selected_pending_request_in_the_requests_tab() {
        let mut app = app_with(&["a-1"]);
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
        assert_eq!(press(&mut app, &[KeyCode::Char('y')]), [], "a question is answered, not approved");
        assert_eq!(
            press(&mut app, &[KeyCode::Char('n')]),
            [Action::Decide { slug: "a-1".into(), id: "00000003".into(), verdict: Verdict::Denied }]
        );
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
    }
}
