//! The objects of one bottle on a cluster, rendered as pure functions of a
//! [`Spec`] (no I/O): the owner anchor (ConfigMap `bb-<ID>` in native mode,
//! the `Sandbox` in agent-sandbox mode), the Secret only the sidecar Pod
//! mounts, the sidecar Pod, the agent Pod (native mode; the Sandbox's pod
//! template otherwise), the two per-bottle NetworkPolicies and the
//! namespace's default-deny backstop. `bottle k8s render` prints them; the
//! backend creates them in [`Objects::creation_order`].
//!
//! The agent Pod meets Pod Security "restricted" (non-root, no privilege
//! escalation, every capability dropped, seccomp `RuntimeDefault`) and has
//! no service-account token, no service-link variables, no DNS (its
//! resolver is `127.0.0.1`) and no Secret; it reaches its sidecars by the
//! sidecar Pod's IP under fixed host names (`hostAliases`). The policies let
//! it reach exactly the sidecar Pod's ports; the sidecar Pod reaches the
//! internet on the ports its routes name, never the cluster's private
//! ranges or the metadata address unless a route names such an address.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{Value, json};

/// Label every object carries: who manages it.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`].
pub const MANAGER: &str = "bot-bottle";
/// Label every object carries: the bottle (its slug).
pub const SANDBOX: &str = "bot-bottle.dev/sandbox";
/// Label of the two Pods: `agent` or `sidecar`.
pub const ROLE: &str = "bot-bottle.dev/role";
/// The agent Pod's [`ROLE`].
pub const ROLE_AGENT: &str = "agent";
/// The sidecar Pod's [`ROLE`].
pub const ROLE_SIDECAR: &str = "sidecar";
/// The namespace-wide default-deny policy's name.
pub const DEFAULT_DENY: &str = "bot-bottle-default-deny";
/// Host names under which the agent reaches its sidecars (`hostAliases`).
pub const SIDECAR_HOSTS: [&str; 3] = ["bottle-proxy", "bottle-git", "bottle-supervise"];
/// The agent container's name.
pub const AGENT_CONTAINER: &str = "agent";
/// Where the sidecar Pod mounts the bottle's Secret.
pub const SECRET_MOUNT: &str = "/etc/bot-bottle";
/// The uid (and gid) the sidecar image's user has.
pub const SIDECAR_UID: i64 = 1500;
/// The agent Pod's folders that bot-bottle writes as "root" elsewhere (its
/// tmux configuration, the detached marker, the CA), each an emptyDir the
/// agent may write: in a restricted Pod every exec runs as the agent.
pub const AGENT_WRITABLE: [(&str, &str); 4] = [
    ("bot-bottle-etc", "/etc/bot-bottle"),
    ("bot-bottle-var", "/var/lib/bot-bottle"),
    ("ca-certificates", "/usr/local/share/ca-certificates"),
    ("ssl-certs", "/etc/ssl/certs"),
];
/// The agent-sandbox API version of `Sandbox`.
pub const SANDBOX_API_VERSION: &str = "agents.x-k8s.io/v1beta1";
/// The address the render shows for the sidecar Pod's IP before it has one.
pub const SIDECAR_IP_PLACEHOLDER: &str = "192.0.2.1";

/// Ranges the sidecar Pod may not reach unless a route names an address in
/// them: link-local (cloud metadata at 169.254.169.254), RFC 1918, CGNAT.
pub const CLUSTER_RANGES_V4: [&str; 5] =
    ["169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"];
/// The IPv6 ranges likewise kept from the sidecar Pod.
pub const CLUSTER_RANGES_V6: [&str; 2] = ["fe80::/10", "fc00::/7"];

/// Whether the agent runs as a plain Pod or as an agent-sandbox `Sandbox`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain Pods, owned by a ConfigMap anchor.
    Native,
    /// A `Sandbox` (agents.x-k8s.io/v1beta1), which is the anchor.
    AgentSandbox,
}

