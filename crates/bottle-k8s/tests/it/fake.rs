//! A recording fake API server behind kube-rs's mock service
//! (`tower_test::mock::pair`): it keeps the objects the backend creates,
//! answers get, list (label and field selectors), watch, create, merge
//! patch and delete (with the garbage collector's cascade through
//! ownerReferences) in the shapes the contract describes, plays the
//! kubelet (a Pod becomes Running and Ready with an IP) and the
//! agent-sandbox controller (a resumed Sandbox gets its Pod and its
//! `Ready` condition), and records every request. [`Faults`] make it
//! refuse a create (403), fail an image pull, never make a Pod ready, or
//! drop watches.
//!
//! pods/exec cannot go through the mock (kube takes the upgraded
//! connection from hyper), so [`Fake::start_with_exec`] routes exec
//! requests to a real hyper HTTP/1 connection over an in-memory pipe whose
//! server answers `101` with `v5.channel.k8s.io` and speaks the channel
//! protocol: stdin frames on channel 0 until the `[255, 0]` close, then
//! stdout on 1, stderr on 2 and the exit status on 3, as a [`Runner`]
//! says. [`Fake::start_in_docker`] runs the Pods as Docker containers
//! (`kubelet.rs`) and its exec is `docker exec` in them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

use crate::kubelet::DockerKubelet;

/// What the fake does wrong.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    /// Whether agent-sandbox is installed (discovery finds `Sandbox`).
    pub(crate) agent_sandbox: bool,
    /// Refuse `list` of this resource (plural) with 403 Forbidden.
    pub(crate) forbid_list: Option<&'static str>,
    /// Refuse `create` of this resource (plural) with 403 Forbidden.
    pub(crate) forbid_create: Option<&'static str>,
    /// The agent Pod's image cannot be pulled.
    pub(crate) image_pull: bool,
    /// Pods never become ready (a scheduling event says why).
    pub(crate) never_ready: bool,
    /// This many watches end at once, empty (a Pod is ready only after them).
    pub(crate) dropped_watches: usize,
}

/// The fake's state: the objects by path, the requests seen.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Objects by collection path (`/api/v1/namespaces/ns/pods`) and name.
    pub(crate) objects: BTreeMap<(String, String), Value>,
    /// Every request, as `METHOD PATH?QUERY`.
    pub(crate) requests: Vec<String>,
    /// Events (core/v1) the fake's kubelet wrote.
    pub(crate) events: Vec<Value>,
    faults: Faults,
    serial: u64,
    /// The kubelet running Pods as Docker containers, if any (else Pods only look ready).
    docker: Option<Arc<DockerKubelet>>,
}

/// Where an exec runs: the namespace, the Pod and its container.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExecIn {
    pub(crate) namespace: String,
    pub(crate) pod: String,
    pub(crate) container: String,
}

/// What an exec in the fake's Pods does: `(where, argv, stdin)` → `(stdout, stderr, exit code)`.
pub(crate) type Runner = Arc<dyn Fn(&ExecIn, &[String], &[u8]) -> (Vec<u8>, Vec<u8>, i32) + Send + Sync>;

/// A handle on the fake server.
#[derive(Debug, Clone)]
pub(crate) struct Fake(pub(crate) Arc<Mutex<State>>);

impl Fake {
    /// A client whose requests this fake serves, and the fake.
    pub(crate) fn start(faults: Faults) -> (Client, Fake) {
        let (service, fake) = Fake::serving(faults, None);
        (Client::new(service, "default"), fake)
    }

