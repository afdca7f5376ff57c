//! Tests of manifest parsing: every error kind with its exact position
//! through one `check` helper, the full example, the limits, where host
//! variables are read, round-trips, discovery, and property tests (generated
//! manifests round-trip; mutated text never panics).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use yaml_rust2::parser::{Event, Parser};

use super::*;
use crate::resources::{ByteSize, Cpus, Resources};

const KNOWN: &[&str] = &["claude", "codex", "shell"];
const FILE: &str = "/m/bot-bottle.yaml";

/// The example from the manifest format's description.
const FULL: &str = r#"agents:
  reviewer:                     # name: [a-z0-9][a-z0-9-]{0,62}
    bottle: dev                 # must name a bottle below
    skills: [rust-review]
    prompt: prompts/review.md
    git_identity: { name: Review Bot, email: bot@example.com }
bottles:
  dev:
    agent_provider:
      template: claude
      dockerfile: ./agent.Dockerfile
      forward_host_credentials: false
      auth_token: ANTHROPIC_API_KEY
    env:
      RUST_LOG: info
      GH_TOKEN: { from_host: GH_TOKEN, secret: true }
      EDITOR: { from_host: EDITOR }
    egress:
      - host: api.anthropic.com
        auth: { scheme: x-api-key, from_host: ANTHROPIC_API_KEY }
      - host: "*.crates.io"
      - host: api.github.com
        methods: [get]
        paths: ["/repos/", "/user*"]
        auth: { scheme: bearer, from_host: GH_TOKEN }
      - host: "*.nexus.example"
        ports: [8081, 8443]
        auth: { scheme: basic, user: bot, from_host: NEXUS_PASSWORD }
        insecure_http: true
        wildcard_auth: true
    git:
      - Name: project
        Host: github.com
        Port: 22
        User: git
        Repo: org/project.git
        IdentityFile: /keys/bot_deploy_key
        push: { branches: ["agent/*"], force: false, delete: false, tags: false, ci: false, paths_deny: ["secrets/**"], max_push_mb: 200 }
    supervise: true
"#;

fn parse(yaml: &str) -> Result<Manifest, ManifestErrors> {
    Manifest::parse(yaml, Path::new(FILE), KNOWN)
}

/// Parses `yaml` and expects exactly `expected` errors, in order: each is
/// (`"LINE:COL: start of the message"`, a piece of the hint).
#[track_caller]
fn check(yaml: &str, expected: &[(&str, &str)]) {
    let errors = match parse(yaml) {
        Ok(manifest) => panic!("expected errors, parsed {manifest:#?}"),
        Err(errors) => errors,
    };
    let rendered: Vec<String> = errors
        .0
        .iter()
        .map(|error| {
            let text = error.to_string();
            text.strip_prefix(&format!("{FILE}:")).unwrap_or(&text).to_string()
        })
        .collect();
    assert_eq!(rendered.len(), expected.len(), "errors: {rendered:#?}");
    for (got, (start, hint)) in rendered.iter().zip(expected) {
        let (message, got_hint) = got.split_once("; ").unwrap_or((got, ""));
        assert!(message.starts_with(start), "expected `{start}`, got `{got}`");
        assert!(got_hint.contains(hint), "expected hint with `{hint}`, got `{got}`");
    }
}

/// A route to `host` with nothing but the host.
fn open_route(host: &str) -> EgressRoute {
    EgressRoute {
        host: host.to_string(),
        methods: vec![],
        paths: vec![],
        ports: vec![],
        auth: None,
        insecure_http: false,
        wildcard_auth: false,
    }
}

/// A valid manifest with `extra` appended under bottle `b`'s keys (indented 4).
fn bottle_with(extra: &str) -> String {
    format!("agents:\n  a: {{ bottle: b }}\nbottles:\n  b:\n    agent_provider: {{ template: shell }}\n{extra}")
}

#[test]
fn yaml_rust2_columns_are_zero_based_and_lines_one_based() {
    let mut parser = Parser::new_from_str("a: b\n  # c\nkey: x\n");
    let mut keys = Vec::new();
    while let Ok((event, mark)) = parser.next_token() {
        match event {
            Event::StreamEnd => break,
            Event::Scalar(text, ..) => keys.push((text, mark.line(), mark.col())),
            _ => {}
        }
    }
    let expected = [("a", 1, 0), ("b", 1, 3), ("key", 3, 0), ("x", 3, 5)];
    let expected: Vec<_> = expected.iter().map(|(t, l, c)| (t.to_string(), *l, *c)).collect();
    assert_eq!(keys, expected);
}

#[test]
fn full_example_parses_to_the_expected_structs() {
    let manifest = parse(FULL).unwrap_or_else(|errors| panic!("{errors}"));
    let env = BTreeMap::from([
        ("EDITOR".to_string(), EnvValue::FromHost { from_host: "EDITOR".to_string(), secret: false }),
        ("GH_TOKEN".to_string(), EnvValue::FromHost { from_host: "GH_TOKEN".to_string(), secret: true }),
        ("RUST_LOG".to_string(), EnvValue::Literal("info".to_string())),
    ]);
    let egress = vec![
        EgressRoute {
            host: "api.anthropic.com".to_string(),
            auth: Some(RouteAuth { scheme: AuthScheme::XApiKey, from_host: "ANTHROPIC_API_KEY".to_string() }),
            ..open_route("")
        },
        open_route("*.crates.io"),
        EgressRoute {
            host: "api.github.com".to_string(),
            methods: vec!["GET".to_string()],
            paths: vec!["/repos/".to_string(), "/user*".to_string()],
            auth: Some(RouteAuth { scheme: AuthScheme::Bearer, from_host: "GH_TOKEN".to_string() }),
            ..open_route("")
        },
        EgressRoute {
            host: "*.nexus.example".to_string(),
            ports: vec![8081, 8443],
            auth: Some(RouteAuth {
                scheme: AuthScheme::Basic { user: "bot".to_string() },
                from_host: "NEXUS_PASSWORD".to_string(),
            }),
            insecure_http: true,
            wildcard_auth: true,
            ..open_route("")
        },
    ];
    let git = vec![GitUpstream {
        name: "project".to_string(),
        host: "github.com".to_string(),
        port: 22,
        user: "git".to_string(),
        repo: "org/project.git".to_string(),
        identity_file: PathBuf::from("/keys/bot_deploy_key"),
        push: PushPolicy {
            branches: vec!["agent/*".to_string()],
            paths_deny: vec!["secrets/**".to_string()],
            max_push_mb: 200,
            ..PushPolicy::default()
        },
    }];
    let expected = Manifest {
        agents: BTreeMap::from([(
            "reviewer".to_string(),
            AgentDef {
                bottle: "dev".to_string(),
                skills: vec!["rust-review".to_string()],
                prompt: Some(PathBuf::from("/m/prompts/review.md")),
                git_identity: Some(GitIdentity {
                    name: "Review Bot".to_string(),
                    email: "bot@example.com".to_string(),
                }),
                pool: None,
            },
        )]),
        bottles: BTreeMap::from([(
            "dev".to_string(),
            BottleDef {
                agent_provider: AgentProviderDef {
                    template: "claude".to_string(),
                    dockerfile: Some(PathBuf::from("/m/agent.Dockerfile")),
                    image_archive: None,
                    forward_host_credentials: false,
                    auth_token: Some("ANTHROPIC_API_KEY".to_string()),
                },
                env,
                egress,
                git,
                supervise: crate::manifest::Supervise::on(),
                resources: Default::default(),
            },
        )]),
        kubernetes: None,
        source: ManifestSource::File(PathBuf::from(FILE)),
        host_vars: Vec::new(),
    };
    assert_eq!(manifest, expected);
    // `./` is normalised away, not just equal by components.
    let dockerfile = manifest.bottles["dev"].agent_provider.dockerfile.as_ref().map(|path| path.display().to_string());
    assert_eq!(dockerfile.as_deref(), Some("/m/agent.Dockerfile"));
}

