//! The seam between the suite and a backend: [`Target`], which each backend
//! crate's test implements for its engine, and the [`Capability`]s a case
//! can need.

use std::path::{Path, PathBuf};

use bottle_core::{Registry, Sidecar, StateRoot};

use crate::World;

/// What a backend may do that not every backend does. A case that needs
/// one is skipped, with a printed reason, on a backend that lacks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// The engine caps how many processes a bottle runs (`resources.pids`).
    ProcessLimit,
    /// The engine caps a bottle's memory and kills what goes over it (`resources.memory`).
    MemoryLimit,
    /// The bottle's network holds nothing but a way to its own sidecars, on
    /// unix sockets the host can reach: no host service, no other bottle,
    /// no resolver.
    OwnNetwork,
    /// A command can run as another user than the agent (root, a user by
    /// name), as `GuestUser` asks: not in a Pod of the "restricted" profile.
    OtherUsers,
    /// A detached bottle's session is attached to by a host command
    /// (`docker exec -it …`, `smolvm machine exec …`: `Running::attach_argv`).
    HostAttach,
    /// An agent container or VM stopped behind the backend's back is
    /// started again (to save its state at `stop`).
    Revive,
    /// The supervise sidecar is wired (`supervise: true` gives the bottle its MCP server).
    Supervise,
    /// The case's helper processes (another launcher, another `stop`) reach
    /// the same engine as the case: not so for an engine faked inside the
    /// case's own process.
    SharedEngine,
}

/// A backend under test, as its crate's test binary drives it: how to make
/// its registry, what it can do, and how to look at its engine behind its
/// back (what of a bottle exists, killing its proxy, its sidecars' sockets).
///
/// Every method runs inside a case's own process (see [`run`](crate::run)),
/// whose environment [`prepare_world`](Target::prepare_world) made, except
/// `name`, `require`, `prepare_world` and `lacks`, which run in the test
/// binary's process before it.
pub trait Target: Send + Sync {
    /// The name the backend registers under.
    fn name(&self) -> &'static str;

    /// Fails (never skips), saying how to get it, when something the
    /// backend's tests need is missing (its engine, a fake of it).
    fn require(&self);

    /// Sets up what the backend needs in a new case's folder `dir` and
    /// returns the environment the case's process gets for it (on top of
    /// its private `HOME`, `XDG_STATE_HOME` and `BOT_BOTTLE_SIDECAR`).
    fn prepare_world(&self, dir: &Path) -> Vec<(String, String)>;

    /// A registry holding just this backend, whose bottles' state lives under `state`.
    fn registry(&self, state: &StateRoot) -> Registry;

    /// The capabilities this backend lacks, each with why.
    fn lacks(&self) -> Vec<(Capability, &'static str)>;

    /// Where a bottle's sidecars reach a server that a test runs on the host
    /// (listening on every address): by default the host's address on
    /// Docker's default bridge.
    fn host_address(&self) -> String {
        crate::fixtures::bridge::host_address()
    }

    /// Every resource of bottle `slug` on the engine and the host, one line
    /// each, in any order: empty when nothing of it is left.
    fn resources(&self, world: &World, slug: &str) -> Vec<String>;

    /// What [`resources`](Target::resources) lists for a running bottle
    /// with an egress proxy and no git gate, in any order.
    fn running_resources(&self, world: &World, slug: &str) -> Vec<String>;

    /// Kills the bottle's egress proxy, not through the backend.
    fn kill_proxy(&self, world: &World, slug: &str);

    /// Stops the bottle's agent container or VM, not through the backend
    /// (as a daemon restart or an out-of-memory kill would).
    fn kill_agent(&self, world: &World, slug: &str);

    /// The unix socket where `sidecar` of bottle `slug` listens, as the host sees it.
    fn sidecar_socket(&self, world: &World, slug: &str, sidecar: Sidecar) -> PathBuf;

    /// Makes bottle `slug`'s egress proxy answer on TCP `port` beside it (in
    /// its proxy's container on Docker, in its network namespace on smolvm),
    /// as a careless design would, checks that it answers there, and returns
    /// the addresses another bottle would use. What it starts ends with the
    /// case ([`World::keep`]).
    fn expose_egress(&self, world: &World, slug: &str, port: u16) -> Vec<String>;
}