    /// The mock service whose requests a new fake with `faults` serves, and the fake.
    fn serving(
        faults: Faults,
        docker: Option<Arc<DockerKubelet>>,
    ) -> (tower_test::mock::Mock<Request<Body>, Response<Body>>, Fake) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = Fake(Arc::new(Mutex::new(State { faults, docker, ..State::default() })));
        let server = fake.clone();
        tokio::spawn(async move {
            let mut handle = std::pin::pin!(handle);
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let body = body.collect_bytes().await.unwrap_or_default();
                send.send_response(server.serve(&parts.method, &parts.uri, &body));
            }
        });
        (service, fake)
    }

    /// Like [`Fake::start`], with exec requests served over a WebSocket by `runner`.
    pub(crate) fn start_with_exec(faults: Faults, runner: Runner) -> (Client, Fake) {
        Fake::routed(faults, runner, None)
    }

    /// Like [`Fake::start_with_exec`], with each Pod run as Docker containers
    /// by `kubelet` and exec a `docker exec` in them.
    pub(crate) fn start_in_docker(faults: Faults, kubelet: Arc<DockerKubelet>) -> (Client, Fake) {
        let execs = Arc::clone(&kubelet);
        let runner: Runner = Arc::new(move |at: &ExecIn, argv: &[String], stdin: &[u8]| {
            execs.exec(&at.namespace, &at.pod, &at.container, argv, stdin)
        });
        Fake::routed(faults, runner, Some(kubelet))
    }

    /// The client of a fake whose exec requests `runner` serves.
    fn routed(faults: Faults, runner: Runner, docker: Option<Arc<DockerKubelet>>) -> (Client, Fake) {
        use tower::ServiceExt as _;
        let (service, fake) = Fake::serving(faults, docker);
        let recorder = fake.clone();
        let routed = tower::service_fn(move |request: Request<Body>| {
            let (mock, runner, recorder) = (service.clone(), Arc::clone(&runner), recorder.clone());
            async move {
                type Either = http_body_util::Either<Body, hyper::body::Incoming>;
                let path = request.uri().path().to_string();
                if path.ends_with("/exec") || path.ends_with("/attach") {
                    recorder.0.lock().expect("lock").requests.push(format!("GET {}", request.uri()));
                    let response = crate::fake::exec_over_websocket(request, runner).await?;
                    Ok::<_, tower::BoxError>(response.map(Either::Right))
                } else {
                    Ok(mock.oneshot(request).await?.map(Either::Left))
                }
            }
        });
        (Client::new(routed, "default"), fake)
    }

    /// The requests so far.
    pub(crate) fn requests(&self) -> Vec<String> {
        self.0.lock().expect("lock").requests.clone()
    }

    /// The objects whose labels name bottle `slug`, as `PLURAL/NAME`.
    pub(crate) fn objects_of(&self, slug: &str) -> Vec<String> {
        let state = self.0.lock().expect("lock");
        state
            .objects
            .iter()
            .filter(|(_, o)| o["metadata"]["labels"]["bot-bottle.dev/sandbox"] == slug)
            .map(|((collection, name), _)| format!("{}/{name}", collection.rsplit('/').next().unwrap_or_default()))
            .collect()
    }

    /// Object `name` of `collection` (`pods`, `configmaps`, …) in `ns`.
    pub(crate) fn object(&self, ns: &str, plural: &str, name: &str) -> Option<Value> {
        let state = self.0.lock().expect("lock");
        state
            .objects
            .iter()
            .find(|((c, n), _)| c.ends_with(&format!("/namespaces/{ns}/{plural}")) && n == name)
            .map(|(_, o)| o.clone())
    }

    /// Puts `object` at `collection` as a leftover of an earlier run.
    pub(crate) fn insert(&self, collection: &str, object: Value) {
        let mut state = self.0.lock().expect("lock");
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        state.objects.insert((collection.to_string(), name), object);
    }

    fn serve(&self, method: &http::Method, uri: &http::Uri, body: &[u8]) -> Response<Body> {
        let mut state = self.0.lock().expect("lock");
        let query = uri.query().unwrap_or_default().to_string();
        state.requests.push(format!(
            "{method} {}{}",
            uri.path(),
            if query.is_empty() { String::new() } else { format!("?{query}") }
        ));
        state.answer(method.as_str(), uri.path(), &query, body)
    }
}

fn respond(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response")
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    respond(
        code,
        &json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                 "message": message, "reason": reason, "code": code }),
    )
}

/// The query parameter `key`, decoded.
fn param(query: &str, key: &str) -> Option<String> {
    query.split('&').filter_map(|pair| pair.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| {
        let v = v.replace('+', " ");
        let mut out = Vec::new();
        let bytes = v.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && i + 2 < bytes.len()
                && let Ok(b) = u8::from_str_radix(&v[i + 1..i + 3], 16)
            {
                out.push(b);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    })
}

/// Whether `object` matches label selector `selector` (`k=v` and `k` terms).
fn selects(selector: &str, object: &Value) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| match term.split_once('=') {
        Some((k, v)) => object["metadata"]["labels"][k] == v,
        None => !object["metadata"]["labels"][term].is_null(),
    })
}

