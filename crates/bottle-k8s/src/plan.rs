//! [`K8sPlan`]: what `resolve_plan` makes of the common plan on a cluster —
//! the [`Wiring`] (the agent reaches its sidecars by fixed host names that
//! `hostAliases` point at the sidecar Pod; the sidecars listen on every
//! address of their Pod and log to stdout) and the render [`Spec`] of
//! every object. Pure: nothing here talks to the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use bottle_core::backend::{
    BackendPlan, BuildContext, EGRESS_PORT, GATE_PORT, Placement, SidecarCommand, WiredPlan, Wiring, pack_context,
    sidecar_recipe,
};
use bottle_core::sidecar::Listen;
use bottle_core::{CommonPlan, Error, ErrorKind, KubernetesDef, Result, Sidecar, labels};

use crate::render::{self, Mode, SECRET_MOUNT, SIDECAR_HOSTS, SidecarPort, Spec};

/// The uid and gid of the agent user in the bundled agent images (`useradd --uid 1000`).
pub const AGENT_UID: i64 = 1000;
/// What the render shows in place of the bottle's client token.
pub const TOKEN_PLACEHOLDER: &str = "CLIENT-TOKEN";
/// Where the sidecars keep their files (an emptyDir).
const WORK_DIR: &str = "/var/lib/bot-bottle";

/// The Kubernetes plan: the common plan, its wiring and the objects' spec.
#[derive(Debug)]
pub struct K8sPlan {
    pub(crate) wired: WiredPlan,
    /// The objects' spec (the mode is settled at launch, by discovery).
    pub spec: Spec,
    /// The manifest's `kubernetes` section.
    pub kubernetes: KubernetesDef,
    /// The cluster's name and URL, once resolved against it.
    pub cluster: Option<(String, String)>,
}

impl BackendPlan for K8sPlan {
    fn wired(&self) -> &WiredPlan {
        &self.wired
    }

    fn summary_lines(&self) -> Vec<(String, String)> {
        let k = &self.kubernetes;
        let runtime = k.runtime_class.as_deref().unwrap_or("the cluster's default runtime");
        let mut lines = Vec::new();
        if let Some((name, url)) = &self.cluster {
            lines.push(("cluster".into(), format!("{name} ({url})")));
        }
        let runs_as = match self.spec.mode {
            Mode::AgentSandbox => "an agent-sandbox Sandbox (agent-sandbox is installed)",
            Mode::Native => "a plain Pod (agent-sandbox is not installed)",
        };
        lines.push(("agent runs as".into(), runs_as.into()));
        lines.extend([
            ("namespace".into(), k.namespace.clone()),
            ("agent image".into(), self.spec.agent_image.clone()),
            ("sidecar image".into(), self.spec.sidecar_image.clone()),
            ("runtime class".into(), runtime.to_string()),
            (
                "limits".into(),
                format!(
                    "memory {}, {} CPUs, disk {} (the agent Pod's requests and limits); saved state at most {}; \
                     processes as the node's podPidsLimit allows",
                    self.wired.common.limits.memory,
                    self.wired.common.limits.cpus,
                    self.wired.common.limits.disk,
                    self.wired.common.limits.state
                ),
            ),
            (
                "network".into(),
                "NetworkPolicy confines the agent Pod to its sidecar Pod's ports; this needs a network plugin that \
                 enforces NetworkPolicy (Calico, Cilium, kind ≥ 0.24, k3s), which the backend probes at start"
                    .into(),
            ),
        ]);
        if k.unenforced_ok {
            lines.push((
                "WARNING".into(),
                "unenforced_ok: true — the bottle runs even where NetworkPolicy is not enforced, and then its agent \
                 reaches the cluster's network and the internet directly"
                    .into(),
            ));
        }
        lines
    }
}

