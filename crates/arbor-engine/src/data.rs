//! Data extents: runs of sectors that hold file data rather than tree nodes. The
//! engine allocates them, counts their references in the extent tree and frees them;
//! what they hold and which items name them is the upper layer's business (see
//! [`crate::DataRefs`]). A freed data extent is pinned like a node: the durable state
//! may still name it.

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::{EXTENT_FLAG_DATA, Key, SECTOR_SIZE, item_type, objectid};
use crate::storage::Storage;
use std::sync::Arc;

impl Engine {
    /// Allocates a data extent of `len` bytes (rounded up to whole sectors) with one
    /// reference. Fails with `NoSpace` when it would leave the next commit too little.
    pub fn alloc_data(&mut self, len: u64) -> Result<u64> {
        self.check_writable()?;
        let len = round_up(len)?;
        let ns = u64::from(self.sb.nodesize);
        // The extent item this adds, plus the reserve deletes need.
        self.ensure_space(len.div_ceil(ns) + 1 + self.delete_reserve())?;
        let bytenr = self
            .alloc
            .alloc(len, u64::from(SECTOR_SIZE))
            .ok_or(Error::NoSpace {
                needed: len,
                free: self.alloc.free_bytes(),
            })?;
        self.changes_made += 1;
        self.add_ref(bytenr, len, EXTENT_FLAG_DATA, 1);
        Ok(bytenr)
    }

    /// Changes the reference count of the data extent at `bytenr` of `len` bytes by
    /// `delta`. At zero the extent is freed (reusable once this transaction is durable).
    pub fn data_ref(&mut self, bytenr: u64, len: u64, delta: i64) -> Result<()> {
        self.check_writable()?;
        let len = round_up(len)?;
        self.changes_made += 1;
        let r = self.data_ref_inner(bytenr, len, delta);
        self.poison_on_err(r)
    }

    pub(crate) fn data_ref_inner(&mut self, bytenr: u64, len: u64, delta: i64) -> Result<()> {
        let before = self.refcount(bytenr)?;
        let after = crate::nodes::apply_delta(before, delta).ok_or_else(|| Error::CorruptItem {
            tree: objectid::EXTENT_TREE,
            key: Key::new(bytenr, item_type::EXTENT_ITEM, len).to_string(),
            reason: format!("data extent reference count {before} cannot change by {delta}"),
        })?;
        if let Some((key, item)) = self.extent_lookup(bytenr)?
            && (key.offset != len || item.flags != EXTENT_FLAG_DATA)
        {
            return Err(Error::CorruptItem {
                tree: objectid::EXTENT_TREE,
                key: key.to_string(),
                reason: format!(
                    "named as a data extent of {len} bytes but is {} bytes with flags {:#x}",
                    key.offset, item.flags
                ),
            });
        }
        self.add_ref(bytenr, len, EXTENT_FLAG_DATA, delta);
        // Its owner may change even if this transaction's changes cancel out (an item
        // moved from one tree to another).
        self.acct.touched_data.insert(bytenr, len);
        if after == 0 {
            self.alloc.pin(bytenr, len);
        }
        Ok(())
    }

    /// The current reference count of a data extent (0 if it is not allocated).
    pub fn data_refcount(&self, bytenr: u64) -> Result<u64> {
        self.check_usable()?;
        self.refcount(bytenr)
    }

    /// The device, for reading and writing data extents without holding the engine.
    /// Writes must stay inside extents this transaction allocated.
    pub fn storage(&self) -> Arc<dyn Storage> {
        Arc::clone(&self.storage)
    }

    /// Blocks freed by durable commits up to `generation` become reusable (with
    /// [`crate::Config::hold_freed`]).
    pub fn release_freed(&mut self, generation: u64) {
        self.alloc.release_held(generation);
    }

    /// True if blocks freed by durable commits wait for [`Self::release_freed`].
    pub fn holds_freed(&self) -> bool {
        self.alloc.has_held()
    }

    /// Calls the data-reference hook on every item of a leaf and changes each named
    /// extent's count by `delta`.
    pub(crate) fn leaf_data_refs(
        &mut self,
        tree: u64,
        items: &[(Key, Vec<u8>)],
        delta: i64,
    ) -> Result<()> {
        let Some(hook) = self.cfg.data_refs.clone() else {
            return Ok(());
        };
        for (key, value) in items {
            let named = hook
                .data_ref(tree, key, value)
                .map_err(|reason| Error::CorruptItem {
                    tree,
                    key: key.to_string(),
                    reason,
                })?;
            if let Some((bytenr, len)) = named {
                self.data_ref_inner(bytenr, len, delta)?;
            }
        }
        Ok(())
    }
}

fn round_up(len: u64) -> Result<u64> {
    let sector = u64::from(SECTOR_SIZE);
    if len == 0 {
        return Err(Error::InvalidArgument(
            "a data extent cannot be empty".into(),
        ));
    }
    len.checked_next_multiple_of(sector)
        .ok_or_else(|| Error::InvalidArgument(format!("data extent of {len} bytes is too large")))
}
