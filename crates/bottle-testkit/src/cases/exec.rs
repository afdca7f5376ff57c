//! `Bottle::exec`: exit codes, stdout and stderr apart, the users a
//! command runs as, output larger than a buffer, and the environment the
//! guest's commands see.

use bottle_core::GuestUser;

use crate::probe;
use crate::{Capability, World};

pub(super) async fn exec(world: &World) {
    let running = world.start(&world.spec(world.default_manifest()), &[]).await;
    let bottle = running.bottle();

    let out = probe::sh(bottle, "echo out; echo err >&2; exit 3").await;
    assert_eq!((out.exit_code, out.stdout.as_str(), out.stderr.as_str()), (3, "out\n", "err\n"), "{out:?}");
    assert!(!out.success());
    assert_eq!(probe::sh(bottle, "exit 7").await.exit_code, 7, "the command's own exit code");
    assert_eq!(probe::sh(bottle, "true").await.exit_code, 0);
    assert_eq!(probe::sh(bottle, "kill -KILL $$").await.exit_code, 137, "killed by a signal: 128 + its number");
    let missing = probe::sh(bottle, "no-such-command-here").await;
    assert_eq!(missing.exit_code, 127, "{missing:?}");
    assert!(missing.stderr.contains("not found"), "{missing:?}");

    assert_eq!(probe::ok(bottle, "id -un").await, "agent\n");
    if world.can(Capability::OtherUsers) {
        assert_eq!(probe::as_user(bottle, "id -un", GuestUser::Root).await.stdout, "root\n");
        let named = probe::as_user(bottle, "id -un", GuestUser::Named("nobody".into())).await;
        assert_eq!(named.stdout, "nobody\n", "any user by name: {named:?}");
    }
    assert_eq!(bottle.agent_user(), "agent");
    assert_eq!(bottle.slug(), running.slug());

    let big = probe::ok(bottle, "head -c 3000000 /dev/zero | tr '\\0' a; echo; echo done >&2").await;
    assert_eq!(big.len(), 3_000_001, "all of a large output comes back");
    assert!(big.bytes().take(3_000_000).all(|b| b == b'a'));
    let quoted = probe::ok(bottle, "printf '%s|' \"a b\" 'c'\"'\"'d' \"$((6 * 7))\"").await;
    assert_eq!(quoted, "a b|c'd|42|", "the script reaches sh -c intact");

    let env = probe::ok(bottle, "env").await;
    assert!(env.lines().any(|l| l.starts_with("HTTPS_PROXY=http://")), "the guest's commands see the proxy:\n{env}");
    assert!(env.lines().any(|l| l.starts_with("NO_PROXY=")), "{env}");
    running.teardown().await.expect("teardown");
}