/// The agent image as the cluster pulls it: `tag` under `registry`.
pub fn image_ref(registry: Option<&str>, tag: &str) -> String {
    match registry {
        Some(registry) => format!("{}/{tag}", registry.trim_end_matches('/')),
        None => tag.to_string(),
    }
}

/// The local tags of a bottle's two images (content-hashed, as the Docker
/// backend builds them), before the registry is put in front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageTags {
    /// The agent image's tag (`bot-bottle/shell:<hash>`).
    pub agent: String,
    /// The sidecar image's tag (`bot-bottle/sidecar:<hash>`).
    pub sidecar: String,
}

/// The tags of `common`'s two images; the sidecar's (a hash of this
/// `bottle` itself) worked out once per process and host CA bundle.
pub async fn tags(common: &CommonPlan) -> Result<ImageTags> {
    static SIDECAR: std::sync::Mutex<BTreeMap<Option<std::path::PathBuf>, String>> =
        std::sync::Mutex::new(BTreeMap::new());
    let agent = pack_context(common.provision.image.clone(), "agent").await?.tag;
    let ca = common.provision.image.host_ca_bundle.clone();
    let known = SIDECAR.lock().unwrap_or_else(|e| e.into_inner()).get(&ca).cloned();
    let sidecar = match known {
        Some(tag) => tag,
        None => {
            let tag = pack_context(sidecar_recipe(ca.clone())?, "sidecar").await?.tag;
            SIDECAR.lock().unwrap_or_else(|e| e.into_inner()).insert(ca, tag.clone());
            tag
        }
    };
    Ok(ImageTags { agent, sidecar })
}

/// The build contexts of `common`'s two images (the sidecar's holds this
/// `bottle` itself, so packing it reads the executable).
pub async fn contexts(common: &CommonPlan) -> Result<(BuildContext, BuildContext)> {
    let agent = pack_context(common.provision.image.clone(), "agent").await?;
    let recipe = sidecar_recipe(common.provision.image.host_ca_bundle.clone())?;
    let sidecar = pack_context(recipe, "sidecar").await?;
    Ok((agent, sidecar))
}

/// How a bottle on a cluster is wired to its sidecars.
pub fn wiring(needs_gate: bool) -> Wiring {
    let placement = |port: u16, work_dir: String| Placement {
        listen: Listen::Tcp(format!("0.0.0.0:{port}")),
        audit_log: "-".into(),
        work_dir,
    };
    Wiring {
        proxy: format!("{}:{EGRESS_PORT}", SIDECAR_HOSTS[0]),
        gate: needs_gate.then(|| format!("http://{}:{GATE_PORT}", SIDECAR_HOSTS[1])),
        egress: placement(EGRESS_PORT, WORK_DIR.into()),
        git_gate: needs_gate.then(|| placement(GATE_PORT, format!("{WORK_DIR}/gate"))),
        supervise: None,
        install_ca: true,
        isolation: "its own Pod; NetworkPolicy lets it reach only its sidecar Pod's ports (no DNS, nothing else)"
            .into(),
    }
}

/// The sidecar config file names in the Secret.
const EGRESS_FILE: &str = "egress.json";
const GATE_FILE: &str = "git-gate.json";

/// Whether `ip` lies in a range the sidecar Pod is kept from.
fn kept_off(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || v4.is_link_local() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            (first & 0xffc0) == 0xfe80 || (first & 0xfe00) == 0xfc00
        }
    }
}

