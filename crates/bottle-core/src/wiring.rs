//! What a backend hands back with its plan: how its bottles reach their
//! sidecars and where the sidecars listen ([`Wiring`]). Core never guesses
//! a backend's shape: from the [`CommonPlan`] and the wiring it makes the
//! bottle's environment (the proxy variables, with the bottle's token) and
//! the sidecars' configurations, which the backend then starts.

use std::collections::BTreeMap;

use crate::plan::CommonPlan;
use crate::sidecar::{EgressConfig, GitGateConfig, Listen, Placement, SuperviseConfig, TOKEN_USER};

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
    /// How the bottle reaches its supervise server and where the server
    /// and the proxy find the queue; `None` where the backend runs none.
    pub supervise: Option<SuperviseWiring>,
    /// Whether the bottle's CA certificate goes into the bottle's trust store
    /// (wherever its proxy intercepts TLS).
    pub install_ca: bool,
    /// How the bottle is isolated, one line for the summary.
    pub isolation: String,
}

/// A backend's supervise wiring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperviseWiring {
    /// The MCP endpoint's URL as the bottle reaches it (`http://HOST:PORT/mcp`).
    pub url: String,
    /// Where the server listens.
    pub listen: Listen,
    /// The bottle's queue folder as the server sees it.
    pub queue_dir: String,
    /// The queue's grants file as the egress proxy sees it.
    pub egress_grants: String,
    /// The queue's grants file as the git gate sees it.
    pub gate_grants: String,
}

impl Wiring {
    /// The proxy's URL without credentials, for the summary.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy)
    }

    /// The bottle's environment: the provider's and the manifest's, the
    /// proxy variables pointing at [`Wiring::proxy`] with the bottle's token,
    /// and with supervise its MCP URL and the same token to present there.
    pub fn guest_env(&self, common: &CommonPlan) -> BTreeMap<String, String> {
        let mut env = common.provision.guest_env.clone();
        let with_token = format!("http://{TOKEN_USER}:{}@{}", common.client_token.expose(), self.proxy);
        env.extend(crate::sidecar_config::proxy_env(&with_token, &["localhost", "127.0.0.1", "::1"]));
        if let Some(url) = self.supervise_url(common) {
            env.insert(crate::supervise::URL_ENV.into(), url.to_string());
            env.insert(crate::supervise::TOKEN_ENV.into(), common.client_token.expose().to_string());
        }
        env
    }

    /// The supervise wiring, when the bottle has supervise (its backend may
    /// wire every bottle for it; only those whose manifest asks run it).
    fn supervise_of(&self, common: &CommonPlan) -> Option<&SuperviseWiring> {
        self.supervise.as_ref().filter(|_| common.supervise.enabled)
    }

    /// The egress proxy's configuration (reading the supervise queue's
    /// grants when the bottle has supervise).
    pub fn egress_config(&self, common: &CommonPlan) -> EgressConfig {
        let mut config = common.egress.policy.placed(&self.egress);
        if let Some(supervise) = self.supervise_of(common) {
            config.grants = Some(supervise.egress_grants.clone());
        }
        config
    }

    /// The supervise server's configuration, when the bottle has one.
    pub fn supervise_config(&self, common: &CommonPlan) -> Option<SuperviseConfig> {
        let supervise = self.supervise_of(common)?;
        Some(SuperviseConfig {
            listen: supervise.listen.clone(),
            bottle: common.slug.clone(),
            client_token: common.client_token.digest(),
            queue_dir: supervise.queue_dir.clone(),
            timeout_secs: common.supervise.timeout.as_secs(),
        })
    }

    /// The supervise server's MCP URL as the bottle reaches it, when it has one.
    pub fn supervise_url(&self, common: &CommonPlan) -> Option<&str> {
        self.supervise_of(common).map(|s| s.url.as_str())
    }

    /// The git gate's configuration, when the bottle has upstreams (reading
    /// the supervise queue's branch grants when the bottle has supervise).
    pub fn gate_config(&self, common: &CommonPlan) -> Option<GitGateConfig> {
        let placement = self.git_gate.as_ref().filter(|_| common.git_gate.is_needed())?;
        let mut config = common.git_gate.policy.placed(placement);
        if let Some(supervise) = self.supervise_of(common) {
            config.grants = Some(supervise.gate_grants.clone());
        }
        Some(config)
    }
}
