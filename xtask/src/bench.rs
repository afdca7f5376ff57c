//! `cargo xtask bench NAME`: measures the release `bottle` against the
//! targets the issues set.
//!
//! `start` times `bottle start shell --yes --detach` plus `bottle stop`
//! against `docker run --rm IMAGE true` of the same image, interleaved in one
//! run (target: at most 2×), then eight such starts at once against one
//! start's median (target: all done within 2×), then `bottle list active`
//! with ten bottles running (target: at most 100 ms), then a claim from a
//! warm pool: `bottle start` of a pooled agent until it printed the slug of
//! its ready bottle (target: median at most 150 ms), each claim after the
//! pool was filled again. Every bottle it starts is stopped again, and the
//! pool drained, also when a step fails.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::{show, workspace_root};

#[path = "bench_egress.rs"]
mod egress;
#[path = "bench_gitgate.rs"]
mod gitgate;

/// The benchmarks, by name, with what each measures.
pub(crate) const BENCHES: &[(&str, &str)] = &[
    (
        "start",
        "start+stop vs docker run (≤ 2×), 8 starts at once vs one (≤ 2×), list active with 10 bottles (≤ 100 ms), \
         pool claim (≤ 150 ms)",
    ),
    (
        "egress",
        "egress proxy (without and with a credential to scrub) vs direct: 1000 × 1 KiB (≤ 2×, ≤ 60 µs CPU), 100 MiB (≥ 60%, ≤ 0.85 ms CPU per MiB), scrubbing (within 10%), idle RSS (≤ 20 MiB)",
    ),
    ("gitgate", "50 MB push and clone through the git gate vs straight over ssh (≤ 1.5×)"),
];

const DEFAULT_ITERS: usize = 10;
const START_TARGET: f64 = 2.0;
/// How many bottles start at once in the concurrency row.
const CONCURRENT: usize = 8;
const CONCURRENT_TARGET: f64 = 2.0;
const LIST_BOTTLES: usize = 10;
const LIST_RUNS: usize = 20;
const LIST_TARGET: Duration = Duration::from_millis(100);
/// The warm pool's size in the pool row, and how many claims it times.
const POOL_SIZE: usize = 2;
const POOL_CLAIMS: usize = 5;
const CLAIM_TARGET: Duration = Duration::from_millis(150);

/// Runs the benchmark `name`, one of [`BENCHES`].
pub(crate) fn run(name: &str) -> Result<()> {
    match name {
        "start" => start(),
        "egress" => egress::run(),
        "gitgate" => gitgate::run(),
        _ => bail!("unknown benchmark `{name}`"),
    }
}

