//! Warm pools: an agent whose manifest entry says `pool: { size: N }` can
//! have N bottles made ahead of time (`bottle pool fill`), each a whole
//! bottle of its own — sidecars up, its own CA and client token minted,
//! provisioned up to the workspace, no agent session yet — that `bottle
//! start` claims instead of making one ([`claim`]): the workspace copied
//! in, the operator's label and colour recorded, the session started.
//!
//! A member is an ordinary bottle with a state folder, whose metadata says
//! it is a member ([`PoolMembership`]) and whose resources carry the pool
//! key ([`labels::POOL`](crate::labels::POOL)). The key is a hash of
//! everything its plan depends on ([`key`]): the agent's and its bottle's
//! manifest entries, the values of the host variables they read, the
//! provider's routes and credentials, the prompt, the skills, the image
//! recipe and the sidecar program (by size, modification time and inode),
//! the limits and the backend. It is salted with a random value kept in the
//! operator's state folder, so that the label shows nothing of a secret. A
//! member whose key is not the current one is stale: never handed out, and
//! removed by `fill` and `drain`.
//!
//! A waiting member has the file [`WAITING_FILE`] in its state folder;
//! whoever removes it has claimed it (one remover wins). Members are marked
//! detached inside the bottle, so `cleanup` treats them, claimed or not, as
//! it treats detached bottles; one whose fill was killed before it was
//! ready is an orphan like any other.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::backend::DynBackend;
use crate::manifest::Manifest;
use crate::owner::{Liveness, Owner};
use crate::prepare::{BottleSpec, Host};
use crate::provider::Providers;
use crate::session::{Running, Session};
use crate::state::{BottleMetadata, StateRoot};
use crate::{Error, ErrorKind, Result};

pub use crate::state::PoolMembership;

/// The file in a waiting member's state folder; removing it claims the member.
pub const WAITING_FILE: &str = "pool-waiting";

/// The folder under the state root holding the pools' salt, and per agent
/// the fill's lock and who holds it.
const POOL_DIR: &str = ".pool";

/// The salt file in [`POOL_DIR`].
const SALT_FILE: &str = "salt";

/// Mark member `slug` as waiting to be claimed (the last step of its launch).
pub(crate) fn mark_waiting(state: &StateRoot, slug: &str) -> Result<()> {
    let path = state.bottle_dir(slug).join(WAITING_FILE);
    std::fs::write(&path, b"").map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Whether bottle `slug` waits in a pool (a member not claimed yet).
pub fn is_waiting(state: &StateRoot, slug: &str) -> bool {
    state.bottle_dir(slug).join(WAITING_FILE).is_file()
}

/// Claim member `slug`: `true` when this call took it from the pool.
fn take(state: &StateRoot, slug: &str) -> bool {
    std::fs::remove_file(state.bottle_dir(slug).join(WAITING_FILE)).is_ok()
}

/// The pools' folder, made the operator's alone.
fn pool_dir(state: &StateRoot) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    let dir = state.dir().join(POOL_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    Ok(dir)
}

/// The salt of every pool key on this host (32 random bytes, made on first use).
fn salt(state: &StateRoot) -> Result<Vec<u8>> {
    let path = pool_dir(state)?.join(SALT_FILE);
    if let Ok(salt) = std::fs::read(&path)
        && salt.len() == 32
    {
        return Ok(salt);
    }
    let mut salt = vec![0u8; 32];
    getrandom::fill(&mut salt).map_err(|e| Error::new(ErrorKind::Io, format!("no randomness for a pool salt: {e}")))?;
    let tmp = tempfile::NamedTempFile::new_in(path.parent().unwrap_or(state.dir()))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    std::fs::write(tmp.path(), &salt).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    // Two first uses at once: the first to land wins, and both read it.
    match tmp.persist_noclobber(&path) {
        Ok(_) => Ok(salt),
        Err(_) => std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e)),
    }
}

