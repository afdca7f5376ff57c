#![doc = include_str!("../README.md")]

pub use agent_provider::builtin as builtin_providers;
pub use bottle_core::*;

/// The Kubernetes backend's own commands (`bottle k8s render`, `bottle k8s rbac`).
#[cfg(feature = "kubernetes")]
pub use bottle_k8s as kubernetes;

/// The backend a registry from [`default_registry`] selects when neither
/// `--backend` nor `$BOT_BOTTLE_BACKEND` names one.
pub const DEFAULT_BACKEND: &str = "docker";

/// A registry holding every backend this build has (by cargo feature), with
/// [`DEFAULT_BACKEND`] as its default.
pub fn default_registry() -> Registry {
    let mut registry = Registry::new();
    #[cfg(feature = "docker")]
    bottle_docker::register(&mut registry);
    #[cfg(feature = "smolvm")]
    bottle_smolvm::register(&mut registry);
    #[cfg(feature = "kubernetes")]
    bottle_k8s::register(&mut registry);
    registry.set_default(DEFAULT_BACKEND);
    registry
}

/// Runs the sidecar program this process was started as, and exits, when its
/// arguments are `sidecar …`; returns at once otherwise. Call it first in
/// `main`, before any async runtime starts: a bottle's sidecars are the
/// program that launched it (`bottle sidecar egress --config …` runs in the
/// sidecar's container), so one installed file is the whole tool. A program
/// that does not call it must set `$BOT_BOTTLE_SIDECAR` to a `bottle` binary.
pub fn run_sidecar_if_asked() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("sidecar") {
        return;
    }
    let rest: Vec<String> = args.collect();
    let code = match bottle_sidecar::Relaunch::current(&["sidecar"]) {
        Ok(relaunch) => bottle_sidecar::main(&rest, &relaunch),
        Err(e) => {
            eprintln!("error: cannot find the running executable: {e}");
            1
        }
    };
    std::process::exit(code);
}