fn start() -> Result<()> {
    let iters = match std::env::var("BOTTLE_BENCH_ITERS") {
        Ok(value) => value
            .parse::<usize>()
            .ok()
            .filter(|&iters| iters > 0)
            .with_context(|| format!("BOTTLE_BENCH_ITERS={value} is no positive number"))?,
        Err(_) => DEFAULT_ITERS,
    };
    crate::setup::run()?;
    let mut bottles = Bottles { bin: crate::build_bottle()?, active: Vec::new(), pool: None };

    println!("warm-up: one start + stop (builds the image if it is not cached)");
    let slug = bottles.start(false).context("while starting the warm-up bottle")?;
    let image =
        bottles.image(&slug).context("while reading the warm-up bottle's image from `bottle list active --json`")?;
    bottles.stop(&slug).context("while stopping the warm-up bottle")?;
    println!("warm-up: bottle {slug} ran {image}");

    let mut start_stop = Vec::with_capacity(iters);
    let mut start_only = Vec::with_capacity(iters);
    let mut baseline = Vec::with_capacity(iters);
    let mut docker = Command::new("docker");
    docker.args(["run", "--rm", &image, "true"]).stdout(Stdio::null());
    for i in 1..=iters {
        let timer = Instant::now();
        let slug = bottles.start(true).with_context(|| format!("while starting bottle {i} of {iters}"))?;
        start_only.push(timer.elapsed());
        bottles.stop(&slug).with_context(|| format!("while stopping bottle {i} of {iters}"))?;
        start_stop.push(timer.elapsed());
        let timer = Instant::now();
        crate::run(&mut docker).context("while running the baseline container")?;
        baseline.push(timer.elapsed());
        println!("run {i}/{iters}: start+stop {}, docker run {}", secs(start_stop[i - 1]), secs(baseline[i - 1]));
    }
    let start_stop = Stats::of(start_stop);
    let baseline = Stats::of(baseline);
    println!("bottle start+stop: {}", start_stop.show(secs));
    println!("{}: {}", show(&docker), baseline.show(secs));
    let ratio = start_stop.median.as_secs_f64() / baseline.median.as_secs_f64();
    println!(
        "ratio start+stop / docker run: {ratio:.2}× (target ≤ {START_TARGET}×): {}",
        verdict(ratio <= START_TARGET)
    );

    let start_only = Stats::of(start_only);
    let alone = start_only.median.as_secs_f64() / baseline.median.as_secs_f64();
    println!("bottle start alone: {} ({alone:.2}× docker run)", start_only.show(secs));
    let timer = Instant::now();
    let slugs = bottles.start_many(CONCURRENT).context("while starting bottles at once")?;
    let together = timer.elapsed();
    let ratio = together.as_secs_f64() / start_only.median.as_secs_f64();
    println!(
        "{CONCURRENT} starts at once: all done in {} = {ratio:.2}× one start's median (target ≤ {CONCURRENT_TARGET}×): {}",
        secs(together),
        verdict(ratio <= CONCURRENT_TARGET)
    );
    let timer = Instant::now();
    bottles.stop_many(&slugs).context("while stopping the bottles started at once")?;
    println!("{CONCURRENT} stops at once: {}", secs(timer.elapsed()));
    // The engine's own: as many `docker run` at once, against one's median.
    let timer = Instant::now();
    let runs: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let mut run = Command::new("docker");
            run.args(["run", "--rm", &image, "true"]).stdout(Stdio::null());
            run.spawn().context("could not run docker run")
        })
        .collect::<Result<_>>()?;
    for mut run in runs {
        ensure!(run.wait().context("while waiting for docker run")?.success(), "a docker run failed");
    }
    let engine = timer.elapsed();
    println!(
        "baseline: {CONCURRENT} `docker run --rm` at once: {} = {:.2}× one's median",
        secs(engine),
        engine.as_secs_f64() / baseline.median.as_secs_f64()
    );

    println!("starting {LIST_BOTTLES} bottles for `bottle list active`");
    for i in 1..=LIST_BOTTLES {
        bottles.start(true).with_context(|| format!("while starting bottle {i} of {LIST_BOTTLES}"))?;
    }
    let mut list = Command::new(&bottles.bin);
    list.args(["list", "active"]).current_dir(workspace_root()).stdout(Stdio::null());
    let mut times = Vec::with_capacity(LIST_RUNS);
    for _ in 0..LIST_RUNS {
        let timer = Instant::now();
        crate::run(&mut list).context("while running bottle list active")?;
        times.push(timer.elapsed());
    }
    let times = Stats::of(times);
    println!(
        "bottle list active ({LIST_BOTTLES} active): {} (target ≤ {}): {}",
        times.show(millis),
        millis(LIST_TARGET),
        verdict(times.median <= LIST_TARGET)
    );
    bottles.stop_all()?;
    pool(&mut bottles, &baseline)
}

