//! Tidy checks: the workspace's conventions that the compiler does not
//! enforce, as tests, so `cargo test` runs them. Each failure lists every
//! file that breaks the rule.

use std::fs;
use std::path::{Path, PathBuf};

/// The directories whose `.rs` files are checked.
const SOURCE_DIRS: [&str; 3] = ["crates", "xtask", "tests"];

/// A dependency that some crates must not have.
struct Forbidden {
    /// Which crates, by package name, the rule applies to.
    crates: fn(&str) -> bool,
    /// The dependency; a trailing `*` matches any rest of the name.
    dep: &'static str,
    /// Whether it is still allowed as a dev-dependency.
    dev_ok: bool,
    why: &'static str,
}

const FORBIDDEN: &[Forbidden] = &[
    Forbidden {
        crates: |krate| krate == "bottle-core",
        dep: "bollard",
        dev_ok: false,
        why: "bottle-core knows no backend",
    },
    Forbidden {
        crates: |krate| krate == "bottle-core",
        dep: "kube*",
        dev_ok: false,
        why: "bottle-core knows no backend",
    },
    Forbidden {
        crates: |krate| krate == "bottle-core",
        dep: "k8s-openapi",
        dev_ok: false,
        why: "bottle-core knows no backend",
    },
    Forbidden {
        crates: |krate| krate == "bottle-core",
        dep: "tokio",
        dev_ok: true,
        why: "bottle-core is runtime-agnostic",
    },
    Forbidden {
        crates: |krate| krate == "bottle-core",
        dep: "bottle-*",
        dev_ok: false,
        why: "bottle-core is the bottom of the crate graph",
    },
    Forbidden {
        crates: |krate| krate == "bottle-core",
        dep: "agent-provider",
        dev_ok: false,
        why: "bottle-core is the bottom of the crate graph",
    },
    Forbidden {
        crates: |krate| krate != "bottle-testkit",
        dep: "bottle-testkit",
        dev_ok: true,
        why: "the conformance suite is for tests: a dev-dependency only",
    },
    Forbidden {
        crates: |krate| krate == "bottle-testkit",
        dep: "bot-bottle",
        dev_ok: false,
        why: "the conformance suite serves every backend and depends on none",
    },
    Forbidden {
        crates: |krate| !matches!(krate, "bottle-cli" | "xtask"),
        dep: "anyhow",
        dev_ok: true,
        why: "libraries return typed errors; anyhow is for binaries",
    },
];

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let broken = rust_files()
        .into_iter()
        // `#![doc = include_str!("../README.md")]` is a module doc too (STYLE.md).
        .filter(|(_, text)| !text.starts_with("//!") && !text.starts_with("#![doc"))
        .map(|(path, _)| path);
    check("these files do not start with a `//!` (or `#![doc = ...]`) module doc", broken);
}

#[test]
fn no_ignored_tests() {
    // Spelled in two halves so that this file does not match itself.
    let attribute = concat!("#[", "ignore");
    let broken = rust_files().into_iter().filter(|(_, text)| text.contains(attribute)).map(|(path, _)| path);
    check("ignored tests (skip with a printed reason instead)", broken);
}

#[test]
fn every_crate_uses_the_workspace_lints() {
    let broken = manifests().into_iter().filter_map(|(path, text)| {
        let lints =
            entries(&text).any(|(section, key, value)| section == "lints" && key == "workspace" && value == "true");
        (!lints).then_some(path)
    });
    check("these manifests lack `[lints] workspace = true`", broken);
}

#[test]
fn no_forbidden_dependencies() {
    let mut broken = Vec::new();
    for (path, text) in manifests() {
        let krate = package_name(&text);
        for (dep, dev) in entries(&text).filter_map(|(section, key, value)| dependency(section, key, value)) {
            for rule in FORBIDDEN.iter().filter(|rule| (rule.crates)(&krate) && !(dev && rule.dev_ok)) {
                let matches = match rule.dep.strip_suffix('*') {
                    Some(prefix) => dep.starts_with(prefix),
                    None => dep == rule.dep,
                };
                if matches {
                    broken.push(format!("{path}: {krate} depends on {dep}: {}", rule.why));
                }
            }
        }
    }
    broken.dedup();
    check("forbidden dependencies", broken);
}

