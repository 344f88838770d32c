//! Insert: shadow the path from the root, put the item in its leaf, and split nodes
//! that overflow on the way back up.

use super::{child_index, child_ref, split_point};
use crate::engine::{ChildRef, Engine};
use crate::error::Result;
use crate::format::{BRANCH_PTR_SIZE, Body, Key, Node, Ptr, RootPtr};
use std::sync::Arc;

/// The result of inserting into a subtree: its new address, and the right half if it
/// split (first key, address).
type Outcome = (u64, Option<(Key, u64)>);

impl Engine {
    /// Inserts into any tree, the root and extent trees included. No space check.
    pub(crate) fn tree_insert(&mut self, tree: u64, key: Key, value: &[u8]) -> Result<()> {
        let root = self.root(tree)?;
        let (bytenr, split) = self.insert_rec(tree, &ChildRef::root(root), key, value)?;
        let mut new_root = RootPtr {
            bytenr,
            generation: self.generation,
            level: root.level,
        };
        if let Some((right_key, right)) = split {
            let left_key = self.dirty_first_key(bytenr)?;
            let txn_gen = self.generation;
            let top = self.alloc_node()?;
            let body = Body::Branch(vec![
                Ptr {
                    key: left_key,
                    bytenr,
                    generation: txn_gen,
                },
                Ptr {
                    key: right_key,
                    bytenr: right,
                    generation: txn_gen,
                },
            ]);
            let level = root.level + 1;
            let node = Node {
                bytenr: top,
                generation: txn_gen,
                owner: tree,
                level,
                body,
            };
            self.dirty.insert(top, Arc::new(node));
            new_root = RootPtr {
                bytenr: top,
                generation: txn_gen,
                level,
            };
        }
        self.set_root(tree, new_root);
        Ok(())
    }

    pub(crate) fn dirty_first_key(&self, bytenr: u64) -> Result<Key> {
        self.dirty
            .get(&bytenr)
            .and_then(|n| n.first_key())
            .ok_or_else(|| {
                crate::Error::Poisoned(format!("internal: dirty node {bytenr} is missing or empty"))
            })
    }

    fn insert_rec(&mut self, tree: u64, at: &ChildRef, key: Key, value: &[u8]) -> Result<Outcome> {
        let b = self.cow(tree, at)?;
        let node = self.dirty_mut(b)?;
        let level = node.level;
        let descend = match &mut node.body {
            Body::Leaf(leaf) => {
                leaf.upsert(key, value);
                None
            }
            Body::Branch(ptrs) => {
                let i = child_index(ptrs, &key);
                Some((i, child_ref(level, ptrs, i, at.hi)))
            }
        };
        if let Some((i, child)) = descend {
            let (nb, split) = self.insert_rec(tree, &child, key, value)?;
            let first = self.dirty_first_key(nb)?;
            let txn_gen = self.generation;
            let node = self.dirty_mut(b)?;
            if let Body::Branch(ptrs) = &mut node.body {
                ptrs[i] = Ptr {
                    key: first,
                    bytenr: nb,
                    generation: txn_gen,
                };
                if let Some((k, right)) = split {
                    ptrs.insert(
                        i + 1,
                        Ptr {
                            key: k,
                            bytenr: right,
                            generation: txn_gen,
                        },
                    );
                }
            }
        }
        let split = self.split_if_full(tree, b)?;
        Ok((b, split))
    }

    /// Splits the dirty node `b` in two if it no longer fits in a node.
    fn split_if_full(&mut self, tree: u64, b: u64) -> Result<Option<(Key, u64)>> {
        let ns = self.sb.nodesize as usize;
        let node = self.dirty.get(&b).map(|n| n.used_bytes()).unwrap_or(0);
        if node <= ns {
            return Ok(None);
        }
        let right_addr = self.alloc_node()?;
        let txn_gen = self.generation;
        let node = self.dirty_mut(b)?;
        let right_body = match &mut node.body {
            Body::Leaf(leaf) => Body::Leaf(leaf.split_off(split_point(&leaf.item_sizes()))),
            Body::Branch(ptrs) => {
                let sizes = vec![BRANCH_PTR_SIZE; ptrs.len()];
                Body::Branch(ptrs.split_off(split_point(&sizes)))
            }
        };
        let right = Node {
            bytenr: right_addr,
            generation: txn_gen,
            owner: tree,
            level: node.level,
            body: right_body,
        };
        let right_key = right.first_key();
        self.dirty.insert(right_addr, Arc::new(right));
        let right_key =
            right_key.ok_or_else(|| crate::Error::Poisoned("internal: empty split".into()))?;
        Ok(Some((right_key, right_addr)))
    }
}
