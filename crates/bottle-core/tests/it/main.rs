//! bottle-core's integration tests: the registry and the dyn boundary, the
//! prepare pipeline, and the preflight summary.

mod fixtures;

mod prepare;
mod registry;
