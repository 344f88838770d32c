//! Dropping trees in steps. A dropped tree's root joins a persistent queue of pending
//! reference drops (in the root tree). Each commit releases a bounded number of nodes:
//! a node whose count reaches zero is freed and its children lose one reference each;
//! a node that something else still references just loses the dropped references, and
//! the walk stops there: that subtree is still shared.
//!
//! Leaves are released without being read, and the children of a freed branch that
//! are leaves are released at once rather than queued, so the queue holds branches
//! only: a small fraction of the tree.

use crate::engine::{ChildRef, Engine};
use crate::error::{Error, Result};
use crate::format::{Body, EXTENT_FLAG_TREE_BLOCK, Key, item_type, objectid};

/// Nodes the drop step keeps free beyond the commit's own reserve.
const DROP_MARGIN_NODES: u64 = 8;

impl Engine {
    /// Releases up to `budget` nodes. Returns how many were processed. Stops early when
    /// space is too short to record the changes; later commits continue.
    pub(crate) fn drop_step(&mut self, budget: usize) -> Result<usize> {
        let mut done = 0;
        while done < budget && self.ensure_space(DROP_MARGIN_NODES).is_ok() {
            let Some((&bytenr, &item)) = self.drops.iter().next() else {
                break;
            };
            self.drops.remove(&bytenr);
            self.drops_dirty.insert(bytenr);
            let children = self.release(bytenr, item.generation, item.level, item.count)?;
            done += 1;
            for (child, generation) in children {
                if item.level == 1 && done < budget {
                    // Children of a level-1 node are leaves: release them now, while
                    // the budget lasts.
                    self.release(child, generation, 0, 1)?;
                    done += 1;
                } else {
                    self.enqueue_drop(child, generation, item.level - 1, 1)?;
                }
            }
        }
        Ok(done)
    }

    /// Drops `count` references to a node. If that was all of them, the node is freed
    /// and its children (address, generation) are returned: each has lost a reference.
    fn release(
        &mut self,
        bytenr: u64,
        generation: u64,
        level: u8,
        count: u32,
    ) -> Result<Vec<(u64, u64)>> {
        let rc = self.refcount(bytenr)?;
        let count = u64::from(count);
        let ns = u64::from(self.sb.nodesize);
        if rc < count {
            return Err(Error::CorruptItem {
                tree: objectid::EXTENT_TREE,
                key: Key::new(bytenr, item_type::EXTENT_ITEM, ns).to_string(),
                reason: format!("{count} references are being dropped but only {rc} exist"),
            });
        }
        if rc > count {
            self.add_ref(bytenr, ns, EXTENT_FLAG_TREE_BLOCK, -(count as i64));
            return Ok(Vec::new());
        }
        let mut children = Vec::new();
        // A freed branch's children lose a reference; so do the data extents a freed
        // leaf names (only read when something defines data references).
        if level > 0 || self.cfg.data_refs.is_some() {
            let at = ChildRef {
                bytenr,
                generation,
                level,
                lo: None,
                hi: None,
            };
            match &self.read_node(objectid::DROP_QUEUE, &at)?.body {
                Body::Branch(ptrs) => {
                    children.extend(ptrs.iter().map(|p| (p.bytenr, p.generation)));
                }
                Body::Leaf(leaf) => {
                    let items: Vec<(Key, Vec<u8>)> =
                        leaf.iter().map(|(k, v)| (k, v.to_vec())).collect();
                    self.leaf_data_refs(objectid::DROP_QUEUE, &items, -1)?;
                }
            }
        }
        self.add_ref(bytenr, ns, EXTENT_FLAG_TREE_BLOCK, 1 - count as i64);
        self.free_node(bytenr);
        Ok(children)
    }

    /// Commits until every dropped tree is fully released.
    pub fn finish_drops(&mut self) -> Result<()> {
        while !self.drops.is_empty() {
            let before = self.drops.len();
            self.commit()?;
            if self.drops.len() >= before && self.ensure_space(DROP_MARGIN_NODES).is_err() {
                let free = self.space().free_bytes;
                return Err(Error::NoSpace {
                    needed: DROP_MARGIN_NODES * u64::from(self.sb.nodesize),
                    free,
                });
            }
        }
        Ok(())
    }
}
