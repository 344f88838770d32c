//! Nodes and their reference counts: reading through the validator, shadowing
//! (copy-on-write with Rodeh's lazy reference counting), allocating and freeing.

use crate::engine::{ChildRef, Engine, RefDelta};
use crate::error::{Error, Result};
use crate::format::{Body, EXTENT_FLAG_TREE_BLOCK, ExtentItem, Key, Node, item_type, objectid};
use std::sync::Arc;

/// Checks that a node already in memory (written by this transaction, or validated when
/// it was read) is the one the pointer being followed expects. A mismatch means the
/// block was handed out again while an old pointer still names it: every pointer read
/// from the device carries an older generation than the running transaction's nodes,
/// so it can only happen when the extent tree failed to account for the block. Never
/// using such a node in place is what keeps a forged image from forming a cycle.
fn check_in_memory(tree: u64, n: &Node, child: &ChildRef) -> Result<()> {
    if n.generation != child.generation || n.level != child.level {
        return Err(Error::CorruptNode {
            block: child.bytenr,
            tree,
            reason: format!(
                "the node in memory has generation {} level {}, the pointer expects \
                 generation {} level {} (a block reused while still referenced: the \
                 extent tree does not account for it)",
                n.generation, n.level, child.generation, child.level
            ),
        });
    }
    Ok(())
}

/// Decodes the extent item stored under `key`, naming the key if it is corrupt.
pub(crate) fn decode_extent(key: &Key, value: &[u8]) -> Result<ExtentItem> {
    ExtentItem::decode(value).map_err(|reason| Error::CorruptItem {
        tree: objectid::EXTENT_TREE,
        key: key.to_string(),
        reason,
    })
}

/// What one reference change does to an extent's item.
pub(crate) enum ExtentChange {
    /// The item now holds this (a new item when there was none).
    Set(ExtentItem),
    /// The last reference is gone: the item goes.
    Remove,
}

/// Applies the change `d` to the extent item of `bytenr`, if there is one. A count
/// that would leave its range is a corruption error naming the extent.
pub(crate) fn extent_change(
    bytenr: u64,
    d: RefDelta,
    existing: Option<ExtentItem>,
) -> Result<ExtentChange> {
    let have = existing.map_or(0, |item| item.refs);
    let flags = existing.map_or(d.flags, |item| item.flags);
    match apply_delta(have, d.delta) {
        Some(0) if existing.is_some() => Ok(ExtentChange::Remove),
        Some(refs) if refs > 0 => Ok(ExtentChange::Set(ExtentItem { refs, flags })),
        _ => Err(Error::CorruptItem {
            tree: objectid::EXTENT_TREE,
            key: Key::new(bytenr, item_type::EXTENT_ITEM, d.len).to_string(),
            reason: format!("reference count {have} cannot change by {}", d.delta),
        }),
    }
}

/// `refs + delta`, or `None` when that leaves the range of a count (a corrupt count).
pub(crate) fn apply_delta(refs: u64, delta: i64) -> Option<u64> {
    u64::try_from(i128::from(refs) + i128::from(delta)).ok()
}

fn node_ptr_shareable(tree: u64) -> bool {
    tree >= objectid::FIRST_USER_TREE
}

impl Engine {
    /// Reads a node through the dirty set, the cache, or the device and the validator.
    pub(crate) fn read_node(&self, tree: u64, child: &ChildRef) -> Result<Arc<Node>> {
        let found = match self.dirty.get(&child.bytenr) {
            Some(n) => Some(n.clone()),
            None => self
                .cache
                .lock()
                .map_err(|_| Error::Poisoned("cache lock".into()))?
                .get(child.bytenr),
        };
        if let Some(n) = found {
            check_in_memory(tree, &n, child)?;
            return Ok(n);
        }
        let miss = crate::loader::NodeMiss {
            tree,
            bytenr: child.bytenr,
            generation: child.generation,
            level: child.level,
            lo: child.lo,
            hi: child.hi,
        };
        if !crate::loader::node_io_allowed() {
            return Err(Error::NotCached(Box::new(miss)));
        }
        self.node_loader().fetch(&miss)
    }

    /// A mutable view of a node that is dirty in this transaction.
    pub(crate) fn dirty_mut(&mut self, bytenr: u64) -> Result<&mut Node> {
        match self.dirty.get_mut(&bytenr) {
            Some(n) => Ok(Arc::make_mut(n)),
            None => Err(Error::Poisoned(format!(
                "internal: block {bytenr} is not dirty"
            ))),
        }
    }

    pub(crate) fn add_ref(&mut self, bytenr: u64, len: u64, flags: u64, delta: i64) {
        let e = self.refs.entry(bytenr).or_insert(RefDelta {
            delta: 0,
            len,
            flags,
        });
        e.delta += delta;
        if e.delta == 0 {
            self.refs.remove(&bytenr);
        }
    }