/// The facade crate, the one library that sees every crate.
const FACADE: &str = "bot-bottle";

/// The conformance suite (a dev-dependency only): it runs bottles of the
/// built-in agents, so it may use the providers.
const TESTKIT: &str = "bottle-testkit";

/// ARCHITECTURE.md's invariants on the crate graph: the backend crates (the
/// facade's optional dependencies, one cargo feature each) depend on no
/// other backend, and only the facade depends on a backend (the testkit
/// serves every backend and depends on none) or on the agent providers (the
/// CLI sees them through the facade; the testkit and tests may use them).
#[test]
fn the_crate_graph_keeps_the_architecture_invariants() {
    /// A member's manifest path, package name and dependencies (name, whether dev).
    type Member = (String, String, Vec<(String, bool)>);
    let manifests: Vec<Member> = manifests()
        .into_iter()
        .map(|(path, text)| {
            let krate = package_name(&text);
            let deps = entries(&text).filter_map(|(section, key, value)| dependency(section, key, value)).collect();
            (path, krate, deps)
        })
        .collect();
    let facade = manifests.iter().find(|(_, krate, _)| krate == FACADE).expect("the facade crate is a member");
    let facade_text = fs::read_to_string(root().join(&facade.0)).expect("the facade's manifest");
    let backends: Vec<String> = entries(&facade_text)
        .filter(|(section, _, value)| *section == "dependencies" && value.contains("optional = true"))
        .filter_map(|(section, key, value)| dependency(section, key, value).map(|(name, _)| name))
        .collect();
    assert!(backends.len() >= 2, "the facade names its backends as optional dependencies: {backends:?}");
    let mut broken = Vec::new();
    for (path, krate, deps) in &manifests {
        for (dep, dev) in deps {
            let backend_dep = backends.contains(dep);
            if backends.contains(krate) && backend_dep {
                broken.push(format!("{path}: backend {krate} depends on backend {dep}: no backend knows another"));
            } else if backend_dep && krate != FACADE {
                broken.push(format!("{path}: {krate} depends on backend {dep}: only {FACADE} sees every backend"));
            } else if dep == "agent-provider" && !dev && ![FACADE, TESTKIT].contains(&krate.as_str()) {
                broken.push(format!("{path}: {krate} depends on agent-provider: only {FACADE} sees the providers"));
            }
        }
    }
    check("the crate graph breaks ARCHITECTURE.md's invariants", broken);
}

/// Calls that are steps of a bottle's life, which the library's `Session`
/// owns: the CLI adds only the confirmation, the signals and the printing.
const LIFECYCLE_STEPS: [&str; 9] = [
    "discard(",
    "remove_dyn(",
    ".remove(",
    "remove_dir",
    "resolve_plan",
    "launch_dyn(",
    ".close()",
    "cp_in(",
    "cp_out(",
];

#[test]
fn the_cli_holds_no_lifecycle_step() {
    let broken = rust_files().into_iter().filter(|(path, _)| path.starts_with("crates/bottle-cli/src/")).flat_map(
        |(path, text)| {
            text.lines()
                .enumerate()
                .filter(|(_, line)| LIFECYCLE_STEPS.iter().any(|step| line.contains(step)))
                .map(|(n, line)| format!("{path}:{}: {}", n + 1, line.trim()))
                .collect::<Vec<_>>()
        },
    );
    check("the CLI runs a step of a bottle's life itself; call the library's Session (or session::stop)", broken);
}

/// The `[package] name` of a manifest.
fn package_name(text: &str) -> String {
    entries(text)
        .find(|(section, key, _)| *section == "package" && *key == "name")
        .map(|(_, _, value)| value.trim_matches('"').to_owned())
        .unwrap_or_default()
}

/// Fails, listing `broken`, unless it is empty.
fn check(rule: &str, broken: impl IntoIterator<Item = String>) {
    let broken: Vec<String> = broken.into_iter().collect();
    assert!(broken.is_empty(), "{rule}:\n  {}", broken.join("\n  "));
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace root").to_path_buf()
}

