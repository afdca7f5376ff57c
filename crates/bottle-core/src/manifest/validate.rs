//! The validating walk over a parsed manifest: one [`Walker`] visits the
//! `serde_yaml` value with its node path, builds the typed structs, and
//! records every problem at the position [`Spans`] gives for that path.
//!
//! The rules for single values (names, hosts, methods, …) are plain functions
//! returning a [`Problem`], so the walker only decides *where* to report. On
//! the way it records where host variables are read ([`HostVarRef`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::limits::{EXEC_REASON, EnvSize, Excess, MAX_ENV_ENTRIES};
use super::spans::{Pos, Seg, Spans};
use super::{
    AgentDef, AgentProviderDef, AuthScheme, BottleDef, EgressRoute, EnvValue, GitIdentity, GitUpstream, HostVarRef,
    HostVarUse, KubernetesDef, MAX_POOL_SIZE, MAX_PUSH_MB_LIMIT, Manifest, ManifestError, ManifestErrors,
    ManifestSource, PoolDef, PushPolicy, RouteAuth, Supervise,
};
use crate::resources::{ByteSize, Cpus, Resources};

const TOP_KEYS: &[&str] = &["agents", "bottles", "kubernetes"];
const KUBERNETES_KEYS: &[&str] = &["namespace", "runtime_class", "image_registry", "node_selector", "unenforced_ok"];
const AGENT_KEYS: &[&str] = &["bottle", "skills", "prompt", "git_identity", "pool"];
const POOL_KEYS: &[&str] = &["size"];
const IDENTITY_KEYS: &[&str] = &["name", "email"];
const SUPERVISE_KEYS: &[&str] = &["timeout"];
const BOTTLE_KEYS: &[&str] = &["agent_provider", "env", "egress", "git", "supervise", "resources"];
const RESOURCE_KEYS: &[&str] = &["memory", "cpus", "pids", "disk", "state"];
const PROVIDER_KEYS: &[&str] = &["template", "dockerfile", "image_archive", "forward_host_credentials", "auth_token"];
const FROM_HOST_KEYS: &[&str] = &["from_host", "secret"];
const ROUTE_KEYS: &[&str] = &["host", "methods", "paths", "ports", "auth", "insecure_http", "wildcard_auth"];
const AUTH_KEYS: &[&str] = &["scheme", "from_host", "user", "header"];
const AUTH_SCHEMES: &[&str] = &["bearer", "x-api-key", "basic", "header"];
const GIT_KEYS: &[&str] = &["Name", "Host", "Port", "User", "Repo", "IdentityFile", "push"];
const PUSH_KEYS: &[&str] = &["branches", "force", "delete", "tags", "ci", "paths_deny", "max_push_mb"];

/// The prefix of the environment variables bot-bottle sets itself.
const RESERVED_ENV_PREFIX: &str = "BOT_BOTTLE_";
const LIST_HINT: &str = "write `[a, b]` or one `- item` line per entry";

/// Parses and validates `text`; the result's `source` is left at its default.
pub(super) fn parse(text: &str, file: &Path, known_templates: &[&str]) -> Result<Manifest, ManifestErrors> {
    let value = serde_yaml::from_str::<Value>(text).map_err(|error| ManifestErrors(yaml_errors(&error, text, file)))?;
    let spans = Spans::index(text);
    let dir = manifest_dir(file);
    let home = std::env::var_os("HOME").filter(|home| !home.is_empty()).map(PathBuf::from);
    let mut walker = Walker {
        file,
        dir: &dir,
        home: home.as_deref(),
        spans: &spans,
        known_templates,
        errors: Vec::new(),
        host_vars: Vec::new(),
    };
    let mut manifest = walker.manifest(&value);
    walker.host_vars.sort_by_key(|reference| (reference.line, reference.column));
    manifest.host_vars = walker.host_vars;
    let mut errors = walker.errors;
    if errors.is_empty() {
        return Ok(manifest);
    }
    errors.sort_by_key(|error| (error.line, error.column));
    Err(ManifestErrors(errors))
}

/// Turns a `serde_yaml` error into positioned errors. Duplicate keys and extra
/// documents are located with the position index, which knows more than
/// `serde_yaml` reports (it points at the mapping, not the repeated key).
fn yaml_errors(error: &serde_yaml::Error, text: &str, file: &Path) -> Vec<ManifestError> {
    let make = |pos: Pos, message: String, hint: String| ManifestError {
        file: file.to_path_buf(),
        line: pos.line,
        column: pos.column,
        message,
        hint,
    };
    let message = error.to_string();
    if message.contains("duplicate entry") {
        let spans = Spans::index(text);
        if !spans.duplicates.is_empty() {
            return spans
                .duplicates
                .iter()
                .map(|dup| {
                    make(
                        dup.second,
                        format!("duplicate key `{}` in {}", dup.key, describe(&dup.parent)),
                        format!("`{}` is already set at line {}: keep only one of them", dup.key, dup.first.line),
                    )
                })
                .collect();
        }
    }
    if message.contains("more than one document") {
        let pos = Spans::index(text).second_document.unwrap_or(Pos::START);
        return vec![make(
            pos,
            "the manifest holds more than one YAML document".to_string(),
            "remove the `---` line and keep everything in one document".to_string(),
        )];
    }
    let (pos, message) = match error.location() {
        Some(location) => (
            Pos { line: location.line(), column: location.column() },
            message.replacen(&format!(" at line {} column {}", location.line(), location.column()), "", 1),
        ),
        None => (Pos::START, message),
    };
    let at_tab =
        text.lines().nth(pos.line.saturating_sub(1)).and_then(|line| line.chars().nth(pos.column.saturating_sub(1)))
            == Some('\t');
    let hint = if at_tab {
        "YAML does not allow tabs for indentation: use spaces"
    } else {
        "fix the YAML syntax here (indentation, quotes, brackets, or the `:` after a key)"
    };
    vec![make(pos, format!("invalid YAML: {message}"), hint.to_string())]
}

