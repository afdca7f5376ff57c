//! Commands run inside a bottle through [`Bottle::exec`], as its agent (or
//! an attacker holding it) would run them.

use bottle_core::{Bottle, ExecResult, GuestUser};

/// Runs `script` as the agent; panics only when the backend fails to run it.
pub async fn sh(bottle: &dyn Bottle, script: &str) -> ExecResult {
    as_user(bottle, script, GuestUser::Agent).await
}

/// Runs `script` as `user`; panics only when the backend fails to run it.
pub async fn as_user(bottle: &dyn Bottle, script: &str, user: GuestUser) -> ExecResult {
    match bottle.exec(script, user).await {
        Ok(out) => out,
        Err(e) => panic!("running `{script}` in {}: {e}", bottle.slug()),
    }
}

/// Runs `script` as the agent, requiring success; returns its stdout.
pub async fn ok(bottle: &dyn Bottle, script: &str) -> String {
    let out = sh(bottle, script).await;
    assert!(out.success(), "`{script}` failed in {} ({}): {}{}", bottle.slug(), out.exit_code, out.stdout, out.stderr);
    out.stdout
}

/// Runs `script` as root, requiring success; returns its stdout.
pub async fn root(bottle: &dyn Bottle, script: &str) -> String {
    let out = as_user(bottle, script, GuestUser::Root).await;
    assert!(
        out.success(),
        "`{script}` as root failed in {} ({}): {}{}",
        bottle.slug(),
        out.exit_code,
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Runs `curl -sS --max-time 10 ARGS…` as the agent.
pub async fn curl(bottle: &dyn Bottle, args: &[&str]) -> ExecResult {
    let quoted: Vec<String> = args.iter().map(|a| bottle_core::provider::shell_quote(a)).collect();
    sh(bottle, &format!("curl -sS --max-time 10 {}", quoted.join(" "))).await
}

/// Where `value` appears in the bottle: every process's environment and
/// argv, and every file (as root). The value never appears whole in the
/// searching commands' own argv. Returns the places found (empty: nowhere).
pub async fn find(bottle: &dyn Bottle, value: &str) -> Vec<String> {
    let (head, tail) = value.split_at(value.len() / 2);
    let script = format!(
        "a='{head}'; b='{tail}'; s=\"$a$b\"\n\
         for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do\n\
           c=$(tr '\\0' ' ' < \"$f\" 2>/dev/null)\n\
           case \"$c\" in *\"$s\"*) echo \"$f\";; esac\n\
         done\n\
         grep -rlsF --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev -f - / <<EOF\n$s\nEOF\n\
         echo searched"
    );
    let out = as_user(bottle, &script, GuestUser::Root).await;
    assert!(out.stdout.trim_end().ends_with("searched"), "the search did not finish: {}{}", out.stdout, out.stderr);
    out.stdout.lines().filter(|l| *l != "searched").map(str::to_string).collect()
}

/// Whether a process whose argv contains `needle` runs in the bottle (the
/// searching commands' own argv never holds it whole).
pub async fn runs(bottle: &dyn Bottle, needle: &str) -> bool {
    let (head, tail) = needle.split_at(needle.len() / 2);
    let script = format!(
        "a={}; b={}; s=\"$a$b\"\n\
         for f in /proc/[0-9]*/cmdline; do c=$(tr '\\0' ' ' < \"$f\" 2>/dev/null); \
         case \"$c\" in *\"$s\"*) echo found;; esac; done",
        bottle_core::provider::shell_quote(head),
        bottle_core::provider::shell_quote(tail),
    );
    as_user(bottle, &script, GuestUser::Root).await.stdout.lines().any(|l| l == "found")
}