/// Every `.rs` file under [`SOURCE_DIRS`] (outside `target` and hidden
/// directories), by path from the root, with its text.
fn rust_files() -> Vec<(String, String)> {
    let root = root();
    let mut todo: Vec<PathBuf> = SOURCE_DIRS.iter().map(|dir| root.join(dir)).collect();
    let mut files = Vec::new();
    while let Some(path) = todo.pop() {
        let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
        if path.is_dir() && name != "target" && !name.starts_with('.') {
            let entries = fs::read_dir(&path).expect("a readable directory");
            todo.extend(entries.map(|entry| entry.expect("a directory entry").path()));
        } else if name.ends_with(".rs") {
            files.push(read(&root, &path));
        }
    }
    files.sort();
    files
}

/// The manifest of every workspace member, from the root's `members`
/// (where `dir/*` means each directory in `dir` that has a `Cargo.toml`).
fn manifests() -> Vec<(String, String)> {
    let root = root();
    let workspace = fs::read_to_string(root.join("Cargo.toml")).expect("the root Cargo.toml");
    let members: String = workspace
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("members"))
        .scan(false, |done, line| (!std::mem::replace(done, line.contains(']'))).then_some(line))
        .collect();
    let mut paths = Vec::new();
    for member in members.split('"').skip(1).step_by(2) {
        match member.strip_suffix("/*") {
            Some(dir) => {
                let entries = fs::read_dir(root.join(dir)).expect("a members directory");
                paths.extend(entries.map(|entry| entry.expect("a directory entry").path().join("Cargo.toml")));
            }
            None => paths.push(root.join(member).join("Cargo.toml")),
        }
    }
    let mut manifests: Vec<_> = paths.iter().filter(|path| path.is_file()).map(|path| read(&root, path)).collect();
    manifests.sort();
    manifests
}

fn read(root: &Path, path: &Path) -> (String, String) {
    let text = fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let shown = path.strip_prefix(root).unwrap_or(path).display().to_string();
    (shown, text)
}

/// The `key = value` lines of a manifest, each with the `[section]` it is in
/// (a rough reading of TOML, enough for Cargo.toml files).
fn entries(text: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    let mut section = "";
    text.lines().filter_map(move |line| {
        let line = line.trim();
        if line.starts_with('[') && !line.starts_with("[\"") {
            section = line.trim_matches(['[', ']']).trim();
            return None;
        }
        if line.starts_with('#') {
            return None;
        }
        let (key, value) = line.split_once('=')?;
        Some((section, key.trim(), value.trim()))
    })
}

/// The dependency an entry declares, if any, and whether it is a
/// dev-dependency. Handles `name = ...`, `name.workspace = true`,
/// `[dependencies.name]`, target-specific tables and `package = "..."`.
fn dependency(section: &str, key: &str, value: &str) -> Option<(String, bool)> {
    let parts: Vec<&str> = section.split('.').collect();
    let kind = parts.iter().rposition(|part| part.ends_with("dependencies"))?;
    let dev = parts[kind] == "dev-dependencies";
    let renamed = value
        .split_once("package")
        .and_then(|(_, rest)| rest.trim_start().strip_prefix('='))
        .and_then(|rest| rest.split('"').nth(1));
    let name = match parts.get(kind + 1) {
        Some(_) if key == "package" => value.trim_matches('"'),
        Some(table) => table,
        None => renamed.unwrap_or_else(|| key.split('.').next().unwrap_or(key)),
    };
    Some((name.trim_matches('"').to_owned(), dev))
}

