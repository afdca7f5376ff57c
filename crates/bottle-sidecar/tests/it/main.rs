//! bottle-sidecar integration tests: the egress proxy against a real local
//! HTTPS upstream and real curl; the git gate against real git and sshd.

mod egress;
mod gitgate;
