//! The sidecar containers beside a Docker bottle: the egress proxy (`egress`
//! on the bottle's internal network) and the git gate (`gate`). Each sits on
//! both networks, gets its JSON configuration uploaded into its own container
//! before it starts — never into the bottle — and is waited for until it
//! says it listens.

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkConnectRequest};
use bollard::query_parameters::{CreateContainerOptions, LogsOptions, StartContainerOptions, UploadToContainerOptions};
use bottle_core::{CommonPlan, Error, ErrorKind, ImageRecipe, LAUNCHER, Result, SidecarProgram};
use futures_util::StreamExt;

use crate::engine::failed;
use crate::labels;

/// The sidecar image's Dockerfile.
const DOCKERFILE: &str = include_str!("../sidecar.Dockerfile");

/// Which sidecar; its name is its role label, network alias and container-name suffix.
pub(crate) use bottle_core::Sidecar as Kind;

fn ready_line(kind: Kind) -> String {
    format!("{}: listening on", kind.subcommand())
}

/// The sidecar image recipe: the bundled Dockerfile and `bottle` itself with
/// the loader and libraries it runs with ([`SidecarProgram::bundle`]).
pub(crate) fn recipe(host_ca_bundle: Option<std::path::PathBuf>) -> Result<ImageRecipe> {
    Ok(ImageRecipe {
        repository: "bot-bottle/sidecar".into(),
        dockerfile: DOCKERFILE.into(),
        dockerfile_origin: "bundled (sidecar)".into(),
        context_dir: None,
        host_ca_bundle,
        extra_files: SidecarProgram::locate()?.bundle("bot-bottle")?,
        prebuilt_archive: None,
    })
}

/// The container name of a bottle's sidecar.
pub(crate) fn container_name(instance: &str, kind: Kind) -> String {
    format!("{instance}-{}", kind.name())
}

/// Create, configure and start one sidecar on `outside` and `internal`, and wait until it listens.
pub(crate) async fn launch(
    docker: &Docker,
    plan: &CommonPlan,
    kind: Kind,
    image: &str,
    networks: (&str, &str),
    config_json: Vec<u8>,
) -> Result<()> {
    let (outside, internal) = networks;
    let name = container_name(&plan.provision.instance_name, kind);
    let config_path = format!("/etc/bot-bottle/{}.json", kind.name());
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(std::iter::once(LAUNCHER.to_string()).chain(SidecarProgram::args(kind, &config_path)).collect()),
        labels: Some(labels::for_plan(plan, kind.name())),
        host_config: Some(HostConfig {
            network_mode: Some(outside.to_string()),
            init: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            pids_limit: Some(512),
            ..Default::default()
        }),
        ..Default::default()
    };
    docker
        .create_container(Some(CreateContainerOptions { name: Some(name.clone()), platform: String::new() }), body)
        .await
        .map_err(failed("create a sidecar container"))?;
    let endpoint = EndpointSettings { aliases: Some(vec![kind.name().to_string()]), ..Default::default() };
    docker
        .connect_network(
            internal,
            NetworkConnectRequest { container: Some(name.clone()), endpoint_config: Some(endpoint) },
        )
        .await
        .map_err(failed("attach a sidecar to the bottle's network"))?;
    let tar = config_tar(&format!("{}.json", kind.name()), &config_json)?;
    let options = UploadToContainerOptions { path: "/etc/bot-bottle".into(), ..Default::default() };
    docker
        .upload_to_container(&name, Some(options), bollard::body_full(tar.into()))
        .await
        .map_err(failed("configure a sidecar"))?;
    docker.start_container(&name, None::<StartContainerOptions>).await.map_err(failed("start a sidecar"))?;
    wait_until_listening(docker, &name, kind).await
}

/// A tar holding the configuration file, readable by the sidecar's user only.
fn config_tar(name: &str, data: &[u8]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o600);
    header.set_uid(1500);
    header.set_gid(1500);
    header.set_cksum();
    builder.append_data(&mut header, name, data).map_err(|e| Error::io("packing a sidecar configuration", e))?;
    builder.into_inner().map_err(|e| Error::io("packing a sidecar configuration", e))
}

async fn wait_until_listening(docker: &Docker, name: &str, kind: Kind) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logs = read_logs(docker, name, false, true).await?;
        if logs.contains(&ready_line(kind)) {
            return Ok(());
        }
        let running = docker
            .inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .map_err(failed("inspect a sidecar"))?
            .state
            .and_then(|s| s.running)
            .unwrap_or(false);
        if !running || Instant::now() > deadline {
            return Err(Error::new(
                ErrorKind::Backend,
                format!(
                    "the {} sidecar {} at start-up: {}",
                    kind.name(),
                    if running { "did not say it listens within 20 s" } else { "exited" },
                    logs.trim()
                ),
            )
            .with_backend(crate::NAME));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A container's log so far (stdout and/or stderr) as text.
async fn read_logs(docker: &Docker, name: &str, stdout: bool, stderr: bool) -> Result<String> {
    let options = LogsOptions { stdout, stderr, follow: false, tail: "all".into(), ..Default::default() };
    let mut stream = docker.logs(name, Some(options));
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(failed("read a sidecar's log"))?;
        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    Ok(text)
}

/// Copy a sidecar's audit log (its stdout) to `sink`, following it when asked.
pub(crate) async fn audit_log(
    docker: &Docker,
    name: &str,
    follow: bool,
    sink: &mut (dyn std::io::Write + Send),
) -> Result<()> {
    let options = LogsOptions { stdout: true, stderr: false, follow, tail: "all".into(), ..Default::default() };
    let mut stream = docker.logs(name, Some(options));
    while let Some(chunk) = stream.next().await {
        match chunk.map_err(failed("read a sidecar's log"))? {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                sink.write_all(&message).and_then(|()| sink.flush()).map_err(|e| Error::io("writing the log", e))?;
            }
            _ => {}
        }
    }
    Ok(())
}