/// One program of the sidecar Pod and the port it serves the agent on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarPort {
    /// The container's name (`egress`, `gate`, `supervise`).
    pub name: String,
    /// Its `bottle sidecar …` arguments.
    pub args: Vec<String>,
    /// The TCP port it listens on (on every address of the Pod).
    pub port: u16,
}

/// Everything the objects are rendered from. Its `Debug` leaves out the
/// Secret's files and the environment (the bottle's token is in it).
#[derive(Clone, PartialEq, Eq)]
pub struct Spec {
    /// The bottle's slug (its ID in names and labels).
    pub id: String,
    /// The namespace.
    pub namespace: String,
    /// Plain Pods or a Sandbox.
    pub mode: Mode,
    /// The agent image, as the cluster pulls it.
    pub agent_image: String,
    /// The sidecar image, as the cluster pulls it.
    pub sidecar_image: String,
    /// The agent Pod's RuntimeClass.
    pub runtime_class: Option<String>,
    /// Where both Pods may be scheduled.
    pub node_selector: BTreeMap<String, String>,
    /// The agent's numeric uid and gid (non-root).
    pub agent_uid: i64,
    /// The agent's environment (secrets as placeholders; the client token
    /// as itself, or a placeholder when rendered for a reader).
    pub env: BTreeMap<String, String>,
    /// Facts of the bottle (owner, user, workdir, label…) as annotations of
    /// the anchor and the agent Pod.
    pub annotations: BTreeMap<String, String>,
    /// Memory limit in bytes.
    pub memory: u64,
    /// CPU limit in millicores.
    pub millicpus: u32,
    /// Ephemeral storage limit in bytes (the manifest's `disk`).
    pub disk: u64,
    /// The sidecar Pod's programs.
    pub sidecars: Vec<SidecarPort>,
    /// The ports the sidecar Pod may reach outside; `None`: every port (a
    /// route allows every port).
    pub egress_ports: Option<Vec<u16>>,
    /// Addresses in the kept-off ranges that a route names, which the
    /// sidecar Pod may reach after all.
    pub allowed_private: Vec<IpAddr>,
    /// The Secret's files (name → content, or a placeholder).
    pub secret_files: BTreeMap<String, String>,
    /// The sidecar Pod's IP, once it has one.
    pub sidecar_ip: Option<String>,
    /// The anchor's UID, once it exists (for the ownerReferences).
    pub anchor_uid: Option<String>,
}

/// The objects of one bottle. Its `Debug` names them (the Secret holds credentials).
#[derive(Clone, PartialEq)]
pub struct Objects {
    /// The namespace's default-deny policy (made once, shared by every bottle).
    pub default_deny: Value,
    /// The owner of everything else: a ConfigMap, or the Sandbox.
    pub anchor: Value,
    /// The bottle's Secret (mounted by the sidecar Pod only).
    pub secret: Value,
    /// The agent Pod's policy.
    pub agent_policy: Value,
    /// The sidecar Pod's policy.
    pub sidecar_policy: Value,
    /// The sidecar Pod.
    pub sidecar_pod: Value,
    /// The agent Pod (native mode only; the Sandbox holds it otherwise).
    pub agent_pod: Option<Value>,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("id", &self.id)
            .field("namespace", &self.namespace)
            .field("mode", &self.mode)
            .field("agent_image", &self.agent_image)
            .field("sidecar_image", &self.sidecar_image)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("secret_files", &self.secret_files.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .creation_order()
            .into_iter()
            .map(|o| format!("{}/{}", o["kind"].as_str().unwrap_or("?"), o["metadata"]["name"].as_str().unwrap_or("?")))
            .collect();
        f.debug_tuple("Objects").field(&names).finish()
    }
}