#[test]
fn defaults_and_literal_scalars() {
    let yaml = bottle_with(
        "    env: { N: 1.50, B: true, H: 0x1F, S: '007' }\n    git:\n      - { Name: p, Host: 10.0.0.1, Repo: r, IdentityFile: k }\n",
    );
    let manifest = parse(&yaml).unwrap_or_else(|errors| panic!("{errors}"));
    let bottle = &manifest.bottles["b"];
    let literal = |name: &str| bottle.env[name].clone();
    assert_eq!(literal("N"), EnvValue::Literal("1.50".to_string()));
    assert_eq!(literal("B"), EnvValue::Literal("true".to_string()));
    assert_eq!(literal("H"), EnvValue::Literal("0x1F".to_string()));
    assert_eq!(literal("S"), EnvValue::Literal("007".to_string()));
    let git = &bottle.git[0];
    assert_eq!((git.port, git.user.as_str(), git.push.clone()), (22, "git", PushPolicy::default()));
    assert_eq!(git.identity_file, PathBuf::from("/m/k"));
    assert!(!bottle.supervise.enabled && !bottle.agent_provider.forward_host_credentials);
    assert_eq!(manifest.agents["a"].skills, Vec::<String>::new());
}

#[test]
fn identity_file_expands_home() {
    let Some(home) = std::env::var_os("HOME").filter(|home| !home.is_empty()) else {
        eprintln!("skipped: HOME is not set");
        return;
    };
    let yaml = bottle_with("    git:\n      - { Name: p, Host: h, Repo: r, IdentityFile: ~/.ssh/key }\n");
    let manifest = parse(&yaml).unwrap_or_else(|errors| panic!("{errors}"));
    let expected = std::path::absolute(Path::new(&home).join(".ssh/key")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(manifest.bottles["b"].git[0].identity_file, expected);
}

#[test]
fn unknown_keys_suggest_the_closest() {
    check(
        "agents:\n  reviewer:\n    bottel: dev\nbottles:\n  dev:\n    agent_provider: { template: claude }\n",
        &[
            ("2:3: missing required key `bottle` in `agents.reviewer`", "add `bottle:`"),
            ("3:5: unknown key `bottel` in `agents.reviewer`", "did you mean `bottle`? allowed keys: bottle, skills"),
        ],
    );
    check(
        "agent:\n  a: { bottle: b }\nbottles: {}\n",
        &[
            ("1:1: unknown key `agent` in the top level", "did you mean `agents`?"),
            ("1:1: missing required key `agents` in the top level", "add `agents:`"),
        ],
    );
    check(&bottle_with("    egres: []\n"), &[("6:5: unknown key `egres`", "did you mean `egress`?")]);
    check(
        &bottle_with("    git:\n      - { name: p, Host: h, Repo: r, IdentityFile: k }\n"),
        &[
            ("7:9: missing required key `Name` in `bottles.b.git[0]`", "add `Name:`"),
            ("7:11: unknown key `name`", "did you mean `Name`?"),
        ],
    );
    check(
        &bottle_with("    colour: red\n"),
        &[("6:5: unknown key `colour`", "allowed keys: agent_provider, env, egress, git, supervise")],
    );
}

#[test]
fn wrong_types() {
    check(
        "agents:\n  a:\n    bottle: b\n    skills: {x: y}\nbottles:\n  b:\n    agent_provider: {template: shell}\n",
        &[("4:13: expected a list of strings, found a mapping", "`[a, b]`")],
    );
    check(
        &bottle_with("    supervise: yes\n"),
        &[("6:16: expected true or false, found a string", "YAML 1.2 reads `yes` as text")],
    );
    check(
        "agents:\n  a: { bottle: 12 }\nbottles: {}\n",
        &[("2:16: expected a string, found a number", "quote it: \"12\"")],
    );
    check(
        &bottle_with("    env: [A]\n"),
        &[("6:10: expected a mapping of variable names to values, found a list", "")],
    );
    check(&bottle_with("    egress: { host: x }\n"), &[("6:13: expected a list of routes, found a mapping", "")]);
    check(
        &bottle_with("    env:\n      A: [1]\n"),
        &[("7:10: expected a value or `{ from_host: NAME }`, found a list", "")],
    );
    check(
        &bottle_with("    env:\n      A:\n"),
        &[("7:7: expected a value or `{ from_host: NAME }`, found nothing", "")],
    );
    check("- a\n", &[("1:1: expected a mapping, found a list", "allowed keys: agents, bottles")]);
    check(
        "agents:\n  a: !custom { bottle: b }\nbottles: {}\n",
        &[("2:14: expected a mapping, found a value tagged `!custom`", "")],
    );
    check(
        &bottle_with("    git:\n      - { Name: p, Host: h, Repo: r, IdentityFile: k, Port: \"22\" }\n"),
        &[("7:61: expected a port number, found a string", "22")],
    );
}

#[test]
fn bad_names() {
    check(
        "agents:\n  Reviewer: { bottle: b }\nbottles:\n  b: { agent_provider: { template: shell } }\n",
        &[("2:3: `Reviewer` is not a valid agent name", "names match [a-z0-9][a-z0-9-]{0,62}")],
    );
    check(
        "agents:\n  a: { bottle: -b }\nbottles:\n  -b: { agent_provider: { template: shell } }\n",
        &[("4:3: `-b` is not a valid bottle name", "[a-z0-9][a-z0-9-]{0,62}")],
    );
    let long = "x".repeat(64);
    check(
        &format!("agents:\n  {long}: {{ bottle: b }}\nbottles:\n  b: {{ agent_provider: {{ template: shell }} }}\n"),
        &[("2:3: `xxxx", "at most 63")],
    );
    check(
        &bottle_with("    git:\n      - { Name: P_1, Host: h, Repo: r, IdentityFile: k }\n"),
        &[("7:17: `P_1` is not a valid git upstream name", "[a-z0-9]")],
    );
    check(
        "agents:\n  a:\n    bottle: b\n    skills: [ok, ../x, a/b, '..']\nbottles:\n  b: { agent_provider: { template: shell } }\n",
        &[
            ("4:18: `../x` is not a plain skill name", "~/.claude/skills/"),
            ("4:24: `a/b` is not a plain skill name", ""),
            ("4:29: `..` is not a plain skill name", ""),
        ],
    );
}

#[test]
fn agent_naming_a_missing_bottle_lists_the_defined_ones() {
    check(
        "agents:\n  a:\n    bottle: dve\nbottles:\n  dev: { agent_provider: { template: shell } }\n  ci: { agent_provider: { template: shell } }\n",
        &[("3:13: bottle `dve` is not defined", "did you mean `dev`? defined bottles: dev, ci")],
    );
    check(
        "agents:\n  a: { bottle: x }\nbottles: {}\n",
        &[("2:16: bottle `x` is not defined", "no bottles are defined")],
    );
}

#[test]
fn agents_must_not_be_empty_but_bottles_may_be_unused() {
    check(
        "agents: {}\nbottles:\n  b: { agent_provider: { template: shell } }\n",
        &[("1:1: no agents are defined", "add an agent")],
    );
    check("agents:\nbottles: {}\n", &[("1:1: no agents are defined", "")]);
    let yaml = "agents:\n  a: { bottle: b }\nbottles:\n  b: { agent_provider: { template: shell } }\n  unused: { agent_provider: { template: codex } }\n";
    assert_eq!(parse(yaml).map(|manifest| manifest.bottles.len()), Ok(2));
}

#[test]
fn missing_required_keys_point_at_the_parent_key() {
    check(
        "agents:\n  a: { bottle: b }\nbottles:\n  b:\n    env: {}\n",
        &[("4:3: missing required key `agent_provider` in `bottles.b`", "add `agent_provider:`")],
    );
    check(
        "agents:\n  a: { bottle: b }\nbottles:\n  b:\n    agent_provider:\n      dockerfile: x\n",
        &[("5:5: missing required key `template` in `bottles.b.agent_provider`", "")],
    );
    check("bottles: {}\n", &[("1:1: missing required key `agents` in the top level", "")]);
    check(
        &bottle_with("    egress:\n      - methods: [GET]\n"),
        &[("7:9: missing required key `host` in `bottles.b.egress[0]`", "add `host:`")],
    );
    check(
        &bottle_with("    git:\n      - Name: p\n        Host: h\n"),
        &[
            ("7:9: missing required key `Repo` in `bottles.b.git[0]`", ""),
            ("7:9: missing required key `IdentityFile` in `bottles.b.git[0]`", ""),
        ],
    );
    check(
        "agents:\n  a:\n    bottle: b\n    git_identity: { name: x }\nbottles:\n  b: { agent_provider: { template: shell } }\n",
        &[("4:5: missing required key `email` in `agents.a.git_identity`", "")],
    );
}

#[test]
fn unknown_template_lists_known_ones() {
    check(
        "agents:\n  a: { bottle: b }\nbottles:\n  b:\n    agent_provider: { template: clade }\n",
        &[(
            "5:33: unknown agent provider template `clade`",
            "did you mean `claude`? known templates: claude, codex, shell",
        )],
    );
    check(
        "agents:\n  a: { bottle: b }\nbottles:\n  b:\n    agent_provider: { template: vim }\n",
        &[("5:33: unknown agent provider template `vim`", "known templates: claude, codex, shell")],
    );
}

#[test]
fn duplicate_git_names() {
    let git = "    git:\n      - Name: p\n        Host: github.com\n        Repo: o/p.git\n        IdentityFile: /k\n      - Name: p\n        Host: github.com\n        Repo: o/q.git\n        IdentityFile: /k\n";
    check(&bottle_with(git), &[("11:15: duplicate git upstream name `p`", "already used at line 7")]);
}

#[test]
fn auth_schemes() {
    let route = |auth: &str| bottle_with(&format!("    egress:\n      - host: x.com\n        auth: {auth}\n"));
    check(
        &route("{ scheme: token, from_host: T }"),
        &[("8:25: unknown auth scheme `token`", "auth schemes: bearer, x-api-key, basic, header")],
    );
    check(
        &route("{ scheme: Bearer, from_host: T }"),
        &[("8:25: unknown auth scheme `Bearer`", "did you mean `bearer`?")],
    );
    check(
        &route("{ scheme: header, from_host: T }"),
        &[(
            "8:9: missing required key `header` in `bottles.b.egress[0].auth`",
            "`scheme: header` needs `header: Header-Name`",
        )],
    );
    check(
        &route("{ scheme: basic, from_host: T }"),
        &[("8:9: missing required key `user`", "the token is the password")],
    );
    check(
        &route("{ scheme: bearer, header: X-Key, from_host: T }"),
        &[("8:33: `header` is only used with `scheme: header`", "remove `header`")],
    );
    check(
        &route("{ scheme: header, header: 'X Key', user: u, from_host: T }"),
        &[("8:41: `X Key` is not an HTTP header name", ""), ("8:50: `user` is only used with `scheme: basic`", "")],
    );
    check(
        &route("{ scheme: bearer, from_host: 1T }"),
        &[("8:44: `1T` is not a valid host environment variable name", "[A-Za-z_][A-Za-z0-9_]*")],
    );
    let manifest = parse(&route("{ scheme: basic, user: bot, from_host: T }")).unwrap_or_else(|e| panic!("{e}"));
    let auth = manifest.bottles["b"].egress[0].auth.clone().map(|auth| auth.scheme);
    assert_eq!(auth, Some(AuthScheme::Basic { user: "bot".to_string() }));
    let manifest = parse(&route("{ scheme: header, header: X-Key, from_host: T }")).unwrap_or_else(|e| panic!("{e}"));
    let auth = manifest.bottles["b"].egress[0].auth.clone().map(|auth| auth.scheme);
    assert_eq!(auth, Some(AuthScheme::Header { name: "X-Key".to_string() }));
}

#[test]
fn egress_hosts() {
    let host = |host: &str| bottle_with(&format!("    egress:\n      - host: {host}\n"));
    let just = "write just the host name, e.g. `api.github.com`";
    check(&host("https://api.github.com/x"), &[("7:15: `https://api.github.com/x` includes a URL scheme", just)]);
    check(&host("api.github.com/repos"), &[("7:15: `api.github.com/repos` includes a path", just)]);
    check(&host("api.github.com:443"), &[("7:15: `api.github.com:443` includes a port", just)]);
    check(&host("'api.github .com'"), &[("7:15: `api.github .com` contains whitespace", just)]);
    check(&host("Api.GitHub.com"), &[("7:15: `Api.GitHub.com` is not lower case", "write `api.github.com`")]);
    check(&host("foo.*.com"), &[("7:15: `foo.*.com`: only a leading `*.` wildcard is allowed", "`*.example.com`")]);
    check(&host("'*crates.io'"), &[("7:15: `*crates.io`: only a leading `*.` wildcard", "")]);
    check(&host("'*'"), &[("7:15: `*`: only a leading `*.` wildcard", "")]);
    check(&host("-bad.com"), &[("7:15: `-bad.com` is not a valid host name", "dot-separated labels")]);
    check(&host("''"), &[("7:15: the host is empty", "")]);
    for ok in ["'*.crates.io'", "10.0.0.1", "'::1'", "'[::1]'", "localhost"] {
        assert!(parse(&host(ok)).is_ok(), "{ok} should be a valid host");
    }
    let git_host = bottle_with("    git:\n      - { Name: p, Host: '*.github.com', Repo: r, IdentityFile: k }\n");
    check(&git_host, &[("7:26: `*.github.com`: wildcards are not allowed here", "")]);
}

#[test]
fn a_wildcard_route_takes_auth_only_with_wildcard_auth() {
    let route = |extra: &str| {
        bottle_with(&format!(
            "    egress:\n      - host: '*.example.com'\n        auth: {{ scheme: bearer, from_host: T }}\n{extra}"
        ))
    };
    check(
        &route(""),
        &[(
            "8:9: `auth` on the wildcard route `*.example.com` sends the credential to every host under example.com",
            "name the host exactly (e.g. `api.example.com`), or add `wildcard_auth: true` to this route",
        )],
    );
    check(&route("        wildcard_auth: false\n"), &[("8:9: `auth` on the wildcard route `*.example.com`", "")]);
    check(
        &route("        wildcard_auth: yes\n"),
        &[("8:9: `auth` on the wildcard route", ""), ("9:24: expected true or false", "YAML 1.2")],
    );
    let manifest = parse(&route("        wildcard_auth: true\n")).unwrap_or_else(|e| panic!("{e}"));
    assert!(manifest.bottles["b"].egress[0].wildcard_auth);

    let exact = "    egress:\n      - host: api.example.com\n        auth: { scheme: bearer, from_host: T }\n        wildcard_auth: true\n";
    check(
        &bottle_with(exact),
        &[("9:9: `wildcard_auth` only applies to a route whose host starts with `*.`", "remove `wildcard_auth`")],
    );
    let no_auth = "    egress:\n      - host: '*.example.com'\n        wildcard_auth: true\n";
    check(
        &bottle_with(no_auth),
        &[("8:9: `wildcard_auth` only applies to a route with `auth`", "add the route's `auth`")],
    );
}

#[test]
fn insecure_http_needs_auth() {
    let route = |extra: &str| bottle_with(&format!("    egress:\n      - host: x.com\n{extra}"));
    check(
        &route("        insecure_http: true\n"),
        &[(
            "8:9: `insecure_http` only applies to a route with `auth`",
            "remove `insecure_http`, or add the route's `auth`",
        )],
    );
    check(&route("        insecure_http: 1\n"), &[("8:24: expected true or false, found a number", "")]);
    assert!(parse(&route("        insecure_http: false\n")).is_ok());
    let manifest = parse(&route("        auth: { scheme: bearer, from_host: T }\n        insecure_http: true\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(manifest.bottles["b"].egress[0].insecure_http);
    check(
        &route("        insecure_htp: true\n"),
        &[("8:9: unknown key `insecure_htp`", "did you mean `insecure_http`?")],
    );
}

#[test]
fn route_ports() {
    let route = |ports: &str| bottle_with(&format!("    egress:\n      - host: x.com\n        ports: {ports}\n"));
    check(
        &route("[443, 0, 70000]"),
        &[
            ("8:22: port 0 is out of range", "between 1 and 65535"),
            ("8:25: port 70000 is out of range", "between 1 and 65535"),
        ],
    );
    check(&route("[https]"), &[("8:17: expected a port number, found a string", "such as 443")]);
    check(&route("443"), &[("8:16: expected a list of ports, found a number", "one `- item` line per entry")]);
    check(
        &route("[]"),
        &[("8:16: `ports` is empty, so the route allows no port", "remove `ports` to allow every port")],
    );
    let manifest = parse(&route("[443, 8443]")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(manifest.bottles["b"].egress[0].ports, [443, 8443]);
    assert!(parse(&route("")).is_ok_and(|m| m.bottles["b"].egress[0].ports.is_empty()), "`ports:` alone is no list");
    check(&route("[443]\n        port: [1]"), &[("9:9: unknown key `port`", "did you mean `ports`?")]);
}

#[test]
fn the_kubernetes_section_is_checked_where_it_is_written() {
    let with = |section: &str| {
        format!(
            "agents:\n  a: {{ bottle: b }}\nbottles:\n  b:\n    agent_provider: {{ template: shell }}\nkubernetes:\n{section}"
        )
    };
    let manifest = parse(&with(
        "  namespace: agents\n  runtime_class: gvisor\n  image_registry: registry.example.com:5000/team\n  \
         node_selector: { pool: sandboxes, example.com/tier: \"1\" }\n  unenforced_ok: true\n",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let k8s = manifest.kubernetes.clone().expect("the section");
    assert_eq!(
        k8s,
        KubernetesDef {
            namespace: "agents".into(),
            runtime_class: Some("gvisor".into()),
            image_registry: Some("registry.example.com:5000/team".into()),
            node_selector: BTreeMap::from([
                ("example.com/tier".into(), "1".into()),
                ("pool".into(), "sandboxes".into())
            ]),
            unenforced_ok: true,
        }
    );
    let reparsed = parse(&manifest.to_yaml()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reparsed.kubernetes, Some(k8s), "the section round-trips");
    let empty = parse(&with("")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(empty.kubernetes, Some(KubernetesDef::default()), "an empty section takes every default");
    assert_eq!(KubernetesDef::default().namespace, DEFAULT_NAMESPACE);
    check(
        &with("  namespace: Bots_1\n  runtime_class: \"-bad\"\n  image_registry: https://r.example\n"),
        &[
            ("7:14: `Bots_1` is not a valid Kubernetes namespace name", "a namespace is a DNS label"),
            ("8:18: `-bad` is not a valid RuntimeClass name", "kubectl get runtimeclass"),
            ("9:19: `https://r.example`: a registry has no scheme", "registry.example.com/team"),
        ],
    );
    check(
        &with("  node_selector: { \"bad key!\": x, pool: \"-x\" }\n  unenforced_ok: yes\n  namspace: x\n"),
        &[
            ("7:20: `bad key!` is not a valid node label key", "example.com/pool"),
            ("7:41: `-x` is not a valid node label value", "starting and ending"),
            ("8:18: expected true or false, found a string", "write `true` or `false`"),
            ("9:3: unknown key `namspace`", "did you mean `namespace`?"),
        ],
    );
    check(&with("  - namespace\n"), &[("7:3: expected a mapping, found a list", "allowed keys: namespace")]);
}

#[test]
fn methods_and_paths() {
    let route = |extra: &str| bottle_with(&format!("    egress:\n      - host: x.com\n        {extra}\n"));
    check(
        &route("methods: [GET, 'P UT', '']"),
        &[("8:24: `P UT` is not an HTTP method", "GET or POST"), ("8:32: `` is not an HTTP method", "")],
    );
    check(&route("paths: [/ok, repos]"), &[("8:22: `repos` is not a URL path", "starting with `/`")]);
    check(&route("methods: GET"), &[("8:18: expected a list of strings, found a string", "")]);
    let manifest = parse(&route("methods: [get, Post, PATCH]")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(manifest.bottles["b"].egress[0].methods, ["GET", "POST", "PATCH"]);
}

#[test]
fn env_names_and_values() {
    check(
        &bottle_with("    env:\n      BOT_BOTTLE_X: 1\n      1X: a\n      A: { from_host: B-C, secret: maybe }\n"),
        &[
            ("7:7: `BOT_BOTTLE_X` starts with the reserved prefix `BOT_BOTTLE_`", "choose another name"),
            ("8:7: `1X` is not a valid bottle environment variable name", "[A-Za-z_][A-Za-z0-9_]*"),
            ("9:23: `B-C` is not a valid host environment variable name", ""),
            ("9:36: expected true or false, found a string", ""),
        ],
    );
    check(
        &bottle_with("    env:\n      A: { secret: true, form_host: X }\n"),
        &[
            ("7:7: missing required key `from_host` in `bottles.b.env.A`", ""),
            ("7:26: unknown key `form_host`", "did you mean `from_host`?"),
        ],
    );
    check(
        "agents:\n  a: { bottle: b }\nbottles:\n  b:\n    agent_provider: { template: shell, auth_token: $KEY }\n",
        &[("5:52: `$KEY` is not a valid host environment variable name", "")],
    );
}

#[test]
fn git_upstream_values() {
    let git =
        |fields: &str| bottle_with(&format!("    git:\n      - {{ Name: p, Host: h, IdentityFile: k, {fields} }}\n"));
    check(&git("Repo: /abs.git"), &[("7:52: `/abs.git` starts with `/`", "`org/project.git`")]);
    check(&git("Repo: a/../b"), &[("7:52: `a/../b` contains `..`", "")]);
    check(&git("Repo: 'ssh://h/x'"), &[("7:52: `ssh://h/x` is a URL", "")]);
    check(&git("Repo: r, Port: 0"), &[("7:61: port 0 is out of range", "between 1 and 65535")]);
    check(&git("Repo: r, Port: 70000"), &[("7:61: port 70000 is out of range", "")]);
    check(&git("Repo: r, User: 'a b'"), &[("7:61: `a b` is not a valid SSH user", "`git`")]);
    check(&git("Repo: r, IdentityFile2: x"), &[("7:55: unknown key `IdentityFile2`", "did you mean `IdentityFile`?")]);
    check(
        &git("Repo: r, push: { branches: ['a b', ok/*], force: 1, tag: true }"),
        &[
            ("7:74: `a b` is not a valid branch pattern", "`agent/*`"),
            ("7:95: expected true or false, found a number", ""),
            ("7:98: unknown key `tag`", "did you mean `tags`?"),
        ],
    );
    check(
        &git("Repo: r, push: { ci: 'no', paths_deny: secrets, max_push_mb: '10' }"),
        &[
            ("7:67: expected true or false, found a string", "YAML 1.2 reads `no` as text"),
            ("7:85: expected a list of strings, found a string", "`- item`"),
            ("7:107: expected a number of megabytes, found a string", "drop the quotes: 10"),
        ],
    );
    check(
        &git("Repo: r, push: { paths_deny: ['/etc', 'a/', 'a/../b', '[ab]', ok/**], max_push_mb: 0 }"),
        &[
            ("7:76: `/etc` starts with `/`", "`secrets/**`"),
            ("7:84: `a/` ends with `/`", ""),
            ("7:90: `a/../b` has an empty, `.` or `..` component", ""),
            ("7:100: `[ab]` uses `[` or `\\`", ""),
            ("7:129: 0 megabytes is out of range", "between 1 and 1048576"),
        ],
    );
    check(
        &git("Repo: r, push: { max_push_mb: 1.5, path_deny: [], max_push: 1, CI: true }"),
        &[
            ("7:76: 1.5 megabytes is out of range", "whole number"),
            ("7:81: unknown key `path_deny`", "did you mean `paths_deny`?"),
            ("7:96: unknown key `max_push`", "did you mean `max_push_mb`?"),
            ("7:109: unknown key `CI`", "did you mean `ci`?"),
        ],
    );
    let host = bottle_with("    git:\n      - { Name: p, Host: 'github.com:22', Repo: r, IdentityFile: k }\n");
    check(&host, &[("7:26: `github.com:22` includes a port", "`github.com`")]);
    check(
        &bottle_with("    git:\n      - { Name: p, Host: h, Repo: r, IdentityFile: ~root/k }\n"),
        &[("7:52: `~root/k`: only a leading `~/` is expanded", "an absolute path")],
    );
}

#[test]
fn paths_resolve_against_the_manifest_folder() {
    let yaml = "agents:\n  a: { bottle: b, prompt: ../p.md }\nbottles:\n  b: { agent_provider: { template: shell, dockerfile: /abs/D } }\n";
    let manifest = parse(yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(manifest.agents["a"].prompt, Some(PathBuf::from("/m/../p.md")));
    assert_eq!(manifest.bottles["b"].agent_provider.dockerfile, Some(PathBuf::from("/abs/D")));
    check(
        "agents:\n  a: { bottle: b, prompt: '' }\nbottles:\n  b: { agent_provider: { template: shell } }\n",
        &[("2:27: the path is empty", "")],
    );
    check(
        "agents:\n  a: { bottle: b, prompt: ~bot/p }\nbottles:\n  b: { agent_provider: { template: shell } }\n",
        &[("2:27: `~bot/p`: only a leading `~/` is expanded", "")],
    );
    // `prompt:` with no value is the same as leaving it out.
    let yaml = "agents:\n  a:\n    bottle: b\n    prompt:\nbottles:\n  b: { agent_provider: { template: shell } }\n";
    assert_eq!(parse(yaml).map(|manifest| manifest.agents["a"].prompt.clone()), Ok(None));
}

#[test]
fn git_identity_values() {
    let agent = |identity: &str| {
        format!(
            "agents:\n  a:\n    bottle: b\n    git_identity: {identity}\nbottles:\n  b: {{ agent_provider: {{ template: shell }} }}\n"
        )
    };
    check(
        &agent("{ name: '<x>', email: nope }"),
        &[
            ("4:27: `<x>` is not a usable git user name", ""),
            ("4:41: `nope` is not an email address", "`bot@example.com`"),
        ],
    );
}

#[test]
fn all_problems_are_reported_in_file_order() {
    let yaml = "agents:\n  a:\n    bottle: b\n    skils: []\nbottles:\n  b:\n    agent_provider: { template: bash }\n    egress:\n      - host: https://x.com\n";
    check(
        yaml,
        &[
            ("4:5: unknown key `skils`", "did you mean `skills`?"),
            ("7:33: unknown agent provider template `bash`", ""),
            ("9:15: `https://x.com` includes a URL scheme", "`x.com`"),
        ],
    );
}

#[test]
fn yaml_syntax_errors_have_positions() {
    check("agents:\n  a: [1, 2\nbottles: {}\n", &[("3:8: invalid YAML: did not find expected ',' or ']'", "syntax")]);
    check("agents:\n  a: 'open\n", &[("3:1: invalid YAML: found unexpected end of stream", "")]);
    check("agents:\n\ta: {}\n", &[("2:1: invalid YAML: found character that cannot start any token", "tabs")]);
    check(
        "agents:\n  a: { bottle: b }\n  a: { bottle: c }\nbottles: {}\n",
        &[("3:3: duplicate key `a` in `agents`", "`a` is already set at line 2")],
    );
    check("agents: {}\nagents: {}\n", &[("2:1: duplicate key `agents` in the top level", "line 1")]);
    check("agents: {}\n---\nbottles: {}\n", &[("2:1: the manifest holds more than one YAML document", "`---`")]);
    check("", &[("1:1: the manifest is empty", "`agents:`")]);
    check("# only a comment\n", &[("1:1: the manifest is empty", "")]);
}

#[test]
fn display_formats() {
    let error = ManifestError {
        file: PathBuf::from("m.yaml"),
        line: 3,
        column: 7,
        message: "bad".to_string(),
        hint: "fix it".to_string(),
    };
    assert_eq!(error.to_string(), "m.yaml:3:7: bad; fix it");
    let errors = ManifestErrors(vec![error.clone(), ManifestError { line: 4, ..error }]);
    assert_eq!(errors.to_string(), "m.yaml:3:7: bad; fix it\nm.yaml:4:7: bad; fix it");
    assert_eq!(ManifestSource::Embedded.to_string(), "the embedded default manifest");
    assert_eq!(ManifestSource::File(PathBuf::from("/a.yaml")).to_string(), "/a.yaml");
}

#[test]
fn embedded_default_is_valid() {
    let manifest = Manifest::embedded_default(KNOWN);
    assert_eq!(manifest.source, ManifestSource::Embedded);
    assert_eq!(manifest.agents.keys().collect::<Vec<_>>(), ["shell"]);
    let bottle = &manifest.bottles["shell"];
    assert_eq!(manifest.agents["shell"].bottle, "shell");
    assert_eq!(bottle.agent_provider.template, "shell");
    assert!(bottle.env.is_empty() && bottle.egress.is_empty() && bottle.git.is_empty() && !bottle.supervise.enabled);
}

#[test]
fn load_reports_unreadable_files() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let missing = dir.path().join("missing.yaml");
    let errors = Manifest::load(&missing, KNOWN).err().map(|errors| errors.0);
    let error = errors.as_deref().and_then(<[ManifestError]>::first).cloned();
    let error = error.unwrap_or_else(|| panic!("expected an error"));
    assert_eq!((error.line, error.column, error.file), (1, 1, missing));
    assert!(error.message.starts_with("cannot read the manifest"), "{}", error.message);

    let latin1 = dir.path().join("latin1.yaml");
    std::fs::write(&latin1, b"agents:\n  caf\xe9: {}\n").unwrap_or_else(|e| panic!("{e}"));
    let errors = Manifest::load(&latin1, KNOWN).err().map(|errors| errors.0).unwrap_or_default();
    assert_eq!(errors.iter().map(|e| (e.line, e.column)).collect::<Vec<_>>(), [(2, 6)]);

    let good = dir.path().join("good.yaml");
    std::fs::write(&good, FULL.replace("prompts/review.md", "p.md")).unwrap_or_else(|e| panic!("{e}"));
    let manifest = Manifest::load(&good, KNOWN).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(manifest.source, ManifestSource::File(good.clone()));
    assert_eq!(manifest.agents["reviewer"].prompt, Some(dir.path().join("p.md")));
}

#[test]
fn to_yaml_round_trips_and_matches_the_serde_shape() {
    let manifest = parse(FULL).unwrap_or_else(|e| panic!("{e}"));
    let yaml = manifest.to_yaml();
    assert_eq!(parse(&yaml), Ok(manifest.clone()), "{yaml}");
    assert!(yaml.contains("IdentityFile: /keys/bot_deploy_key"), "{yaml}");
    assert!(yaml.contains("scheme: x-api-key"), "{yaml}");
    let derived: Manifest = serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(derived, Manifest { source: ManifestSource::Embedded, ..manifest });
}

#[test]
fn json_schema_describes_the_yaml_shape() {
    let schema = Manifest::json_schema();
    let text = schema.to_string();
    let at = |pointer: &str| schema.pointer(pointer).cloned().unwrap_or_else(|| panic!("no {pointer} in {text}"));
    assert_eq!(at("/required"), serde_json::json!(["agents", "bottles"]));
    assert_eq!(at("/additionalProperties"), serde_json::json!(false));
    assert!(schema.pointer("/properties/source").is_none(), "{text}");
    assert_eq!(at("/properties/agents/minProperties"), serde_json::json!(1));
    let git = at("/$defs/GitUpstream/properties");
    for key in ["Name", "Host", "Port", "User", "Repo", "IdentityFile", "push"] {
        assert!(git.get(key).is_some(), "GitUpstream lacks {key}: {git}");
    }
    assert_eq!(at("/$defs/GitUpstream/properties/Port/default"), serde_json::json!(22));
    assert_eq!(at("/$defs/PushPolicy/properties/max_push_mb/default"), serde_json::json!(1024));
    assert_eq!(at("/$defs/PushPolicy/properties/ci/default"), serde_json::json!(false));
    let env = at("/$defs/EnvValue/anyOf");
    assert!(env.to_string().contains("from_host") && env.to_string().contains("\"string\""), "{env}");
    let route = at("/$defs/EgressRoute/properties");
    assert_eq!(route["ports"]["items"]["minimum"], 1, "{route}");
    assert_eq!(route["ports"]["items"]["maximum"], 65535, "{route}");
    assert_eq!(route["ports"]["minItems"], 1, "{route}");
    for flag in ["insecure_http", "wildcard_auth"] {
        assert_eq!(route[flag]["type"], "boolean", "{route}");
    }
    let auth = at("/$defs/RouteAuth").to_string();
    for scheme in ["bearer", "x-api-key", "basic", "header"] {
        assert!(auth.contains(&format!("\"{scheme}\"")), "RouteAuth lacks {scheme}: {auth}");
    }
}

#[test]
fn discovery_order() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cwd = dir.path().join("work");
    let home = dir.path().join("home");
    let xdg = dir.path().join("xdg");
    for sub in [&cwd, &home.join(".config/bot-bottle"), &xdg.join("bot-bottle")] {
        std::fs::create_dir_all(sub).unwrap_or_else(|e| panic!("{e}"));
    }
    let vars = |pairs: &[(&str, &Path)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.display().to_string())).collect()
    };
    let discover = |explicit: Option<&Path>, vars: &BTreeMap<String, String>| {
        discover_manifest(explicit, &|name| vars.get(name).cloned(), &cwd)
    };
    let home_vars = vars(&[("HOME", &home)]);
    let all_vars = vars(&[("HOME", &home), ("XDG_CONFIG_HOME", &xdg), ("BOT_BOTTLE_MANIFEST", Path::new("env.yaml"))]);

    // Nothing exists: the embedded default.
    assert_eq!(discover(None, &home_vars), None);
    assert_eq!(discover(None, &BTreeMap::new()), None);
    // $HOME/.config when XDG_CONFIG_HOME is unset.
    let home_manifest = home.join(".config/bot-bottle/manifest.yaml");
    std::fs::write(&home_manifest, "").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(discover(None, &home_vars), Some(home_manifest.clone()));
    // XDG_CONFIG_HOME wins over $HOME/.config, even when it has no manifest.
    let xdg_vars = vars(&[("HOME", &home), ("XDG_CONFIG_HOME", &xdg)]);
    assert_eq!(discover(None, &xdg_vars), None);
    let xdg_manifest = xdg.join("bot-bottle/manifest.yaml");
    std::fs::write(&xdg_manifest, "").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(discover(None, &xdg_vars), Some(xdg_manifest));
    // ./bot-bottle.yaml wins over the config folder.
    let local = cwd.join("bot-bottle.yaml");
    std::fs::write(&local, "").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(discover(None, &xdg_vars), Some(local));
    // $BOT_BOTTLE_MANIFEST (relative to cwd, even if missing) wins over that.
    assert_eq!(discover(None, &all_vars), Some(cwd.join("env.yaml")));
    // An explicit path wins over everything.
    assert_eq!(discover(Some(Path::new("/x/m.yaml")), &all_vars), Some(PathBuf::from("/x/m.yaml")));
    assert_eq!(discover(Some(Path::new("rel.yaml")), &all_vars), Some(cwd.join("rel.yaml")));
}

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{0,8}"
}

fn env_name() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,8}".prop_filter("reserved", |name| !name.starts_with("BOT_BOTTLE_"))
}

fn abs_path() -> impl Strategy<Value = PathBuf> {
    "(/[a-z_][a-z0-9._-]{0,6}){1,3}".prop_map(PathBuf::from)
}

fn env_value() -> impl Strategy<Value = EnvValue> {
    let tricky = prop::sample::select(vec![
        "yes", "null", "~", "1.0", "0x10", " pad ", "a: b", "#x", "- x", "", "'q'", "\"", "\n",
    ]);
    prop_oneof![
        "[^\u{0}]{0,12}".prop_map(EnvValue::Literal),
        tricky.prop_map(|text| EnvValue::Literal(text.to_string())),
        (env_name(), any::<bool>()).prop_map(|(from_host, secret)| EnvValue::FromHost { from_host, secret }),
    ]
}

fn host() -> impl Strategy<Value = String> {
    let dns = "[a-z0-9]([a-z0-9-]{0,5}[a-z0-9])?(\\.[a-z0-9]{1,6}){0,2}";
    prop_oneof![
        dns.prop_map(|host: String| host),
        dns.prop_map(|host: String| format!("*.{host}")),
        any::<[u8; 4]>().prop_map(|[a, b, c, d]| format!("{a}.{b}.{c}.{d}")),
    ]
}

fn route() -> impl Strategy<Value = EgressRoute> {
    let scheme = prop_oneof![
        Just(AuthScheme::Bearer),
        Just(AuthScheme::XApiKey),
        "[a-z][a-z0-9._-]{0,6}".prop_map(|user| AuthScheme::Basic { user }),
        "[A-Za-z][A-Za-z0-9-]{0,8}".prop_map(|name| AuthScheme::Header { name }),
    ];
    let auth = prop::option::of((scheme, env_name()).prop_map(|(scheme, from_host)| RouteAuth { scheme, from_host }));
    let methods = prop::collection::vec(prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "M-SEARCH"]), 0..3);
    let paths = prop::collection::vec("/[a-z0-9/*._-]{0,8}", 0..3);
    let ports = prop::collection::vec(1..=u16::MAX, 0..3);
    (host(), methods, paths, ports, auth, any::<bool>()).prop_map(|(host, methods, paths, ports, auth, insecure)| {
        // The flags that mean something only with `auth` (and a wildcard) are set only there.
        let wildcard_auth = auth.is_some() && host.starts_with("*.");
        EgressRoute {
            methods: methods.into_iter().map(str::to_string).collect(),
            paths,
            ports,
            insecure_http: insecure && auth.is_some(),
            wildcard_auth,
            auth,
            host,
        }
    })
}

