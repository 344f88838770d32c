//! How much of a user tree only that tree holds: the bytes that deleting it would free
//! (btrfs's "exclusive").
//!
//! The reference counts already say it, so the walk reads only the exclusive part. A
//! block's count is its parent pointers from live nodes, plus the root pointers naming
//! it, plus the pending drops keyed on it (`docs/format.md`, "Reference counts"). So:
//!
//! * the root is exclusive iff its count is 1: this tree's root pointer is the only
//!   reference;
//! * a child of an exclusive node is exclusive iff its count is 1: its only reference is
//!   that parent, which only this tree reaches;
//! * a node with a count of 2 or more is reached from elsewhere too (another tree, a
//!   pending drop, or a second parent, which within one tree cannot happen), and so is
//!   everything below it: the walk does not enter it.
//!
//! A data extent's count is the number of items naming it in live leaves, one per item
//! (two items of one leaf naming it count twice), whatever holds those leaves, plus any
//! reference the filesystem holds outside a leaf. The walk counts, per extent, the items
//! of the exclusive leaves that name it, the same way; the extent is exclusive iff that
//! equals its count. Dropping the tree would release exactly these nodes and extents.

use crate::engine::{ChildRef, Engine};
use crate::error::{Error, Result};
use crate::format::{Body, EXTENT_FLAG_DATA, Key, item_type, objectid};
use crate::tree::child_ref;
use std::collections::BTreeMap;

/// What one user tree holds alone, from [`Engine::exclusive_usage`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of the nodes that only this tree reaches (`nodesize` each).
    pub exclusive_node_bytes: u64,
    /// Allocated bytes of the data extents that only this tree's leaves name.
    pub exclusive_data_bytes: u64,
    /// Nodes of the tree the walk read: exactly its exclusive nodes.
    pub nodes_read: u64,
}

impl Engine {
    /// The bytes that only `tree` holds: the nodes no other tree (or pending drop)
    /// reaches, and the data extents that only those nodes' leaves name. Deleting the
    /// tree, once its drop has finished, frees exactly these.
    ///
    /// The walk reads only the exclusive nodes: it looks up the reference count of each
    /// child of an exclusive branch and enters only those counted once. So a fresh
    /// clone costs one count lookup, and a clone that differs from its source in `n`
    /// keys about `n * height` nodes on either side. Each extent the exclusive leaves
    /// name costs a lookup in the extent tree. Without a [`crate::DataRefs`] hook,
    /// leaves are opaque and the data bytes are 0.
    ///
    /// Blocks still held by a dropped tree whose drop is pending are not exclusive to
    /// the trees that share them: deleting those trees would not free them yet. They
    /// become exclusive as the commits release the drop ([`Engine::finish_drops`]).
    ///
    /// Works in the running transaction and on committed trees alike. A dropped or
    /// unknown tree is [`Error::NoSuchTree`].
    pub fn exclusive_usage(&self, tree: u64) -> Result<Usage> {
        self.check_usable()?;
        let root = ChildRef::root(self.user_root(tree)?);
        let ns = u64::from(self.sb.nodesize);
        let mut usage = Usage::default();
        // Items of exclusive leaves naming each data extent.
        let mut named: BTreeMap<u64, u64> = BTreeMap::new();
        let mut todo = Vec::new();
        if self.only_reference(tree, &root)? {
            todo.push(root);
        }
        while let Some(at) = todo.pop() {
            let node = self.read_node(tree, &at)?;
            usage.nodes_read += 1;
            usage.exclusive_node_bytes += ns;
            match &node.body {
                Body::Branch(ptrs) => {
                    for i in 0..ptrs.len() {
                        let child = child_ref(node.level, ptrs, i, at.hi);
                        if self.only_reference(tree, &child)? {
                            todo.push(child);
                        }
                    }
                }
                Body::Leaf(leaf) => {
                    let Some(hook) = &self.cfg.data_refs else {
                        continue;
                    };
                    for (key, value) in leaf.iter() {
                        let found = hook.data_ref(tree, &key, value).map_err(|reason| {
                            Error::CorruptItem {
                                tree,
                                key: key.to_string(),
                                reason,
                            }
                        })?;
                        if let Some((bytenr, _)) = found {
                            *named.entry(bytenr).or_default() += 1;
                        }
                    }
                }
            }
        }
        for (bytenr, n) in named {
            let refs = self.refcount(bytenr)?;
            if n > refs {
                return Err(Error::CorruptItem {
                    tree: objectid::EXTENT_TREE,
                    key: Key::new(bytenr, item_type::EXTENT_ITEM, 0).to_string(),
                    reason: format!(
                        "tree {tree} alone names the data extent {n} times, \
                         but its reference count is {refs}"
                    ),
                });
            }
            if n == refs {
                usage.exclusive_data_bytes += self.data_extent_len(bytenr)?;
            }
        }
        Ok(usage)
    }

    /// True if the pointer being followed is the node's only reference. A node that a
    /// tree reaches has at least that reference: a count of 0 is corruption.
    fn only_reference(&self, tree: u64, at: &ChildRef) -> Result<bool> {
        match self.refcount(at.bytenr)? {
            0 => Err(Error::CorruptNode {
                block: at.bytenr,
                tree,
                reason: "the node is reachable but its reference count is 0".into(),
            }),
            refs => Ok(refs == 1),
        }
    }

    /// The allocated length of a data extent that has references: its extent item's,
    /// or, for one allocated in this transaction, the length it was allocated with.
    fn data_extent_len(&self, bytenr: u64) -> Result<u64> {
        let (len, flags) = match self.extent_lookup(bytenr)? {
            Some((key, item)) => (key.offset, item.flags),
            None => match self.refs.get(&bytenr) {
                Some(d) => (d.len, d.flags),
                None => (0, 0),
            },
        };
        if flags != EXTENT_FLAG_DATA {
            return Err(Error::CorruptItem {
                tree: objectid::EXTENT_TREE,
                key: Key::new(bytenr, item_type::EXTENT_ITEM, len).to_string(),
                reason: format!("named as a data extent but has flags {flags:#x}"),
            });
        }
        Ok(len)
    }
}
