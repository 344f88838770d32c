//! The commit: make the running transaction durable, atomically.
//!
//! 1. Release a bounded share of the nodes of dropped trees.
//! 2. Record changed root pointers and the drop queue in the root tree.
//! 3. Apply pending reference changes to the extent tree. Changing the extent tree
//!    shadows extent tree nodes, which changes references again; repeat until nothing
//!    is pending (a few rounds: a node is shadowed at most once per transaction).
//! 4. Write every dirty node to its new place; flush.
//! 5. Write the primary superblock copy; flush. Write the mirror copies; the next
//!    commit's first flush makes them durable.
//! 6. Blocks freed by this transaction become reusable.
//!
//! Until step 5 reaches the media, every superblock copy names the previous
//! transaction's trees, none of whose blocks were written in steps 1–4.

use crate::engine::{Engine, RefDelta};
use crate::error::{Error, Result};
use crate::format::{
    Body, DropItem, ExtentItem, Key, LEAF_ITEM_SIZE, RootItem, Superblock, encode_node, item_type,
    objectid, superblock_offsets,
};
use crate::nodes::{ExtentChange, decode_extent, extent_change};

/// Rounds of extent tree updates after which a commit gives up. Never reached in
/// practice: each round only shadows nodes that the previous one split.
const MAX_EXTENT_ROUNDS: usize = 64;

/// A transaction finished in memory by [`Engine::commit_begin`], to be written.
#[derive(Debug)]
pub struct PreparedCommit {
    sb: Superblock,
}

/// What [`Engine::commit_write`] achieved: whether the new superblock is durable, and
/// the first error.
#[derive(Debug)]
pub struct CommitWritten {
    durable: bool,
    result: Result<()>,
}

impl Engine {
    /// Makes every change since the last commit durable, atomically. On failure the
    /// handle is poisoned and the image holds a consistent state: the previous commit,
    /// or this one if the failure came after its superblock reached the device.
    pub fn commit(&mut self) -> Result<()> {
        let Some(prepared) = self.commit_begin()? else {
            return Ok(());
        };
        let written = self.commit_write(&prepared);
        self.commit_end(prepared, written)
    }

    /// True when the running transaction has changes to commit.
    pub fn has_changes(&self) -> bool {
        !(self.dirty.is_empty()
            && self.refs.is_empty()
            && self.dirty_roots.is_empty()
            && self.drops_dirty.is_empty()
            && self.drops.is_empty())
    }

    /// A commit in three steps, so that readers need not wait for its I/O:
    /// [`Engine::commit_begin`] (exclusive) finishes the transaction in memory;
    /// [`Engine::commit_write`] (shared: readers may run beside it, but nothing may
    /// change the engine) writes it and makes it durable; [`Engine::commit_end`]
    /// (exclusive) installs the result and starts the next transaction. Returns `None`
    /// when there is nothing to commit.
    pub fn commit_begin(&mut self) -> Result<Option<PreparedCommit>> {
        self.check_writable()?;
        if !self.has_changes() {
            return Ok(None);
        }
        let r = (|| {
            self.drop_step(self.cfg.drop_nodes_per_commit)?;
            self.acct_commit()?;
            self.write_root_items()?;
            self.apply_refs()?;
            self.new_superblock()
        })();
        let sb = self.poison_on_err(r)?;
        self.committing = true;
        Ok(Some(PreparedCommit { sb }))
    }

    /// Writes the transaction [`Engine::commit_begin`] prepared: its nodes, a flush,
    /// the primary superblock, a flush, the mirrors.
    pub fn commit_write(&self, prepared: &PreparedCommit) -> CommitWritten {
        let nodes = self.write_dirty_nodes();
        if let Err(e) = nodes {
            return CommitWritten {
                durable: false,
                result: Err(e),
            };
        }
        self.write_superblock_copies(&prepared.sb)
    }

    /// Installs what [`Engine::commit_write`] wrote, or poisons the handle if it failed.
    pub fn commit_end(&mut self, prepared: PreparedCommit, written: CommitWritten) -> Result<()> {
        self.committing = false;
        if written.durable {
            self.install_superblock(prepared.sb);
        }
        if let Err(e) = written.result {
            return self.poison_on_err(Err(e));
        }
        let txn_gen = self.generation;
        if let Ok(mut cache) = self.cache.lock() {
            for bytenr in self.evict_at_commit.drain(..) {
                cache.remove(bytenr);
            }
            for (_, node) in self.dirty.drain() {
                debug_assert_eq!(node.generation, txn_gen);
                cache.insert(node);
            }
        }
        self.dirty.clear();
        if self.cfg.hold_freed {
            self.alloc.hold_pinned(txn_gen);
        } else {
            self.alloc.unpin_all();
        }
        let r = self.next_generation();
        self.poison_on_err(r)
    }

