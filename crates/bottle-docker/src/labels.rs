//! The labels every Docker resource of a bottle carries, and reading them
//! back: how `list`, `stop` and `cleanup` find what belongs to whom.

use std::collections::HashMap;

use bottle_core::{CommonPlan, Owner};

pub(crate) const SLUG: &str = "dev.bot-bottle.slug";
pub(crate) const BACKEND: &str = "dev.bot-bottle.backend";
pub(crate) const ROLE: &str = "dev.bot-bottle.role";
pub(crate) const AGENT: &str = "dev.bot-bottle.agent";
pub(crate) const OWNER_HOST: &str = "dev.bot-bottle.owner-host";
pub(crate) const OWNER_PID: &str = "dev.bot-bottle.owner-pid";
pub(crate) const OWNER_START: &str = "dev.bot-bottle.owner-start";
pub(crate) const CREATED_MS: &str = "dev.bot-bottle.created-ms";
pub(crate) const DETACHED: &str = "dev.bot-bottle.detached";
pub(crate) const USER: &str = "dev.bot-bottle.user";
pub(crate) const WORKDIR: &str = "dev.bot-bottle.workdir";
pub(crate) const LABEL: &str = "dev.bot-bottle.label";
pub(crate) const COLOR: &str = "dev.bot-bottle.color";

/// Role of the agent container (sidecars get their own roles).
pub(crate) const ROLE_AGENT: &str = "agent";

/// The labels of a resource of `plan` with `role`.
pub(crate) fn for_plan(plan: &CommonPlan, role: &str) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = [
        (SLUG, plan.slug.clone()),
        (BACKEND, crate::NAME.to_string()),
        (ROLE, role.to_string()),
        (AGENT, plan.agent.clone()),
        (OWNER_HOST, plan.owner.host.clone()),
        (OWNER_PID, plan.owner.pid.to_string()),
        (OWNER_START, plan.owner.pid_start.to_string()),
        (CREATED_MS, plan.owner.created_ms.to_string()),
        (DETACHED, plan.detached.to_string()),
        (USER, plan.provision.guest_user.clone()),
        (WORKDIR, plan.provision.workdir.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(label) = &plan.label {
        labels.insert(LABEL.into(), label.clone());
    }
    if let Some(color) = &plan.color {
        labels.insert(COLOR.into(), color.clone());
    }
    labels
}

/// A filter selecting this backend's resources, optionally of one slug.
pub(crate) fn filter(slug: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut labels = vec![format!("{BACKEND}={}", crate::NAME)];
    if let Some(slug) = slug {
        labels.push(format!("{SLUG}={slug}"));
    }
    HashMap::from([("label".to_string(), labels)])
}

/// Read typed facts back from a resource's labels.
pub(crate) struct Labels<'a>(pub(crate) &'a HashMap<String, String>);

impl Labels<'_> {
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub(crate) fn owner(&self) -> Option<Owner> {
        Some(Owner {
            host: self.get(OWNER_HOST)?.to_string(),
            pid: self.get(OWNER_PID)?.parse().ok()?,
            pid_start: self.get(OWNER_START)?.parse().ok()?,
            created_ms: self.get(CREATED_MS)?.parse().ok()?,
        })
    }

    pub(crate) fn detached(&self) -> bool {
        self.get(DETACHED) == Some("true")
    }

    pub(crate) fn created_ms(&self) -> u64 {
        self.get(CREATED_MS).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}