/// The render spec of `common`'s bottle in `mode`. `for_reader`: secrets
/// (the Secret's files, the client token) as placeholders, for printing.
pub fn spec(common: &CommonPlan, wiring: &Wiring, mode: Mode, for_reader: bool, tags: &ImageTags) -> Result<Spec> {
    if common.supervise.enabled {
        // Refused rather than dropped: the agent would be told of tools that are not there.
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "bottle `{}` of agent `{}` says `supervise: true`, which the kubernetes backend does not run yet (its \
                 queue lives in this host's state folder, out of a Pod's reach); remove it from the bottle, or use \
                 --backend docker",
                common.bottle, common.agent
            ),
        ));
    }
    let k = &common.kubernetes;
    let token = common.client_token.expose();
    let mut env = wiring.guest_env(common);
    // The gate (and supervise) are reached directly, by their host names, not through the proxy.
    for key in ["NO_PROXY", "no_proxy"] {
        if let Some(list) = env.get_mut(key) {
            list.push_str(&format!(",{},{}", SIDECAR_HOSTS[1], SIDECAR_HOSTS[2]));
        }
    }
    if for_reader {
        for value in env.values_mut() {
            *value = value.replace(token, TOKEN_PLACEHOLDER);
        }
    }
    let mut sidecars = vec![SidecarPort {
        name: Sidecar::Egress.name().into(),
        args: SidecarCommand::configured(Sidecar::Egress, format!("{SECRET_MOUNT}/{EGRESS_FILE}")).args(),
        port: EGRESS_PORT,
    }];
    let encode = |e: serde_json::Error| Error::new(ErrorKind::Io, "encoding a sidecar configuration").with_source(e);
    let mut secret_files = BTreeMap::new();
    let egress = serde_json::to_string(&wiring.egress_config(common)).map_err(encode)?;
    secret_files.insert(
        EGRESS_FILE.to_string(),
        if for_reader { "SECRET: the egress proxy's routes, credentials and CA key".into() } else { egress },
    );
    if let Some(gate) = wiring.gate_config(common) {
        sidecars.push(SidecarPort {
            name: Sidecar::GitGate.name().into(),
            args: SidecarCommand::configured(Sidecar::GitGate, format!("{SECRET_MOUNT}/{GATE_FILE}")).args(),
            port: GATE_PORT,
        });
        let gate = serde_json::to_string(&gate).map_err(encode)?;
        secret_files.insert(
            GATE_FILE.to_string(),
            if for_reader { "SECRET: the git gate's upstreams and deploy keys".into() } else { gate },
        );
    }
    // Every port the routes and upstreams name; none at all when a route allows every port.
    let rules = &common.egress.policy.rules;
    let egress_ports = (!rules.iter().any(|r| r.ports.is_empty())).then(|| {
        let ports: BTreeSet<u16> = rules
            .iter()
            .flat_map(|r| r.ports.iter().copied())
            .chain(common.git_gate.upstreams.iter().map(|u| u.port))
            .collect();
        ports.into_iter().collect()
    });
    let mut allowed_private: Vec<IpAddr> = rules
        .iter()
        .map(|r| r.host.as_str())
        .chain(common.git_gate.upstreams.iter().map(|u| u.host.as_str()))
        .filter_map(|host| host.trim_start_matches('[').trim_end_matches(']').parse().ok())
        .filter(|ip| kept_off(*ip))
        .collect();
    allowed_private.sort();
    allowed_private.dedup();
    let annotations = labels::for_plan(common, crate::NAME, labels::ROLE_AGENT).into_iter().collect();
    let limits = &common.limits;
    Ok(Spec {
        id: common.slug.clone(),
        namespace: k.namespace.clone(),
        mode,
        agent_image: image_ref(k.image_registry.as_deref(), &tags.agent),
        sidecar_image: image_ref(k.image_registry.as_deref(), &tags.sidecar),
        runtime_class: k.runtime_class.clone(),
        node_selector: k.node_selector.clone(),
        agent_uid: AGENT_UID,
        env,
        annotations,
        memory: limits.memory.0,
        millicpus: limits.cpus.0,
        disk: limits.disk.0,
        sidecars,
        egress_ports,
        allowed_private,
        secret_files,
        sidecar_ip: None,
        anchor_uid: None,
    })
}

