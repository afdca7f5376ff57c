//! The push policy: which ref updates the gate forwards upstream, as which
//! refspec, and the one-line reason for each one it refuses.
//!
//! Two kinds of check. By ref: is the branch allowed, is the update a
//! fast-forward, a delete, a tag ([`check`]). By content: does the update
//! add, change or delete a CI definition ([`CI_DEFINITIONS`], refused unless
//! `push.ci`) or a path the manifest's `push.paths_deny` names
//! ([`check_paths`]; the `changes` module works out which paths an update
//! changes).
//!
//! Branch patterns are matched against the branch name without `refs/heads/`
//! (a pattern may spell that prefix; it is ignored), git-style: `*` matches
//! any run of characters within one path component (never `/`), `**` matches
//! any run including `/` (and `**/` also none at all), `?` matches one
//! character other than `/`, anything else matches itself. So `agent/*`
//! takes `agent/x` but not `agent/x/y` nor `main`; `agent/**` takes both
//! `agent/x` and `agent/x/y`; `*` takes every top-level branch.
//!
//! Path patterns are the same globs, from the repository's top, and a
//! pattern covers what is under the folder it names: `.github/workflows`
//! covers `.github/workflows/x.yml`, `secrets/**` and `secrets` alike cover
//! `secrets/a/b`. A path that stands where a folder of the pattern would be
//! counts too: a file, link or submodule at `.github` decides what
//! `.github/workflows` holds.

use bottle_core::PushPolicy;
use serde::{Deserialize, Serialize};

/// One line of a `pre-receive` hook's input: `OLD NEW REF`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RefUpdate {
    /// The ref's full name, e.g. `refs/heads/agent/x`.
    #[serde(rename = "ref")]
    pub(crate) name: String,
    /// The object it pointed to; all zeros when it is being created.
    pub(crate) old: String,
    /// The object it is to point to; all zeros when it is being deleted.
    pub(crate) new: String,
}

impl RefUpdate {
    /// Parses one `OLD NEW REF` line.
    pub(crate) fn parse(line: &str) -> Option<Self> {
        let mut parts = line.split_whitespace();
        let (old, new, name) = (parts.next()?, parts.next()?, parts.next()?);
        Some(Self { name: name.to_owned(), old: old.to_owned(), new: new.to_owned() })
    }

    /// Whether the ref is being created.
    pub(crate) fn creates(&self) -> bool {
        is_zero(&self.old)
    }

    /// Whether the ref is being deleted.
    pub(crate) fn deletes(&self) -> bool {
        is_zero(&self.new)
    }

    /// The ref as the agent knows it: `agent/x` for a branch, `tag v1` for a tag.
    pub(crate) fn short_name(&self) -> String {
        match (self.name.strip_prefix("refs/heads/"), self.name.strip_prefix("refs/tags/")) {
            (Some(branch), _) => branch.to_owned(),
            (None, Some(tag)) => format!("tag {tag}"),
            (None, None) => self.name.clone(),
        }
    }
}

/// The CI definitions: what a hosted CI reads from a pushed commit and runs
/// on push, with the repository's secrets, so that one allowed push could
/// take them. A push that adds, changes or deletes one is refused unless the
/// policy sets `ci`. Path patterns (see the module docs), from the top of
/// the repository, where each service looks by default.
pub(crate) const CI_DEFINITIONS: &[&str] = &[
    // GitHub Actions: workflows, the local actions they use, and the
    // repository's own action when a workflow says `uses: ./`.
    ".github/workflows",
    ".github/actions",
    "action.yml",
    "action.yaml",
    // Gitea and Forgejo Actions.
    ".gitea/workflows",
    ".gitea/actions",
    ".forgejo/workflows",
    ".forgejo/actions",
    // GitLab CI, and its includes where GitLab's own docs keep them.
    ".gitlab-ci.yml",
    ".gitlab-ci.yaml",
    ".gitlab/ci",
    ".circleci",
    ".buildkite",
    "Jenkinsfile",
    // Azure Pipelines.
    "azure-pipelines.yml",
    "azure-pipelines.yaml",
    ".azure-pipelines",
    ".drone.yml",
    ".drone.yaml",
    "bitbucket-pipelines.yml",
    ".travis.yml",
    "appveyor.yml",
    ".appveyor.yml",
    // Woodpecker.
    ".woodpecker.yml",
    ".woodpecker.yaml",
    ".woodpecker",
    // Google Cloud Build and AWS CodeBuild.
    "cloudbuild.yaml",
    "cloudbuild.yml",
    "buildspec.yml",
    "buildspec.yaml",
    // Cirrus CI, Semaphore, Bitrise, Codemagic, Tekton (Pipelines as Code).
    ".cirrus.yml",
    ".cirrus.star",
    ".semaphore",
    "bitrise.yml",
    "codemagic.yaml",
    ".tekton",
];

