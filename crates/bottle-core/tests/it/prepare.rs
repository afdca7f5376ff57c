//! The prepare pipeline: environment resolution, validation that leaves
//! nothing behind, resume, and a summary that never shows a secret.

use std::sync::Arc;

use bottle_core::{BottleSpec, ErrorKind, Manifest, placeholder, prepare, render_summary};
use proptest::prelude::*;

use crate::fixtures::{host, providers};

fn manifest(dir: &std::path::Path, text: &str) -> Arc<Manifest> {
    let path = dir.join("bot-bottle.yaml");
    std::fs::write(&path, text).expect("write");
    Arc::new(Manifest::load(&path, &["shell"]).expect("valid manifest"))
}

fn spec(manifest: Arc<Manifest>, dir: &std::path::Path) -> BottleSpec {
    BottleSpec::new(manifest, "dev", dir.into())
}

const ENV_MANIFEST: &str = "agents:\n  dev:\n    bottle: b\nbottles:\n  b:\n    agent_provider:\n      template: shell\n    env:\n      \
LITERAL: plain\n      COPIED: { from_host: HOST_EDITOR }\n      TOKEN: { from_host: HOST_TOKEN, secret: true }\n      \
PROVIDER_KEY: { from_host: HOST_KEY }\n";

#[test]
fn env_is_literal_copied_or_hidden() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let host = host(tmp.path(), &[("HOST_EDITOR", "vim"), ("HOST_TOKEN", "tok-123"), ("HOST_KEY", "key-456")]);
    let plan =
        prepare(&spec(manifest(tmp.path(), ENV_MANIFEST), tmp.path()), &providers(), &host, "docker").expect("prepare");
    let env = &plan.provision.guest_env;
    assert_eq!(env["LITERAL"], "plain");
    assert_eq!(env["COPIED"], "vim");
    assert_eq!(env["TOKEN"], placeholder("TOKEN"), "a secret becomes a placeholder");
    assert_eq!(env["PROVIDER_KEY"], placeholder("PROVIDER_KEY"), "the provider's hidden names too");
    assert_eq!(plan.provision.hidden_env, ["PROVIDER_KEY", "TOKEN"]);
    assert!(!format!("{plan:?}").contains("tok-123") && !format!("{plan:?}").contains("key-456"));
    let meta = host.state.read(&plan.slug).expect("metadata written");
    assert_eq!((meta.backend.as_str(), meta.agent.as_str(), meta.ready), ("docker", "dev", false));
}

#[test]
fn invalid_input_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let host = host(tmp.path(), &[("HOST_EDITOR", "vim")]);
    let err = prepare(&spec(manifest(tmp.path(), ENV_MANIFEST), tmp.path()), &providers(), &host, "docker")
        .expect_err("HOST_TOKEN is missing");
    assert_eq!(err.kind(), ErrorKind::MissingHostEnv);
    assert!(err.to_string().contains("`HOST_TOKEN`") && err.to_string().contains("`HOST_KEY`"), "all missing: {err}");

    let skills = "agents:\n  dev:\n    bottle: b\n    skills: [review]\nbottles:\n  b:\n    agent_provider:\n      template: shell\n";
    let m = manifest(tmp.path(), skills);
    let err = prepare(&spec(m.clone(), tmp.path()), &providers(), &host, "docker").expect_err("skill missing");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("skills/review"), "{err}");
    let mut unknown = spec(m.clone(), tmp.path());
    unknown.agent = "nobody".into();
    let err = prepare(&unknown, &providers(), &host, "docker").expect_err("no such agent");
    assert!(err.to_string().contains("defined agents: dev"), "{err}");
    assert!(host.state.list().is_empty(), "no state left behind");
    assert!(!host.state.dir().exists() || std::fs::read_dir(host.state.dir()).expect("dir").count() == 0);

    std::fs::create_dir_all(tmp.path().join("home/.claude/skills/review")).expect("mkdir");
    let plan = prepare(&spec(m, tmp.path()), &providers(), &host, "docker").expect("skill exists now");
    assert_eq!(plan.provision.skills[0].guest, "/home/agent/.claude/skills/review");
}

#[test]
fn resume_reuses_the_identity() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let host = host(tmp.path(), &[]);
    let text = "agents:\n  dev:\n    bottle: b\nbottles:\n  b:\n    agent_provider:\n      template: shell\n";
    let m = manifest(tmp.path(), text);
    let first = prepare(&spec(m.clone(), tmp.path()), &providers(), &host, "docker").expect("prepare");
    let mut again = spec(m, tmp.path());
    again.identity = Some(first.slug.clone());
    let resumed = prepare(&again, &providers(), &host, "docker").expect("resume");
    assert_eq!(resumed.slug, first.slug);
    assert!(resumed.resumed && !first.resumed);
    assert_eq!(host.state.read(&first.slug).expect("meta").resumes, 1);
    again.identity = Some("dev-00000000".into());
    assert_eq!(prepare(&again, &providers(), &host, "docker").expect_err("unknown").kind(), ErrorKind::NotFound);
}

