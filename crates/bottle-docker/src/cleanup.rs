//! Removing a Docker bottle and finding what killed runs left behind: every
//! container, network and volume labelled with a slug goes with `remove`;
//! `prepare_cleanup` notes each bottle's resources and lets the shared
//! orphan rule ([`Leftovers::judge`]) decide which are orphans.

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::{ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions, RemoveVolumeOptions};
use bottle_core::Result;
use bottle_core::backend::{Handle, Leftovers, Orphans, is_detached};
use bottle_core::labels::{ROLE, ROLE_AGENT, SLUG};

use crate::bottle::DockerBottle;
use crate::engine::{container_name, containers, failed, filter, is_not_found};

/// Remove every container, network and volume labelled with `slug`, all
/// containers at once (killed: whatever of the bottle was worth keeping was
/// saved before), then its network and volume together. Idempotent.
pub(crate) async fn remove_slug(docker: &Docker, slug: &str) -> Result<()> {
    let found = containers(docker, true, Some(slug), false).await?;
    let removals = found.into_iter().filter_map(|c| c.id).map(|id| async move {
        let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match docker.remove_container(&id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => Ok(()), // removal already in progress
            Err(e) => Err(failed("remove a container")(e).with_bottle(slug)),
        }
    });
    futures_util::future::try_join_all(removals).await?;
    let networks = async {
        let listed = docker
            .list_networks(Some(ListNetworksOptions { filters: Some(filter(Some(slug))) }))
            .await
            .map_err(failed("list networks"))?;
        let removals = listed.into_iter().filter_map(|n| n.id).map(|id| async move {
            match docker.remove_network(&id).await {
                Ok(()) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(failed("remove a network")(e).with_bottle(slug)),
            }
        });
        futures_util::future::try_join_all(removals).await.map(drop)
    };
    let volumes = async {
        let removals = volumes(docker, Some(slug)).await?.into_iter().map(|(volume, _)| async move {
            match docker.remove_volume(&volume, None::<RemoveVolumeOptions>).await {
                Ok(()) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(failed("remove a volume")(e).with_bottle(slug)),
            }
        });
        futures_util::future::try_join_all(removals).await.map(drop)
    };
    tokio::try_join!(networks, volumes).map(drop)
}

/// This backend's volumes (of one slug, or all), with their labels.
async fn volumes(docker: &Docker, slug: Option<&str>) -> Result<Vec<(String, HashMap<String, String>)>> {
    let listed = docker
        .list_volumes(Some(ListVolumesOptions { filters: Some(filter(slug)) }))
        .await
        .map_err(failed("list volumes"))?;
    Ok(listed.volumes.unwrap_or_default().into_iter().map(|v| (v.name, v.labels)).collect())
}

/// What killed or crashed runs left behind, judged by the orphan rule.
pub(crate) async fn prepare(docker: &Docker) -> Result<Orphans> {
    let mut found = Leftovers::default();
    // The agent container of each slug that runs one, for the ready check.
    let mut agents: HashMap<String, String> = HashMap::new();
    for c in containers(docker, true, None, false).await? {
        let labels = c.labels.clone().unwrap_or_default();
        let Some(slug) = labels.get(SLUG) else { continue };
        let running = c.state.map(|s| s.to_string()) == Some("running".into());
        let name = container_name(&c).unwrap_or_default();
        if running && labels.get(ROLE).map(String::as_str) == Some(ROLE_AGENT) {
            found.agent_runs(slug);
            agents.insert(slug.clone(), c.id.clone().unwrap_or_else(|| name.clone()));
        }
        found.saw(slug, format!("container {name} ({})", if running { "running" } else { "stopped" }), &labels);
    }
    let networks = docker
        .list_networks(Some(ListNetworksOptions { filters: Some(filter(None)) }))
        .await
        .map_err(failed("list networks"))?;
    for n in networks {
        let labels = n.labels.unwrap_or_default();
        let Some(slug) = labels.get(SLUG) else { continue };
        found.saw(slug, format!("network {}", n.name.unwrap_or_default()), &labels);
    }
    for (name, labels) in volumes(docker, None).await? {
        let Some(slug) = labels.get(SLUG) else { continue };
        found.saw(slug, format!("volume {name}"), &labels);
    }
    Ok(found
        .judge(|slug| {
            let agent = agents.get(&slug).cloned();
            async move {
                let Some(container) = agent else { return false };
                is_detached(&DockerBottle::new(docker, container, Handle::new(slug, "root", "/"))).await
            }
        })
        .await)
}

/// Remove what `prepare` found.
pub(crate) async fn cleanup(docker: &Docker, orphans: &Orphans) -> Result<()> {
    for slug in orphans.slugs() {
        remove_slug(docker, slug).await?;
    }
    Ok(())
}