#[test]
fn dependency_reads_every_form() {
    let check = |section, key, value, expect: Option<(&str, bool)>| {
        let got = dependency(section, key, value);
        assert_eq!(got.as_ref().map(|(name, dev)| (name.as_str(), *dev)), expect, "[{section}] {key} = {value}");
    };
    check("dependencies", "tokio.workspace", "true", Some(("tokio", false)));
    check("dev-dependencies", "tokio", "{ workspace = true }", Some(("tokio", true)));
    check("dependencies", "rt", r#"{ package = "tokio", version = "1" }"#, Some(("tokio", false)));
    check("dependencies.bollard", "version", r#""0.19""#, Some(("bollard", false)));
    check("target.'cfg(unix)'.dependencies", "anyhow", r#""1""#, Some(("anyhow", false)));
    check("package", "name", r#""bottle-core""#, None);
    check("lints", "workspace", "true", None);
}

/// Programs of a new machine's own packages ([`NEW_MACHINE_PACKAGES`]) that
/// the workspace runs, with their package.
const NEW_MACHINE_PROGRAMS: &[(&str, &str)] = &[
    ("sh", "dash"),
    ("bash", "bash"),
    ("env", "coreutils"),
    ("id", "coreutils"),
    ("rm", "coreutils"),
    ("true", "coreutils"),
    ("false", "coreutils"),
    ("getent", "libc-bin"),
    ("sha256sum", "coreutils"),
    ("find", "findutils"),
    ("tar", "tar"),
    ("umount", "mount"),
    ("script", "bsdutils"),
    ("which", "debianutils"),
    ("nsenter", "util-linux"),
    ("apt-get", "apt"),
];

/// Programs run only where someone other than setup provides them, and why.
const PROVIDED_ELSEWHERE: &[(&str, &str)] =
    &[("sudo", "setup runs privileged commands through it only when it is not root, and cannot install it then")];

/// The Debian packages of a new machine, one per line (`#` comments).
const NEW_MACHINE_PACKAGES: &str = include_str!("../new-machine-packages.txt");

/// The call forms that name a program by a string literal: `Command::new("git")`,
/// setup's `privileged("rm")`, the smolvm fake's `run("docker", …)` and
/// `checked("docker", …)`, and absolute paths such as `"/usr/sbin/sshd"`.
const CALL_FORMS: [&str; 5] =
    ["Command::new(\"", "privileged(\"", "run(\"", "checked(\"", "bottle_at(std::path::Path::new(\""];

/// Every program named in a call form of `text`.
fn programs_called(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for form in CALL_FORMS {
        for (at, _) in text.match_indices(form) {
            let rest = &text[at + form.len()..];
            if let Some(name) = rest.split('"').next().filter(|name| is_program_name(name)) {
                found.push(name.to_owned());
            }
        }
    }
    for dir in ["\"/usr/sbin/", "\"/usr/bin/", "\"/sbin/", "\"/bin/"] {
        for (at, _) in text.match_indices(dir) {
            let rest = &text[at + dir.len()..];
            if let Some(name) = rest.split('"').next().filter(|name| is_program_name(name)) {
                found.push(name.to_owned());
            }
        }
    }
    found
}

fn is_program_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
}

/// Where `program` comes from on a machine that ran setup, or `None`.
fn provider(program: &str) -> Option<String> {
    if let Some(package) = crate::setup::PACKAGES.iter().find(|package| package.programs.contains(&program)) {
        return Some(format!("setup installs {}", package.name));
    }
    if let Some((_, package)) = NEW_MACHINE_PROGRAMS.iter().find(|(name, _)| *name == program) {
        return Some(format!("a new machine has {package}"));
    }
    PROVIDED_ELSEWHERE.iter().find(|(name, _)| *name == program).map(|(_, why)| why.to_string())
}

#[test]
fn every_program_the_workspace_runs_is_installed_by_setup() {
    let mut broken = Vec::new();
    for (path, text) in rust_files() {
        for program in programs_called(&text) {
            if provider(&program).is_none() {
                broken.push(format!(
                    "{path} runs `{program}`: add its Debian package to PACKAGES in xtask/src/setup.rs \
                     (or, when a new machine has it, to NEW_MACHINE_PROGRAMS in xtask/src/tidy.rs)"
                ));
            }
        }
    }
    broken.sort();
    broken.dedup();
    check("programs that setup does not install and a new machine lacks", broken);
}

#[test]
fn the_new_machine_programs_come_with_a_new_machine() {
    let packages: Vec<&str> =
        NEW_MACHINE_PACKAGES.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')).collect();
    let broken = NEW_MACHINE_PROGRAMS
        .iter()
        .filter(|(_, package)| !packages.contains(package))
        .map(|(program, package)| format!("`{program}` is said to come with {package}, which a new machine lacks"));
    check("NEW_MACHINE_PROGRAMS names packages outside new-machine-packages.txt", broken);
}

#[test]
fn programs_called_reads_every_call_form() {
    let text = r#"Command::new("git").arg(x); self.privileged("rm"); run("docker", &args); checked("sh", &a);
        const SSHD: &str = "/usr/sbin/sshd"; Command::new(program); Command::new("a b"); "/usr/bin/env";
        world.bottle_at(std::path::Path::new("script"), &args)"#;
    assert_eq!(programs_called(text), ["git", "rm", "docker", "sh", "script", "sshd", "env"]);
}
