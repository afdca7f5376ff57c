//! The suite's cases, one module per behaviour. Each function here makes
//! the [`Case`] that [`suite!`](crate::suite) runs as the `#[test]` of the
//! same name.

mod cleanup;
mod copy;
mod egress;
mod exec;
mod gate;
mod lifecycle;
mod limits;
mod pool;
mod resume;
mod seal;
mod secrets;
mod sessions;
mod supervise;
mod teardown;

use crate::{Capability, Case, CaseFuture, World};

macro_rules! cases {
    ($($(#[$doc:meta])* $name:ident = $module:ident :: $body:ident $({ $($field:ident: $value:expr),* })?;)*) => {
        $(
            $(#[$doc])*
            pub fn $name() -> Case {
                fn body(world: &World) -> CaseFuture<'_> {
                    Box::pin($module::$body(world))
                }
                Case { $($($field: $value,)*)? ..Case::new(stringify!($name), body) }
            }
        )*
    };
}

cases! {
    /// prepare → launch → exec as the agent and as root → listed while it
    /// runs → teardown leaves nothing; a session dropped before launch
    /// leaves nothing either.
    lifecycle = lifecycle::lifecycle;
    /// Exit codes, stdout and stderr, other users, large output, the guest's environment.
    exec = exec::exec;
    /// A tree in with its times; a tree out; a missing path; a tree over the limit; links stay in.
    copy_in_and_out = copy::copy_in_and_out;
    /// State saved at teardown (`session::stop`) comes back under the same identity.
    resume = resume::resume;
    /// A detached bottle runs its agent, with its arguments, in a session that outlives the launch.
    a_detached_agent_runs_in_its_session = sessions::a_detached_agent_runs_in_its_session;
    /// `stop` of a bottle whose agent container or VM was stopped behind the
    /// backend's back starts it again to save its state.
    stop_saves_the_state_of_a_stopped_agent = sessions::stop_saves_the_state_of_a_stopped_agent {
        needs: &[Capability::Revive]
    };
    /// Two stops of one bottle at once take turns; both succeed, nothing is left.
    two_stops_at_once_take_turns = sessions::two_stops_at_once_take_turns { needs: &[Capability::SharedEngine] };
    /// The sidecars' audit logs are in the state folder after the bottle is gone.
    audit_logs_outlive_the_bottle = sessions::audit_logs_outlive_the_bottle;
    /// Warm pools: members of their own (CA, token), a claim with the
    /// workspace, stale members never handed out, drain leaves nothing.
    pool = pool::pool;
    /// Teardown of a bottle with every sidecar leaves nothing, and removing
    /// again is harmless; a cancelled launch leaves nothing.
    teardown = teardown::teardown;
    /// A launcher killed with SIGKILL leaves resources that `prepare_cleanup`
    /// names and `cleanup` removes; a live detached bottle is spared.
    cleanup_after_a_killed_launch = cleanup::cleanup_after_a_killed_launch { needs: &[Capability::SharedEngine] };
    /// An allowed HTTPS upstream through the proxy with its credential
    /// injected; everything else denied (403) or unreachable; the audit log;
    /// without its proxy the bottle has no way out.
    egress = egress::egress;
    /// Clone and an allowed push through the git gate to a real sshd
    /// upstream; refused pushes; the key stays out; the audit log.
    gate = gate::gate;
    /// A secret is masked in the summary and nowhere in the bottle.
    secrets = secrets::secrets;
    /// Saved state is bounded (a 2 GiB sparse file is left behind, without
    /// teardown holding it in memory) and clean (no setuid bit, no link).
    saved_state_is_bounded_and_clean = limits::saved_state_is_bounded_and_clean {
        needs: &[Capability::SharedEngine]
    };
    /// A process over the bottle's memory limit is killed; the bottle and its proxy stay up.
    memory_over_the_limit_is_killed = limits::memory_over_the_limit_is_killed { needs: &[Capability::MemoryLimit] };
    /// Processes over the bottle's process limit are refused.
    processes_over_the_limit_are_refused = limits::processes_over_the_limit_are_refused {
        needs: &[Capability::ProcessLimit]
    };
    /// No address of the host, no gateway and no other bottle's proxy answers from inside.
    no_address_outside_answers = seal::no_address_outside_answers {
        host_network: true, needs: &[Capability::OwnNetwork]
    };
    /// No name looked up inside reaches a resolver of the host's.
    no_name_leaves = seal::no_name_leaves { host_network: true, needs: &[Capability::OwnNetwork] };
    /// An MCP client in the bottle lists the supervise tools; a request_egress
    /// waits in the operator's queue, and once approved the same request passes
    /// the running proxy; no token, no service; teardown leaves no server.
    supervise = supervise::supervise { needs: &[Capability::Supervise] };
    /// A client without the bottle's token gets 407/401 from its sidecars, inside and from the host.
    sidecars_serve_only_the_token = seal::sidecars_serve_only_the_token { needs: &[Capability::OwnNetwork] };
}