#[test]
fn a_route_knows_its_sentinels_and_the_summary_warns_where_its_credential_reaches_further() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = tmp.path().join("deploy_key");
    std::fs::write(&key, "not really a key\n").expect("write key");
    let text = format!(
        "agents:\n  dev:\n    bottle: b\nbottles:\n  b:\n    agent_provider:\n      template: shell\n    env:\n      \
         GH: {{ from_host: GH_TOKEN, secret: true }}\n      CLEAR: {{ from_host: GH_TOKEN }}\n    egress:\n      \
         - host: api.github.com\n        auth: {{ scheme: bearer, from_host: GH_TOKEN }}\n    git:\n      \
         - {{ Name: project, Host: github.com, Repo: org/p.git, IdentityFile: {} }}\n",
        key.display()
    );
    let host = host(tmp.path(), &[("GH_TOKEN", "ghp-secret-1")]);
    let plan = prepare(&spec(manifest(tmp.path(), &text), tmp.path()), &providers(), &host, "docker").expect("prepare");
    let inject = plan.egress.policy.rules.iter().find_map(|rule| rule.inject.as_ref()).expect("the route injects");
    assert_eq!(inject.sentinels, [placeholder("GH")], "the hidden copy's placeholder, not the clear one's");
    let summary = render_summary(&plan, &crate::fixtures::wiring(), "docker", &[]);
    let warnings: Vec<&str> = summary.lines().filter(|line| line.trim_start().starts_with("warning")).collect();
    assert_eq!(warnings.len(), 2, "{summary}");
    assert!(warnings[0].contains("bypassing the git gate"), "{summary}");
    assert!(warnings[1].contains("env CLEAR copies $GH_TOKEN"), "{summary}");
}

#[test]
fn an_unset_host_variable_is_refused_where_the_manifest_reads_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let text = "agents:\n  dev:\n    bottle: b\nbottles:\n  b:\n    agent_provider:\n      template: shell\n    env:\n      \
                COPIED: { from_host: HOST_EDITOR }\n    egress:\n      - host: api.example.com\n        \
                auth: { scheme: bearer, from_host: HOST_TOKEN }\n";
    let m = manifest(tmp.path(), text);
    let file = tmp.path().join("bot-bottle.yaml");
    let err = prepare(&spec(m.clone(), tmp.path()), &providers(), &host(tmp.path(), &[]), "docker")
        .expect_err("both are unset");
    assert_eq!(err.kind(), ErrorKind::MissingHostEnv);
    let message = err.to_string();
    let env = format!("{}:9:28: host variable `HOST_EDITOR` is not set (used by bottle b, env COPIED)", file.display());
    let route = format!(
        "{}:12:44: host variable `HOST_TOKEN` is not set (used by bottle b, egress route api.example.com)",
        file.display()
    );
    assert!(message.contains(&env) && message.contains(&route), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");
    // The route's credential alone is refused at its line too.
    let host = host(tmp.path(), &[("HOST_EDITOR", "vim")]);
    let err = prepare(&spec(m, tmp.path()), &providers(), &host, "docker").expect_err("HOST_TOKEN is unset");
    assert!(err.to_string().contains(&route) && !err.to_string().contains("HOST_EDITOR"), "{err}");
    assert!(host.state.list().is_empty(), "no state left behind");
}

#[test]
fn a_host_value_that_makes_the_environment_too_large_is_refused_by_name_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Eight literal entries of 120,004 bytes (`Lx=…\0`): 960,032, within the limit.
    let literals: String = (0..8).map(|i| format!("      L{i}: {}\n", "l".repeat(120_000))).collect();
    let text = format!(
        "agents:\n  dev:\n    bottle: b\nbottles:\n  b:\n    agent_provider:\n      template: shell\n    env:\n\
         {literals}      HUGE: {{ from_host: HOST_HUGE }}\n"
    );
    let m = manifest(tmp.path(), &text);
    // 125,006 bytes as `HUGE=…\0`: within one entry's limit, over the total's.
    let secret = "topsecret-".repeat(12_500);
    let host_with = |value: &str| host(tmp.path(), &[("HOST_HUGE", value)]);
    let err =
        prepare(&spec(m.clone(), tmp.path()), &providers(), &host_with(&secret), "docker").expect_err("over the total");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let message = err.to_string();
    assert!(message.contains("bottle `b`"), "names the bottle: {message}");
    assert!(message.contains("1085038 bytes") && message.contains("1048576"), "the size and the limit: {message}");
    assert!(message.contains("what Linux lets a process exec with"), "why: {message}");
    assert!(message.contains("the largest entries are HUGE (125006 bytes), L0 (120004 bytes)"), "{message}");
    assert!(!message.contains("topsecret") && !message.contains("lll"), "never a value: {message}");
    assert!(host_with("").state.list().is_empty(), "refused before anything is written");

    let plan = prepare(&spec(m, tmp.path()), &providers(), &host_with("short"), "docker").expect("fits");
    assert_eq!(plan.provision.guest_env["HUGE"], "short");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn the_summary_never_shows_a_secret(secret in "[A-Za-z0-9+/=_.-]{8,40}", plain in "[a-z]{3,10}") {
        let tmp = tempfile::tempdir().expect("tempdir");
        let host = host(tmp.path(), &[("HOST_EDITOR", &plain), ("HOST_TOKEN", &secret), ("HOST_KEY", &secret)]);
        let plan = prepare(&spec(manifest(tmp.path(), ENV_MANIFEST), tmp.path()), &providers(), &host, "docker")
            .expect("prepare");
        let summary = render_summary(&plan, &crate::fixtures::wiring(), "docker", &[]);
        prop_assert!(!summary.contains(&secret), "secret shown:\n{}", summary);
        prop_assert!(summary.contains("TOKEN=•••• (hidden)"), "{}", summary);
        prop_assert!(summary.contains(&format!("COPIED={plain}")), "{}", summary);
    }
}