impl Objects {
    /// Every object in the order the backend creates them: the backstop,
    /// the anchor, what it owns, the sidecar Pod, the agent Pod.
    pub fn creation_order(&self) -> Vec<&Value> {
        let mut all = vec![
            &self.default_deny,
            &self.anchor,
            &self.secret,
            &self.agent_policy,
            &self.sidecar_policy,
            &self.sidecar_pod,
        ];
        all.extend(self.agent_pod.as_ref());
        all
    }

    /// Every object as a YAML stream (`---` between documents).
    pub fn to_yaml(&self) -> String {
        self.creation_order()
            .into_iter()
            .map(|object| serde_yaml::to_string(object).unwrap_or_else(|e| format!("# cannot render: {e}\n")))
            .collect::<Vec<_>>()
            .join("---\n")
    }
}

/// The anchor's name (and the Sandbox's): `bb-<ID>`.
pub fn anchor_name(id: &str) -> String {
    format!("bb-{id}")
}

/// The agent Pod's name: `bb-<ID>-agent` (native), `bb-<ID>` (the name the
/// agent-sandbox controller gives a fresh Sandbox's Pod).
pub fn agent_pod_name(id: &str, mode: Mode) -> String {
    match mode {
        Mode::Native => format!("bb-{id}-agent"),
        Mode::AgentSandbox => anchor_name(id),
    }
}

/// The sidecar Pod's name.
pub fn sidecar_pod_name(id: &str) -> String {
    format!("bb-{id}-sidecar")
}

/// The Secret's name.
pub fn secret_name(id: &str) -> String {
    format!("bb-{id}-creds")
}

/// The selector of every object of bottle `id`.
pub fn selector(id: &str) -> String {
    format!("{MANAGED_BY}={MANAGER},{SANDBOX}={id}")
}

/// The labels of a bottle's object, with `role` for a Pod.
fn labels(id: &str, role: Option<&str>) -> Value {
    let mut labels = json!({ MANAGED_BY: MANAGER, SANDBOX: id });
    if let Some(role) = role {
        labels[ROLE] = json!(role);
    }
    labels
}

/// The metadata of object `name` of the bottle, owned by the anchor once its UID is known.
fn metadata(spec: &Spec, name: &str, role: Option<&str>) -> Value {
    let mut metadata = json!({ "name": name, "namespace": spec.namespace, "labels": labels(&spec.id, role) });
    if let Some(uid) = &spec.anchor_uid {
        let (api_version, kind) = match spec.mode {
            Mode::Native => ("v1", "ConfigMap"),
            Mode::AgentSandbox => (SANDBOX_API_VERSION, "Sandbox"),
        };
        metadata["ownerReferences"] =
            json!([{ "apiVersion": api_version, "kind": kind, "name": anchor_name(&spec.id), "uid": uid }]);
    }
    metadata
}

/// The hardening every container gets.
fn container_security(uid: i64) -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "privileged": false,
        "capabilities": { "drop": ["ALL"] },
        "runAsNonRoot": true,
        "runAsUser": uid,
        "runAsGroup": uid,
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

/// `security` with a read-only root file system (the sidecars write only to their volumes).
fn read_only(mut security: Value) -> Value {
    security["readOnlyRootFilesystem"] = json!(true);
    security
}

/// The hardening of both Pods.
fn pod_security(uid: i64) -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