fn upstream(name: String) -> impl Strategy<Value = GitUpstream> {
    let push = (
        prop::collection::vec("[a-z0-9][a-z0-9/*_-]{0,8}[a-z0-9*]", 0..3),
        any::<[bool; 4]>(),
        prop::collection::vec("[a-z0-9.*_-]{1,6}(/[a-z0-9.*_-]{1,6}){0,2}", 0..3),
        1..=1u64 << 20,
    )
        .prop_map(|(branches, [force, delete, tags, ci], paths_deny, max_push_mb)| PushPolicy {
            branches,
            force,
            delete,
            tags,
            ci,
            paths_deny: paths_deny.into_iter().filter(|p| !p.split('/').any(|c| c == "." || c == "..")).collect(),
            max_push_mb,
        });
    let host = "[a-z0-9]{1,8}(\\.[a-z]{2,4}){0,2}";
    (
        host,
        1..=u16::MAX,
        "[a-z_][a-z0-9._-]{0,6}",
        "[a-z0-9_][a-z0-9._-]{0,6}(/[a-z0-9_][a-z0-9._-]{0,6}){0,2}",
        abs_path(),
        push,
    )
        .prop_map(move |(host, port, user, repo, identity_file, push)| GitUpstream {
            name: name.clone(),
            host,
            port,
            user,
            repo,
            identity_file,
            push,
        })
}

