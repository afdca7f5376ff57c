//! What every backend's bottle handle keeps and does the same way:
//! [`Handle`] holds the slug, the agent's user and workdir (from the plan at
//! launch, from the resource's labels on attach), the agent's numeric ids
//! (asked once) and the closed flag that makes `close` idempotent; and the
//! engine-neutral halves of `cp_in` and `cp_out` (the destination folder
//! made and the tree packed with the agent's ownership; the size measured
//! before anything is streamed). A backend adds only how bytes and commands
//! cross into its guest.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::bottle::{Bottle, GuestUser, agent_ids};
use crate::copy::{CopyOut, guest_size, pack_tree, split_guest_path};
use crate::labels::{self, Labels};
use crate::provider::{run_checked, shell_quote};
use crate::resources::ByteSize;
use crate::{Error, ErrorKind, Result};

/// The facts and flags of one bottle handle, shared by every backend.
#[derive(Debug)]
pub struct Handle {
    slug: String,
    user: String,
    workdir: String,
    ids: OnceLock<(u64, u64)>,
    closed: AtomicBool,
}

/// A tree packed for the guest: the folder it unpacks in and the tar.
#[derive(Debug)]
pub struct Packed {
    /// The existing guest folder the archive unpacks in.
    pub parent: String,
    /// The archive, its entries owned by the agent's user.
    pub tar: Vec<u8>,
}

impl Handle {
    /// A handle on bottle `slug` whose agent runs as `user` in `workdir`.
    pub fn new(slug: impl Into<String>, user: impl Into<String>, workdir: impl Into<String>) -> Self {
        Handle {
            slug: slug.into(),
            user: user.into(),
            workdir: workdir.into(),
            ids: OnceLock::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// A handle on bottle `slug` from its resource's labels (root in `/`
    /// where a label is missing).
    pub fn from_labels(slug: impl Into<String>, found: &HashMap<String, String>) -> Self {
        let l = Labels(found);
        Self::new(slug, l.get(labels::USER).unwrap_or("root"), l.get(labels::WORKDIR).unwrap_or("/"))
    }

    /// The bottle's slug.
    pub fn slug(&self) -> &str {
        &self.slug
    }

    /// The agent's user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The agent's working directory.
    pub fn workdir(&self) -> &str {
        &self.workdir
    }

    /// `user`'s name inside the bottle.
    pub fn user_name(&self, user: GuestUser) -> String {
        user.name(&self.user)
    }

    /// `e`, naming this bottle.
    pub fn err(&self, e: Error) -> Error {
        e.with_bottle(&self.slug)
    }

    /// Whether this is the first call: `close` does its work once.
    pub fn close_once(&self) -> bool {
        !self.closed.swap(true, Ordering::SeqCst)
    }

    /// The agent user's numeric uid and gid in `bottle` (asked once).
    pub async fn agent_ids(&self, bottle: &dyn Bottle) -> Result<(u64, u64)> {
        if let Some(ids) = self.ids.get() {
            return Ok(*ids);
        }
        let ids = agent_ids(bottle).await?;
        Ok(*self.ids.get_or_init(|| ids))
    }

    /// `cp_in`'s engine-neutral half: `guest`'s folder made (as the agent,
    /// else as root) and `host` packed to unpack there as the agent's.
    pub async fn pack_in(&self, bottle: &dyn Bottle, host: &Path, guest: &str) -> Result<Packed> {
        let (parent, name) = split_guest_path(guest)?;
        let (uid, gid) = self.agent_ids(bottle).await?;
        let mkdir = format!("mkdir -p {}", shell_quote(parent));
        if !bottle.exec(&mkdir, GuestUser::Agent).await?.success() {
            run_checked(bottle, &mkdir, GuestUser::Root, "creating a folder").await?;
        }
        let (host_path, name) = (host.to_path_buf(), name.to_string());
        let tar = crate::blocking::unblock(move || pack_tree(&host_path, &name, uid, gid))
            .await
            .map_err(|_| Error::new(ErrorKind::Io, format!("packing {} failed", host.display())))?
            .map_err(|e| self.err(Error::io(format!("packing {}", host.display()), e)))?;
        Ok(Packed { parent: parent.to_string(), tar })
    }

    /// `cp_out`'s first step: `guest` measured, so that a missing tree or one
    /// over `limit` is answered before anything is streamed or packed
    /// (`Some`); `None` when the copy goes ahead.
    pub async fn measure_out(&self, bottle: &dyn Bottle, guest: &str, limit: ByteSize) -> Result<Option<CopyOut>> {
        split_guest_path(guest)?;
        match guest_size(bottle, guest).await.map_err(|e| self.err(e))? {
            None => Ok(Some(CopyOut::Missing)),
            Some(size) if size > limit.0 => Ok(Some(CopyOut::TooLarge { limit })),
            Some(_) => Ok(None),
        }
    }
}