/// The agent Pod's spec.
pub fn agent_pod_spec(spec: &Spec) -> Value {
    let env: Vec<Value> = spec.env.iter().map(|(name, value)| json!({ "name": name, "value": value })).collect();
    let mut limits = json!({ "cpu": format!("{}m", spec.millicpus), "memory": spec.memory.to_string() });
    if spec.disk > 0 {
        limits["ephemeral-storage"] = json!(spec.disk.to_string());
    }
    let ip = spec.sidecar_ip.clone().unwrap_or_else(|| SIDECAR_IP_PLACEHOLDER.to_string());
    let mut pod = json!({
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 5,
        "dnsPolicy": "None",
        "dnsConfig": { "nameservers": ["127.0.0.1"] },
        "hostAliases": [{ "ip": ip, "hostnames": SIDECAR_HOSTS }],
        "securityContext": pod_security(spec.agent_uid),
        "containers": [{
            "name": AGENT_CONTAINER,
            "image": spec.agent_image,
            "imagePullPolicy": "IfNotPresent",
            // No workingDir: the runtime would make a missing one owned by root;
            // provisioning makes it as the agent, and sessions `cd` into it.
            "command": ["sleep", "infinity"],
            "env": env,
            "resources": { "limits": limits.clone(), "requests": limits },
            "securityContext": container_security(spec.agent_uid),
            "volumeMounts": AGENT_WRITABLE
                .iter()
                .map(|(name, path)| json!({ "name": name, "mountPath": path }))
                .collect::<Vec<_>>(),
        }],
        // The image's CA bundle copied where the agent (not root: exec runs as
        // the container's user) may append the bottle's CA to it.
        "initContainers": [{
            "name": "ca-bundle",
            "image": spec.agent_image,
            "imagePullPolicy": "IfNotPresent",
            // Each entry, not the folder itself: the emptyDir is root's, and
            // `cp -a DIR/. /bundle/` fails setting its times as uid 1000.
            "command": ["sh", "-c", "find /etc/ssl/certs -mindepth 1 -maxdepth 1 -exec cp -a {} /bundle/ \\;"],
            "resources": { "limits": { "cpu": "100m", "memory": "64Mi" } },
            "securityContext": container_security(spec.agent_uid),
            "volumeMounts": [{ "name": "ssl-certs", "mountPath": "/bundle" }],
        }],
        "volumes": AGENT_WRITABLE.iter().map(|(name, _)| json!({ "name": name, "emptyDir": {} })).collect::<Vec<_>>(),
    });
    if let Some(class) = &spec.runtime_class {
        pod["runtimeClassName"] = json!(class);
    }
    if !spec.node_selector.is_empty() {
        pod["nodeSelector"] = json!(spec.node_selector);
    }
    pod
}

/// The sidecar Pod: one container per program, the Secret mounted read-only.
fn sidecar_pod(spec: &Spec) -> Value {
    let containers: Vec<Value> = spec
        .sidecars
        .iter()
        .map(|sidecar| {
            json!({
                "name": sidecar.name,
                "image": spec.sidecar_image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["/opt/bot-bottle/run"],
                "args": sidecar.args,
                "ports": [{ "name": sidecar.name, "containerPort": sidecar.port, "protocol": "TCP" }],
                "readinessProbe": { "tcpSocket": { "port": sidecar.port }, "periodSeconds": 1 },
                "resources": { "limits": { "cpu": "1", "memory": "256Mi" }, "requests": { "cpu": "50m", "memory": "64Mi" } },
                "securityContext": read_only(container_security(SIDECAR_UID)),
                "volumeMounts": [
                    { "name": "config", "mountPath": SECRET_MOUNT, "readOnly": true },
                    { "name": "work", "mountPath": "/var/lib/bot-bottle" },
                    { "name": "tmp", "mountPath": "/tmp" },
                    { "name": "home", "mountPath": "/home/sidecar" },
                ],
            })
        })
        .collect();
    let mut pod = json!({
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 5,
        "securityContext": pod_security(SIDECAR_UID),
        "containers": containers,
        "volumes": [
            { "name": "config", "secret": { "secretName": secret_name(&spec.id), "defaultMode": 0o440 } },
            { "name": "work", "emptyDir": {} },
            { "name": "tmp", "emptyDir": { "medium": "Memory" } },
            { "name": "home", "emptyDir": {} },
        ],
    });
    if !spec.node_selector.is_empty() {
        pod["nodeSelector"] = json!(spec.node_selector);
    }
    json!({ "apiVersion": "v1", "kind": "Pod", "metadata": metadata(spec, &sidecar_pod_name(&spec.id), Some(ROLE_SIDECAR)), "spec": pod })
}

