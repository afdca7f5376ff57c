//! bottle-k8s's integration tests: the rendered objects against golden
//! files and the Pod Security and NetworkPolicy rules (`render.rs`), and
//! the backend against a recording fake API server behind kube-rs's mock
//! service (`fake.rs`, `backend.rs`), exec and copies over its pods/exec
//! WebSocket (`exec.rs`); the conformance suite (`suite.rs`) with the
//! fake's kubelet running Pods as Docker containers (`kubelet.rs`); and,
//! when `BOT_BOTTLE_TEST_KUBECONFIG` names one, a real cluster
//! (`cluster.rs`); `bottle image push` with the real Docker Engine
//! (`image.rs`).

mod backend;
mod cluster;
mod exec;
mod fake;
mod image;
mod kubelet;
mod render;
mod suite;
