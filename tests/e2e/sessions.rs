//! What the CLI promises about a bottle's life beyond one terminal: a
//! detached bottle runs its agent with its arguments; `attach` on a terminal
//! and the detach key leave it running; an attached `start` killed with
//! SIGKILL leaves an orphan that `cleanup --yes` stops with its state saved,
//! which `resume` restores; `stop` of a bottle whose agent container was
//! killed saves its state and exits 0; two `stop`s at once both exit 0, one
//! saying it was already stopped, neither printing an engine error; an
//! attached session stopped from elsewhere says so; SIGTERM and SIGHUP exit
//! 143 and 129.

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{World, bottle_bin, containers_of, require_docker, text, wait_for, warm_image};

/// The slug of the one bottle `world` has started (from its state folder).
fn only_slug(world: &World) -> Option<String> {
    let dir = std::fs::read_dir(world.path("state/bot-bottle")).ok()?;
    let slug = dir.flatten().next()?.file_name().to_string_lossy().into_owned();
    Some(slug)
}

/// An attached `bottle start shell --yes -- ARGS` in the background, once its
/// bottle runs; with its slug.
fn start_attached(world: &World, args: &[&str]) -> (Child, String) {
    warm_image();
    let mut cmd = world.bottle(&["start", "shell", "--yes", "--"]);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("start bottle");
    let mut slug = None;
    let running = wait_for(120, || {
        slug = only_slug(world);
        slug.as_ref().is_some_and(|s| containers_of(s).contains(&format!("bb-{s}")))
    });
    let slug = slug.expect("the start minted a slug");
    world.track(&slug);
    assert!(running, "the attached bottle {slug} did not start");
    (child, slug)
}

