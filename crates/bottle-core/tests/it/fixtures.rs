//! Shared fixtures: a minimal provider, a backend for exercising the
//! registry and the erased-plan boundary (it runs nothing), and a host.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bottle_core::backend::{Backend, BackendPlan, CleanupPlan, WiredPlan};
use bottle_core::provider::AgentProvider;
use bottle_core::{ActiveAgent, Bottle, CommonPlan, Error, ErrorKind, Host, Providers, Result, StateRoot};

/// A provider with fixed answers.
pub(crate) struct Plain;

#[async_trait]
impl AgentProvider for Plain {
    fn name(&self) -> &'static str {
        "shell"
    }
    fn bundled_dockerfile(&self) -> &'static str {
        "FROM debian:bookworm-slim\n"
    }
    fn guest_user(&self) -> &'static str {
        "agent"
    }
    fn guest_home(&self) -> &'static str {
        "/home/agent"
    }
    fn base_argv(&self) -> Vec<String> {
        vec!["bash".into()]
    }
    fn hidden_env(&self) -> &'static [&'static str] {
        &["PROVIDER_KEY"]
    }
}

pub(crate) fn providers() -> Providers {
    let mut p = Providers::new();
    p.register(Arc::new(Plain));
    p
}

pub(crate) fn host(dir: &std::path::Path, env: &[(&str, &str)]) -> Host {
    Host {
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        home: dir.join("home"),
        state: StateRoot::at(dir.join("state")),
    }
}

/// A backend that only answers to its name; `launch` hands back no bottle.
pub(crate) struct Named<const N: usize>;

pub(crate) struct NamedPlan(WiredPlan);

impl BackendPlan for NamedPlan {
    fn wired(&self) -> &WiredPlan {
        &self.0
    }
    fn summary_lines(&self) -> Vec<(String, String)> {
        vec![("fixture".into(), "yes".into())]
    }
}

pub(crate) struct NoCleanup;

impl CleanupPlan for NoCleanup {
    fn describe(&self) -> Vec<String> {
        Vec::new()
    }
    fn slugs(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Stands in for a bottle type; never constructed.
pub(crate) enum NoBottle {}

#[async_trait]
impl Bottle for NoBottle {
    fn slug(&self) -> &str {
        match *self {}
    }
    fn agent_user(&self) -> &str {
        match *self {}
    }
    async fn exec(&self, _: &str, _: bottle_core::GuestUser) -> Result<bottle_core::ExecResult> {
        match *self {}
    }
    async fn cp_in(&self, _: &std::path::Path, _: &str) -> Result<()> {
        match *self {}
    }
    async fn cp_out(
        &self,
        _: &str,
        _: &std::path::Path,
        _: bottle_core::ByteSize,
    ) -> Result<bottle_core::backend::CopyOut> {
        match *self {}
    }
    async fn exec_attached(&self, _: &[String], _: bottle_core::GuestUser) -> Result<i32> {
        match *self {}
    }
    async fn sidecar_log(&self, _: bottle_core::Sidecar, _: bool, _: &mut (dyn std::io::Write + Send)) -> Result<()> {
        match *self {}
    }
    async fn close(&self) -> Result<()> {
        match *self {}
    }
}

/// A wiring as a backend would hand it back.
pub(crate) fn wiring() -> bottle_core::backend::Wiring {
    let placement = |name: &str| bottle_core::sidecar::Placement {
        listen: bottle_core::sidecar::Listen::Tcp("127.0.0.1:0".into()),
        audit_log: "-".into(),
        work_dir: format!("/{name}"),
    };
    bottle_core::backend::Wiring {
        proxy: "127.0.0.1:3128".into(),
        gate: Some("http://127.0.0.1:8080".into()),
        egress: placement("egress"),
        git_gate: Some(placement("gate")),
        supervise: None,
        install_ca: true,
        isolation: "fixture".into(),
    }
}

fn refused() -> Error {
    Error::new(ErrorKind::Unavailable, "fixture backend runs nothing")
}

macro_rules! named_backend {
    ($n:literal, $name:literal) => {
        impl Backend for Named<$n> {
            fn name(&self) -> &'static str {
                $name
            }
            type Plan = NamedPlan;
            type Bottle = NoBottle;
            type CleanupPlan = NoCleanup;
            async fn is_available(&self) -> Result<()> {
                Ok(())
            }
            async fn resolve_plan(&self, common: CommonPlan) -> Result<NamedPlan> {
                Ok(NamedPlan(WiredPlan { common, wiring: wiring() }))
            }
            async fn launch(&self, _plan: NamedPlan) -> Result<NoBottle> {
                Err(refused())
            }
            async fn attach(&self, _slug: &str) -> Result<NoBottle> {
                Err(refused())
            }
            async fn revive(&self, _slug: &str) -> Result<Option<NoBottle>> {
                Ok(None)
            }
            async fn remove(&self, _slug: &str) -> Result<()> {
                Ok(())
            }
            async fn enumerate_active(&self) -> Result<Vec<ActiveAgent>> {
                Ok(Vec::new())
            }
            async fn prepare_cleanup(&self) -> Result<NoCleanup> {
                Ok(NoCleanup)
            }
            async fn cleanup(&self, _plan: NoCleanup) -> Result<Vec<String>> {
                Ok(Vec::new())
            }
        }
    };
}
named_backend!(0, "docker");
named_backend!(1, "smolmachines");