fn bottle() -> impl Strategy<Value = BottleDef> {
    let provider = (
        prop::sample::select(KNOWN.to_vec()),
        prop::option::of(abs_path()),
        prop::option::of(abs_path()),
        any::<bool>(),
        prop::option::of(env_name()),
    )
        .prop_map(|(template, dockerfile, image_archive, forward_host_credentials, auth_token)| AgentProviderDef {
            template: template.to_string(),
            dockerfile,
            image_archive,
            forward_host_credentials,
            auth_token,
        });
    let git = prop::collection::btree_set(name(), 0..3)
        .prop_flat_map(|names| names.into_iter().map(upstream).collect::<Vec<_>>());
    let size = || prop::option::of((16u64..1 << 20).prop_map(ByteSize::mib));
    let resources =
        (size(), prop::option::of((10u32..64_000).prop_map(Cpus)), prop::option::of(16u32..100_000), size(), size())
            .prop_map(|(memory, cpus, pids, disk, state)| Resources { memory, cpus, pids, disk, state });
    (
        provider,
        prop::collection::btree_map(env_name(), env_value(), 0..4),
        prop::collection::vec(route(), 0..3),
        git,
        any::<bool>(),
        resources,
    )
        .prop_map(|(agent_provider, env, egress, git, supervise, resources)| BottleDef {
            agent_provider,
            env,
            egress,
            git,
            supervise: crate::manifest::Supervise { enabled: supervise, timeout: None },
            resources,
        })
}