/// Resolve `common` for a cluster: the images' tags, the wiring and the
/// spec (native mode until discovery settles it).
pub(crate) async fn resolve(common: CommonPlan) -> Result<K8sPlan> {
    let tags = tags(&common).await?;
    let wiring = wiring(common.git_gate.is_needed());
    let spec = spec(&common, &wiring, Mode::Native, false, &tags)?;
    Ok(K8sPlan { kubernetes: common.kubernetes.clone(), spec, cluster: None, wired: WiredPlan { common, wiring } })
}

/// Every object of `common`'s bottle as YAML a user can read and apply,
/// secrets as placeholders.
pub async fn render_yaml(common: &CommonPlan, mode: Mode) -> Result<String> {
    let tags = tags(common).await?;
    let spec = spec(common, &wiring(common.git_gate.is_needed()), mode, true, &tags)?;
    let header = format!(
        "# The objects bot-bottle creates for bottle {id} in namespace {ns} ({mode}).\n\
         # Secrets are placeholders: the backend fills the Secret with the sidecars' configurations and the\n\
         # agent's proxy variables with the bottle's token ({TOKEN_PLACEHOLDER}). It also sets each object's\n\
         # ownerReferences to the anchor's UID once it exists, and hostAliases to the sidecar Pod's IP\n\
         # ({placeholder} here).\n",
        id = spec.id,
        ns = spec.namespace,
        mode = match mode {
            Mode::Native => "plain Pods",
            Mode::AgentSandbox => "an agent-sandbox Sandbox",
        },
        placeholder = render::SIDECAR_IP_PLACEHOLDER,
    );
    Ok(format!("{header}{}", render::render(&spec).to_yaml()))
}

/// `spec`'s bottle prepared against a scratch state folder (so nothing of
/// it stays behind), for what prints or pushes it without running it.
fn prepare_scratch(
    spec: &bottle_core::BottleSpec,
    providers: &bottle_core::Providers,
    host: &bottle_core::Host,
) -> Result<CommonPlan> {
    let scratch = tempfile::tempdir().map_err(|e| Error::io("creating a scratch folder", e))?;
    let host = bottle_core::Host { state: bottle_core::StateRoot::at(scratch.path()), ..host.clone() };
    bottle_core::prepare(spec, providers, &host, crate::NAME)
}

/// `bottle k8s render AGENT`: `spec`'s bottle rendered by [`render_yaml`].
pub async fn render_agent(
    spec: &bottle_core::BottleSpec,
    providers: &bottle_core::Providers,
    host: &bottle_core::Host,
    mode: Mode,
) -> Result<String> {
    let common = prepare_scratch(spec, providers, host)?;
    render_yaml(&common, mode).await
}

/// `spec`'s bottle's two images in the local Docker Engine, built when
/// missing (as `bottle image push` builds them before pushing); their tags.
pub async fn build_images(
    spec: &bottle_core::BottleSpec,
    providers: &bottle_core::Providers,
    host: &bottle_core::Host,
) -> Result<ImageTags> {
    let common = prepare_scratch(spec, providers, host)?;
    let (agent, sidecar) = contexts(&common).await?;
    for context in [&agent, &sidecar] {
        crate::image::build_if_missing(context).await?;
    }
    Ok(ImageTags { agent: agent.tag, sidecar: sidecar.tag })
}

/// `bottle image push AGENT`: `spec`'s bottle's images built (when
/// missing) and pushed to the manifest's registry; the references pushed.
pub async fn push_agent(
    spec: &bottle_core::BottleSpec,
    providers: &bottle_core::Providers,
    host: &bottle_core::Host,
) -> Result<Vec<String>> {
    let common = prepare_scratch(spec, providers, host)?;
    let Some(registry) = common.kubernetes.image_registry.clone() else {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "the manifest names no registry to push to; add `kubernetes: { image_registry: registry.example.com/team }`",
        ));
    };
    let (agent, sidecar) = contexts(&common).await?;
    let mut pushed = Vec::new();
    for context in [agent, sidecar] {
        pushed.push(crate::image::push(&context, &registry).await?);
    }
    Ok(pushed)
}