/// Whether `id` is git's null object id (SHA-1 or SHA-256).
fn is_zero(id: &str) -> bool {
    id.bytes().all(|b| b == b'0')
}

/// The verdict on one ref update: the refspec that forwards it upstream, or
/// why it is refused (one line, without the `bot-bottle: ` prefix).
///
/// `fast_forward` tells whether `update.new` descends from `update.old`; it
/// is asked only for a branch update that is allowed otherwise.
pub(crate) fn check(
    policy: &PushPolicy,
    update: &RefUpdate,
    fast_forward: impl FnOnce() -> bool,
) -> Result<String, String> {
    let name = &update.name;
    let is_tag = if let Some(branch) = name.strip_prefix("refs/heads/") {
        if !policy
            .branches
            .iter()
            .any(|pattern| glob_match(pattern.strip_prefix("refs/heads/").unwrap_or(pattern), branch))
        {
            return Err(format!(
                "push to {name} refused: branch not in [{}]; ask the operator to add it to push.branches",
                policy.branches.join(", ")
            ));
        }
        false
    } else if name.starts_with("refs/tags/") {
        if !policy.tags {
            return Err(format!("push to {name} refused: tags are not allowed; ask the operator to set push.tags"));
        }
        true
    } else {
        return Err(format!(
            "push to {name} refused: only branches (refs/heads/) and tags (refs/tags/) go upstream; push a branch instead"
        ));
    };
    if update.deletes() {
        if !policy.delete {
            return Err(format!(
                "delete of {name} refused: deletes are not allowed; ask the operator to set push.delete"
            ));
        }
        return Ok(format!(":{name}"));
    }
    let forward = format!("{}:{name}", update.new);
    if update.creates() {
        return Ok(forward);
    }
    // Moving an existing tag rewrites it, like a forced branch update.
    if !is_tag && fast_forward() {
        return Ok(forward);
    }
    if policy.force {
        return Ok(format!("+{forward}"));
    }
    let what = if is_tag { "moving an existing tag is a force-push" } else { "not a fast-forward (force-push)" };
    Err(format!("push to {name} refused: {what}; fetch and rebase or merge, or ask the operator to set push.force"))
}

/// The verdict on what `update` changes (`changed`, the paths it adds,
/// changes or deletes): why it is refused, naming the first offending path,
/// or `Ok` when it touches no CI definition (or the policy allows them) and
/// nothing `push.paths_deny` names.
pub(crate) fn check_paths(policy: &PushPolicy, update: &RefUpdate, changed: &[String]) -> Result<(), String> {
    let name = update.short_name();
    let under = |patterns: &[&str]| -> Vec<&String> {
        changed.iter().filter(|path| patterns.iter().any(|pattern| path_matches(pattern, path))).collect()
    };
    if !policy.ci {
        let ci = under(CI_DEFINITIONS);
        if let Some(first) = ci.first() {
            let what = match ci.len() {
                1 => ", a CI definition".to_owned(),
                n => format!(" and {} more CI definitions", n - 1),
            };
            return Err(format!(
                "push refused: {name} changes {first}{what}; the manifest's push: {{ ci: true }} allows it"
            ));
        }
    }
    for pattern in &policy.paths_deny {
        let denied = under(&[pattern]);
        if let Some(first) = denied.first() {
            let more = if denied.len() > 1 { format!(" (and {} more)", denied.len() - 1) } else { String::new() };
            return Err(format!(
                "push refused: {name} changes {first}{more}, which the manifest's push.paths_deny forbids (`{pattern}`)"
            ));
        }
    }
    Ok(())
}

/// Whether `path`, a file a push changes, falls under the path pattern
/// `pattern` (see the module docs): the pattern matches the path or one of
/// its folders, or the path is a folder the pattern names before its first
/// wildcard.
pub(crate) fn path_matches(pattern: &str, path: &str) -> bool {
    let mut prefix = path;
    loop {
        if glob_match(pattern, prefix) {
            return true;
        }
        match prefix.rfind('/') {
            Some(at) => prefix = &prefix[..at],
            None => break,
        }
    }
    let components: Vec<&str> = pattern.split('/').collect();
    (1..components.len())
        .take_while(|&n| !components[..n].iter().any(|component| component.contains(['*', '?'])))
        .any(|n| components[..n].join("/") == path)
}