/// The manifest's folder, absolute, against which relative paths resolve.
fn manifest_dir(file: &Path) -> PathBuf {
    let dir = file.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// A node path as users read it: `` `bottles.dev.egress[0]` ``.
fn describe(path: &[Seg]) -> String {
    if path.is_empty() {
        return "the top level".to_string();
    }
    let mut out = String::from("`");
    for (i, seg) in path.iter().enumerate() {
        match seg {
            Seg::Key(key) if i == 0 => out.push_str(key),
            Seg::Key(key) => {
                out.push('.');
                out.push_str(key);
            }
            Seg::Index(index) => {
                let _ = write!(out, "[{index}]");
            }
        }
    }
    out.push('`');
    out
}

fn child(path: &[Seg], seg: Seg) -> Vec<Seg> {
    let mut path = path.to_vec();
    path.push(seg);
    path
}

/// What kind of YAML value `value` is, for "expected …, found …".
fn kind(value: &Value) -> String {
    match value {
        Value::Null => "nothing".to_string(),
        Value::Bool(_) => "a boolean".to_string(),
        Value::Number(_) => "a number".to_string(),
        Value::String(_) => "a string".to_string(),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(tagged) => format!("a value tagged `{}`", tagged.tag),
    }
}

/// A number as written, anything else by its kind: for "found …".
fn number_or_kind(value: &Value) -> String {
    match value {
        Value::Number(number) => number.to_string(),
        other => kind(other),
    }
}

/// The text of a scalar mapping key (as the position index spells it, for
/// plain keys); other keys get a description that matches no allowed key.
fn key_text(key: &Value) -> String {
    match key {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Null => "~".to_string(),
        other => format!("({} used as a key)", kind(other)),
    }
}

/// A problem with one value, before it has a position.
struct Problem {
    message: String,
    hint: String,
}

fn problem(message: impl Into<String>, hint: impl Into<String>) -> Problem {
    Problem { message: message.into(), hint: hint.into() }
}

type Check = Result<(), Problem>;

/// The mapping keys the walker accepted, with their values.
struct Fields<'v> {
    path: Vec<Seg>,
    values: Vec<(String, &'v Value)>,
}

impl<'v> Fields<'v> {
    /// The value of `key` and its path, if present.
    fn get(&self, key: &str) -> Option<(&'v Value, Vec<Seg>)> {
        self.values
            .iter()
            .find(|(name, _)| name == key)
            .map(|(name, value)| (*value, child(&self.path, Seg::Key(name.clone()))))
    }

    /// Like [`Fields::get`], but a null value (`key:` with nothing after it)
    /// counts as absent, as it does for serde's `Option`.
    fn get_some(&self, key: &str) -> Option<(&'v Value, Vec<Seg>)> {
        self.get(key).filter(|(value, _)| !value.is_null())
    }

    fn has(&self, key: &str) -> bool {
        self.values.iter().any(|(name, _)| name == key)
    }
}

struct Walker<'a> {
    file: &'a Path,
    dir: &'a Path,
    home: Option<&'a Path>,
    spans: &'a Spans,
    known_templates: &'a [&'a str],
    errors: Vec<ManifestError>,
    /// Where host variables are read, in walk order.
    host_vars: Vec<HostVarRef>,
}

