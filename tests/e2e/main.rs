//! End-to-end tests of the `bottle` binary: its commands, arguments, exit
//! codes, messages and output, against the real Docker Engine (and the
//! fake `smolvm`). What a backend does for a bottle is the conformance
//! suite's (`crates/bottle-testkit`, run by each backend crate); these check
//! what the CLI adds. Each test works in its own state, config and working
//! directory, and asserts only on resources it created (found by their slug
//! labels).

mod harness;

mod build;
mod cli;
mod copy;
mod dashboard;
mod doctor;
mod egress;
mod exec;
mod gate;
mod identities;
mod install;
mod kubernetes;
mod lifecycle;
mod logs;
mod manifest;
mod pool;
mod providers;
mod sessions;
mod smolvm;
mod supervise;
mod terminal;