/// The pool key of `spec`'s agent on `backend`: a salted hash of everything
/// its bottles' plan depends on (see the module docs); 16 hex digits.
pub fn key(spec: &BottleSpec, providers: &Providers, host: &Host, backend: &str) -> Result<String> {
    let resolved = crate::prepare::resolve(spec, providers, host)?;
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field(&salt(&host.state)?);
    field(b"bot-bottle pool key 1");
    field(backend.as_bytes());
    field(spec.agent.as_bytes());
    let agent = crate::manifest::AgentDef { pool: None, ..resolved.agent.clone() };
    field(&json(&agent));
    field(&json(resolved.bottle));
    field(&json(&resolved.guest_env));
    field(&json(&resolved.hidden_env));
    field(&json(&resolved.agent_routes.rules));
    field(format!("{:?}", resolved.limits).as_bytes());
    for reference in spec.manifest.host_vars() {
        if reference.used_by.bottle() == resolved.agent.bottle {
            field(reference.name.as_bytes());
            field(host.var(&reference.name).unwrap_or_default().as_bytes());
        }
    }
    for upstream in &resolved.bottle.git {
        field(&std::fs::read(&upstream.identity_file).unwrap_or_default());
    }
    if let Some(prompt) = &resolved.agent.prompt {
        field(&std::fs::read(prompt).unwrap_or_default());
    }
    for (name, dir) in &resolved.skills {
        let recipe = crate::plan::ImageRecipe {
            repository: name.clone(),
            dockerfile: String::new(),
            dockerfile_origin: String::new(),
            context_dir: Some(dir.clone()),
            host_ca_bundle: None,
            extra_files: Vec::new(),
            prebuilt_archive: None,
        };
        field(crate::image::recipe_key(&recipe).unwrap_or_default().as_bytes());
    }
    let provision = resolved.provider.build_provision_plan(resolved.provision_input("", false))?;
    field(crate::image::recipe_key(&provision.image).unwrap_or_default().as_bytes());
    if let Some(archive) = &provision.image.prebuilt_archive {
        field(file_stat(archive).as_bytes());
    }
    let program = crate::bundle::SidecarProgram::locate()?;
    field(file_stat(program.exe()).as_bytes());
    Ok(hash.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect())
}

/// A file's path, size, modification time and inode, for a key.
fn file_stat(path: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt as _;
    match std::fs::metadata(path) {
        Ok(m) => format!("{}:{}:{}:{}:{}", path.display(), m.len(), m.mtime(), m.mtime_nsec(), m.ino()),
        Err(_) => format!("{}:missing", path.display()),
    }
}

/// `value` as JSON, for a key.
fn json<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// One pool member, as its state folder describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    /// Its slug.
    pub slug: String,
    /// Its agent.
    pub agent: String,
    /// The backend it runs on.
    pub backend: String,
    /// The key of the plan it was made from.
    pub key: String,
    /// Whether it waits to be claimed (else it is still being made, or
    /// its fill died before it was ready).
    pub waiting: bool,
    /// When it was made, in milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// Every member not claimed yet, oldest first.
pub fn members(state: &StateRoot) -> Vec<Member> {
    state
        .list()
        .into_iter()
        .filter_map(|meta: BottleMetadata| {
            let pool = meta.pool.as_ref().filter(|p| p.claimed_ms.is_none())?;
            Some(Member {
                waiting: is_waiting(state, &meta.slug),
                key: pool.key.clone(),
                slug: meta.slug,
                agent: meta.agent,
                backend: meta.backend,
                created_ms: meta.owner.created_ms,
            })
        })
        .collect()
}

/// Remove member `slug` whole (it holds nothing worth saving): its
/// resources on `backend` and its state folder.
async fn remove_member(backend: &dyn DynBackend, state: &StateRoot, slug: &str) -> Result<()> {
    let _lock = state.lock(slug).await?;
    backend.remove_dyn(slug).await?;
    state.discard(slug)
}

/// What one agent's pool holds now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PoolStatus {
    /// The agent.
    pub agent: String,
    /// How many waiting members the manifest asks for.
    pub size: u32,
    /// Members that would be handed out now.
    pub ready: Vec<String>,
    /// Members made from another plan (the manifest or the host changed):
    /// never handed out; `fill` and `drain` remove them.
    pub stale: Vec<String>,
    /// Members still being made (or whose fill died before they were ready).
    pub making: Vec<String>,
    /// The process filling the pool now, when one does.
    pub filling: Option<u32>,
}