impl Walker<'_> {
    fn error(&mut self, pos: Pos, problem: Problem) {
        self.errors.push(ManifestError {
            file: self.file.to_path_buf(),
            line: pos.line,
            column: pos.column,
            message: problem.message,
            hint: problem.hint,
        });
    }

    fn at_value(&mut self, path: &[Seg], problem: Problem) {
        let pos = self.spans.value(path);
        self.error(pos, problem);
    }

    fn at_key(&mut self, path: &[Seg], problem: Problem) {
        let pos = self.spans.key(path);
        self.error(pos, problem);
    }

    /// Records that `used_by` reads host variable `name`, written at `path`.
    fn host_var(&mut self, name: &str, path: &[Seg], used_by: HostVarUse) {
        let pos = self.spans.value(path);
        self.host_vars.push(HostVarRef {
            name: name.to_string(),
            file: self.file.to_path_buf(),
            line: pos.line,
            column: pos.column,
            used_by,
        });
    }

    fn wrong_type(&mut self, path: &[Seg], value: &Value, expected: &str, hint: impl Into<String>) {
        self.at_value(path, problem(format!("expected {expected}, found {}", kind(value)), hint));
    }

    /// `value` as a mapping: reports unknown keys (at the key) and missing
    /// required ones (at the mapping's own key).
    fn mapping<'v>(
        &mut self,
        value: &'v Value,
        path: &[Seg],
        allowed: &[&str],
        required: &[&str],
    ) -> Option<Fields<'v>> {
        let Value::Mapping(mapping) = value else {
            let hint = format!("write `key: value` lines indented under it; allowed keys: {}", allowed.join(", "));
            self.wrong_type(path, value, "a mapping", hint);
            return None;
        };
        let mut values = Vec::new();
        for (key, value) in mapping {
            let name = key_text(key);
            if allowed.contains(&name.as_str()) {
                values.push((name, value));
            } else {
                let message = format!("unknown key `{name}` in {}", describe(path));
                let hint = did_you_mean(&name, allowed, "allowed keys");
                self.at_key(&child(path, Seg::Key(name)), problem(message, hint));
            }
        }
        let fields = Fields { path: path.to_vec(), values };
        for key in required {
            if !fields.has(key) {
                let message = format!("missing required key `{key}` in {}", describe(path));
                self.at_key(path, problem(message, format!("add `{key}:` to {}", describe(path))));
            }
        }
        Some(fields)
    }

    /// A mapping from names to entries (agents, bottles, env); null is empty.
    fn entries<'v>(&mut self, value: &'v Value, path: &[Seg], expected: &str) -> Vec<(String, Vec<Seg>, &'v Value)> {
        match value {
            Value::Null => Vec::new(),
            Value::Mapping(mapping) => mapping
                .iter()
                .map(|(key, value)| {
                    let name = key_text(key);
                    let path = child(path, Seg::Key(name.clone()));
                    (name, path, value)
                })
                .collect(),
            other => {
                self.wrong_type(
                    path,
                    other,
                    expected,
                    "write one `name:` line per entry, with its keys indented under it",
                );
                Vec::new()
            }
        }
    }

    /// A list (null is empty).
    fn items<'v>(&mut self, value: &'v Value, path: &[Seg], expected: &str) -> Vec<(Vec<Seg>, &'v Value)> {
        match value {
            Value::Null => Vec::new(),
            Value::Sequence(items) => {
                items.iter().enumerate().map(|(index, item)| (child(path, Seg::Index(index)), item)).collect()
            }
            other => {
                self.wrong_type(path, other, expected, LIST_HINT);
                Vec::new()
            }
        }
    }

    fn string(&mut self, value: &Value, path: &[Seg]) -> Option<String> {
        if let Value::String(text) = value {
            return Some(text.clone());
        }
        let hint = match (value, self.spans.scalar(path)) {
            (Value::Number(_) | Value::Bool(_), Some(text)) => format!("quote it: \"{text}\""),
            _ => "write a single text value".to_string(),
        };
        self.wrong_type(path, value, "a string", hint);
        None
    }

    /// A string that passes `check`, which is reported at the value otherwise.
    fn checked(&mut self, value: &Value, path: &[Seg], check: impl FnOnce(&str) -> Check) -> Option<String> {
        let text = self.string(value, path)?;
        match check(&text) {
            Ok(()) => Some(text),
            Err(problem) => {
                self.at_value(path, problem);
                None
            }
        }
    }

    /// A list of strings, each passing `check`.
    fn strings(&mut self, value: &Value, path: &[Seg], check: impl Fn(&str) -> Check) -> Vec<String> {
        let items = match value {
            Value::Null => return Vec::new(),
            Value::Sequence(items) => items,
            other => {
                self.wrong_type(path, other, "a list of strings", LIST_HINT);
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (index, item) in items.iter().enumerate() {
            if let Some(text) = self.checked(item, &child(path, Seg::Index(index)), &check) {
                out.push(text);
            }
        }
        out
    }

    /// `supervise`: `true`/`false`, or `{ timeout: DURATION }`.
    fn supervise(&mut self, value: &Value, path: &[Seg]) -> Supervise {
        if !matches!(value, Value::Mapping(_)) {
            return Supervise { enabled: self.boolean(value, path), timeout: None };
        }
        let Some(fields) = self.mapping(value, path, SUPERVISE_KEYS, &[]) else { return Supervise::on() };
        let timeout = fields.get("timeout").and_then(|(value, path)| {
            self.checked(value, &path, |text| {
                let wait = crate::state::parse_duration(text)
                    .map_err(|e| problem(e.message().to_string(), "e.g. `timeout: 30m`"))?;
                if wait < std::time::Duration::from_secs(1) || wait > std::time::Duration::from_secs(24 * 3600) {
                    return Err(problem(
                        format!("a supervise timeout of {text} is out of range"),
                        "give between 1s and 24h",
                    ));
                }
                Ok(())
            })
        });
        Supervise { enabled: true, timeout }
    }

    fn boolean(&mut self, value: &Value, path: &[Seg]) -> bool {
        match value {
            Value::Bool(flag) => *flag,
            other => {
                let yaml_1_1 = ["yes", "no", "on", "off", "y", "n"];
                let hint = match other {
                    Value::String(text) if yaml_1_1.contains(&text.to_ascii_lowercase().as_str()) => {
                        format!("YAML 1.2 reads `{text}` as text: write `true` or `false`")
                    }
                    _ => "write `true` or `false`".to_string(),
                };
                self.wrong_type(path, other, "true or false", hint);
                false
            }
        }
    }

    /// A file path: `~/` expands to `$HOME`, relative paths resolve against
    /// the manifest's folder.
    fn path(&mut self, value: &Value, path: &[Seg]) -> Option<PathBuf> {
        let text = self.checked(value, path, |text| {
            if text.is_empty() {
                Err(problem("the path is empty", "write a file path"))
            } else if text.contains('\0') {
                Err(problem("the path contains a NUL character", "write a file path"))
            } else if text.starts_with('~') && !text.starts_with("~/") {
                Err(problem(
                    format!("`{text}`: only a leading `~/` is expanded"),
                    "write `~/…`, an absolute path, or a path relative to the manifest's folder",
                ))
            } else {
                Ok(())
            }
        })?;
        let expanded = match (text.strip_prefix("~/"), self.home) {
            (None, _) => PathBuf::from(&text),
            (Some(rest), Some(home)) => home.join(rest),
            (Some(_), None) => {
                let hint = "write an absolute path, or one relative to the manifest's folder";
                self.at_value(path, problem(format!("cannot expand `{text}`: HOME is not set"), hint));
                return None;
            }
        };
        let joined = self.dir.join(expanded);
        Some(std::path::absolute(&joined).unwrap_or(joined))
    }

    fn manifest(&mut self, root: &Value) -> Manifest {
        let mut manifest = Manifest {
            agents: BTreeMap::new(),
            bottles: BTreeMap::new(),
            kubernetes: None,
            source: ManifestSource::default(),
            host_vars: Vec::new(),
        };
        if root.is_null() {
            let hint = "define at least one agent under `agents:` and the bottle it runs in under `bottles:`";
            self.error(Pos::START, problem("the manifest is empty", hint));
            return manifest;
        }
        let Some(fields) = self.mapping(root, &[], TOP_KEYS, &["agents", "bottles"]) else {
            return manifest;
        };
        let bottles = match fields.get("bottles") {
            Some((value, path)) => self.entries(value, &path, "a mapping of bottle names to bottles"),
            None => Vec::new(),
        };
        manifest.kubernetes = fields.get("kubernetes").map(|(value, path)| self.kubernetes(value, &path));
        let bottle_names: Vec<String> = bottles.iter().map(|(name, ..)| name.clone()).collect();
        for (name, path, value) in bottles {
            self.name_key(&name, &path, "bottle");
            if let Some(bottle) = self.bottle(&name, value, &path) {
                manifest.bottles.insert(name, bottle);
            }
        }
        if let Some((value, path)) = fields.get("agents") {
            let agents = self.entries(value, &path, "a mapping of agent names to agents");
            if value.is_null() || value.as_mapping().is_some_and(|agents| agents.is_empty()) {
                let hint = "add an agent, e.g. `shell: { bottle: NAME }`, under `agents:`";
                self.at_key(&path, problem("no agents are defined", hint));
            }
            for (name, path, value) in agents {
                self.name_key(&name, &path, "agent");
                if let Some(agent) = self.agent(value, &path, &bottle_names) {
                    manifest.agents.insert(name, agent);
                }
            }
        }
        manifest
    }

    /// The `kubernetes` section (null: every default).
    fn kubernetes(&mut self, value: &Value, path: &[Seg]) -> KubernetesDef {
        let mut def = KubernetesDef::default();
        if value.is_null() {
            return def;
        }
        let Some(fields) = self.mapping(value, path, KUBERNETES_KEYS, &[]) else { return def };
        if let Some(namespace) =
            fields.get_some("namespace").and_then(|(value, path)| self.checked(value, &path, check_namespace))
        {
            def.namespace = namespace;
        }
        def.runtime_class =
            fields.get_some("runtime_class").and_then(|(value, path)| self.checked(value, &path, check_runtime_class));
        def.image_registry =
            fields.get_some("image_registry").and_then(|(value, path)| self.checked(value, &path, check_registry));
        if let Some((value, path)) = fields.get("node_selector") {
            for (key, path, value) in self.entries(value, &path, "a mapping of node label keys to values") {
                if let Err(problem) = check_label_key(&key) {
                    self.at_key(&path, problem);
                }
                if let Some(value) = self.checked(value, &path, check_label_value) {
                    def.node_selector.insert(key, value);
                }
            }
        }
        def.unenforced_ok = fields.get("unenforced_ok").is_some_and(|(value, path)| self.boolean(value, &path));
        def
    }

    fn name_key(&mut self, name: &str, path: &[Seg], what: &str) {
        if let Err(problem) = check_name(name, what) {
            self.at_key(path, problem);
        }
    }

    fn agent(&mut self, value: &Value, path: &[Seg], bottles: &[String]) -> Option<AgentDef> {
        let fields = self.mapping(value, path, AGENT_KEYS, &["bottle"])?;
        let bottle = fields.get("bottle").and_then(|(value, path)| {
            self.checked(value, &path, |name| {
                if bottles.iter().any(|bottle| bottle == name) {
                    return Ok(());
                }
                let defined: Vec<&str> = bottles.iter().map(String::as_str).collect();
                let hint = if defined.is_empty() {
                    "no bottles are defined: add one under `bottles:`".to_string()
                } else {
                    did_you_mean(name, &defined, "defined bottles")
                };
                Err(problem(format!("bottle `{name}` is not defined"), hint))
            })
        });
        let skills = match fields.get("skills") {
            Some((value, path)) => self.strings(value, &path, check_skill),
            None => Vec::new(),
        };
        let prompt = fields.get_some("prompt").and_then(|(value, path)| self.path(value, &path));
        let git_identity = fields.get_some("git_identity").and_then(|(value, path)| self.identity(value, &path));
        let pool = fields.get_some("pool").and_then(|(value, path)| self.pool(value, &path));
        Some(AgentDef { bottle: bottle.unwrap_or_default(), skills, prompt, git_identity, pool })
    }

    /// An agent's `pool: { size: N }`.
    fn pool(&mut self, value: &Value, path: &[Seg]) -> Option<PoolDef> {
        let fields = self.mapping(value, path, POOL_KEYS, POOL_KEYS)?;
        let (value, path) = fields.get("size")?;
        let size = value.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|n| (1..=MAX_POOL_SIZE).contains(n));
        if size.is_none() {
            self.at_value(
                &path,
                problem(
                    format!(
                        "pool size must be a whole number from 1 to {MAX_POOL_SIZE}, found {}",
                        number_or_kind(value)
                    ),
                    "write `pool: { size: 2 }` (each pooled bottle runs, and uses memory, until `bottle start` claims \
                     it), or remove `pool`",
                ),
            );
        }
        Some(PoolDef { size: size? })
    }

    fn identity(&mut self, value: &Value, path: &[Seg]) -> Option<GitIdentity> {
        let fields = self.mapping(value, path, IDENTITY_KEYS, IDENTITY_KEYS)?;
        let name = fields.get("name").and_then(|(value, path)| self.checked(value, &path, check_identity_name));
        let email = fields.get("email").and_then(|(value, path)| self.checked(value, &path, check_email));
        Some(GitIdentity { name: name?, email: email? })
    }

    /// Bottle `name`, at `path`.
    fn bottle(&mut self, name: &str, value: &Value, path: &[Seg]) -> Option<BottleDef> {
        let fields = self.mapping(value, path, BOTTLE_KEYS, &["agent_provider"])?;
        let provider = fields.get("agent_provider").and_then(|(value, path)| self.provider(value, &path));
        let env = match fields.get("env") {
            Some((value, path)) => self.env(name, value, &path),
            None => BTreeMap::new(),
        };
        let mut egress = Vec::new();
        if let Some((value, path)) = fields.get("egress") {
            for (path, value) in self.items(value, &path, "a list of routes") {
                let Some(route) = self.route(value, &path) else { continue };
                if let Some(auth) = &route.auth {
                    let at = child(&child(&path, Seg::Key("auth".into())), Seg::Key("from_host".into()));
                    let used_by =
                        HostVarUse::Route { bottle: name.to_string(), index: egress.len(), host: route.host.clone() };
                    self.host_var(&auth.from_host, &at, used_by);
                }
                egress.push(route);
            }
        }
        let mut git = Vec::new();
        if let Some((value, path)) = fields.get("git") {
            let mut names = HashMap::new();
            for (path, value) in self.items(value, &path, "a list of git upstreams") {
                git.extend(self.upstream(value, &path, &mut names));
            }
        }
        let supervise = match fields.get("supervise") {
            Some((value, path)) => self.supervise(value, &path),
            None => Supervise::default(),
        };
        let resources = match fields.get_some("resources") {
            Some((value, path)) => self.resources(value, &path).unwrap_or_default(),
            None => Resources::default(),
        };
        Some(BottleDef { agent_provider: provider?, env, egress, git, supervise, resources })
    }

    /// Bottle `bottle`'s `env`, at `path`, within the [`limits`](super::limits):
    /// the number of entries, and the literal entries' sizes (a host value's
    /// size is known only when the bottle starts, where `prepare` checks it).
    fn env(&mut self, bottle: &str, value: &Value, path: &[Seg]) -> BTreeMap<String, EnvValue> {
        let entries = self.entries(value, path, "a mapping of variable names to values");
        if entries.len() > MAX_ENV_ENTRIES {
            let message = format!(
                "{} has {} entries, more than the {MAX_ENV_ENTRIES} a bottle may have: {EXEC_REASON}",
                describe(path),
                entries.len()
            );
            let hint = format!(
                "keep at most {MAX_ENV_ENTRIES} entries; pass bulk data in a file the agent reads (a prompt, a \
                 skill, the copied working directory) instead"
            );
            self.at_key(path, problem(message, hint));
        }
        let mut env = BTreeMap::new();
        for (name, path, value) in entries {
            if let Err(problem) = check_env_key(&name) {
                self.at_key(&path, problem);
            }
            if let Some(env_value) = self.env_value(value, &path) {
                if let EnvValue::FromHost { from_host, .. } = &env_value {
                    let used_by = HostVarUse::Env { bottle: bottle.to_string(), name: name.clone() };
                    self.host_var(from_host, &child(&path, Seg::Key("from_host".into())), used_by);
                }
                env.insert(name, env_value);
            }
        }
        let literals = env.iter().filter_map(|(name, value)| match value {
            EnvValue::Literal(text) => Some((name.as_str(), text.as_str())),
            EnvValue::FromHost { .. } => None,
        });
        let size = EnvSize::measure(literals);
        for excess in size.excesses() {
            match excess {
                Excess::Entry { name, .. } => {
                    let message = format!("{excess}: {EXEC_REASON}");
                    let hint = "shorten the value, or pass the data in a file the agent reads";
                    self.at_value(&child(path, Seg::Key(name.to_string())), problem(message, hint));
                }
                Excess::Total { .. } => {
                    let message = format!("the literal entries of {} are {excess}: {EXEC_REASON}", describe(path));
                    let hint = format!(
                        "shorten or remove entries (the largest: {}), or pass bulk data in a file the agent reads",
                        size.largest(3)
                    );
                    self.at_key(path, problem(message, hint));
                }
            }
        }
        env
    }

    fn resources(&mut self, value: &Value, path: &[Seg]) -> Option<Resources> {
        let fields = self.mapping(value, path, RESOURCE_KEYS, &[])?;
        let mut size = |key: &str| {
            let (value, path) = fields.get_some(key)?;
            let text = match value {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                other => {
                    self.wrong_type(&path, other, "a size", "write a size such as 512m or 4g");
                    return None;
                }
            };
            let size = ByteSize::parse(&text).filter(|size| size.0 > 0);
            if size.is_none() {
                let message = format!("`{text}` is not a size");
                self.at_value(&path, problem(message, "write a number with k, m, g or t (binary units), e.g. 4g"));
            }
            size
        };
        let (memory, disk, state) = (size("memory"), size("disk"), size("state"));
        if let Some(memory) = memory.filter(|m| *m < ByteSize::mib(16)) {
            let path = child(path, Seg::Key("memory".into()));
            self.at_value(
                &path,
                problem(format!("{memory} is too little memory for a bottle"), "give it at least 16m"),
            );
        }
        let cpus = fields.get_some("cpus").and_then(|(value, path)| {
            let text = match value {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                other => {
                    self.wrong_type(&path, other, "a number of CPUs", "write a number such as 2 or 0.5");
                    return None;
                }
            };
            let cpus = Cpus::parse(&text);
            if cpus.is_none() {
                self.at_value(
                    &path,
                    problem(format!("`{text}` is not a number of CPUs"), "write a number such as 2 or 0.5"),
                );
            }
            cpus
        });
        let pids = fields.get_some("pids").and_then(|(value, path)| {
            let pids = value.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|n| *n >= 16);
            if pids.is_none() {
                self.at_value(
                    &path,
                    problem(
                        format!("pids must be a whole number of at least 16, found {}", kind(value)),
                        "write a number such as 512",
                    ),
                );
            }
            pids
        });
        Some(Resources { memory, cpus, pids, disk, state })
    }

    fn provider(&mut self, value: &Value, path: &[Seg]) -> Option<AgentProviderDef> {
        let fields = self.mapping(value, path, PROVIDER_KEYS, &["template"])?;
        let known = self.known_templates;
        let template = fields.get("template").and_then(|(value, path)| {
            self.checked(value, &path, |template| {
                if known.contains(&template) {
                    Ok(())
                } else {
                    let message = format!("unknown agent provider template `{template}`");
                    Err(problem(message, did_you_mean(template, known, "known templates")))
                }
            })
        });
        let dockerfile = fields.get_some("dockerfile").and_then(|(value, path)| self.path(value, &path));
        let image_archive = fields.get_some("image_archive").and_then(|(value, path)| self.path(value, &path));
        let forward_host_credentials =
            fields.get("forward_host_credentials").is_some_and(|(value, path)| self.boolean(value, &path));
        let auth_token = fields
            .get_some("auth_token")
            .and_then(|(value, path)| self.checked(value, &path, |name| check_env_name(name, "host")));
        Some(AgentProviderDef { template: template?, dockerfile, image_archive, forward_host_credentials, auth_token })
    }

    fn env_value(&mut self, value: &Value, path: &[Seg]) -> Option<EnvValue> {
        match value {
            Value::String(_) => self
                .checked(value, path, |text| {
                    if text.contains('\0') {
                        Err(problem("the value contains a NUL character", "environment values cannot hold NUL"))
                    } else {
                        Ok(())
                    }
                })
                .map(EnvValue::Literal),
            Value::Number(number) => {
                let text = self.spans.scalar(path).map_or_else(|| number.to_string(), str::to_string);
                Some(EnvValue::Literal(text))
            }
            Value::Bool(flag) => {
                let text = self.spans.scalar(path).map_or_else(|| flag.to_string(), str::to_string);
                Some(EnvValue::Literal(text))
            }
            Value::Mapping(_) => {
                let fields = self.mapping(value, path, FROM_HOST_KEYS, &["from_host"])?;
                let from_host = fields
                    .get("from_host")
                    .and_then(|(value, path)| self.checked(value, &path, |name| check_env_name(name, "host")));
                let secret = fields.get("secret").is_some_and(|(value, path)| self.boolean(value, &path));
                Some(EnvValue::FromHost { from_host: from_host?, secret })
            }
            other => {
                let hint = "write a literal value, or `{ from_host: NAME }` to copy a host variable";
                self.wrong_type(path, other, "a value or `{ from_host: NAME }`", hint);
                None
            }
        }
    }

    fn route(&mut self, value: &Value, path: &[Seg]) -> Option<EgressRoute> {
        let fields = self.mapping(value, path, ROUTE_KEYS, &["host"])?;
        let host =
            fields.get("host").and_then(|(value, path)| self.checked(value, &path, |host| check_host(host, true)));
        let methods = match fields.get("methods") {
            Some((value, path)) => {
                self.strings(value, &path, check_method).into_iter().map(|method| method.to_uppercase()).collect()
            }
            None => Vec::new(),
        };
        let paths = match fields.get("paths") {
            Some((value, path)) => self.strings(value, &path, check_url_path),
            None => Vec::new(),
        };
        let ports = match fields.get_some("ports") {
            Some((value, path)) => self.ports(value, &path),
            None => Vec::new(),
        };
        let auth = fields.get_some("auth").and_then(|(value, path)| self.auth(value, &path));
        let mut flag = |key: &str| fields.get(key).is_some_and(|(value, path)| self.boolean(value, &path));
        let (insecure_http, wildcard_auth) = (flag("insecure_http"), flag("wildcard_auth"));
        self.route_credential(&fields, host.as_deref(), insecure_http, wildcard_auth);
        Some(EgressRoute { host: host?, methods, paths, ports, auth, insecure_http, wildcard_auth })
    }

    /// The rules tying a route's credential to where it may go: `auth` on a
    /// `*.` wildcard needs `wildcard_auth: true`, and `insecure_http` and
    /// `wildcard_auth` mean nothing without `auth`.
    fn route_credential(&mut self, fields: &Fields<'_>, host: Option<&str>, insecure_http: bool, wildcard_auth: bool) {
        let wildcard = host.and_then(|host| host.strip_prefix("*."));
        match (fields.get_some("auth"), wildcard) {
            (Some((_, auth_path)), Some(suffix)) if !wildcard_auth => {
                let message = format!(
                    "`auth` on the wildcard route `*.{suffix}` sends the credential to every host under {suffix}"
                );
                let hint = format!(
                    "name the host exactly (e.g. `api.{suffix}`), or add `wildcard_auth: true` to this route if every \
                     such host may have the credential"
                );
                self.at_key(&auth_path, problem(message, hint));
            }
            (None, _) => {
                for (key, on) in [("insecure_http", insecure_http), ("wildcard_auth", wildcard_auth)] {
                    if let (true, Some((_, path))) = (on, fields.get(key)) {
                        let message = format!("`{key}` only applies to a route with `auth`");
                        self.at_key(&path, problem(message, format!("remove `{key}`, or add the route's `auth`")));
                    }
                }
            }
            (Some(_), None) if wildcard_auth => {
                if let Some((_, path)) = fields.get("wildcard_auth") {
                    let message = "`wildcard_auth` only applies to a route whose host starts with `*.`";
                    self.at_key(&path, problem(message, "remove `wildcard_auth`: this route names one host"));
                }
            }
            _ => {}
        }
    }

    /// A route's `ports`: a non-empty list of port numbers.
    fn ports(&mut self, value: &Value, path: &[Seg]) -> Vec<u16> {
        let items = self.items(value, path, "a list of ports");
        if items.is_empty() && value.is_sequence() {
            let hint = "list the ports the route may reach, e.g. `[443, 8443]`, or remove `ports` to allow every port";
            self.at_value(path, problem("`ports` is empty, so the route allows no port", hint));
        }
        items.into_iter().filter_map(|(path, value)| self.port(value, &path, 443)).collect()
    }

    fn auth(&mut self, value: &Value, path: &[Seg]) -> Option<RouteAuth> {
        let fields = self.mapping(value, path, AUTH_KEYS, &["scheme", "from_host"])?;
        let from_host = fields
            .get("from_host")
            .and_then(|(value, path)| self.checked(value, &path, |name| check_env_name(name, "host")));
        let scheme = fields.get("scheme").and_then(|(value, path)| {
            self.checked(value, &path, |scheme| {
                if AUTH_SCHEMES.contains(&scheme) {
                    Ok(())
                } else {
                    let message = format!("unknown auth scheme `{scheme}`");
                    Err(problem(message, did_you_mean(scheme, AUTH_SCHEMES, "auth schemes")))
                }
            })
        })?;
        // `user` belongs to basic and `header` to header; each is required
        // there and forbidden with every other scheme.
        for (key, owner) in [("user", "basic"), ("header", "header")] {
            match (fields.get(key), scheme == owner) {
                (Some((_, key_path)), false) => {
                    let message = format!("`{key}` is only used with `scheme: {owner}`");
                    self.at_key(&key_path, problem(message, format!("remove `{key}`, or set `scheme: {owner}`")));
                }
                (None, true) => {
                    let message = format!("missing required key `{key}` in {}", describe(path));
                    let hint = if key == "user" {
                        "`scheme: basic` needs `user: NAME` (the token is the password)"
                    } else {
                        "`scheme: header` needs `header: Header-Name`"
                    };
                    self.at_key(path, problem(message, hint));
                }
                _ => {}
            }
        }
        let scheme = match scheme.as_str() {
            "bearer" => AuthScheme::Bearer,
            "x-api-key" => AuthScheme::XApiKey,
            "basic" => {
                let (value, path) = fields.get("user")?;
                AuthScheme::Basic { user: self.checked(value, &path, check_basic_user)? }
            }
            _ => {
                let (value, path) = fields.get("header")?;
                AuthScheme::Header { name: self.checked(value, &path, check_header_name)? }
            }
        };
        Some(RouteAuth { scheme, from_host: from_host? })
    }

    fn upstream(&mut self, value: &Value, path: &[Seg], names: &mut HashMap<String, Pos>) -> Option<GitUpstream> {
        let fields = self.mapping(value, path, GIT_KEYS, &["Name", "Host", "Repo", "IdentityFile"])?;
        let name = fields.get("Name").and_then(|(value, path)| {
            let name = self.checked(value, &path, |name| check_name(name, "git upstream"))?;
            let pos = self.spans.value(&path);
            if let Some(first) = names.get(&name) {
                let message = format!("duplicate git upstream name `{name}`");
                let hint = format!("`{name}` is already used at line {}: each upstream needs its own Name", first.line);
                self.error(pos, problem(message, hint));
            } else {
                names.insert(name.clone(), pos);
            }
            Some(name)
        });
        let host =
            fields.get("Host").and_then(|(value, path)| self.checked(value, &path, |host| check_host(host, false)));
        let port = fields.get("Port").map_or(Some(22), |(value, path)| self.port(value, &path, 22));
        let user = fields
            .get("User")
            .map_or(Some("git".to_string()), |(value, path)| self.checked(value, &path, check_ssh_user));
        let repo = fields.get("Repo").and_then(|(value, path)| self.checked(value, &path, check_repo));
        let identity_file = fields.get("IdentityFile").and_then(|(value, path)| self.path(value, &path));
        let push = fields.get("push").and_then(|(value, path)| self.push(value, &path)).unwrap_or_default();
        Some(GitUpstream {
            name: name?,
            host: host?,
            port: port?,
            user: user?,
            repo: repo?,
            identity_file: identity_file?,
            push,
        })
    }

    /// A port number (1–65535); `example` is the one the hint suggests.
    fn port(&mut self, value: &Value, path: &[Seg], example: u16) -> Option<u16> {
        let Value::Number(number) = value else {
            self.wrong_type(path, value, "a port number", format!("write a number such as {example}"));
            return None;
        };
        let port = number.as_u64().and_then(|port| u16::try_from(port).ok()).filter(|port| *port > 0);
        if port.is_none() {
            self.at_value(path, problem(format!("port {number} is out of range"), "a port is between 1 and 65535"));
        }
        port
    }

    fn push(&mut self, value: &Value, path: &[Seg]) -> Option<PushPolicy> {
        let fields = self.mapping(value, path, PUSH_KEYS, &[])?;
        let branches = match fields.get("branches") {
            Some((value, path)) => self.strings(value, &path, check_branch),
            None => Vec::new(),
        };
        let paths_deny = match fields.get("paths_deny") {
            Some((value, path)) => self.strings(value, &path, check_path_pattern),
            None => Vec::new(),
        };
        let max_push_mb = fields.get("max_push_mb").map_or(Some(super::DEFAULT_MAX_PUSH_MB), |(value, path)| {
            self.count(value, &path, "megabytes", 1..=MAX_PUSH_MB_LIMIT)
        });
        let mut flag = |key: &str| fields.get(key).is_some_and(|(value, path)| self.boolean(value, &path));
        Some(PushPolicy {
            branches,
            force: flag("force"),
            delete: flag("delete"),
            tags: flag("tags"),
            ci: flag("ci"),
            paths_deny,
            max_push_mb: max_push_mb?,
        })
    }

    /// A whole number of `unit` within `range`.
    fn count(&mut self, value: &Value, path: &[Seg], unit: &str, range: std::ops::RangeInclusive<u64>) -> Option<u64> {
        let (low, high) = (*range.start(), *range.end());
        let Value::Number(number) = value else {
            let hint = match value {
                Value::String(text) if text.trim().parse::<u64>().is_ok() => {
                    format!("drop the quotes: {}", text.trim())
                }
                _ => format!("write a whole number of {unit} between {low} and {high}"),
            };
            self.wrong_type(path, value, &format!("a number of {unit}"), hint);
            return None;
        };
        let count = number.as_u64().filter(|count| range.contains(count));
        if count.is_none() {
            let message = format!("{number} {unit} is out of range");
            self.at_value(path, problem(message, format!("write a whole number between {low} and {high}")));
        }
        count
    }
}

