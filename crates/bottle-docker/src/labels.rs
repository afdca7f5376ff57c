//! The labels every Docker resource of a bottle carries (the shared
//! [`bottle_core::labels`], with this backend's name), and the engine filter
//! that selects them.

use std::collections::HashMap;

use bottle_core::CommonPlan;
pub(crate) use bottle_core::labels::{
    AGENT, BACKEND, COLOR, LABEL, Labels, ROLE, ROLE_AGENT, SLUG, USER, Verdict, WORKDIR, judge,
};

/// The labels of a resource of `plan` with `role`.
pub(crate) fn for_plan(plan: &CommonPlan, role: &str) -> HashMap<String, String> {
    bottle_core::labels::for_plan(plan, crate::NAME, role)
}

/// A filter selecting this backend's resources, optionally of one slug.
pub(crate) fn filter(slug: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut labels = vec![format!("{BACKEND}={}", crate::NAME)];
    if let Some(slug) = slug {
        labels.push(format!("{SLUG}={slug}"));
    }
    HashMap::from([("label".to_string(), labels)])
}
