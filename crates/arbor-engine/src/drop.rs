//! Dropping trees in steps. A dropped tree's root joins a persistent queue of pending
//! reference drops (in the root tree). Each commit releases a bounded number of them:
//! a node whose count reaches zero is freed and its children join the queue; a node
//! that something else still references just loses the dropped references, and the
//! walk stops there: that subtree is still shared.

use crate::engine::{ChildRef, Engine};
use crate::error::{Error, Result};
use crate::format::{Body, Key, item_type, objectid};

impl Engine {
    /// Releases up to `budget` queued nodes. Returns how many were processed.
    pub(crate) fn drop_step(&mut self, budget: usize) -> Result<usize> {
        let mut done = 0;
        while done < budget {
            let Some((&bytenr, &item)) = self.drops.iter().next() else {
                break;
            };
            self.drops.remove(&bytenr);
            self.drops_dirty.insert(bytenr);
            let rc = self.refcount(bytenr)?;
            let count = u64::from(item.count);
            if rc < count {
                return Err(Error::CorruptItem {
                    tree: objectid::EXTENT_TREE,
                    key: Key::new(bytenr, item_type::EXTENT_ITEM, 0).to_string(),
                    reason: format!("{count} references queued for drop but only {rc} exist"),
                });
            }
            if rc == count {
                if item.level > 0 {
                    let at = ChildRef {
                        bytenr,
                        generation: item.generation,
                        level: item.level,
                        lo: None,
                        hi: None,
                    };
                    let node = self.read_node(objectid::DROP_QUEUE, &at)?;
                    if let Body::Branch(ptrs) = &node.body {
                        for p in ptrs {
                            self.enqueue_drop(p.bytenr, p.generation, item.level - 1, 1);
                        }
                    }
                }
                let ns = u64::from(self.sb.nodesize);
                self.add_ref(
                    bytenr,
                    ns,
                    crate::format::EXTENT_FLAG_TREE_BLOCK,
                    1 - count as i64,
                );
                self.free_node(bytenr);
            } else {
                let ns = u64::from(self.sb.nodesize);
                self.add_ref(
                    bytenr,
                    ns,
                    crate::format::EXTENT_FLAG_TREE_BLOCK,
                    -(count as i64),
                );
            }
            done += 1;
        }
        Ok(done)
    }

    /// Commits until every dropped tree is fully released.
    pub fn finish_drops(&mut self) -> Result<()> {
        while !self.drops.is_empty() {
            self.commit()?;
        }
        Ok(())
    }
}
