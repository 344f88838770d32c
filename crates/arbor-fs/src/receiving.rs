//! The state of a receive that has not finished, kept so that it can resume after an
//! interruption (a cut stream, a crash, a power cut) exactly where it stopped.
//!
//! A receiver applies each command while holding commits off ([`Fs::hold_commits`]),
//! then notes in memory how many it applied ([`Fs::set_receive_progress`]). Every
//! commit writes the notes into the subvolume tree first, with no command half
//! applied, so the durable note always describes the durable state.

use crate::error::Result;
use crate::fs::Fs;
use crate::subvol_items::{ReceiveProgress, SUBVOL_TREE};
use arbor_engine::Engine;
use std::sync::RwLockReadGuard;

/// Commits wait while one of these is held.
pub struct CommitHold<'a> {
    _guard: RwLockReadGuard<'a, ()>,
}

impl Fs {
    /// Holds commits off until the returned guard is dropped: what happens meanwhile
    /// goes into one commit or the next, never split.
    pub fn hold_commits(&self) -> Result<CommitHold<'_>> {
        let guard = self
            .commit_gate
            .read()
            .map_err(|_| crate::error::FsError::Invalid("commit gate poisoned".into()))?;
        Ok(CommitHold { _guard: guard })
    }

    /// Notes how far the receive into subvolume `id` got (none: it finished, or it
    /// is abandoned). Cheap: the next commit writes it.
    pub fn set_receive_progress(&self, id: u64, progress: Option<ReceiveProgress>) {
        if let Ok(mut notes) = self.receive_notes.lock() {
            notes.insert(id, progress);
        }
    }

    /// How far an unfinished receive into subvolume `id` got, if one did.
    pub fn receive_progress(&self, id: u64) -> Result<Option<ReceiveProgress>> {
        if let Ok(notes) = self.receive_notes.lock()
            && let Some(p) = notes.get(&id)
        {
            return Ok(*p);
        }
        self.with_engine(|e| stored(e, id))
    }

    /// Writes the pending notes into the subvolume tree (from a commit, with the
    /// engine held exclusively and no command in flight).
    pub(crate) fn write_receive_notes(&self, e: &mut Engine) -> Result<()> {
        let notes = match self.receive_notes.lock() {
            Ok(mut n) => std::mem::take(&mut *n),
            Err(_) => return Ok(()),
        };
        for (id, note) in notes {
            let k = ReceiveProgress::key(id);
            match note {
                Some(mut p) if e.tree_exists(id) => {
                    p.generation = crate::subvol::generation_of(e, id)?;
                    e.insert(SUBVOL_TREE, k, &p.encode())?;
                }
                _ => {
                    if e.get(SUBVOL_TREE, k)?.is_some() {
                        e.delete(SUBVOL_TREE, k)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn stored(e: &Engine, id: u64) -> Result<Option<ReceiveProgress>> {
    let k = ReceiveProgress::key(id);
    match e.get(SUBVOL_TREE, k)? {
        Some(v) => Ok(Some(ReceiveProgress::decode(id, k, &v)?)),
        None => Ok(None),
    }
}
