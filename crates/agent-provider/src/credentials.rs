//! The agents' own API credentials: from a host variable named by
//! `auth_token`, or with `forward_host_credentials` from the operator's own
//! login file. Either way the value goes to the egress proxy only; the agent
//! sees a sentinel under the variable it checks.

use std::path::Path;

use bottle_core::provider::AgentRoutes;
use bottle_core::sidecar::{EgressRule, InjectedHeader, Secret};
use bottle_core::{AgentProviderDef, Error, ErrorKind, Host, Result, placeholder};

/// How a provider's API takes a credential.
pub(crate) struct Api {
    /// The API's host.
    pub(crate) host: &'static str,
    /// Header name and value format for an API key (`{}` is the key).
    pub(crate) key_header: (&'static str, &'static str),
    /// The variable the agent reads its API key from (gets a sentinel).
    pub(crate) key_env: &'static str,
}

/// A JSON string at `pointer` in the file at `path`.
pub(crate) fn json_string(path: &Path, pointer: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value.pointer(pointer)?.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

/// The API-key route: the key from the host variable `auth_token` names.
pub(crate) fn api_key_route(api: &Api, def: &AgentProviderDef, host: &Host, routes: &mut AgentRoutes) -> Result<()> {
    let Some(var) = &def.auth_token else {
        routes.rules.push(EgressRule::open(api.host));
        return Ok(());
    };
    let key = host.var(var).ok_or_else(|| {
        Error::new(
            ErrorKind::MissingHostEnv,
            format!("agent_provider.auth_token names host variable `{var}`, which is not set; export it or remove auth_token"),
        )
    })?;
    routes.rules.push(key_rule(api, key, format!("${var}")));
    routes.hidden_env.push(api.key_env.to_string());
    Ok(())
}

/// A rule for `api` injecting `key` as its API-key header; the sentinel the
/// agent sees in `api.key_env` is the route's own.
pub(crate) fn key_rule(api: &Api, key: &str, source: String) -> EgressRule {
    let (name, format) = api.key_header;
    EgressRule {
        inject: Some(InjectedHeader {
            name: name.into(),
            value: Secret::new(format.replace("{}", key)),
            credential: Secret::new(key),
            sentinels: vec![placeholder(api.key_env)],
            source,
        }),
        ..EgressRule::open(api.host)
    }
}
