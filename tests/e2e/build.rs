//! Image builds without a terminal: a line per build step on stderr, and a
//! line at least every 10 s while a step runs, so a long build is never
//! silent in a log.

use std::process::Command;

use crate::harness::{World, require_docker, text, warm_image, write};

#[test]
fn a_build_without_a_terminal_says_each_step_and_that_a_long_step_runs() {
    require_docker();
    warm_image();
    let world = World::new();
    let images = Command::new("docker")
        .args(["images", "bot-bottle/shell", "--format", "{{.Repository}}:{{.Tag}}"])
        .output()
        .expect("docker images");
    let base = text(&images.stdout).lines().next().expect("the shell image warm_image built").to_string();
    let nonce = format!("{}-{}", std::process::id(), nanos());
    let dir = world.path("work/image");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let dockerfile = write(&dir, "agent.Dockerfile", &format!("FROM {base}\nRUN echo {nonce}\nRUN sleep 12\n"));
    let manifest = write(
        &world.path("work"),
        "build.yaml",
        &format!(
            "agents:\n  shell: {{ bottle: dev }}\nbottles:\n  dev:\n    agent_provider: {{ template: shell, dockerfile: {} }}\n",
            dockerfile.display()
        ),
    );
    let out = world
        .bottle(&["--manifest", manifest.to_str().expect("utf8"), "start", "shell", "--yes", "--", "-c", "true"])
        .output()
        .expect("run bottle start");
    for entry in std::fs::read_dir(world.path("state/bot-bottle")).into_iter().flatten().flatten() {
        world.track(&entry.file_name().to_string_lossy());
    }
    let stderr = text(&out.stderr);
    let tag = stderr
        .lines()
        .find_map(|l| l.strip_prefix("building bot-bottle/shell:").and_then(|rest| rest.split_once(": ")))
        .map(|(hash, _)| format!("bot-bottle/shell:{hash}"));
    if let Some(tag) = &tag {
        let _ = Command::new("docker").args(["rmi", "-f", tag]).output();
    }
    assert!(out.status.success(), "start: {stderr}");
    let tag = tag.unwrap_or_else(|| panic!("no progress line names the image:\n{stderr}"));
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(&tag)).collect();
    let step = |n: u32, text: &str| {
        lines.iter().any(|l| l.starts_with(&format!("building {tag}: Step {n}/")) && l.ends_with(text))
    };
    assert!(step(1, &format!(": FROM {base}")), "step 1:\n{stderr}");
    assert!(step(2, &format!(": RUN echo {nonce}")), "step 2:\n{stderr}");
    assert!(step(3, ": RUN sleep 12"), "step 3:\n{stderr}");
    let still = lines.iter().find(|l| l.starts_with(&format!("building {tag}: still running step 3/")));
    assert!(still.is_some_and(|l| l.ends_with("s)")), "a line while the long step runs:\n{stderr}");
    assert!(lines.iter().any(|l| l.starts_with(&format!("built {tag} in "))), "and when it is done:\n{stderr}");
    let steps: Vec<&&str> = lines.iter().filter(|l| l.contains(": Step ")).collect();
    assert_eq!(steps.len(), steps.iter().collect::<std::collections::BTreeSet<_>>().len(), "each step once");
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}