/// "did you mean `x`? LABEL: a, b, c" (without the question when nothing is close).
fn did_you_mean(word: &str, candidates: &[&str], label: &str) -> String {
    let list = format!("{label}: {}", candidates.join(", "));
    match closest(word, candidates) {
        Some(close) => format!("did you mean `{close}`? {list}"),
        None => list,
    }
}

/// The candidate nearest to `word` (case-insensitively), if it is near enough
/// to be a typo: at most a third of its length away, and at least one edit.
fn closest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let word: Vec<char> = word.to_lowercase().chars().collect();
    candidates
        .iter()
        .map(|candidate| {
            let lower: Vec<char> = candidate.to_lowercase().chars().collect();
            (edit_distance(&word, &lower), lower.len(), *candidate)
        })
        .filter(|(distance, len, _)| *distance <= (len / 3).max(1))
        .min_by_key(|(distance, ..)| *distance)
        .map(|(.., candidate)| candidate)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and
/// adjacent transpositions (`bottel` is one edit from `bottle`).
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let width = b.len() + 1;
    let mut rows = vec![0usize; (a.len() + 1) * width];
    for (j, cell) in rows.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        rows[i * width] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[(i - 1) * width + j] + 1)
                .min(rows[i * width + j - 1] + 1)
                .min(rows[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[(i - 2) * width + j - 2] + 1);
            }
            rows[i * width + j] = best;
        }
    }
    rows[a.len() * width + b.len()]
}

