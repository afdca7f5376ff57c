//! End-to-end tests of the `bottle` binary against the real Docker Engine.
//! Each test works in its own state, config and working directory, and
//! asserts only on resources it created (found by their slug labels).

mod bridge;
mod conformance;
mod harness;
mod upstream;

mod cleanup;
mod cli;
mod egress;
mod gate;
mod install;
mod lifecycle;
mod limits;
mod manifest;
mod seal;
mod smolvm;