    pub(crate) fn node_ref(&mut self, bytenr: u64, delta: i64) {
        let ns = u64::from(self.sb.nodesize);
        self.add_ref(bytenr, ns, EXTENT_FLAG_TREE_BLOCK, delta);
    }

    /// Allocates a node-sized extent with reference count 1.
    pub(crate) fn alloc_node(&mut self) -> Result<u64> {
        let ns = u64::from(self.sb.nodesize);
        let bytenr = self.alloc.alloc(ns, ns).ok_or(Error::NoSpace {
            needed: ns,
            free: self.alloc.free_bytes(),
        })?;
        self.node_ref(bytenr, 1);
        Ok(bytenr)
    }

    /// Drops the last reference to a node. A node written in this transaction is
    /// reusable at once; an older one only after this transaction is durable.
    pub(crate) fn free_node(&mut self, bytenr: u64) {
        let ns = u64::from(self.sb.nodesize);
        self.node_ref(bytenr, -1);
        if self.dirty.contains_key(&bytenr) {
            // Written in this transaction: never durable, so reusable at once, unless a
            // clone taken in this transaction still holds it. Inside a commit, the
            // extent tree may already count it (an earlier round of `apply_refs` wrote
            // its item): then what is left is that count plus the pending change.
            let applied = self
                .extent_lookup(bytenr)
                .ok()
                .flatten()
                .map_or(0, |(_, i)| i.refs);
            let pending = self.refs.get(&bytenr).map_or(0, |d| d.delta);
            if i128::from(applied) + i128::from(pending) <= 0 {
                self.dirty.remove(&bytenr);
                self.alloc.release(bytenr, ns);
            }
        } else {
            // Kept in the cache until the commit: its accounting reads it.
            self.alloc.pin(bytenr, ns);
            self.evict_at_commit.push(bytenr);
        }
    }

    /// The reference count of an extent: what the extent tree says plus pending changes.
    /// A node made in this transaction has no extent item yet, except while a commit is
    /// being written: then the transaction's items are already in the extent tree.
    pub(crate) fn refcount(&self, bytenr: u64) -> Result<u64> {
        let base = if self.dirty.contains_key(&bytenr) && !self.committing {
            0
        } else {
            self.extent_lookup(bytenr)?.map_or(0, |(_, item)| item.refs)
        };
        let delta = self.refs.get(&bytenr).map_or(0, |d| d.delta);
        apply_delta(base, delta).ok_or_else(|| Error::CorruptItem {
            tree: objectid::EXTENT_TREE,
            key: Key::new(bytenr, item_type::EXTENT_ITEM, 0).to_string(),
            reason: format!("reference count {base} cannot change by {delta}"),
        })
    }

    /// The extent item starting at `bytenr`, if any.
    pub(crate) fn extent_lookup(&self, bytenr: u64) -> Result<Option<(Key, ExtentItem)>> {
        let start = Key::new(bytenr, item_type::EXTENT_ITEM, 0);
        let Some(item) = self.range(objectid::EXTENT_TREE, start..)?.next() else {
            return Ok(None);
        };
        let (key, value) = item?;
        if key.objectid != bytenr || key.ty != item_type::EXTENT_ITEM {
            return Ok(None);
        }
        Ok(Some((key, decode_extent(&key, &value)?)))
    }

    /// Makes the node behind `child` writable in this transaction and returns its
    /// (possibly new) address. Shared nodes are copied and their references pushed down
    /// to their children (Rodeh's lazy reference counting).
    pub(crate) fn cow(&mut self, tree: u64, child: &ChildRef) -> Result<u64> {
        let shareable = node_ptr_shareable(tree);
        if let Some(node) = self.dirty.get(&child.bytenr) {
            check_in_memory(tree, node, child)?;
            if !shareable || self.refs.get(&child.bytenr).is_some_and(|d| d.delta == 1) {
                return Ok(child.bytenr);
            }
        }
        let node = self.read_node(tree, child)?;
        let rc = if shareable {
            self.refcount(child.bytenr)?
        } else {
            1
        };
        let new = self.alloc_node()?;
        let mut copy = (*node).clone();
        copy.bytenr = new;
        copy.generation = self.generation;
        copy.owner = tree;
        if rc > 1 {
            match &copy.body {
                Body::Branch(ptrs) => {
                    for p in ptrs {
                        self.node_ref(p.bytenr, 1);
                    }
                }
                Body::Leaf(leaf) if self.cfg.data_refs.is_some() => {
                    let items: Vec<(Key, Vec<u8>)> =
                        leaf.iter().map(|(k, v)| (k, v.to_vec())).collect();
                    self.leaf_data_refs(tree, &items, 1)?;
                }
                Body::Leaf(_) => {}
            }
            self.node_ref(child.bytenr, -1);
        } else {
            self.free_node(child.bytenr);
        }
        self.dirty.insert(new, Arc::new(copy));
        Ok(new)
    }
}
