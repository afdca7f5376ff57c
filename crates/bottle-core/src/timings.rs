//! How long each phase of a bottle's start took ([`Timings`]): preparing
//! the plan, the backend's launch (images, networks, sidecars, the agent's
//! container or VM), each provisioning step, and starting the agent's
//! session; `bottle start --timings` prints them.

use std::fmt;
use std::time::{Duration, Instant};

/// The phases of one start, in order, each with its steps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timings {
    phases: Vec<Phase>,
}

/// One phase: its name, how long it took, and its steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    /// `prepare`, `launch`, `provision`, `session`.
    pub name: &'static str,
    /// How long it took.
    pub took: Duration,
    /// Its steps, when it has some (provision: `ca`, `prompt`, …).
    pub steps: Vec<(&'static str, Duration)>,
}

impl Timings {
    /// Record phase `name`, begun at `since`, with `steps`.
    pub(crate) fn record(&mut self, name: &'static str, since: Instant, steps: Vec<(&'static str, Duration)>) {
        self.phases.push(Phase { name, took: since.elapsed(), steps });
    }

    /// The phases, in order.
    pub fn phases(&self) -> &[Phase] {
        &self.phases
    }

    /// The time of all phases.
    pub fn total(&self) -> Duration {
        self.phases.iter().map(|p| p.took).sum()
    }
}

/// Times the steps of one phase.
#[derive(Debug, Default)]
pub(crate) struct Steps(Vec<(&'static str, Duration)>);

impl Steps {
    /// Run `step`, recording how long it took as `name`.
    pub(crate) async fn time<T>(&mut self, name: &'static str, step: impl std::future::Future<Output = T>) -> T {
        let since = Instant::now();
        let out = step.await;
        self.0.push((name, since.elapsed()));
        out
    }

    pub(crate) fn into_inner(self) -> Vec<(&'static str, Duration)> {
        self.0
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

impl fmt::Display for Timings {
    /// `prepare 0.21 s, launch 1.10 s, provision 0.31 s (ca 0.05 s, …), session 0.12 s; total 1.74 s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|p| {
                let mut text = format!("{} {}", p.name, secs(p.took));
                if !p.steps.is_empty() {
                    let steps: Vec<String> = p.steps.iter().map(|(n, d)| format!("{n} {}", secs(*d))).collect();
                    text.push_str(&format!(" ({})", steps.join(", ")));
                }
                text
            })
            .collect();
        write!(f, "{}; total {}", phases.join(", "), secs(self.total()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_print_in_order_with_their_steps_and_a_total() {
        let ms = Duration::from_millis;
        let timings = Timings {
            phases: vec![
                Phase { name: "prepare", took: ms(210), steps: vec![] },
                Phase { name: "provision", took: ms(300), steps: vec![("ca", ms(50)), ("git", ms(5))] },
            ],
        };
        assert_eq!(timings.to_string(), "prepare 0.21 s, provision 0.30 s (ca 0.05 s, git 0.01 s); total 0.51 s");
        assert_eq!(timings.total(), ms(510));
    }
}
