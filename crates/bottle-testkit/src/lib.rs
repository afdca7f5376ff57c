#![doc = include_str!("../README.md")]

mod case;
pub mod cases;
pub mod fixtures;
pub mod probe;
mod target;
mod world;

pub use case::{Case, CaseFuture, Helper, run};
pub use target::{Capability, Target};
pub use world::World;

/// One `#[test]` per case of the suite, run against `$target` (a
/// `&'static` value of a type implementing [`Target`]). Invoke it once in a
/// backend crate's integration test:
///
/// ```text
/// bottle_testkit::suite!(Docker);
/// ```
#[macro_export]
macro_rules! suite {
    ($target:expr) => {
        $crate::suite!(@each $target;
            lifecycle,
            exec,
            copy_in_and_out,
            resume,
            a_detached_agent_runs_in_its_session,
            stop_saves_the_state_of_a_stopped_agent,
            two_stops_at_once_take_turns,
            audit_logs_outlive_the_bottle,
            teardown,
            pool,
            cleanup_after_a_killed_launch,
            egress,
            gate,
            supervise,
            secrets,
            saved_state_is_bounded_and_clean,
            memory_over_the_limit_is_killed,
            processes_over_the_limit_are_refused,
            no_address_outside_answers,
            no_name_leaves,
            sidecars_serve_only_the_token,
        );
    };
    (@each $target:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::run(&$target, &$crate::cases::$case(), module_path!());
            }
        )*
    };
}

/// One `#[test]`, `$name`, running the async function `$body` (of a
/// [`&World`](World)) against `$target` the way the suite's cases run: for
/// a backend's own tests beside the suite. `env` sets extra variables of the
/// case's process.
#[macro_export]
macro_rules! test {
    ($name:ident, $target:expr, $body:path $(, env = $env:expr)?) => {
        #[test]
        fn $name() {
            fn body(world: &$crate::World) -> $crate::CaseFuture<'_> {
                Box::pin($body(world))
            }
            #[allow(unused_mut)]
            let mut case = $crate::Case::new(stringify!($name), body);
            $(case.env = $env;)?
            $crate::run(&$target, &case, module_path!());
        }
    };
}