/// The status of the pool of every agent of `manifest` that has one (the
/// agents named in `only`, when it names some), on `backend`.
pub fn status(
    manifest: &Arc<Manifest>,
    only: &[String],
    providers: &Providers,
    host: &Host,
    backend: &str,
) -> Result<Vec<PoolStatus>> {
    let members = members(&host.state);
    let mut all = Vec::new();
    for (agent, size) in pooled_agents(manifest, only)? {
        let key = key(&member_spec(manifest, &agent, host), providers, host, backend)?;
        let (mut ready, mut stale, mut making) = (Vec::new(), Vec::new(), Vec::new());
        for m in members.iter().filter(|m| m.agent == agent && m.backend == backend) {
            match (m.key == key, m.waiting) {
                (true, true) => ready.push(m.slug.clone()),
                (false, true) => stale.push(m.slug.clone()),
                (_, false) => making.push(m.slug.clone()),
            }
        }
        let filling = filler(&host.state, &agent).map(|owner| owner.pid);
        all.push(PoolStatus { agent, size, ready, stale, making, filling });
    }
    Ok(all)
}

/// The agents of `manifest` with a pool, and its size: those of `only`
/// when it names some (each must have a pool).
fn pooled_agents(manifest: &Manifest, only: &[String]) -> Result<Vec<(String, u32)>> {
    for name in only {
        match manifest.agents.get(name) {
            None => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "no agent `{name}` in the manifest ({}); defined agents: {}",
                        manifest.source,
                        manifest.agents.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            Some(agent) if agent.pool.is_none() => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "agent `{name}` has no pool in the manifest ({}); add `pool: {{ size: 2 }}` to its entry",
                        manifest.source
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(manifest
        .agents
        .iter()
        .filter(|(name, _)| only.is_empty() || only.contains(name))
        .filter_map(|(name, agent)| Some((name.clone(), agent.pool?.size)))
        .collect())
}

/// The spec every member of `agent`'s pool is made from: detached, with an
/// empty workspace, no label; the host's CA bundle trusted in builds as by
/// default.
fn member_spec(manifest: &Arc<Manifest>, agent: &str, host: &Host) -> BottleSpec {
    BottleSpec { detached: true, ..BottleSpec::new(Arc::clone(manifest), agent, host.home.clone()) }
}

/// What [`fill`] did for one agent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filled {
    /// The agent.
    pub agent: String,
    /// The members it made.
    pub made: Vec<String>,
    /// The stale members (and dead ones) it removed.
    pub removed: Vec<String>,
    /// Another process was filling this pool already: nothing was done.
    pub busy: bool,
}

/// The lock file of `agent`'s fill and the file naming its holder.
fn fill_files(state: &StateRoot, agent: &str) -> Result<(PathBuf, PathBuf)> {
    crate::state::validate_slug(agent)?;
    let dir = pool_dir(state)?;
    Ok((dir.join(format!("{agent}.lock")), dir.join(format!("{agent}.filler"))))
}

/// The process filling `agent`'s pool now, when one does.
fn filler(state: &StateRoot, agent: &str) -> Option<Owner> {
    let (_, holder) = fill_files(state, agent).ok()?;
    let owner: Owner = serde_json::from_slice(&std::fs::read(holder).ok()?).ok()?;
    (owner.liveness() == Liveness::Alive).then_some(owner)
}

/// Fill the pool of every agent of `manifest` that has one (those of
/// `only`, when it names some) up to its size on `backend`: stale members
/// removed first, then members made one after the other until enough wait.
/// A pool another process fills already is left to it ([`Filled::busy`]).
/// `cancel` makes the future that interrupts a member's launch (a signal):
/// the member being made is removed, and the error is
/// [`ErrorKind::Interrupted`].
pub async fn fill<C, F>(
    manifest: &Arc<Manifest>,
    only: &[String],
    providers: &Providers,
    host: &Host,
    backend: Arc<dyn DynBackend>,
    cancel: C,
) -> Result<Vec<Filled>>
where
    C: Fn() -> F,
    F: Future<Output = ()>,
{
    backend.is_available_dyn().await?;
    let mut done = Vec::new();
    for (agent, size) in pooled_agents(manifest, only)? {
        let mut filled = Filled { agent: agent.clone(), ..Filled::default() };
        let (lock, holder) = fill_files(&host.state, &agent)?;
        let Some(_lock) = crate::state::try_lock_file(&lock)? else {
            filled.busy = true;
            done.push(filled);
            continue;
        };
        let me = serde_json::to_vec(&Owner::current()).unwrap_or_default();
        std::fs::write(&holder, me).map_err(|e| Error::io(format!("writing {}", holder.display()), e))?;
        let result = fill_one(manifest, &agent, size, providers, host, &backend, &cancel, &mut filled).await;
        let _ = std::fs::remove_file(&holder);
        result?;
        done.push(filled);
    }
    Ok(done)
}

/// [`fill`] for `agent`'s pool of `size`, holding its lock.
#[allow(clippy::too_many_arguments)]
async fn fill_one<C, F>(
    manifest: &Arc<Manifest>,
    agent: &str,
    size: u32,
    providers: &Providers,
    host: &Host,
    backend: &Arc<dyn DynBackend>,
    cancel: &C,
    filled: &mut Filled,
) -> Result<()>
where
    C: Fn() -> F,
    F: Future<Output = ()>,
{
    let spec = member_spec(manifest, agent, host);
    let name = backend.name_dyn();
    let key = key(&spec, providers, host, name)?;
    let running: Vec<String> = backend.enumerate_active_dyn().await?.into_iter().map(|a| a.slug).collect();
    for m in members(&host.state).into_iter().filter(|m| m.agent == agent && m.backend == name) {
        // Stale, or waiting with its bottle gone: claimed away from the pool, then removed.
        let dead = m.waiting && !running.contains(&m.slug);
        let orphan = !m.waiting && host.state.read(&m.slug).is_ok_and(|meta| meta.owner.liveness() == Liveness::Gone);
        if ((m.key != key || dead) && take(&host.state, &m.slug)) || orphan {
            remove_member(backend.as_ref(), &host.state, &m.slug).await?;
            filled.removed.push(m.slug);
        }
    }
    loop {
        let waiting = members(&host.state).iter().filter(|m| m.agent == agent && m.key == key && m.waiting).count();
        if waiting >= size as usize {
            return Ok(());
        }
        let session = Session::prepare_member(&spec, providers, host, Arc::clone(backend), Some(&key)).await?;
        let running = session.launch(cancel()).await?;
        filled.made.push(running.detach());
    }
}

/// Drain the pool of every agent of `manifest` that has one (those of
/// `only`, when it names some) on `backend`: a fill running for it is
/// stopped first (`SIGTERM`: it removes the member it was making), then
/// every member not claimed is removed, stale or not. Returns the slugs it
/// removed.
pub async fn drain(
    manifest: &Manifest,
    only: &[String],
    state: &StateRoot,
    backend: &dyn DynBackend,
) -> Result<Vec<String>> {
    let agents: Vec<String> = pooled_agents(manifest, only)?.into_iter().map(|(agent, _)| agent).collect();
    for agent in &agents {
        stop_filler(state, agent).await?;
    }
    let mut removed = Vec::new();
    let name = backend.name_dyn();
    for m in members(state).into_iter().filter(|m| agents.contains(&m.agent) && m.backend == name) {
        if take(state, &m.slug) || !m.waiting {
            remove_member(backend, state, &m.slug).await?;
            removed.push(m.slug);
        }
    }
    Ok(removed)
}

/// How long [`drain`] waits for a fill it signalled to end, before `SIGKILL`.
const FILL_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Stop the process filling `agent`'s pool, if one does, and wait until
/// its lock is free.
async fn stop_filler(state: &StateRoot, agent: &str) -> Result<()> {
    let Some(owner) = filler(state, agent) else { return Ok(()) };
    let (lock, _) = fill_files(state, agent)?;
    let pid = rustix::process::Pid::from_raw(owner.pid as i32);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = std::time::Instant::now() + FILL_GRACE;
    loop {
        if let Some(held) = crate::state::try_lock_file(&lock)? {
            drop(held);
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            if let Some(pid) = pid
                && owner.liveness() == Liveness::Alive
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            let wait = crate::blocking::unblock(move || crate::state::lock_file(&lock));
            let held =
                wait.await.map_err(|_| Error::new(ErrorKind::Io, "waiting for a pool's fill to end failed"))??;
            drop(held);
            return Ok(());
        }
        let _ = crate::blocking::unblock(|| std::thread::sleep(std::time::Duration::from_millis(100))).await;
    }
}

/// Claim a waiting member of `spec`'s agent's pool on `backend` for
/// `spec`, when its agent has a pool and a member of the current key waits
/// (`None` otherwise: start a fresh bottle). The member becomes the
/// operator's bottle: owned by this process, with `spec`'s label, colour
/// and detachment; the working directory copied in when asked; the agent's
/// session started when detached. A member whose bottle is gone is removed
/// and the next one tried.
pub async fn claim(
    spec: &BottleSpec,
    providers: &Providers,
    host: &Host,
    backend: Arc<dyn DynBackend>,
) -> Result<Option<Running>> {
    let since = std::time::Instant::now();
    let has_pool = spec.manifest.agents.get(&spec.agent).is_some_and(|a| a.pool.is_some());
    if !has_pool || spec.identity.is_some() {
        return Ok(None);
    }
    let name = backend.name_dyn();
    let key = key(&BottleSpec { detached: true, ..spec.clone() }, providers, host, name)?;
    let resolved = crate::prepare::resolve(spec, providers, host)?;
    for m in members(&host.state) {
        if m.agent != spec.agent || m.backend != name || m.key != key || !m.waiting || !take(&host.state, &m.slug) {
            continue;
        }
        let bottle = match backend.attach_dyn(&m.slug).await {
            Ok(bottle) => bottle,
            Err(_) => {
                remove_member(backend.as_ref(), &host.state, &m.slug).await?;
                continue;
            }
        };
        let provision = resolved.provider.build_provision_plan(resolved.provision_input(&m.slug, false))?;
        let handed = async {
            host.state.update(&m.slug, |meta| {
                meta.owner = Owner::current();
                meta.label = spec.label.clone();
                meta.color = spec.color.clone();
                meta.detached = spec.detached;
                if let Some(pool) = &mut meta.pool {
                    pool.claimed_ms = Some(crate::owner::now_ms());
                }
            })?;
            if spec.copy_cwd {
                bottle.cp_in(&spec.user_cwd, &provision.workdir).await?;
            }
            if spec.detached {
                let argv = resolved.provider.agent_argv(&provision, &spec.agent_args);
                crate::agent_session::start(bottle.as_ref(), &argv, &provision.workdir).await?;
            }
            Ok::<_, Error>(())
        };
        if let Err(e) = handed.await {
            let _ = remove_member(backend.as_ref(), &host.state, &m.slug).await;
            return Err(e.with_bottle(&m.slug).with_operation("claim a pooled bottle"));
        }
        let mut timings = crate::timings::Timings::default();
        timings.record("claim", since, Vec::new());
        return Ok(Some(Running {
            backend,
            bottle,
            provider: Arc::clone(&resolved.provider),
            state: host.state.clone(),
            slug: m.slug,
            provision,
            agent_args: spec.agent_args.clone(),
            timings,
        }));
    }
    Ok(None)
}

/// The command line that fills `agent`'s pool in the background after a
/// claim: `bottle [--manifest FILE] --backend NAME pool fill AGENT`, for the
/// front end to run detached.
pub fn refill_args(manifest: &Manifest, agent: &str, backend: &str) -> Vec<String> {
    let mut args = Vec::new();
    if let crate::manifest::ManifestSource::File(path) = &manifest.source {
        args.extend(["--manifest".to_string(), path.display().to_string()]);
    }
    args.extend(["--backend".to_string(), backend.to_string(), "pool".into(), "fill".into(), agent.to_string()]);
    args
}

/// Mark which of `agents` (what a backend's `enumerate_active` listed)
/// are pool members, and show a claimed member as its operator made it:
/// labels cannot change after a resource is made, so the label, colour
/// and owner of a claimed member come from its state folder.
pub fn settle(agents: &mut [crate::bottle::ActiveAgent], state: &StateRoot) {
    use crate::bottle::{OwnerState, PoolState};
    for agent in agents.iter_mut().filter(|a| a.pool.is_some()) {
        if is_waiting(state, &agent.slug) {
            agent.pool = Some(PoolState::Waiting);
            continue;
        }
        let Ok(meta) = state.read(&agent.slug) else { continue };
        if meta.pool.as_ref().is_some_and(|p| p.claimed_ms.is_some()) {
            agent.pool = Some(PoolState::Claimed);
            agent.label = meta.label;
            agent.color = meta.color;
            agent.owner = OwnerState::from(Some(meta.owner.liveness()));
        } else {
            agent.pool = Some(PoolState::Waiting);
        }
    }
}