/// RFC 7386 merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (key, value) in fields {
                if value.is_null() {
                    target.as_object_mut().expect("object").remove(key);
                } else {
                    merge(&mut target[key], value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl State {
    fn next(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    fn answer(&mut self, method: &str, path: &str, query: &str, body: &[u8]) -> Response<Body> {
        if path == "/apis/agents.x-k8s.io/v1beta1" {
            if !self.faults.agent_sandbox {
                return Response::builder()
                    .status(404)
                    .body(Body::from("404 page not found\n".as_bytes().to_vec()))
                    .expect("response");
            }
            return respond(
                200,
                &json!({
                    "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "agents.x-k8s.io/v1beta1",
                    "resources": [
                        { "name": "sandboxes", "singularName": "sandbox", "namespaced": true, "kind": "Sandbox",
                          "verbs": ["delete","deletecollection","get","list","patch","create","update","watch"], "shortNames": ["sandbox"] },
                        { "name": "sandboxes/status", "singularName": "", "namespaced": true, "kind": "Sandbox", "verbs": ["get","patch","update"] },
                    ],
                }),
            );
        }
        if path == "/version" {
            return respond(
                200,
                &json!({ "major": "1", "minor": "33", "gitVersion": "v1.33.0", "gitCommit": "", "gitTreeState": "",
                "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64" }),
            );
        }
        // /api/v1/namespaces/NS/PLURAL[/NAME] or /apis/G/V/namespaces/NS/PLURAL[/NAME]
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let Some(at) = segments.iter().position(|s| *s == "namespaces") else {
            return status(404, "NotFound", &format!("the fake serves no {path}"));
        };
        let (Some(ns), Some(plural)) = (segments.get(at + 1), segments.get(at + 2)) else {
            return status(404, "NotFound", "no such path");
        };
        let collection = format!("/{}", segments[..at + 3].join("/"));
        let name = segments.get(at + 3).map(|s| s.to_string());
        if let (Some(name), Some(&"log")) = (&name, segments.get(at + 4)) {
            return self.log(ns, name, query);
        }
        match (method, name) {
            ("POST", None) => self.create(&collection, ns, plural, body),
            ("GET", None) if param(query, "watch").as_deref() == Some("true") => self.watch(&collection, query),
            ("GET", None) if self.faults.forbid_list == Some(plural) => status(
                403,
                "Forbidden",
                &format!(
                    "{plural} is forbidden: User \"alice\" cannot list resource \"{plural}\" in the namespace \"{ns}\""
                ),
            ),
            ("GET", None) => self.list(&collection, plural, query),
            ("GET", Some(name)) => match self.objects.get(&(collection.clone(), name.clone())) {
                Some(object) => {
                    let object = object.clone();
                    respond(200, &object)
                }
                None => status(404, "NotFound", &format!("{plural} \"{name}\" not found")),
            },
            ("DELETE", Some(name)) => match self.objects.remove(&(collection.clone(), name.clone())) {
                Some(object) => {
                    self.forget(&(collection.clone(), name.clone()), &object);
                    self.collect_garbage(&object);
                    respond(200, &object)
                }
                None => status(404, "NotFound", &format!("{plural} \"{name}\" not found")),
            },
            ("PATCH", Some(name)) => self.patch(&collection, ns, &name, body),
            _ => status(405, "MethodNotAllowed", "the fake does not do that"),
        }
    }

    fn create(&mut self, collection: &str, ns: &str, plural: &str, body: &[u8]) -> Response<Body> {
        if self.faults.forbid_create == Some(plural) {
            let group = if plural == "sandboxes" { "agents.x-k8s.io" } else { "" };
            return status(
                403,
                "Forbidden",
                &format!(
                    "{plural} is forbidden: User \"alice\" cannot create resource \"{plural}\" in API group \"{group}\" in the namespace \"{ns}\""
                ),
            );
        }
        let mut object: Value = match serde_json::from_slice(body) {
            Ok(object) => object,
            Err(e) => return status(400, "BadRequest", &format!("not JSON: {e}")),
        };
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        if self.objects.contains_key(&(collection.to_string(), name.clone())) {
            return status(409, "AlreadyExists", &format!("{plural} \"{name}\" already exists"));
        }
        let serial = self.next();
        object["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{serial:012}"));
        object["metadata"]["resourceVersion"] = json!(serial.to_string());
        object["metadata"]["generation"] = json!(1);
        if plural == "pods" {
            self.kubelet(ns, &mut object);
        }
        self.objects.insert((collection.to_string(), name), object.clone());
        respond(201, &object)
    }

    /// The kubelet's answer to a new Pod: Running and Ready with an IP, or what the faults say.
    fn kubelet(&mut self, ns: &str, pod: &mut Value) {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let agent = pod["metadata"]["labels"]["bot-bottle.dev/role"] == "agent";
        let image = pod["spec"]["containers"][0]["image"].clone();
        if self.faults.image_pull && agent {
            pod["status"] = json!({ "phase": "Pending", "containerStatuses": [{
                "name": "agent", "image": image, "imageID": "", "ready": false, "restartCount": 0,
                "state": { "waiting": { "reason": "ErrImagePull",
                    "message": format!("failed to pull and unpack image \"{}\": 401 Unauthorized", image.as_str().unwrap_or_default()) } } }] });
            return;
        }
        if self.faults.never_ready || self.faults.dropped_watches > 0 {
            pod["status"] = json!({ "phase": "Pending" });
            if self.faults.never_ready {
                self.events.push(json!({ "metadata": { "name": format!("{name}.1"), "namespace": ns },
                    "involvedObject": { "kind": "Pod", "name": name, "namespace": ns },
                    "reason": "FailedScheduling", "message": "0/3 nodes are available: 3 Insufficient memory.",
                    "lastTimestamp": "2026-08-01T00:00:00Z", "type": "Warning" }));
            }
            return;
        }
        ready(pod, self.serial);
        if let Some(docker) = self.docker.clone() {
            let secrets: BTreeMap<String, Value> = self
                .objects
                .iter()
                .filter(|((c, _), _)| *c == format!("/api/v1/namespaces/{ns}/secrets"))
                .map(|((_, n), o)| (n.clone(), o.clone()))
                .collect();
            match docker.run(ns, pod, &secrets) {
                Ok(ip) => pod["status"]["podIP"] = json!(ip),
                Err(why) => {
                    docker.remove(ns, pod);
                    self.events.push(json!({ "metadata": { "name": format!("{name}.failed"), "namespace": ns },
                        "involvedObject": { "kind": "Pod", "name": name, "namespace": ns },
                        "reason": "Failed", "message": why,
                        "lastTimestamp": "2026-08-01T00:00:00Z", "type": "Warning" }));
                    let reason = if why.contains("No such image") { "ErrImagePull" } else { "CreateContainerError" };
                    pod["status"] = json!({ "phase": "Pending", "containerStatuses": [{
                        "name": pod["spec"]["containers"][0]["name"], "image": image, "imageID": "", "ready": false,
                        "restartCount": 0, "state": { "waiting": { "reason": reason, "message": why } } }] });
                }
            }
        }
    }

    /// pods/log: the container's output so far (`follow` ends there too, as
    /// for a container that has finished), from Docker; no such Pod is a 404.
    fn log(&self, ns: &str, pod: &str, query: &str) -> Response<Body> {
        let key = (format!("/api/v1/namespaces/{ns}/pods"), pod.to_string());
        let (Some(docker), Some(object)) = (&self.docker, self.objects.get(&key)) else {
            return status(404, "NotFound", &format!("pods \"{pod}\" not found"));
        };
        let first = object["spec"]["containers"][0]["name"].as_str().unwrap_or_default().to_string();
        let container = param(query, "container").unwrap_or(first);
        match docker.logs(ns, pod, &container) {
            Ok(text) => Response::builder().status(200).body(Body::from(text)).expect("response"),
            Err(why) => status(400, "BadRequest", &why),
        }
    }

    /// Object `key` is gone from the store: a Pod's containers go too.
    fn forget(&self, key: &(String, String), object: &Value) {
        if let (Some(docker), Some(ns)) = (&self.docker, key.0.strip_suffix("/pods")) {
            docker.remove(ns.rsplit('/').next().unwrap_or_default(), object);
        }
    }

    fn watch(&mut self, collection: &str, query: &str) -> Response<Body> {
        let name = param(query, "fieldSelector").and_then(|f| f.strip_prefix("metadata.name=").map(str::to_string));
        if self.faults.dropped_watches > 0 {
            self.faults.dropped_watches -= 1;
            if self.faults.dropped_watches == 0 {
                // The kubelet catches up once the last watch has dropped.
                let serial = self.next();
                for ((c, n), object) in self.objects.iter_mut() {
                    if c == collection && Some(n) == name.as_ref() {
                        ready(object, serial);
                    }
                }
            }
            return Response::builder().status(200).body(Body::from(Vec::new())).expect("response");
        }
        let mut lines = Vec::new();
        for ((c, n), object) in &self.objects {
            if c == collection && Some(n) == name.as_ref() {
                lines.extend(serde_json::to_vec(&json!({ "type": "MODIFIED", "object": object })).expect("json"));
                lines.push(b'\n');
            }
        }
        Response::builder().status(200).body(Body::from(lines)).expect("response")
    }

    fn list(&self, collection: &str, plural: &str, query: &str) -> Response<Body> {
        let selector = param(query, "labelSelector").unwrap_or_default();
        let items: Vec<Value> = if plural == "events" {
            let field = param(query, "fieldSelector").unwrap_or_default();
            let name = field.strip_prefix("involvedObject.name=").unwrap_or_default();
            self.events.iter().filter(|e| e["involvedObject"]["name"] == name).cloned().collect()
        } else {
            self.objects
                .iter()
                .filter(|((c, _), o)| c == collection && selects(&selector, o))
                .map(|(_, o)| o.clone())
                .collect()
        };
        respond(
            200,
            &json!({ "kind": "List", "apiVersion": "v1", "metadata": { "resourceVersion": self.serial.to_string() }, "items": items }),
        )
    }

    fn patch(&mut self, collection: &str, ns: &str, name: &str, body: &[u8]) -> Response<Body> {
        let Ok(patch) = serde_json::from_slice::<Value>(body) else { return status(400, "BadRequest", "not JSON") };
        let serial = self.next();
        let Some(object) = self.objects.get_mut(&(collection.to_string(), name.to_string())) else {
            return status(404, "NotFound", &format!("\"{name}\" not found"));
        };
        merge(object, &patch);
        object["metadata"]["resourceVersion"] = json!(serial.to_string());
        let generation = object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        object["metadata"]["generation"] = json!(generation);
        let object = object.clone();
        if object["kind"] == "Sandbox" && object["spec"]["operatingMode"] == "Running" {
            self.sandbox_controller(collection, ns, name, generation);
        }
        let object = self.objects[&(collection.to_string(), name.to_string())].clone();
        respond(200, &object)
    }

    /// agent-sandbox's controller: the running Sandbox's Pod, named after it, and its Ready condition.
    fn sandbox_controller(&mut self, collection: &str, ns: &str, name: &str, generation: i64) {
        let sandbox = self.objects[&(collection.to_string(), name.to_string())].clone();
        let template = &sandbox["spec"]["podTemplate"];
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "namespace": ns, "labels": template["metadata"]["labels"],
                "annotations": template["metadata"]["annotations"],
                "ownerReferences": [{ "apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox", "name": name,
                    "uid": sandbox["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true }] },
            "spec": template["spec"],
        });
        self.kubelet(ns, &mut pod);
        let is_ready = pod["status"]["phase"] == "Running";
        self.objects.insert((format!("/api/v1/namespaces/{ns}/pods"), name.to_string()), pod);
        let condition = if is_ready {
            json!({ "type": "Ready", "status": "True", "reason": "DependenciesReady", "message": "Pod is Ready",
                    "observedGeneration": generation, "lastTransitionTime": "2026-08-01T00:00:00Z" })
        } else {
            json!({ "type": "Ready", "status": "False", "reason": "DependenciesNotReady", "message": "Pod exists with phase: Pending",
                    "observedGeneration": generation, "lastTransitionTime": "2026-08-01T00:00:00Z" })
        };
        let sandbox = self.objects.get_mut(&(collection.to_string(), name.to_string())).expect("the sandbox");
        sandbox["status"] = json!({ "conditions": [condition], "podIPs": ["10.244.0.99"], "nodeName": "node-1" });
        sandbox["metadata"]["annotations"]["agents.x-k8s.io/pod-name"] = json!(name);
    }

    /// The garbage collector: every object owned by `owner`, and theirs, goes.
    fn collect_garbage(&mut self, owner: &Value) {
        let uid = owner["metadata"]["uid"].clone();
        let owned: Vec<(String, String)> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"].as_array().is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in owned {
            if let Some(object) = self.objects.remove(&key) {
                self.forget(&key, &object);
                self.collect_garbage(&object);
            }
        }
    }
}

/// `pod` Running and Ready, with an IP.
fn ready(pod: &mut Value, serial: u64) {
    let containers: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({ "name": c["name"], "image": c["image"], "imageID": "", "ready": true, "restartCount": 0,
                          "state": { "running": { "startedAt": "2026-08-01T00:00:00Z" } } })
        })
        .collect();
    pod["status"] = json!({
        "phase": "Running",
        "podIP": format!("10.244.0.{}", serial % 250 + 2),
        "conditions": [{ "type": "Ready", "status": "True" }],
        "containerStatuses": containers,
    });
}

