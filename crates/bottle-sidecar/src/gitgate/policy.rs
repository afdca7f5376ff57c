//! The push policy: which ref updates the gate forwards upstream, as which
//! refspec, and the one-line reason for each one it refuses.
//!
//! Branch patterns are matched against the branch name without `refs/heads/`
//! (a pattern may spell that prefix; it is ignored), git-style: `*` matches
//! any run of characters within one path component (never `/`), `**` matches
//! any run including `/`, `?` matches one character other than `/`, anything
//! else matches itself. So `agent/*` takes `agent/x` but not `agent/x/y` nor
//! `main`; `agent/**` takes both `agent/x` and `agent/x/y`; `*` takes every
//! top-level branch.

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

    fn creates(&self) -> bool {
        is_zero(&self.old)
    }

    fn deletes(&self) -> bool {
        is_zero(&self.new)
    }
}

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

/// Matches `name` against the git-style glob `pattern` (see the module docs).
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    matches(&pattern, &name)
}

fn matches(pattern: &[char], name: &[char]) -> bool {
    match pattern {
        [] => name.is_empty(),
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
    }

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const Z: &str = "0000000000000000000000000000000000000000";

    fn policy(branches: &[&str], force: bool, delete: bool, tags: bool) -> PushPolicy {
        PushPolicy { branches: branches.iter().map(|b| b.to_string()).collect(), force, delete, tags }
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