/// The sidecar ports as NetworkPolicy ports.
fn sidecar_ports(spec: &Spec) -> Vec<Value> {
    spec.sidecars.iter().map(|s| json!({ "protocol": "TCP", "port": s.port })).collect()
}

fn pods_of(id: &str, role: &str) -> Value {
    json!({ "podSelector": { "matchLabels": { SANDBOX: id, ROLE: role } } })
}

/// The agent Pod's policy: nothing in, out only to the sidecar Pod's ports.
fn agent_policy(spec: &Spec) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(spec, &format!("bb-{}-agent", spec.id), None),
        "spec": {
            "podSelector": { "matchLabels": { SANDBOX: spec.id, ROLE: ROLE_AGENT } },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [{ "to": [pods_of(&spec.id, ROLE_SIDECAR)], "ports": sidecar_ports(spec) }],
        },
    })
}

/// The sidecar Pod's policy: in only from the agent Pod on its ports; out
/// to the internet (not the kept-off ranges, unless a route names an
/// address there) and the cluster's DNS.
fn sidecar_policy(spec: &Spec) -> Value {
    let mut to = vec![
        json!({ "ipBlock": { "cidr": "0.0.0.0/0", "except": CLUSTER_RANGES_V4 } }),
        json!({ "ipBlock": { "cidr": "::/0", "except": CLUSTER_RANGES_V6 } }),
    ];
    for ip in &spec.allowed_private {
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        to.push(json!({ "ipBlock": { "cidr": format!("{ip}/{bits}") } }));
    }
    let mut out = json!({ "to": to });
    if let Some(ports) = &spec.egress_ports {
        out["ports"] = json!(ports.iter().map(|port| json!({ "protocol": "TCP", "port": port })).collect::<Vec<_>>());
    }
    // An empty `ports` list would allow every port: no route, no way out but DNS.
    let out = (spec.egress_ports.as_ref().is_none_or(|ports| !ports.is_empty())).then_some(out);
    let dns = json!({
        "to": [{
            "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "kube-system" } },
            "podSelector": { "matchLabels": { "k8s-app": "kube-dns" } },
        }],
        "ports": [{ "protocol": "UDP", "port": 53 }, { "protocol": "TCP", "port": 53 }],
    });
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(spec, &format!("bb-{}-sidecar", spec.id), None),
        "spec": {
            "podSelector": { "matchLabels": { SANDBOX: spec.id, ROLE: ROLE_SIDECAR } },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{ "from": [pods_of(&spec.id, ROLE_AGENT)], "ports": sidecar_ports(spec) }],
            "egress": out.into_iter().chain([dns]).collect::<Vec<_>>(),
        },
    })
}

/// The namespace's backstop: every Pod isolated both ways unless a policy allows.
pub fn default_deny(namespace: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": { "name": DEFAULT_DENY, "namespace": namespace, "labels": { MANAGED_BY: MANAGER } },
        "spec": { "podSelector": {}, "policyTypes": ["Ingress", "Egress"] },
    })
}

