//! What an image build says on stderr when stderr is no terminal (a CI log,
//! a pipe): one line per build step the engine starts, and a line at least
//! every [`BuildProgress::INTERVAL`] while a step runs, so that a build of
//! minutes is never silent. Both the engine API's classic stream
//! (`Step 3/7 : RUN …`) and BuildKit's plain output (`#7 [2/4] RUN …`) are
//! understood. A backend feeds it the build's output lines and a timer; on
//! a terminal it shows its own progress bar instead.

use std::time::{Duration, Instant};

/// The progress of one image build, for lines on stderr.
#[derive(Debug)]
pub struct BuildProgress {
    tag: String,
    /// The step running now (`3/7`) and when it started.
    step: Option<String>,
    since: Instant,
    started: Instant,
}

/// The most of a step's own text a progress line repeats.
const STEP_TEXT_MAX: usize = 160;

impl BuildProgress {
    /// How long a step may run before its progress line comes again.
    pub const INTERVAL: Duration = Duration::from_secs(10);

    /// The progress of building `tag`, starting now.
    pub fn new(tag: impl Into<String>) -> Self {
        let now = Instant::now();
        BuildProgress { tag: tag.into(), step: None, since: now, started: now }
    }

    /// The line to print for one line of the build's output, when it starts
    /// a step (`building TAG: Step 3/7 : RUN …`); `None` for everything else.
    pub fn line(&mut self, line: &str, now: Instant) -> Option<String> {
        let (step, text) = step_of(line.trim())?;
        if self.step.as_deref() == Some(step.as_str()) {
            return None;
        }
        self.step = Some(step);
        self.since = now;
        let mut text = text.to_string();
        if text.chars().count() > STEP_TEXT_MAX {
            text = text.chars().take(STEP_TEXT_MAX).collect::<String>() + "…";
        }
        Some(format!("building {}: {text}", self.tag))
    }

    /// The line to print while nothing new came: `building TAG: still
    /// running step N (Ss)`.
    pub fn still_running(&self, now: Instant) -> String {
        let secs = now.saturating_duration_since(self.since).as_secs();
        match &self.step {
            Some(step) => format!("building {}: still running step {step} ({secs}s)", self.tag),
            None => format!("building {}: still starting ({secs}s)", self.tag),
        }
    }

    /// The line to print when the build succeeded: `built TAG in Ss`.
    pub fn done(&self, now: Instant) -> String {
        format!("built {} in {}s", self.tag, now.saturating_duration_since(self.started).as_secs())
    }
}

/// The step number (`3/7`) a build output line starts, and the text to show.
fn step_of(line: &str) -> Option<(String, &str)> {
    if let Some(rest) = line.strip_prefix("Step ") {
        let (step, _) = rest.split_once(' ')?;
        return is_step(step).then(|| (step.to_string(), line));
    }
    // BuildKit: `#7 [2/4] RUN …` or `#7 [stage 2/4] RUN …`.
    let rest = line.strip_prefix('#')?;
    let (id, rest) = rest.split_once(' ')?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || !rest.starts_with('[') {
        return None;
    }
    let (inside, _) = rest[1..].split_once(']')?;
    let step = inside.rsplit(' ').next()?;
    is_step(step).then(|| (step.to_string(), rest))
}

/// Whether `text` is `N/M`.
fn is_step(text: &str) -> bool {
    text.split_once('/')
        .is_some_and(|(n, m)| [n, m].iter().all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_is_one_line_and_a_running_step_says_so() {
        let mut progress = BuildProgress::new("bot-bottle/shell:abc");
        let start = Instant::now();
        assert_eq!(
            progress.still_running(start + Duration::from_secs(3)),
            "building bot-bottle/shell:abc: still starting (3s)"
        );
        let lines: Vec<Option<String>> = [
            "Step 1/3 : FROM debian:bookworm-slim",
            " ---> 235326b5dab3",
            "Step 2/3 : RUN apt-get update",
            " ---> Running in 1f2e",
            "Hit:1 http://deb.debian.org/debian bookworm InRelease",
        ]
        .iter()
        .map(|line| progress.line(line, start + Duration::from_secs(1)))
        .collect();
        assert_eq!(
            lines,
            [
                Some("building bot-bottle/shell:abc: Step 1/3 : FROM debian:bookworm-slim".to_string()),
                None,
                Some("building bot-bottle/shell:abc: Step 2/3 : RUN apt-get update".to_string()),
                None,
                None,
            ]
        );
        assert_eq!(
            progress.still_running(start + Duration::from_secs(21)),
            "building bot-bottle/shell:abc: still running step 2/3 (20s)"
        );
        assert!(progress.done(Instant::now() + Duration::from_secs(90)).starts_with("built bot-bottle/shell:abc in 9"));
    }

    #[test]
    fn buildkit_steps_count_once_and_its_other_lines_not_at_all() {
        let now = Instant::now();
        let mut progress = BuildProgress::new("t");
        let printed: Vec<String> = [
            "#1 [internal] load build definition from bot-bottle.Dockerfile",
            "#5 [1/3] FROM docker.io/library/debian:bookworm-slim",
            "#6 [2/3] RUN echo hi",
            "#6 0.215 hi",
            "#6 [2/3] RUN echo hi",
            "#6 DONE 0.3s",
            "#7 [stage-1 3/3] RUN sleep 1",
            "Step 1 : not a step",
            "#x [1/2] no",
        ]
        .iter()
        .filter_map(|line| progress.line(line, now))
        .collect();
        assert_eq!(
            printed,
            [
                "building t: [1/3] FROM docker.io/library/debian:bookworm-slim",
                "building t: [2/3] RUN echo hi",
                "building t: [stage-1 3/3] RUN sleep 1",
            ]
        );
        let long = format!("Step 1/1 : RUN {}", "x".repeat(500));
        let line = BuildProgress::new("t").line(&long, now).expect("a step");
        assert!(line.chars().count() < 200 && line.ends_with('…'), "{line}");
    }
}