fn check_name(name: &str, what: &str) -> Check {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if first_ok && rest_ok && name.len() <= 63 {
        return Ok(());
    }
    Err(problem(
        format!("`{name}` is not a valid {what} name"),
        "names match [a-z0-9][a-z0-9-]{0,62}: lower-case letters, digits and `-`, not starting with `-`, at most 63 characters",
    ))
}

/// Whether `text` is a DNS-1123 label of at most `max` characters:
/// lower-case letters, digits and `-`, starting and ending alphanumeric.
fn is_dns_label(text: &str, max: usize) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !text.is_empty()
        && text.len() <= max
        && text.chars().all(|c| alnum(c) || c == '-')
        && text.starts_with(alnum)
        && text.ends_with(alnum)
}

/// Whether `text` is a DNS-1123 subdomain: dot-separated labels, at most 253 characters.
fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(|label| is_dns_label(label, 63))
}

fn check_namespace(namespace: &str) -> Check {
    if is_dns_label(namespace, 63) {
        return Ok(());
    }
    Err(problem(
        format!("`{namespace}` is not a valid Kubernetes namespace name"),
        "a namespace is a DNS label: lower-case letters, digits and `-`, starting and ending with a letter or \
         digit, at most 63 characters (e.g. `bot-bottle`)",
    ))
}

