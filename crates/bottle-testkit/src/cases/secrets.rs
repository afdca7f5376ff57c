//! Secrets stay on the host: a manifest secret is masked in the summary and
//! is nowhere in the bottle (its placeholder is, where the search finds it).

use crate::{World, probe};

pub(super) async fn secrets(world: &World) {
    let secret = "s3cr3t-value-testkit-7d1f";
    let manifest = world.shell_manifest(
        "secrets.yaml",
        "    env:\n      TOKEN: { from_host: E2E_TOKEN, secret: true }\n      PLAIN: hello\n",
    );
    let session = world.prepare(&world.spec(manifest), &[("E2E_TOKEN", secret)]).await;
    let summary = session.summary();
    assert!(!summary.contains(secret), "the summary never shows a secret");
    assert!(summary.contains("TOKEN=•••• (hidden)"), "{summary}");
    let running = session.launch(std::future::pending()).await.expect("launch");
    let bottle = running.bottle();
    let env = probe::ok(bottle, "env").await;
    assert!(env.contains("PLAIN=hello") && env.contains("TOKEN=bot-bottle-hidden:TOKEN"), "{env}");
    let control = probe::find(bottle, "bot-bottle-hidden:TOKEN").await;
    assert!(control.iter().any(|p| p.ends_with("/environ")), "the search finds what is there: {control:?}");
    assert_eq!(probe::find(bottle, secret).await, Vec::<String>::new(), "the secret is nowhere in the bottle");
    running.teardown().await.expect("teardown");
}