/// Serves exec `request` on an in-memory HTTP/1 connection: the server
/// upgrades it and runs the channel protocol with `runner`.
pub(crate) async fn exec_over_websocket(
    request: Request<Body>,
    runner: Runner,
) -> Result<Response<hyper::body::Incoming>, tower::BoxError> {
    use hyper_util::rt::TokioIo;
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        let runner = Arc::clone(&runner);
        async move {
            let key = request.headers().get("sec-websocket-key").cloned().unwrap_or(http::HeaderValue::from_static(""));
            let query = request.uri().query().unwrap_or_default().to_string();
            let argv: Vec<String> = query
                .split('&')
                .filter(|pair| pair.starts_with("command="))
                .filter_map(|pair| param(pair, "command"))
                .collect();
            let stdin = param(&query, "stdin").as_deref() == Some("true");
            let segments: Vec<&str> = request.uri().path().split('/').collect();
            let at = ExecIn {
                namespace: segments
                    .iter()
                    .position(|s| *s == "namespaces")
                    .and_then(|i| segments.get(i + 1))
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                pod: segments
                    .iter()
                    .position(|s| *s == "pods")
                    .and_then(|i| segments.get(i + 1))
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                container: param(&query, "container").unwrap_or_default(),
            };
            let upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                channels(ws, &at, &argv, stdin, runner).await;
            });
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            Response::builder()
                .status(101)
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", accept)
                .header("sec-websocket-protocol", "v5.channel.k8s.io")
                .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        }
    });
    tokio::spawn(
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(server_io), service).with_upgrades(),
    );
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client_io)).await?;
    tokio::spawn(connection.with_upgrades());
    Ok(sender.send_request(request).await?)
}