fn check_runtime_class(class: &str) -> Check {
    if is_dns_subdomain(class) {
        return Ok(());
    }
    Err(problem(
        format!("`{class}` is not a valid RuntimeClass name"),
        "name a RuntimeClass of the cluster (`kubectl get runtimeclass`), e.g. `gvisor` or `kata-qemu`: lower-case \
         letters, digits, `-` and `.`",
    ))
}

fn check_registry(registry: &str) -> Check {
    let hint = "write the registry host and optional path the cluster pulls from, without a scheme, e.g. \
                `registry.example.com/team` or `localhost:5000`";
    if registry.contains("://") {
        return Err(problem(format!("`{registry}`: a registry has no scheme"), hint));
    }
    let (host, path) = registry.split_once('/').unwrap_or((registry, ""));
    let (name, port) = host.rsplit_once(':').unwrap_or((host, ""));
    let name_ok = !name.is_empty() && name.split('.').all(|l| is_dns_label(&l.to_ascii_lowercase(), 63));
    let port_ok = port.is_empty() || port.parse::<u16>().is_ok_and(|p| p > 0);
    let path_ok = path.is_empty()
        || path.split('/').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
                && part.starts_with(|c: char| c.is_ascii_alphanumeric())
        });
    if name_ok && port_ok && path_ok {
        return Ok(());
    }
    Err(problem(format!("`{registry}` is not a registry reference"), hint))
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at
/// most 63 letters, digits, `-`, `_` and `.`, starting and ending alphanumeric.
fn check_label_key(key: &str) -> Check {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if prefix.is_none_or(is_dns_subdomain) && is_label_value(name) && !name.is_empty() {
        return Ok(());
    }
    Err(problem(
        format!("`{key}` is not a valid node label key"),
        "write a key such as `node-pool` or `example.com/pool`: at most 63 letters, digits, `-`, `_` and `.` after \
         an optional DNS prefix and `/`",
    ))
}

