//! bottle-k8s's integration tests: the rendered objects against golden
//! files and the Pod Security and NetworkPolicy rules (`render.rs`), and
//! the backend against a recording fake API server behind kube-rs's mock
//! service (`fake.rs`, `backend.rs`).

mod backend;
mod fake;
mod render;
