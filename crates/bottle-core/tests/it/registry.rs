//! Registry selection order and the typed error for a plan handed to the
//! wrong backend.

use std::sync::Arc;

use bottle_core::backend::Backend as _;
use bottle_core::{BottleSpec, DynBackend, ErrorKind, Manifest, Registry, prepare};

use crate::fixtures::{Named, host, providers};

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(Arc::new(Named::<0>));
    r.register(Arc::new(Named::<1>));
    r.alias("smolvm", "smolmachines");
    r.set_default("docker");
    r
}

#[test]
fn selection_is_explicit_then_env_then_docker() {
    let r = registry();
    let check = |explicit: Option<&str>, env: Option<&str>, expect: &str| {
        assert_eq!(r.select(explicit, env).expect("selects").name(), expect, "{explicit:?} {env:?}");
    };
    check(None, None, "docker");
    check(None, Some("smolmachines"), "smolmachines");
    check(Some("docker"), Some("smolmachines"), "docker");
    check(Some("smolmachines"), None, "smolmachines");
    check(Some(""), Some("smolmachines"), "smolmachines");
    check(None, Some("  "), "docker");
    check(Some("smolvm"), None, "smolmachines");
    let mut bare = Registry::new();
    bare.register(Arc::new(Named::<0>));
    let err = bare.select(None, None).err().expect("nothing selects one");
    assert!(err.to_string().contains("no backend selected") && err.to_string().contains("docker"), "{err}");
    let err = r.select(Some("podman"), None).err().expect("unknown");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("podman") && err.to_string().contains("docker, smolmachines"), "{err}");
    assert_eq!(r.names(), ["docker", "smolmachines"]);
}

#[tokio::test]
async fn a_plan_for_another_backend_is_a_typed_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let host = host(tmp.path(), &[]);
    let spec = detached_shell(tmp.path());
    let common = prepare(&spec, &providers(), &host, "smolmachines").expect("prepare");
    let r = registry();
    let smol = r.get("smolmachines").expect("smol");
    let plan = smol.resolve_plan_dyn(common).await.expect("plan");
    assert_eq!(plan.backend(), "smolmachines");
    assert_eq!(plan.summary_lines(), [("fixture".to_string(), "yes".to_string())]);
    let docker: Arc<dyn DynBackend> = r.get("docker").expect("docker");
    let err = docker.launch_dyn(plan).await.err().expect("mismatch");
    assert_eq!(err.kind(), ErrorKind::PlanMismatch);
    assert!(err.to_string().contains("smolmachines") && err.to_string().contains("docker"), "{err}");
    let cleanup = smol.prepare_cleanup_dyn().await.expect("cleanup plan");
    let err = docker.cleanup_dyn(cleanup).await.expect_err("mismatch");
    assert_eq!(err.kind(), ErrorKind::PlanMismatch);
}

#[tokio::test]
async fn an_arc_of_a_backend_is_a_backend_and_erases_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let host = host(tmp.path(), &[]);
    let spec = detached_shell(tmp.path());
    let common = prepare(&spec, &providers(), &host, "docker").expect("prepare");
    let docker: Arc<dyn DynBackend> = registry().get("docker").expect("docker");
    // Through the `Backend` impl of the Arc, and through its `_dyn` methods: the same plan.
    assert_eq!(bottle_core::backend::Backend::name(&docker), "docker");
    let plan = docker.resolve_plan_dyn(common.clone()).await.expect("plan");
    let err = docker.launch_dyn(plan).await.err().expect("the fixture launches nothing");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "the backend itself answered, no plan mismatch: {err}");
    let plan = bottle_core::backend::Backend::resolve_plan(&docker, common).await.expect("plan");
    let err = bottle_core::backend::Backend::launch(&docker, plan).await.err().expect("the fixture launches nothing");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let cleanup = docker.prepare_cleanup_dyn().await.expect("cleanup");
    assert!(docker.cleanup_dyn(cleanup).await.expect("cleanup").is_empty());
}

/// A detached bottle of the embedded default manifest's `shell` agent, without the host CA.
fn detached_shell(dir: &std::path::Path) -> BottleSpec {
    let manifest = Arc::new(Manifest::embedded_default(&["shell"]));
    BottleSpec { detached: true, host_ca: false, ..BottleSpec::new(manifest, "shell", dir.into()) }
}