/// A label value: empty, or at most 63 letters, digits, `-`, `_` and `.`,
/// starting and ending alphanumeric.
fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn check_label_value(value: &str) -> Check {
    if is_label_value(value) {
        return Ok(());
    }
    Err(problem(
        format!("`{value}` is not a valid node label value"),
        "at most 63 letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit (quote it)",
    ))
}

/// `whose` says whose variable it is, e.g. "host".
fn check_env_name(name: &str, whose: &str) -> Check {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Ok(());
    }
    Err(problem(
        format!("`{name}` is not a valid {whose} environment variable name"),
        "environment variable names match [A-Za-z_][A-Za-z0-9_]*",
    ))
}

fn check_env_key(name: &str) -> Check {
    check_env_name(name, "bottle")?;
    if name.starts_with(RESERVED_ENV_PREFIX) {
        return Err(problem(
            format!("`{name}` starts with the reserved prefix `{RESERVED_ENV_PREFIX}`"),
            "bot-bottle sets BOT_BOTTLE_* variables itself: choose another name",
        ));
    }
    Ok(())
}

fn check_skill(skill: &str) -> Check {
    let bad = skill.is_empty() || skill == "." || skill == ".." || skill.contains(['/', '\\', '\0']);
    if bad {
        return Err(problem(
            format!("`{skill}` is not a plain skill name"),
            "a skill is the name of a directory under ~/.claude/skills/ on the host, without `/` or `..`",
        ));
    }
    Ok(())
}