fn manifest() -> impl Strategy<Value = Manifest> {
    prop::collection::btree_map(name(), bottle(), 1..3).prop_flat_map(|bottles| {
        let names: Vec<String> = bottles.keys().cloned().collect();
        let identity = ("[A-Za-z][A-Za-z .'-]{0,10}", "[a-z0-9.+-]{1,8}@[a-z0-9.-]{1,8}")
            .prop_map(|(name, email)| GitIdentity { name, email });
        let agent = (
            prop::sample::select(names),
            prop::collection::vec("[a-z0-9_][a-z0-9._-]{0,8}", 0..3),
            prop::option::of(abs_path()),
            prop::option::of(identity),
        )
            .prop_map(|(bottle, skills, prompt, git_identity)| AgentDef {
                bottle,
                skills,
                prompt,
                git_identity,
                pool: None,
            });
        prop::collection::btree_map(name(), agent, 1..3).prop_map(move |agents| Manifest {
            agents,
            bottles: bottles.clone(),
            kubernetes: None,
            source: ManifestSource::File(PathBuf::from(FILE)),
            host_vars: Vec::new(),
        })
    })
}

/// One edit to manifest text, positions as fractions of its length.
#[derive(Debug, Clone)]
enum Mutation {
    DeleteChar(f64),
    InsertChar(f64, char),
    ReplaceChar(f64, char),
    DeleteLine(f64),
    DuplicateLine(f64),
    SwapLines(f64, f64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let pick = prop::sample::select(vec![
        ':', '-', ' ', '\n', '\t', '{', '}', '[', ']', '\'', '"', '*', '&', '!', '#', '|', '>', 'a', '1', '~', '%',
        '@', '`',
    ]);
    let special = prop_oneof![pick, any::<char>()];
    prop_oneof![
        (0.0..1.0).prop_map(Mutation::DeleteChar),
        (0.0..1.0, special.clone()).prop_map(|(at, c)| Mutation::InsertChar(at, c)),
        (0.0..1.0, special).prop_map(|(at, c)| Mutation::ReplaceChar(at, c)),
        (0.0..1.0).prop_map(Mutation::DeleteLine),
        (0.0..1.0).prop_map(Mutation::DuplicateLine),
        (0.0..1.0, 0.0..1.0).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
    ]
}

fn apply(text: &str, mutation: &Mutation) -> String {
    let index = |len: usize, at: f64| ((len as f64 * at) as usize).min(len.saturating_sub(1));
    let mut chars: Vec<char> = text.chars().collect();
    let mut lines: Vec<&str> = text.lines().collect();
    match *mutation {
        Mutation::DeleteChar(at) if !chars.is_empty() => {
            chars.remove(index(chars.len(), at));
        }
        Mutation::InsertChar(at, c) => chars.insert(index(chars.len() + 1, at), c),
        Mutation::ReplaceChar(at, c) if !chars.is_empty() => {
            let at = index(chars.len(), at);
            chars[at] = c;
        }
        Mutation::DeleteLine(at) if !lines.is_empty() => {
            lines.remove(index(lines.len(), at));
            return lines.join("\n");
        }
        Mutation::DuplicateLine(at) if !lines.is_empty() => {
            let at = index(lines.len(), at);
            lines.insert(at, lines[at]);
            return lines.join("\n");
        }
        Mutation::SwapLines(a, b) if !lines.is_empty() => {
            let (a, b) = (index(lines.len(), a), index(lines.len(), b));
            lines.swap(a, b);
            return lines.join("\n");
        }
        _ => {}
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn generated_manifests_round_trip(manifest in manifest()) {
        let yaml = manifest.to_yaml();
        prop_assert_eq!(parse(&yaml), Ok(manifest.clone()), "{}", yaml);
        let derived: Result<Manifest, _> = serde_yaml::from_str(&yaml);
        prop_assert_eq!(derived.ok(), Some(Manifest { source: ManifestSource::Embedded, ..manifest }));
    }

    #[test]
    fn mutated_text_never_panics(mutations in prop::collection::vec(mutation(), 1..6)) {
        let text = mutations.iter().fold(FULL.to_string(), |text, mutation| apply(&text, mutation));
        if let Err(errors) = parse(&text) {
            prop_assert!(!errors.0.is_empty());
            for error in &errors.0 {
                prop_assert!(error.line >= 1 && error.column >= 1, "{}", error);
                prop_assert!(!error.message.is_empty() && !error.hint.is_empty(), "{}", error);
            }
        }
    }
}

#[test]
fn resources_take_sizes_cpus_and_counts() {
    let parsed = parse(&bottle_with("    resources: { memory: 512m, cpus: 1.5, pids: 256, disk: 10g, state: 100m }\n"))
        .expect("valid");
    let resources = &parsed.bottles["b"].resources;
    assert_eq!(resources.memory, Some(ByteSize::mib(512)));
    assert_eq!(resources.cpus, Some(Cpus(1500)));
    assert_eq!(resources.pids, Some(256));
    assert_eq!((resources.disk, resources.state), (Some(ByteSize::gib(10)), Some(ByteSize::mib(100))));
    let bytes = parse(&bottle_with("    resources: { memory: 1073741824, cpus: '2' }\n")).expect("valid");
    assert_eq!(bytes.bottles["b"].resources.memory, Some(ByteSize::gib(1)));
    assert!(parse(&bottle_with("")).expect("valid").bottles["b"].resources.is_default());
    let r = |fields: &str| bottle_with(&format!("    resources: {{ {fields} }}\n"));
    check(&r("memory: 4x"), &[("6:26: `4x` is not a size", "e.g. 4g")]);
    check(&r("memory: 1m"), &[("6:26: 1 MiB is too little memory", "at least 16m")]);
    check(&r("memory: [1]"), &[("6:26: expected a size, found a list", "512m")]);
    check(&r("cpus: lots"), &[("6:24: `lots` is not a number of CPUs", "0.5")]);
    check(&r("pids: 3"), &[("6:24: pids must be a whole number of at least 16", "512")]);
    check(&r("memroy: 1g"), &[("6:18: unknown key `memroy`", "did you mean `memory`?")]);
}

#[test]
fn an_invalid_manifest_error_keeps_each_problem_structured() {
    let errors = parse("agents:\n  a:\n    bottle: nope\n    extra: 1\n").expect_err("invalid");
    let count = errors.0.len();
    assert!(count >= 2, "{errors}");
    let error = crate::Error::from(errors.clone());
    assert_eq!(error.kind(), crate::ErrorKind::Manifest);
    assert_eq!(error.message(), errors.to_string(), "the message lists every problem");
    let kept = error.manifest_errors().expect("the problems are the source");
    assert_eq!(kept, &errors);
    assert!(kept.0.iter().all(|e| e.line > 0 && e.column > 0 && !e.hint.is_empty()), "{kept:?}");
    assert!(crate::Error::new(crate::ErrorKind::Io, "x").manifest_errors().is_none());
}

/// A bottle `b` whose `env` (at line 6, column 5) holds `entries`, one per line from line 7.
fn env_of(entries: &[(String, String)]) -> String {
    let lines: String = entries.iter().map(|(name, value)| format!("      {name}: {value}\n")).collect();
    bottle_with(&format!("    env:\n{lines}"))
}

/// `count` entries `V0`, `V1`, … valued `x`.
fn numbered(count: usize) -> Vec<(String, String)> {
    (0..count).map(|i| (format!("V{i}"), "x".to_string())).collect()
}

/// An entry `name` whose `name=VALUE\0` is `bytes` long.
fn sized(name: &str, bytes: usize) -> (String, String) {
    (name.to_string(), "v".repeat(bytes - name.len() - 2))
}

#[test]
fn a_bottle_has_at_most_max_env_entries() {
    assert_eq!(MAX_ENV_ENTRIES, 4096);
    let at_limit = parse(&env_of(&numbered(MAX_ENV_ENTRIES))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(at_limit.bottles["b"].env.len(), MAX_ENV_ENTRIES);
    check(
        &env_of(&numbered(MAX_ENV_ENTRIES + 1)),
        &[(
            "6:5: `bottles.b.env` has 4097 entries, more than the 4096 a bottle may have: the environment must fit \
             what Linux lets a process exec with",
            "keep at most 4096 entries",
        )],
    );
    // Entries copied from the host count too.
    let mut copied = numbered(MAX_ENV_ENTRIES);
    copied.push(("H".to_string(), "{ from_host: H }".to_string()));
    check(&env_of(&copied), &[("6:5: `bottles.b.env` has 4097 entries", "")]);
}

#[test]
fn one_literal_env_entry_fits_in_max_arg_strlen() {
    assert_eq!(MAX_ENV_ENTRY_BYTES, 128 * 1024);
    // `BIG=` + value + NUL is exactly the limit: fine.
    let manifest = parse(&env_of(&[sized("BIG", MAX_ENV_ENTRY_BYTES)])).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(&manifest.bottles["b"].env["BIG"], EnvValue::Literal(v) if v.len() == MAX_ENV_ENTRY_BYTES - 5));
    check(
        &env_of(&[("A".to_string(), "1".to_string()), sized("BIG", MAX_ENV_ENTRY_BYTES + 1)]),
        &[(
            "8:12: `BIG=…` is 131073 bytes with its ending NUL, more than the 131072 (128 KiB, Linux's \
             MAX_ARG_STRLEN) one entry may be: the environment must fit what Linux lets a process exec with",
            "shorten the value",
        )],
    );
    // A number or boolean counts as written.
    let digits = "9".repeat(MAX_ENV_ENTRY_BYTES);
    check(&env_of(&[("N".to_string(), digits)]), &[("7:10: `N=…` is 131075 bytes", "")]);
}

#[test]
fn the_literal_env_entries_together_fit_well_under_arg_max() {
    assert_eq!(MAX_ENV_TOTAL_BYTES, 1 << 20);
    // A file within MAX_MANIFEST_BYTES gets there only through aliases. Eight
    // entries at the per-entry limit are exactly the total limit: fine.
    let (_, value) = sized("E0", MAX_ENV_ENTRY_BYTES);
    let full: Vec<_> =
        (0..8).map(|i| (format!("E{i}"), if i == 0 { format!("&v {value}") } else { "*v".to_string() })).collect();
    let manifest = parse(&env_of(&full)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(manifest.bottles["b"].env["E7"], EnvValue::Literal(value));
    // Entries copied from the host are measured when the bottle starts, not here.
    let mut copied = full.clone();
    copied.push(("H".to_string(), "{ from_host: H }".to_string()));
    assert!(parse(&env_of(&copied)).is_ok());
    // One more literal byte (`Z=` and NUL) is over.
    let mut over = full;
    over.push(("Z".to_string(), "''".to_string()));
    check(
        &env_of(&over),
        &[(
            "6:5: the literal entries of `bottles.b.env` are 1048579 bytes in all as `KEY=VALUE\\0`, more than the \
             1048576 (1 MiB, well under Linux's ARG_MAX) an environment may be: the environment must fit what Linux \
             lets a process exec with",
            "the largest: E0 (131072 bytes), E1 (131072 bytes), E2 (131072 bytes)",
        )],
    );
}

#[test]
fn a_manifest_file_is_at_most_max_manifest_bytes() {
    assert_eq!(MAX_MANIFEST_BYTES, 1 << 20);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let base = bottle_with("");
    let padded = |bytes: u64| {
        let pad = usize::try_from(bytes).unwrap_or(usize::MAX) - base.len() - 2;
        format!("{base}#{}\n", " ".repeat(pad))
    };
    let at_limit = dir.path().join("at.yaml");
    std::fs::write(&at_limit, padded(MAX_MANIFEST_BYTES)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(std::fs::metadata(&at_limit).map(|m| m.len()).ok(), Some(MAX_MANIFEST_BYTES));
    assert!(Manifest::load(&at_limit, KNOWN).is_ok());

    let over = dir.path().join("over.yaml");
    std::fs::write(&over, padded(MAX_MANIFEST_BYTES + 1)).unwrap_or_else(|e| panic!("{e}"));
    let errors = Manifest::load(&over, KNOWN).expect_err("one byte over");
    assert_eq!(errors.0.len(), 1, "{errors}");
    let error = &errors.0[0];
    assert_eq!((error.file.as_path(), error.line, error.column), (over.as_path(), 1, 1));
    assert_eq!(
        error.message,
        "the manifest is 1048577 bytes, more than the 1048576 (1 MiB) a manifest may be, so that checking and starting stay fast"
    );
    assert!(error.hint.contains("keep bulk data in files"), "{error}");
    // The same limit when the text is handed over directly.
    check(&padded(MAX_MANIFEST_BYTES + 1), &[("1:1: the manifest is 1048577 bytes, more than the 1048576", "")]);
}

#[test]
fn where_host_variables_are_read_is_kept() {
    let manifest = parse(FULL).unwrap_or_else(|e| panic!("{e}"));
    let env = |name: &str| HostVarUse::Env { bottle: "dev".to_string(), name: name.to_string() };
    let route =
        |index: usize, host: &str| HostVarUse::Route { bottle: "dev".to_string(), index, host: host.to_string() };
    let expected = [
        ("GH_TOKEN", 16, 30, env("GH_TOKEN")),
        ("EDITOR", 17, 28, env("EDITOR")),
        ("ANTHROPIC_API_KEY", 20, 47, route(0, "api.anthropic.com")),
        ("GH_TOKEN", 25, 44, route(2, "api.github.com")),
        ("NEXUS_PASSWORD", 28, 54, route(3, "*.nexus.example")),
    ];
    let expected: Vec<HostVarRef> = expected
        .into_iter()
        .map(|(name, line, column, used_by)| HostVarRef {
            name: name.to_string(),
            file: PathBuf::from(FILE),
            line,
            column,
            used_by,
        })
        .collect();
    assert_eq!(manifest.host_vars(), expected);
    assert_eq!(
        manifest.host_vars()[0].not_set_message(),
        "/m/bot-bottle.yaml:16:30: host variable `GH_TOKEN` is not set (used by bottle dev, env GH_TOKEN)"
    );
    assert_eq!(manifest.host_vars()[3].used_by.to_string(), "bottle dev, egress route api.github.com");

    // In file order across bottles and whichever of `egress` and `env` comes first; block style too.
    let yaml = "agents:\n  a: { bottle: b }\nbottles:\n  b:\n    agent_provider: { template: shell }\n    egress:\n      \
                - host: x.com\n        auth:\n          scheme: bearer\n          from_host: TOK\n    env:\n      \
                K:\n        from_host: KEY\n        secret: true\n  c:\n    agent_provider: { template: shell }\n    \
                env: { C: { from_host: CV } }\n";
    let manifest = parse(yaml).unwrap_or_else(|e| panic!("{e}"));
    let found: Vec<(&str, usize, usize, String)> =
        manifest.host_vars().iter().map(|r| (r.name.as_str(), r.line, r.column, r.used_by.to_string())).collect();
    assert_eq!(
        found,
        [
            ("TOK", 10, 22, "bottle b, egress route x.com".to_string()),
            ("KEY", 13, 20, "bottle b, env K".to_string()),
            ("CV", 17, 28, "bottle c, env C".to_string()),
        ]
    );
    // Positions are where, not what: a re-parsed manifest is equal though they differ.
    let reparsed = parse(&manifest.to_yaml()).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(reparsed.host_vars(), manifest.host_vars());
    assert_eq!(reparsed, manifest);
    assert!(Manifest::embedded_default(KNOWN).host_vars().is_empty());
}

#[test]
fn supervise_is_a_flag_or_a_mapping_with_a_timeout() {
    let supervise = |extra: &str| parse(&bottle_with(extra)).expect("parses").bottles["b"].supervise.clone();
    assert_eq!(supervise("    supervise: true\n"), crate::manifest::Supervise::on());
    assert!(!supervise("    supervise: false\n").enabled);
    let timed = supervise("    supervise: { timeout: 30m }\n");
    assert_eq!((timed.enabled, timed.wait()), (true, std::time::Duration::from_secs(1800)));
    assert_eq!(supervise("    supervise: {}\n").wait(), crate::supervise::DEFAULT_TIMEOUT, "a mapping turns it on");
    check(
        &bottle_with("    supervise: { timeout: 0s }\n"),
        &[("6:27: a supervise timeout of 0s is out of range", "between 1s and 24h")],
    );
    check(&bottle_with("    supervise: { timeout: soon }\n"), &[("6:27: `soon` is not a duration", "timeout: 30m")]);
    check(&bottle_with("    supervise: { timout: 1m }\n"), &[("6:18: unknown key `timout`", "timeout")]);
    let yaml = serde_yaml::to_string(&timed).expect("yaml");
    assert_eq!(yaml.trim(), "timeout: 30m", "written back as it is read");
}

#[test]
fn an_agents_pool_has_a_size_from_one_to_the_most() {
    let with_pool = |pool: &str| {
        format!(
            "agents:\n  a:\n    bottle: b\n    pool: {pool}\nbottles:\n  b:\n    agent_provider: {{ template: shell }}\n"
        )
    };
    let manifest = parse(&with_pool("{ size: 3 }")).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(manifest.agents["a"].pool, Some(crate::manifest::PoolDef { size: 3 }));
    assert_eq!(parse(&manifest.to_yaml()).expect("round trip").agents["a"].pool, manifest.agents["a"].pool);
    check(
        &with_pool("{ size: 0 }"),
        &[("4:19: pool size must be a whole number from 1 to 16, found 0", "pool: { size: 2 }")],
    );
    check(
        &with_pool("{ size: 17 }"),
        &[("4:19: pool size must be a whole number from 1 to 16, found 17", "remove `pool`")],
    );
    check(
        &with_pool("{ size: two }"),
        &[("4:19: pool size must be a whole number from 1 to 16, found a string", "size: 2")],
    );
    check(&with_pool("{ size: 2, warm: true }"), &[("4:22: unknown key `warm` in `agents.a.pool`", "size")]);
    check(&with_pool("{}"), &[("4:5: missing required key `size` in `agents.a.pool`", "add `size:`")]);
    check(&with_pool("3"), &[("4:11: expected a mapping, found a number", "size")]);
}
