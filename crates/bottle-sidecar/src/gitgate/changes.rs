//! What a ref update changes, for the push policy's path checks: the paths
//! it adds, changes or deletes. Run by the `pre-receive` hook, inside
//! receive-pack's quarantine (the pushed objects are visible, the mirror's
//! refs are still the upstream's).
//!
//! Two sets, joined:
//!
//! - **The net change**: `git diff-tree` from the base to the new tip. The
//!   base is the ref's old tip; for a new ref, its merge base with the
//!   upstream's default branch (the mirror's `HEAD`); with none, the empty
//!   tree (so every file of an unrelated history counts). A path left exactly
//!   as it is on the default branch does not count: merging the default
//!   branch in brings the repository's own CI, not the agent's.
//! - **Each new commit's own change**: every commit the push brings that no
//!   ref of the upstream has (`git rev-list NEW --not --all`), against its
//!   parent, or for a merge against each parent (a path counts when the merge
//!   differs from all of them, `git diff-tree -c`: what the merge itself
//!   brings, not what either side already had). So a CI definition added in
//!   one commit and removed in the next still counts: both commits land in
//!   the upstream's history, where a later ref, or a CI that builds every
//!   pushed commit, can run them.
//!
//! Renames count as a delete and an add (`--no-renames`), so moving a
//! workflow away is a change to it. A tip that is no commit (a tag of a tree
//! or a blob) changes nothing a CI runs. Any git failure is an error: the
//! hook then refuses the update.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use super::policy::RefUpdate;

/// The paths `update` adds, changes or deletes (see the module docs), sorted.
/// Not to be asked of a delete.
pub(crate) fn changed_paths(update: &RefUpdate) -> Result<Vec<String>, String> {
    let Some(new) = commit_of(&update.new)? else { return Ok(Vec::new()) };
    let head = default_branch()?;
    let base = if update.creates() {
        match &head {
            Some(head) => merge_base(&new, head)?,
            None => None,
        }
    } else {
        commit_of(&update.old)?
    };
    let base = match base {
        Some(base) => base,
        None => git(&["hash-object", "-t", "tree", "/dev/null"])?.trim().to_owned(),
    };
    let mut changed = diff_tree(&base, &new)?;
    if let Some(head) = &head {
        let unlike_head = diff_tree(head, &new)?;
        changed.retain(|path| unlike_head.contains(path));
    }
    changed.extend(new_commits_changes(&new)?);
    Ok(changed.into_iter().collect())
}

/// The commit `id` is or peels to (a tag), or `None` for a tree or a blob.
fn commit_of(id: &str) -> Result<Option<String>, String> {
    let peeled = git(&["rev-parse", "--verify", &format!("{id}^{{}}")])?.trim().to_owned();
    let kind = git(&["cat-file", "-t", &peeled])?;
    Ok((kind.trim() == "commit").then_some(peeled))
}

/// The upstream's default branch tip, the mirror's `HEAD`; `None` when that
/// branch does not exist (an empty upstream).
fn default_branch() -> Result<Option<String>, String> {
    let out = git_output(Command::new("git").args(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"]))?;
    Ok(out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

/// The best common ancestor of `a` and `b`, if they have one.
fn merge_base(a: &str, b: &str) -> Result<Option<String>, String> {
    let out = git_output(Command::new("git").args(["merge-base", a, b]))?;
    match out.status.code() {
        Some(0) => Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())),
        // No common ancestor.
        Some(1) if out.stdout.is_empty() => Ok(None),
        _ => Err(failure("git merge-base", &out)),
    }
}

/// The paths that differ between the trees of `from` and `to`.
fn diff_tree(from: &str, to: &str) -> Result<BTreeSet<String>, String> {
    let out = git(&["diff-tree", "-r", "--no-renames", "--name-only", "-z", from, to])?;
    Ok(paths(&out))
}

/// The paths the commits reachable from `new` and from no ref change, each
/// against its parents (see the module docs).
fn new_commits_changes(new: &str) -> Result<BTreeSet<String>, String> {
    let mut revs = Command::new("git")
        .args(["rev-list", new, "--not", "--all"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("could not run git rev-list: {err}"))?;
    let commits = revs.stdout.take().ok_or("git rev-list has no stdout")?;
    let diff = Command::new("git")
        .args(["diff-tree", "--stdin", "-r", "-c", "--root", "--no-renames", "--name-only", "-z", "--no-commit-id"])
        .stdin(commits)
        .output()
        .map_err(|err| format!("could not run git diff-tree: {err}"));
    let listed = revs.wait_with_output().map_err(|err| format!("git rev-list: {err}"))?;
    if !listed.status.success() {
        return Err(failure("git rev-list", &listed));
    }
    let diff = diff?;
    if !diff.status.success() {
        return Err(failure("git diff-tree", &diff));
    }
    Ok(paths(&String::from_utf8_lossy(&diff.stdout)))
}

/// The NUL-separated paths of `-z` output.
fn paths(out: &str) -> BTreeSet<String> {
    out.split('\0').filter(|path| !path.is_empty()).map(str::to_owned).collect()
}

/// Runs `git ARGS` (in the hook's environment); its stdout, or its failure.
fn git(args: &[&str]) -> Result<String, String> {
    let out = git_output(Command::new("git").args(args))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(failure(&format!("git {}", args.first().copied().unwrap_or_default()), &out))
    }
}

fn git_output(cmd: &mut Command) -> Result<std::process::Output, String> {
    cmd.stdin(Stdio::null()).output().map_err(|err| format!("could not run git: {err}"))
}

/// What a failed git said, on one line.
fn failure(what: &str, out: &std::process::Output) -> String {
    let said = String::from_utf8_lossy(&out.stderr);
    let said: Vec<&str> = said.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
    format!("{what} failed ({}): {}", out.status, said.join("; "))
}