fn check_identity_name(name: &str) -> Check {
    if name.trim().is_empty() || name.contains(['<', '>']) || name.chars().any(char::is_control) {
        return Err(problem(
            format!("`{name}` is not a usable git user name"),
            "write a name such as `Review Bot`, without `<`, `>` or line breaks",
        ));
    }
    Ok(())
}

fn check_email(email: &str) -> Check {
    let valid = email
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.contains('@'))
        && !email.contains(['<', '>'])
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        return Ok(());
    }
    Err(problem(format!("`{email}` is not an email address"), "write an address such as `bot@example.com`"))
}

/// `allow_wildcard`: whether a leading `*.` is allowed (egress hosts, not git).
fn check_host(host: &str, allow_wildcard: bool) -> Check {
    if host.parse::<IpAddr>().is_ok()
        || host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).is_some_and(|h| h.parse::<Ipv6Addr>().is_ok())
    {
        return Ok(());
    }
    let just_the_host = |what: &str| {
        problem(format!("`{host}` {what}"), format!("write just the host name, e.g. `{}`", bare_host(host)))
    };
    if host.contains("://") {
        return Err(just_the_host("includes a URL scheme"));
    }
    if host.chars().any(char::is_whitespace) {
        return Err(just_the_host("contains whitespace"));
    }
    if host.contains('/') {
        return Err(just_the_host("includes a path"));
    }
    if host.contains(':') {
        return Err(just_the_host("includes a port"));
    }
    if host.is_empty() {
        return Err(problem("the host is empty", "write a host name such as `api.github.com`"));
    }
    if host.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(problem(format!("`{host}` is not lower case"), format!("write `{}`", host.to_ascii_lowercase())));
    }
    let name = match host.strip_prefix("*.") {
        Some(rest) if allow_wildcard => rest,
        _ => host,
    };
    if name.contains('*') {
        return Err(if allow_wildcard {
            problem(
                format!("`{host}`: only a leading `*.` wildcard is allowed"),
                "write `*.example.com` to match every subdomain, or the full host name",
            )
        } else {
            problem(format!("`{host}`: wildcards are not allowed here"), "write one host name")
        });
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        return Ok(());
    }
    Err(problem(
        format!("`{host}` is not a valid host name"),
        "a host name is dot-separated labels of lower-case letters, digits and `-`, e.g. `api.github.com`",
    ))
}

/// `host` without scheme, path, port or whitespace: what the user meant.
fn bare_host(host: &str) -> String {
    let rest = host.trim().split_once("://").map_or(host.trim(), |(_, rest)| rest);
    let rest = rest.split('/').next().unwrap_or(rest);
    let rest = match rest.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => rest,
    };
    let bare: String = rest.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
    if bare.is_empty() { "api.example.com".to_string() } else { bare }
}

/// An HTTP token (RFC 9110 `tchar`s): methods and header names.
fn is_token(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

fn check_method(method: &str) -> Check {
    if is_token(method) {
        return Ok(());
    }
    Err(problem(format!("`{method}` is not an HTTP method"), "write a method name such as GET or POST"))
}

fn check_header_name(name: &str) -> Check {
    if is_token(name) {
        return Ok(());
    }
    Err(problem(format!("`{name}` is not an HTTP header name"), "write a header name such as `X-Api-Token`"))
}

fn check_basic_user(user: &str) -> Check {
    if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
        return Err(problem(
            format!("`{user}` is not a usable basic-auth user"),
            "write a user name without `:` or control characters",
        ));
    }
    Ok(())
}

fn check_url_path(path: &str) -> Check {
    if path.starts_with('/') && !path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Ok(());
    }
    Err(problem(
        format!("`{path}` is not a URL path"),
        "write a path prefix starting with `/`, e.g. `/repos/` (`*` matches any text)",
    ))
}

fn check_ssh_user(user: &str) -> Check {
    let mut chars = user.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Ok(());
    }
    Err(problem(
        format!("`{user}` is not a valid SSH user"),
        "an SSH user is letters, digits, `.`, `_` and `-`, e.g. `git`",
    ))
}

fn check_repo(repo: &str) -> Check {
    let message = if repo.is_empty() {
        "the repository path is empty".to_string()
    } else if repo.contains("://") || repo.contains(':') {
        format!("`{repo}` is a URL, not a repository path")
    } else if repo.starts_with('/') {
        format!("`{repo}` starts with `/`")
    } else if repo.split('/').any(|part| part == "..") {
        format!("`{repo}` contains `..`")
    } else if repo.chars().any(|c| c.is_whitespace() || c.is_control()) {
        format!("`{repo}` contains whitespace")
    } else {
        return Ok(());
    };
    Err(problem(message, "write the repository path on the host, relative and without `..`, e.g. `org/project.git`"))
}

/// A `push.paths_deny` pattern: a glob from the repository's top.
fn check_path_pattern(pattern: &str) -> Check {
    let hint = "write a path or glob from the repository's top, e.g. `secrets/**` or `**/*.pem`";
    let message = if pattern.is_empty() {
        "the path pattern is empty".to_string()
    } else if pattern.starts_with('/') {
        format!("`{pattern}` starts with `/`: patterns are relative to the repository's top")
    } else if pattern.ends_with('/') {
        format!("`{pattern}` ends with `/`: a pattern naming a directory covers everything under it without one")
    } else if pattern.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        format!("`{pattern}` has an empty, `.` or `..` component")
    } else if pattern.contains(['[', '\\']) {
        format!("`{pattern}` uses `[` or `\\`, which these patterns do not support")
    } else if pattern.chars().any(char::is_control) {
        format!("`{pattern}` contains a control character")
    } else {
        return Ok(());
    };
    Err(problem(message, hint))
}

fn check_branch(branch: &str) -> Check {
    let bad = branch.is_empty()
        || branch.starts_with(['-', '/'])
        || branch.ends_with('/')
        || branch.contains("..")
        || branch.chars().any(|c| c.is_whitespace() || c.is_control() || "~^:?[\\".contains(c));
    if bad {
        return Err(problem(
            format!("`{branch}` is not a valid branch pattern"),
            "write a branch name, or a pattern with `*`, e.g. `agent/*`",
        ));
    }
    Ok(())
}