    /// Commits an empty transaction: only the superblocks change. A transaction that
    /// was in flight when the previous session died may have written nodes of the
    /// generation after the durable one; burning that generation at open means no
    /// later node can carry it, so such a stale node can never pass for a lost write's
    /// newer version (the generation check in every parent pointer stays meaningful).
    pub(crate) fn burn_generation(&mut self) -> Result<()> {
        let r = self.new_superblock().and_then(|sb| {
            let written = self.write_superblock_copies(&sb);
            if written.durable {
                self.install_superblock(sb);
            }
            written.result?;
            self.next_generation()
        });
        self.poison_on_err(r)
    }

    fn next_generation(&mut self) -> Result<()> {
        self.generation = self
            .generation
            .checked_add(1)
            .ok_or_else(|| Error::Poisoned("the generation counter is exhausted".into()))?;
        Ok(())
    }

    fn write_root_items(&mut self) -> Result<()> {
        for tree in std::mem::take(&mut self.dirty_roots) {
            let key = Key::new(tree, item_type::ROOT_ITEM, 0);
            match self.roots.get(&tree) {
                Some(r) => {
                    let item = RootItem {
                        root: *r,
                        exclusive: self.acct.excl.get(&tree).copied().unwrap_or(0),
                    };
                    self.tree_insert(objectid::ROOT_TREE, key, &item.encode())?
                }
                None => self.delete_if_present(objectid::ROOT_TREE, key)?,
            }
        }
        for bytenr in std::mem::take(&mut self.drops_dirty) {
            let key = Key::new(objectid::DROP_QUEUE, item_type::DROP_ITEM, bytenr);
            match self.drops.get(&bytenr) {
                Some(d) => self.tree_insert(objectid::ROOT_TREE, key, &d.encode())?,
                None => self.delete_if_present(objectid::ROOT_TREE, key)?,
            }
        }
        Ok(())
    }

    fn delete_if_present(&mut self, tree: u64, key: Key) -> Result<()> {
        let root = self.root(tree)?;
        if self.tree_get(tree, root, key)?.is_some() {
            self.tree_delete(tree, key)?;
        }
        Ok(())
    }

    fn apply_refs(&mut self) -> Result<()> {
        for _ in 0..MAX_EXTENT_ROUNDS {
            let mut pending: Vec<u64> = self.refs.keys().copied().collect();
            if pending.is_empty() {
                return Ok(());
            }
            pending.sort_unstable();
            // Sorted changes mostly land in the same extent leaf as the one before:
            // shadow its path once and edit it in place while the edit keeps the leaf's
            // shape; otherwise take the general path and find the leaf again.
            let mut leaf: Option<(u64, Option<Key>)> = None;
            for bytenr in pending {
                let Some(d) = self.refs.remove(&bytenr) else {
                    continue;
                };
                // Above every key the extent of `bytenr` can have, whatever its length.
                let above = Key::new(bytenr, item_type::EXTENT_ITEM, u64::MAX);
                let current = match leaf {
                    Some((l, hi)) if hi.is_none_or(|h| above < h) => l,
                    _ => {
                        let found = self.tree_touch(objectid::EXTENT_TREE, above)?;
                        leaf = Some(found);
                        found.0
                    }
                };
                if !self.apply_ref_in_leaf(current, bytenr, d)? {
                    self.apply_ref(bytenr, d)?;
                    leaf = None;
                }
            }
        }
        Err(Error::Poisoned(
            "extent tree updates did not converge".into(),
        ))
    }

    /// Applies one reference change inside the writable extent leaf `leaf`, if that
    /// changes neither the leaf's first key nor whether it needs a split or a merge.
    /// Returns false, having changed nothing, otherwise.
    fn apply_ref_in_leaf(&mut self, leaf: u64, bytenr: u64, d: RefDelta) -> Result<bool> {
        const ITEM: usize = LEAF_ITEM_SIZE + ExtentItem::SIZE;
        let ns = self.sb.nodesize as usize;
        let node = self.dirty_mut(leaf)?;
        let used = node.used_bytes();
        let Body::Leaf(items) = &mut node.body else {
            return Ok(false);
        };
        let probe = Key::new(bytenr, item_type::EXTENT_ITEM, 0);
        let i = items.lower_bound(&probe);
        let found = items
            .keys()
            .get(i)
            .filter(|k| k.objectid == bytenr && k.ty == item_type::EXTENT_ITEM)
            .copied();
        let existing = match found {
            Some(key) => Some((key, decode_extent(&key, items.value(i))?)),
            None => None,
        };
        let change = extent_change(bytenr, d, existing.map(|(_, item)| item))?;
        match (existing, change) {
            (Some((key, _)), ExtentChange::Set(item)) => {
                items.upsert(key, &item.encode());
            }
            (Some((key, _)), ExtentChange::Remove) => {
                if i == 0 || used - ITEM < ns / 4 {
                    return Ok(false);
                }
                items.remove(&key);
                self.account_extent(key.offset, false);
            }
            (None, ExtentChange::Set(item)) => {
                if i == 0 || used + ITEM > ns {
                    return Ok(false);
                }
                let key = Key::new(bytenr, item_type::EXTENT_ITEM, d.len);
                items.upsert(key, &item.encode());
                self.account_extent(d.len, true);
            }
            (None, ExtentChange::Remove) => {}
        }
        Ok(true)
    }

