//! What a backend hands back with its plan: how its bottles reach their
//! sidecars and where the sidecars listen ([`Wiring`]). Core never guesses
//! a backend's shape: from the [`CommonPlan`] and the wiring it makes the
//! bottle's environment (the proxy variables, with the bottle's token) and
//! the sidecars' configurations, which the backend then starts.

use std::collections::BTreeMap;

use crate::plan::CommonPlan;
use crate::sidecar::{EgressConfig, GitGateConfig, Placement, TOKEN_USER};

/// How one bottle is wired to its sidecars, as its backend decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wiring {
    /// `HOST:PORT` at which the bottle reaches its egress proxy.
    pub proxy: String,
    /// The base URL (`http://HOST:PORT`) at which the bottle reaches its git
    /// gate; `None` when the bottle has no upstreams.
    pub gate: Option<String>,
    /// Where the egress proxy listens and writes.
    pub egress: Placement,
    /// Where the git gate listens and writes, when there is one.
    pub git_gate: Option<Placement>,
    /// Whether the bottle's CA certificate goes into the bottle's trust store
    /// (wherever its proxy intercepts TLS).
    pub install_ca: bool,
    /// How the bottle is isolated, one line for the summary.
    pub isolation: String,
}

impl Wiring {
    /// The proxy's URL without credentials, for the summary.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy)
    }

    /// The bottle's environment: the provider's and the manifest's, and the
    /// proxy variables pointing at [`Wiring::proxy`] with the bottle's token.
    pub fn guest_env(&self, common: &CommonPlan) -> BTreeMap<String, String> {
        let mut env = common.provision.guest_env.clone();
        let with_token = format!("http://{TOKEN_USER}:{}@{}", common.client_token.expose(), self.proxy);
        env.extend(crate::sidecar_config::proxy_env(&with_token, &["localhost", "127.0.0.1", "::1"]));
        env
    }

    /// The egress proxy's configuration.
    pub fn egress_config(&self, common: &CommonPlan) -> EgressConfig {
        common.egress.policy.placed(&self.egress)
    }

    /// The git gate's configuration, when the bottle has upstreams.
    pub fn gate_config(&self, common: &CommonPlan) -> Option<GitGateConfig> {
        let placement = self.git_gate.as_ref().filter(|_| common.git_gate.is_needed())?;
        Some(common.git_gate.policy.placed(placement))
    }
}