/// Every object of the bottle `spec` describes.
pub fn render(spec: &Spec) -> Objects {
    let name = anchor_name(&spec.id);
    let pod_labels = labels(&spec.id, Some(ROLE_AGENT));
    let anchor_labels = labels(&spec.id, None);
    let (anchor, agent_pod) = match spec.mode {
        Mode::Native => {
            let anchor = json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": { "name": name, "namespace": spec.namespace, "labels": anchor_labels, "annotations": spec.annotations },
                "data": { "bottle": spec.id },
            });
            let mut metadata = metadata(spec, &agent_pod_name(&spec.id, Mode::Native), Some(ROLE_AGENT));
            metadata["annotations"] = json!(spec.annotations);
            let pod = json!({ "apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": agent_pod_spec(spec) });
            (anchor, Some(pod))
        }
        Mode::AgentSandbox => {
            let sandbox = json!({
                "apiVersion": SANDBOX_API_VERSION,
                "kind": "Sandbox",
                "metadata": { "name": name, "namespace": spec.namespace, "labels": anchor_labels, "annotations": spec.annotations },
                "spec": {
                    "podTemplate": {
                        "metadata": { "labels": pod_labels, "annotations": spec.annotations },
                        "spec": agent_pod_spec(spec),
                    },
                    "operatingMode": "Running",
                },
            });
            (sandbox, None)
        }
    };
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata(spec, &secret_name(&spec.id), None),
        "stringData": spec.secret_files,
    });
    Objects {
        default_deny: default_deny(&spec.namespace),
        anchor,
        secret,
        agent_policy: agent_policy(spec),
        sidecar_policy: sidecar_policy(spec),
        sidecar_pod: sidecar_pod(spec),
        agent_pod,
    }
}

/// The Sandbox as first created, before the sidecar Pod has its IP: the
/// controller makes no Pod while it is `Suspended`.
pub fn suspended(sandbox: &Value) -> Value {
    let mut sandbox = sandbox.clone();
    sandbox["spec"]["operatingMode"] = json!("Suspended");
    sandbox
}

/// The merge patch that points a suspended Sandbox's Pod at sidecar `ip` and runs it.
pub fn resume_patch(spec: &Spec, ip: &str) -> Value {
    let with_ip = Spec { sidecar_ip: Some(ip.to_string()), ..spec.clone() };
    json!({ "spec": { "operatingMode": "Running", "podTemplate": { "spec": { "hostAliases": agent_pod_spec(&with_ip)["hostAliases"] } } } })
}

/// The least-privilege Role the backend needs in `namespace` (and its
/// RoleBinding to `subject`, a user name): what `bottle k8s rbac` prints.
/// Exec and attach need both `get` and `create` (the WebSocket upgrade is
/// a `GET`; from Kubernetes 1.35 `create` is checked as well).
pub fn rbac(namespace: &str, subject: &str) -> Vec<Value> {
    let rule = |group: &str, resources: &[&str], verbs: &[&str]| json!({ "apiGroups": [group], "resources": resources, "verbs": verbs });
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": { "name": "bot-bottle", "namespace": namespace, "labels": { MANAGED_BY: MANAGER } },
        "rules": [
            rule("", &["pods"], &["create", "get", "list", "watch", "delete"]),
            rule("", &["pods/exec", "pods/attach"], &["get", "create"]),
            rule("", &["pods/log"], &["get"]),
            rule("", &["events"], &["list"]),
            rule("", &["configmaps", "secrets"], &["create", "get", "list", "delete"]),
            rule("networking.k8s.io", &["networkpolicies"], &["create", "get", "list", "delete"]),
            rule("agents.x-k8s.io", &["sandboxes"], &["create", "get", "list", "watch", "patch", "delete"]),
        ],
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": { "name": "bot-bottle", "namespace": namespace, "labels": { MANAGED_BY: MANAGER } },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "bot-bottle" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": subject }],
    });
    vec![role, binding]
}

/// [`rbac`] as YAML a cluster administrator applies, with a header.
pub fn rbac_yaml(namespace: &str, subject: &str) -> String {
    let docs: Vec<String> =
        rbac(namespace, subject).iter().map(|d| serde_yaml::to_string(d).unwrap_or_default()).collect();
    format!(
        "# The Role bot-bottle needs in namespace {namespace}, bound to user {subject}: Pods, exec/attach,\n\
         # logs, events, ConfigMaps, Secrets and NetworkPolicies of its bottles, and agent-sandbox Sandboxes\n\
         # (unused where agent-sandbox is not installed). API discovery needs no grant. Create the namespace\n\
         # first: kubectl create namespace {namespace}\n{}",
        docs.join("---\n")
    )
}
