//! bottle-k8s's integration tests: the rendered objects against golden
//! files and the Pod Security and NetworkPolicy rules (`render.rs`).

mod render;