/// The pool row: claims from a warm pool of the shell agent, each after the
/// pool was filled again, beside the `docker run` baseline of the same run.
fn pool(bottles: &mut Bottles, baseline: &Stats) -> Result<()> {
    let dir = tempfile::tempdir().context("while making a folder for the pool's manifest")?;
    let manifest = dir.path().join("pool.yaml");
    std::fs::write(
        &manifest,
        format!(
            "agents:\n  shell:\n    bottle: b\n    pool: {{ size: {POOL_SIZE} }}\nbottles:\n  b:\n    agent_provider:\n      \
             template: shell\n"
        ),
    )
    .context("while writing the pool's manifest")?;
    let manifest = manifest.display().to_string();
    bottles.pool = Some(manifest.clone());
    let args = |more: &[&'static str]| -> Vec<String> {
        ["--manifest", &manifest].iter().map(|s| s.to_string()).chain(more.iter().map(|s| s.to_string())).collect()
    };
    let run = |bottles: &Bottles, more: &[&'static str]| -> Result<String> {
        let args = args(more);
        bottles.bottle(&args.iter().map(String::as_str).collect::<Vec<_>>(), true)
    };
    println!("filling a warm pool of {POOL_SIZE} shell bottles");
    run(bottles, &["pool", "fill"]).context("while filling the pool")?;
    let mut claims = Vec::with_capacity(POOL_CLAIMS);
    for i in 1..=POOL_CLAIMS {
        let timer = Instant::now();
        let out =
            run(bottles, &["start", "shell", "--yes", "--detach"]).with_context(|| format!("while claiming {i}"))?;
        claims.push(timer.elapsed());
        let slug = out.lines().rev().map(str::trim).find(|l| !l.is_empty()).context("no slug")?.to_owned();
        bottles.active.push(slug.clone());
        println!("claim {i}/{POOL_CLAIMS}: {} ({slug})", millis(claims[i - 1]));
        bottles.stop(&slug).with_context(|| format!("while stopping claimed bottle {slug}"))?;
        // The next claim once the background fill is done.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status: Value = serde_json::from_str(&run(bottles, &["pool", "status", "--json"])?)?;
            let pool = &status[0];
            let ready = pool["ready"].as_array().map_or(0, Vec::len);
            if ready >= POOL_SIZE && pool["filling"].is_null() {
                break;
            }
            ensure!(Instant::now() < deadline, "the pool was not filled again within 120 s: {pool}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let claims = Stats::of(claims);
    println!(
        "pool claim (bottle start to its ready bottle): {} (target ≤ {}; docker run in this run: median {}): {}",
        claims.show(millis),
        millis(CLAIM_TARGET),
        millis(baseline.median),
        verdict(claims.median <= CLAIM_TARGET)
    );
    run(bottles, &["pool", "drain"]).context("while draining the pool")?;
    bottles.pool = None;
    Ok(())
}

/// The bottles this benchmark started and has not stopped yet; dropping it
/// stops them.
struct Bottles {
    /// The release `bottle` binary.
    bin: PathBuf,
    active: Vec<String>,
    /// The manifest of a warm pool to drain, while there is one.
    pool: Option<String>,
}

impl Bottles {
    /// Runs `bottle ARGS` in the workspace root and returns its stdout; with
    /// `quiet` its stderr too is held back and shown only if it fails.
    fn bottle(&self, args: &[&str], quiet: bool) -> Result<String> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).current_dir(workspace_root()).stdin(Stdio::null());
        if !quiet {
            return crate::output(&mut cmd);
        }
        let out = cmd.output().with_context(|| format!("could not run `{}`", show(&cmd)))?;
        ensure!(
            out.status.success(),
            "`{}` failed ({})\n{}",
            show(&cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
        String::from_utf8(out.stdout).with_context(|| format!("`{}` printed no UTF-8", show(&cmd)))
    }

    /// Starts a detached shell bottle and returns its slug, which `bottle`
    /// prints alone on its last line.
    fn start(&mut self, quiet: bool) -> Result<String> {
        let stdout = self.bottle(&["start", "shell", "--yes", "--detach"], quiet)?;
        let slug = stdout
            .lines()
            .rev()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .context("`bottle start` printed no slug")?
            .to_owned();
        self.active.push(slug.clone());
        Ok(slug)
    }

    /// Starts `count` detached shell bottles at once (one `bottle start`
    /// process each) and returns their slugs once all are up.
    fn start_many(&mut self, count: usize) -> Result<Vec<String>> {
        let children: Vec<_> = (0..count)
            .map(|_| {
                let mut cmd = Command::new(&self.bin);
                cmd.args(["start", "shell", "--yes", "--detach"])
                    .current_dir(workspace_root())
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                cmd.spawn().with_context(|| format!("could not run `{}`", show(&cmd)))
            })
            .collect::<Result<_>>()?;
        let mut slugs = Vec::new();
        let mut failed = None;
        for child in children {
            let out = child.wait_with_output().context("while waiting for `bottle start`")?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            match stdout.lines().rev().map(str::trim).find(|l| !l.is_empty()) {
                Some(slug) if out.status.success() => {
                    self.active.push(slug.to_owned());
                    slugs.push(slug.to_owned());
                }
                _ => {
                    failed.get_or_insert(format!(
                        "`bottle start` failed ({})\n{}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim_end()
                    ));
                }
            }
        }
        match failed {
            Some(why) => bail!("{why}"),
            None => Ok(slugs),
        }
    }

    /// Stops `slugs` at once (one `bottle stop` process each).
    fn stop_many(&mut self, slugs: &[String]) -> Result<()> {
        let children: Vec<_> = slugs
            .iter()
            .map(|slug| {
                let mut cmd = Command::new(&self.bin);
                cmd.args(["stop", "--yes", slug])
                    .current_dir(workspace_root())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                cmd.spawn().with_context(|| format!("could not run `{}`", show(&cmd)))
            })
            .collect::<Result<_>>()?;
        let mut failed = None;
        for (child, slug) in children.into_iter().zip(slugs) {
            let out = child.wait_with_output().context("while waiting for `bottle stop`")?;
            if out.status.success() {
                self.active.retain(|active| active != slug);
            } else {
                failed.get_or_insert(format!("`bottle stop {slug}` failed: {}", String::from_utf8_lossy(&out.stderr)));
            }
        }
        match failed {
            Some(why) => bail!("{why}"),
            None => Ok(()),
        }
    }

    fn stop(&mut self, slug: &str) -> Result<()> {
        self.bottle(&["stop", slug], true)?;
        self.active.retain(|active| active != slug);
        Ok(())
    }

    /// Stops every bottle still active; tries them all, reports the first
    /// failure.
    fn stop_all(&mut self) -> Result<()> {
        let mut first = None;
        for slug in std::mem::take(&mut self.active) {
            if let Err(err) = self.stop(&slug) {
                eprintln!("warning: could not stop bottle {slug}: {err:#}");
                first.get_or_insert(err);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The image of the running bottle `slug`, from `bottle list active --json`.
    fn image(&self, slug: &str) -> Result<String> {
        let json = self.bottle(&["list", "active", "--json"], true)?;
        let list: Value = serde_json::from_str(&json).context("the output is no JSON")?;
        image_of(&list, slug).with_context(|| format!("no entry with slug {slug} and an image"))
    }
}

impl Drop for Bottles {
    fn drop(&mut self) {
        // Errors are printed by `stop_all`; after an earlier error there is
        // nothing more to say.
        let _ = self.stop_all();
        if let Some(manifest) = self.pool.take() {
            let _ = self.bottle(&["--manifest", &manifest, "pool", "drain"], true);
        }
    }
}

/// The `image` of the object whose `slug` is `slug`, wherever it is in `value`.
fn image_of(value: &Value, slug: &str) -> Option<String> {
    match value {
        Value::Array(items) => items.iter().find_map(|item| image_of(item, slug)),
        Value::Object(fields) if fields.get("slug").and_then(Value::as_str) == Some(slug) => {
            fields.get("image")?.as_str().map(str::to_owned)
        }
        Value::Object(fields) => fields.values().find_map(|field| image_of(field, slug)),
        _ => None,
    }
}

/// Median, minimum and maximum of some timings.
struct Stats {
    median: Duration,
    min: Duration,
    max: Duration,
    runs: usize,
}

impl Stats {
    fn of(mut times: Vec<Duration>) -> Self {
        times.sort();
        let runs = times.len();
        Self {
            // The middle one, or the mean of the middle two.
            median: (times[(runs - 1) / 2] + times[runs / 2]) / 2,
            min: times[0],
            max: times[times.len() - 1],
            runs,
        }
    }

    fn show(&self, unit: fn(Duration) -> String) -> String {
        format!("median {}, min {}, max {} ({} runs)", unit(self.median), unit(self.min), unit(self.max), self.runs)
    }
}

fn secs(time: Duration) -> String {
    format!("{:.3} s", time.as_secs_f64())
}

fn millis(time: Duration) -> String {
    format!("{:.1} ms", time.as_secs_f64() * 1000.0)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str, expect: Option<&str>) {
        let value: Value = serde_json::from_str(json).expect("test JSON");
        assert_eq!(image_of(&value, "calm-otter").as_deref(), expect, "{json}");
    }

    #[test]
    fn image_of_the_bottle_with_the_slug() {
        check(r#"[{"slug":"a","image":"x"},{"slug":"calm-otter","image":"bottle/shell:1"}]"#, Some("bottle/shell:1"));
        check(r#"{"bottles":[{"slug":"calm-otter","image":"y"}]}"#, Some("y"));
        check(r#"[{"slug":"a","image":"x"}]"#, None);
        check(r#"[]"#, None);
    }

    #[test]
    fn stats_median_min_max() {
        let ms = Duration::from_millis;
        let stats = Stats::of(vec![ms(30), ms(10), ms(20), ms(40)]);
        assert_eq!((stats.median, stats.min, stats.max, stats.runs), (ms(25), ms(10), ms(40), 4));
        assert_eq!(Stats::of(vec![ms(5), ms(1), ms(9)]).median, ms(5));
    }
}