/// The channel protocol of one exec: stdin until `[255, 0]` (when asked
/// for), then stdout, stderr and the status frame.
async fn channels<S>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
    at: &ExecIn,
    argv: &[String],
    stdin: bool,
    runner: Runner,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let mut input = Vec::new();
    if stdin {
        while let Some(Ok(message)) = ws.next().await {
            let Message::Binary(frame) = message else { continue };
            match frame.first() {
                Some(0) => input.extend_from_slice(&frame[1..]),
                Some(255) if frame.get(1) == Some(&0) => break,
                _ => {}
            }
        }
    }
    // The runner blocks (a command runs): off the runtime's threads.
    let (stdout, stderr, code) = tokio::task::block_in_place(|| runner(at, argv, &input));
    let frame = |channel: u8, bytes: &[u8]| {
        let mut data = vec![channel];
        data.extend_from_slice(bytes);
        Message::Binary(data.into())
    };
    for chunk in stdout.chunks(8192) {
        let _ = ws.send(frame(1, chunk)).await;
    }
    for chunk in stderr.chunks(8192) {
        let _ = ws.send(frame(2, chunk)).await;
    }
    let status = if code == 0 {
        json!({ "metadata": {}, "status": "Success" })
    } else {
        json!({ "metadata": {}, "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": { "causes": [{ "reason": "ExitCode", "message": code.to_string() }] } })
    };
    let _ = ws.send(frame(3, status.to_string().as_bytes())).await;
    let _ = ws.close(None).await;
}