/// Matches `name` against the git-style glob `pattern` (see the module docs).
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    matches(&pattern, &name)
}

fn matches(pattern: &[char], name: &[char]) -> bool {
    match pattern {
        [] => name.is_empty(),
        // `**/` also stands for no folder at all: `**/x` takes `x`.
        ['*', '*', '/', rest @ ..] if matches(rest, name) => true,
        ['*', '*', rest @ ..] => (0..=name.len()).any(|skip| matches(rest, &name[skip..])),
        ['*', rest @ ..] => {
            let component = name.iter().position(|&c| c == '/').unwrap_or(name.len());
            (0..=component).any(|skip| matches(rest, &name[skip..]))
        }
        ['?', rest @ ..] => name.first().is_some_and(|&c| c != '/') && matches(rest, &name[1..]),
        [literal, rest @ ..] => name.first() == Some(literal) && matches(rest, &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_stay_within_a_component_unless_doubled() {
        let check = |pattern: &str, name: &str, expect: bool| {
            assert_eq!(glob_match(pattern, name), expect, "{pattern} vs {name}");
        };
        check("agent/*", "agent/x", true);
        check("agent/*", "agent/", true);
        check("agent/*", "agent/x/y", false);
        check("agent/*", "main", false);
        check("agent/*", "agentx", false);
        check("agent/**", "agent/x/y", true);
        check("*", "main", true);
        check("*", "feature/x", false);
        check("**", "feature/x", true);
        check("main", "main", true);
        check("main", "mainline", false);
        check("fix-?", "fix-1", true);
        check("fix-?", "fix-12", false);
        check("*-wip", "topic-wip", true);
        check("a/*/c", "a/b/c", true);
        check("a/*/c", "a/b/x/c", false);
        check("a/**/c", "a/b/x/c", true);
        check("a/**/c", "a/c", true);
        check("**/*.pem", "key.pem", true);
        check("**/*.pem", "a/b/key.pem", true);
        check("**/*.pem", "a/b/key.pem.txt", false);
    }

    #[test]
    fn path_patterns_cover_what_is_under_the_folders_they_name() {
        let check = |pattern: &str, path: &str, expect: bool| {
            assert_eq!(path_matches(pattern, path), expect, "{pattern} vs {path}");
        };
        check(".github/workflows", ".github/workflows/x.yml", true);
        check(".github/workflows", ".github/workflows/sub/x.yml", true);
        check(".github/workflows", ".github/workflows", true);
        check(".github/workflows", ".github", true); // a link or file standing for the folder
        check(".github/workflows", ".github/CODEOWNERS", false);
        check(".github/workflows", "docs/.github/workflows/x.yml", false);
        check(".github/workflows", ".github/workflows-old/x.yml", false);
        check("Jenkinsfile", "Jenkinsfile", true);
        check("Jenkinsfile", "ci/Jenkinsfile", false);
        check("Jenkinsfile", "Jenkinsfile.bak", false);
        check("secrets/**", "secrets/a/b", true);
        check("secrets/**", "secrets", true);
        check("secrets", "secrets/a/b", true);
        check("**/*.pem", "deep/in/key.pem", true);
        check("**/*.pem", "key.pem", true);
        check("*.md", "README.md", true);
        check("*.md", "docs/README.md", false);
        check("a/*/c", "a", true);
        check("a/*/c", "a/b", false);
    }

    fn changes(policy: &PushPolicy, name: &str, changed: &[&str]) -> Result<(), String> {
        let update = RefUpdate::parse(&format!("{Z} {A} {name}")).expect("a hook line");
        check_paths(policy, &update, &changed.iter().map(|p| p.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn ci_definitions_and_denied_paths_are_refused_with_one_line_naming_them() {
        let agent = policy(&["agent/*"], false, false, false);
        assert_eq!(
            changes(&agent, "refs/heads/agent/x", &["src/main.rs", "README.md", ".pre-commit-config.yaml"]),
            Ok(())
        );
        assert_eq!(
            changes(&agent, "refs/heads/agent/x", &["src/main.rs", ".github/workflows/x.yml"]),
            Err("push refused: agent/x changes .github/workflows/x.yml, a CI definition; the manifest's push: \
                 { ci: true } allows it"
                .into())
        );
        let many = changes(&agent, "refs/tags/v1", &[".gitlab-ci.yml", "Jenkinsfile", ".circleci/config.yml"]);
        assert_eq!(
            many,
            Err("push refused: tag v1 changes .gitlab-ci.yml and 2 more CI definitions; the manifest's push: \
                 { ci: true } allows it"
                .into())
        );
        for path in [
            ".buildkite/pipeline.yml",
            "azure-pipelines.yml",
            ".woodpecker/build.yml",
            "cloudbuild.yaml",
            ".gitlab/ci/build.yml",
            ".github/actions/setup/action.yml",
            ".travis.yml",
            "bitbucket-pipelines.yml",
            "appveyor.yml",
            ".drone.yml",
            ".azure-pipelines/x.yml",
        ] {
            assert!(changes(&agent, "refs/heads/agent/x", &[path]).is_err(), "{path} is a CI definition");
        }

        let mut open = PushPolicy { ci: true, ..agent.clone() };
        assert_eq!(changes(&open, "refs/heads/agent/x", &[".github/workflows/x.yml"]), Ok(()));
        open.paths_deny = vec!["secrets/**".into(), "**/*.pem".into()];
        assert_eq!(changes(&open, "refs/heads/agent/x", &[".github/workflows/x.yml", "src/a.rs"]), Ok(()));
        assert_eq!(
            changes(&open, "refs/heads/agent/x", &["a/key.pem", "b/key.pem", "c.pem"]),
            Err("push refused: agent/x changes a/key.pem (and 2 more), which the manifest's push.paths_deny \
                 forbids (`**/*.pem`)"
                .into())
        );
        let denied = changes(&open, "refs/heads/agent/x", &["secrets/prod.env"]).expect_err("denied");
        assert!(denied.contains("secrets/prod.env") && denied.contains("`secrets/**`"), "{denied}");
        assert!(!denied.contains('\n'));
    }

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const Z: &str = "0000000000000000000000000000000000000000";

    fn policy(branches: &[&str], force: bool, delete: bool, tags: bool) -> PushPolicy {
        PushPolicy {
            branches: branches.iter().map(|b| b.to_string()).collect(),
            force,
            delete,
            tags,
            ..PushPolicy::default()
        }
    }

    fn verdict(policy: &PushPolicy, old: &str, new: &str, name: &str, ff: bool) -> Result<String, String> {
        let update = RefUpdate::parse(&format!("{old} {new} {name}")).expect("a hook line");
        check(policy, &update, || ff)
    }

    #[test]
    fn updates_are_forwarded_or_refused_with_one_line() {
        let agent = policy(&["agent/*"], false, false, false);
        assert_eq!(verdict(&agent, Z, A, "refs/heads/agent/x", true), Ok(format!("{A}:refs/heads/agent/x")));
        assert_eq!(verdict(&agent, A, B, "refs/heads/agent/x", true), Ok(format!("{B}:refs/heads/agent/x")));
        assert_eq!(
            verdict(&agent, A, B, "refs/heads/main", true),
            Err("push to refs/heads/main refused: branch not in [agent/*]; ask the operator to add it to \
                 push.branches"
                .into())
        );
        let forced = verdict(&agent, A, B, "refs/heads/agent/x", false).expect_err("no force");
        assert!(forced.contains("not a fast-forward") && forced.contains("push.force"), "{forced}");
        let deleted = verdict(&agent, A, Z, "refs/heads/agent/x", false).expect_err("no delete");
        assert!(deleted.starts_with("delete of refs/heads/agent/x refused") && deleted.contains("push.delete"));
        let tag = verdict(&agent, Z, A, "refs/tags/v1", false).expect_err("no tags");
        assert!(tag.contains("push.tags"), "{tag}");
        assert!(verdict(&agent, Z, A, "refs/notes/commits", false).is_err());
        for reason in [forced, deleted, tag] {
            assert!(!reason.contains('\n'), "{reason}");
        }

        let open = policy(&["refs/heads/**"], true, true, true);
        assert_eq!(verdict(&open, A, B, "refs/heads/a/b", false), Ok(format!("+{B}:refs/heads/a/b")));
        assert_eq!(verdict(&open, A, Z, "refs/heads/a/b", false), Ok(":refs/heads/a/b".into()));
        assert_eq!(verdict(&open, Z, A, "refs/tags/v1", false), Ok(format!("{A}:refs/tags/v1")));
        assert_eq!(verdict(&open, A, B, "refs/tags/v1", true), Ok(format!("+{B}:refs/tags/v1")));
        let tags_no_force = policy(&[], false, false, true);
        assert!(verdict(&tags_no_force, A, B, "refs/tags/v1", true).expect_err("moving a tag").contains("tag"));
        let none = policy(&[], true, true, true);
        assert!(verdict(&none, Z, A, "refs/heads/x", true).expect_err("no branches").contains("branch not in []"));
    }
}