    /// Applies one reference change through the general tree operations.
    fn apply_ref(&mut self, bytenr: u64, d: RefDelta) -> Result<()> {
        let tree = objectid::EXTENT_TREE;
        let existing = self.extent_lookup(bytenr)?;
        match (
            existing,
            extent_change(bytenr, d, existing.map(|(_, item)| item))?,
        ) {
            (Some((key, _)), ExtentChange::Set(item)) => {
                self.tree_insert(tree, key, &item.encode())?;
            }
            (Some((key, _)), ExtentChange::Remove) => {
                self.tree_delete(tree, key)?;
                self.account_extent(key.offset, false);
            }
            (None, ExtentChange::Set(item)) => {
                let key = Key::new(bytenr, item_type::EXTENT_ITEM, d.len);
                self.tree_insert(tree, key, &item.encode())?;
                self.account_extent(d.len, true);
            }
            (None, ExtentChange::Remove) => {}
        }
        Ok(())
    }

    /// Keeps `bytes_used` and the extent item count in step with an item added or
    /// removed.
    fn account_extent(&mut self, len: u64, added: bool) {
        if added {
            self.bytes_used += len;
            self.extent_items += 1;
        } else {
            self.bytes_used -= len;
            self.extent_items -= 1;
        }
    }

    fn write_dirty_nodes(&self) -> Result<()> {
        let mut addrs: Vec<u64> = self.dirty.keys().copied().collect();
        addrs.sort_unstable();
        let (ns, fsid) = (self.sb.nodesize, self.sb.fsid);
        for bytenr in addrs {
            if let Some(node) = self.dirty.get(&bytenr) {
                let buf = encode_node(node, ns, &fsid);
                self.storage
                    .write_at(bytenr, &buf)
                    .map_err(Error::io(bytenr))?;
            }
        }
        self.storage.flush().map_err(Error::io(0))
    }

    /// The superblock that names the running transaction's trees.
    fn new_superblock(&self) -> Result<Superblock> {
        let mut sb = self.sb.clone();
        sb.generation = self.generation;
        sb.root_tree = self.root(objectid::ROOT_TREE)?;
        sb.extent_tree = self.root(objectid::EXTENT_TREE)?;
        sb.bytes_used = self.bytes_used;
        Ok(sb)
    }

    /// Writes the superblock copies. The primary copy, flushed: from then on the
    /// commit is durable. Then the mirrors, flushed by the next commit's first flush
    /// (or when the handle is dropped). A crash can thus tear the copies of only one
    /// phase, and the other phase always holds a valid superblock: while the primary is
    /// written the mirrors hold the previous commit, flushed before this commit's nodes
    /// were; while the mirrors are written the primary holds this one.
    fn write_superblock_copies(&self, sb: &Superblock) -> CommitWritten {
        let mut durable = false;
        for (i, &off) in superblock_offsets(sb.total_bytes).iter().enumerate() {
            let r = self
                .storage
                .write_at(off, &sb.encode(i as u32))
                .map_err(Error::io(off))
                .and_then(|()| {
                    if i == 0 {
                        self.storage.flush().map_err(Error::io(0))
                    } else {
                        Ok(())
                    }
                });
            if let Err(e) = r {
                return CommitWritten {
                    durable,
                    result: Err(e),
                };
            }
            durable = true;
        }
        CommitWritten {
            durable,
            result: Ok(()),
        }
    }

    fn install_superblock(&mut self, sb: Superblock) {
        self.mirrors_unflushed = superblock_offsets(sb.total_bytes).len() > 1;
        self.sb = sb;
    }

    pub(crate) fn enqueue_drop(
        &mut self,
        bytenr: u64,
        generation: u64,
        level: u8,
        count: u32,
    ) -> Result<()> {
        let entry = self.drops.entry(bytenr).or_insert(DropItem {
            generation,
            count: 0,
            level,
        });
        entry.count = entry
            .count
            .checked_add(count)
            .ok_or_else(|| Error::CorruptItem {
                tree: objectid::ROOT_TREE,
                key: Key::new(objectid::DROP_QUEUE, item_type::DROP_ITEM, bytenr).to_string(),
                reason: format!(
                    "{} queued drops plus {count} overflow the count",
                    entry.count
                ),
            })?;
        self.drops_dirty.insert(bytenr);
        Ok(())
    }
}