/// Runs `bottle args` on a pseudo-terminal (`script`), typing `keys` after
/// `delay`; returns the exit code and what the terminal showed.
fn on_a_terminal(world: &World, args: &str, keys: &[u8], delay: Duration) -> (Option<i32>, String) {
    let command = format!("{} {args}", bottle_bin());
    let mut child = world
        .bottle_at(std::path::Path::new("script"), &["-qfec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script");
    let mut stdin = child.stdin.take().expect("stdin");
    std::thread::sleep(delay);
    stdin.write_all(keys).expect("type");
    stdin.flush().expect("flush");
    let out = child.wait_with_output().expect("wait");
    drop(stdin);
    (out.status.code(), format!("{}{}", text(&out.stdout), text(&out.stderr)))
}

#[test]
fn a_detached_agent_runs_its_arguments_and_attach_then_detach_leaves_it_running() {
    require_docker();
    let world = World::new();
    let slug = world.start_detached(&["--", "-c", "echo ran > /tmp/x; sleep 300"]);
    assert!(
        wait_for(20, || text(&world.run(&["exec", &slug, "--", "cat", "/tmp/x"]).stdout).trim() == "ran"),
        "the detached agent ran its arguments"
    );
    let (code, shown) = on_a_terminal(&world, &format!("attach {slug}"), b"\x02d", Duration::from_secs(4));
    assert_eq!(code, Some(0), "attach then C-b d exits 0: {shown}");
    assert!(shown.contains(&format!("detached from bottle {slug}")), "{shown}");
    let ps = world.ok(&["exec", &slug, "--", "sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"]);
    assert!(ps.contains("sleep 300"), "the agent runs on after the detach: {ps}");
    let out = world.run(&["attach", &slug]);
    assert_eq!(out.status.code(), Some(1), "attach needs a terminal");
    assert!(text(&out.stderr).contains("needs a terminal"), "{}", text(&out.stderr));
    world.ok(&["stop", &slug]);
}

#[test]
fn a_killed_attached_start_is_cleaned_up_with_its_state_saved_and_resume_restores_it() {
    require_docker();
    let world = World::new();
    let (mut launcher, slug) = start_attached(&world, &["-c", "echo hist-line >> ~/.bash_history; sleep 300"]);
    assert!(
        wait_for(60, || world
            .run(&["exec", &slug, "--", "sh", "-c", "grep -q hist-line ~/.bash_history"])
            .status
            .success()),
        "the agent wrote its history"
    );
    launcher.kill().expect("SIGKILL the attached start");
    launcher.wait().expect("reap it");
    let out = world.run(&["cleanup", "--yes"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "cleanup: {err}");
    assert!(err.contains(&format!("{slug}: state saved")), "cleanup says it saved the state: {err}");
    assert!(containers_of(&slug).is_empty(), "cleanup removed the orphan");
    let out = world.run(&["resume", &slug, "--yes", "--", "-c", "cat ~/.bash_history"]);
    assert!(out.status.success(), "resume: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("hist-line"), "resume restored the history: {}", text(&out.stdout));
    assert!(text(&out.stderr).contains("restores"), "and said so: {}", text(&out.stderr));
}

#[test]
fn stop_after_the_agent_container_was_killed_saves_its_state_and_exits_0() {
    require_docker();
    let world = World::new();
    let slug = world.start_detached(&[]);
    world.ok(&["exec", &slug, "--", "sh", "-c", "echo before-kill >> ~/.bash_history"]);
    let killed = Command::new("docker").args(["kill", &format!("bb-{slug}")]).output().expect("docker kill");
    assert!(killed.status.success(), "{}", text(&killed.stderr));
    let out = world.run(&["stop", &slug]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("had stopped") && err.contains("stopped and removed"), "{err}");
    let saved = world.path("state/bot-bottle").join(&slug).join("resume/home/agent/.bash_history");
    assert!(std::fs::read_to_string(saved).expect("saved history").contains("before-kill"));
    assert!(containers_of(&slug).is_empty());
}

#[test]
fn two_stops_at_once_both_exit_0_and_print_no_engine_error() {
    require_docker();
    let world = World::new();
    let slug = world.start_detached(&[]);
    let spawn = || world.bottle(&["stop", &slug]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("stop");
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().expect("stop a"), b.wait_with_output().expect("stop b"));
    let (ea, eb) = (text(&a.stderr), text(&b.stderr));
    assert_eq!((a.status.code(), b.status.code()), (Some(0), Some(0)), "{ea}\n{eb}");
    for err in [&ea, &eb] {
        assert!(!err.contains("Engine") && !err.contains("status code"), "no raw engine error: {err}");
    }
    let already = [&ea, &eb].iter().filter(|e| e.contains("already stopped")).count();
    assert_eq!(already, 1, "one stopped it, the other says it was already stopped:\n{ea}\n{eb}");
    assert!(containers_of(&slug).is_empty());
}

#[test]
fn an_attached_session_stopped_from_elsewhere_says_so() {
    require_docker();
    let world = World::new();
    let (launcher, slug) = start_attached(&world, &["-c", "sleep 300"]);
    let out = world.run(&["stop", &slug]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let attached = launcher.wait_with_output().expect("the attached start");
    let err = text(&attached.stderr);
    assert_eq!(attached.status.code(), Some(0), "a deliberate stop is not a failure: {err}");
    assert!(err.contains("stopped from elsewhere"), "{err}");
    assert!(!err.contains("Engine"), "{err}");
}

#[test]
fn sigterm_and_sighup_exit_143_and_129() {
    require_docker();
    for (signal, code) in [("TERM", 143), ("HUP", 129)] {
        let world = World::new();
        let (launcher, slug) = start_attached(&world, &["-c", "sleep 300"]);
        let sent = Command::new("kill").args([&format!("-{signal}"), &launcher.id().to_string()]).status();
        assert!(sent.expect("kill").success());
        let out = launcher.wait_with_output().expect("the attached start");
        assert_eq!(out.status.code(), Some(code), "SIG{signal}: {}", text(&out.stderr));
        assert!(wait_for(30, || containers_of(&slug).is_empty()), "SIG{signal} tears the bottle down");
    }
}

#[test]
fn stop_says_in_one_line_what_work_it_would_discard_and_asks_on_a_terminal() {
    require_docker();
    let world = World::new();
    let slug = world.start_detached(&[]);
    let work = "cd ~/workspace && git init -q && git -c user.email=a@b -c user.name=a commit -q --allow-empty -m one \
                && echo draft > notes.txt";
    world.ok(&["exec", &slug, "--", "sh", "-c", work]);

    // On a terminal it asks; `n` keeps the bottle.
    let (code, shown) = on_a_terminal(&world, &format!("stop {slug}"), b"n\n", Duration::from_secs(3));
    assert_eq!(code, Some(1), "{shown}");
    let warning = format!(
        "warning: bottle {slug}'s workspace /home/agent/workspace has uncommitted changes and unpushed commits"
    );
    assert!(shown.contains(&warning) && shown.contains("Stop it anyway?") && shown.contains("not stopped"), "{shown}");
    assert!(!containers_of(&slug).is_empty(), "still running");

    // Without a terminal (or with --yes) it warns once and stops.
    let out = world.run(&["stop", &slug]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("warning: ")).count(), 1, "{err}");
    assert!(err.contains(&warning) && err.contains(&format!("bottle cp {slug}:/home/agent/workspace DEST")), "{err}");
    assert!(containers_of(&slug).is_empty());
}
