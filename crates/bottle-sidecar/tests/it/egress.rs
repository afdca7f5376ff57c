//! Egress proxy tests.
