//! Delete: shadow the path, remove the item, and rebalance nodes that fall below a
//! quarter full by merging with, or borrowing from, a sibling.

use super::{child_index, child_ref, split_point};
use crate::engine::{ChildRef, Engine};
use crate::error::Result;
use crate::format::{BRANCH_PTR_SIZE, Body, Key, Ptr, RootPtr};

impl Engine {
    /// Deletes from any tree. The caller has checked that the key exists.
    pub(crate) fn tree_delete(&mut self, tree: u64, key: Key) -> Result<()> {
        let root = self.root(tree)?;
        let mut bytenr = self.delete_rec(tree, &ChildRef::root(root), key)?;
        let mut level = root.level;
        // A branch root with one child hands the root over to that child.
        loop {
            let only_child = match self.dirty.get(&bytenr).map(|n| &n.body) {
                Some(Body::Branch(ptrs)) if ptrs.len() == 1 => ptrs[0],
                _ => break,
            };
            self.free_node(bytenr);
            let child = ChildRef {
                bytenr: only_child.bytenr,
                generation: only_child.generation,
                level: level - 1,
                lo: None,
                hi: None,
            };
            bytenr = self.cow(tree, &child)?;
            level -= 1;
        }
        self.set_root(
            tree,
            RootPtr {
                bytenr,
                generation: self.generation,
                level,
            },
        );
        Ok(())
    }

    fn delete_rec(&mut self, tree: u64, at: &ChildRef, key: Key) -> Result<u64> {
        let b = self.cow(tree, at)?;
        let node = self.dirty_mut(b)?;
        let level = node.level;
        let descend = match &mut node.body {
            Body::Leaf(leaf) => {
                leaf.remove(&key);
                None
            }
            Body::Branch(ptrs) => {
                let i = child_index(ptrs, &key);
                Some((i, child_ref(level, ptrs, i, at.hi)))
            }
        };
        let Some((i, child)) = descend else {
            return Ok(b);
        };
        let nb = self.delete_rec(tree, &child, key)?;
        let txn_gen = self.generation;
        let first = self.dirty.get(&nb).and_then(|n| n.first_key());
        let underfull = self
            .dirty
            .get(&nb)
            .is_some_and(|n| n.used_bytes() < self.sb.nodesize as usize / 4);
        let node = self.dirty_mut(b)?;
        if let Body::Branch(ptrs) = &mut node.body {
            ptrs[i].bytenr = nb;
            ptrs[i].generation = txn_gen;
            if let Some(k) = first {
                ptrs[i].key = k;
            }
            if underfull && ptrs.len() > 1 {
                self.rebalance(tree, b, i, at.hi)?;
            }
        }
        Ok(b)
    }

    /// Merges child `i` of branch `b` with a sibling, or evens the two out if together
    /// they do not fit in one node.
    fn rebalance(&mut self, tree: u64, b: u64, i: usize, hi: Option<Key>) -> Result<()> {
        let not_dirty = || crate::Error::Poisoned("internal: rebalanced node is not dirty".into());
        let (sib_ref, l, r, own) = {
            let parent = self.dirty.get(&b).ok_or_else(not_dirty)?;
            let Body::Branch(ptrs) = &parent.body else {
                return Ok(());
            };
            let (l, r) = if i + 1 < ptrs.len() {
                (i, i + 1)
            } else {
                (i - 1, i)
            };
            let sibling = if l == i { r } else { l };
            (
                child_ref(parent.level, ptrs, sibling, hi),
                l,
                r,
                ptrs[i].bytenr,
            )
        };
        let sib = self.cow(tree, &sib_ref)?;
        let (lb, rb) = if l == i { (own, sib) } else { (sib, own) };
        let right = (**self.dirty.get(&rb).ok_or_else(not_dirty)?).clone();
        let ns = self.sb.nodesize as usize;
        let txn_gen = self.generation;
        let left = self.dirty_mut(lb)?;
        let fits = left.used_bytes() + right.used_bytes() - crate::format::NODE_HEADER_SIZE <= ns;
        let mut right_body = None;
        match (&mut left.body, &right.body) {
            (Body::Leaf(li), Body::Leaf(ri)) => {
                li.append(ri);
                if !fits {
                    let at = split_point(&li.item_sizes());
                    right_body = Some(Body::Leaf(li.split_off(at)));
                }
            }
            (Body::Branch(lp), Body::Branch(rp)) => {
                lp.extend(rp.iter().copied());
                if !fits {
                    let sizes = vec![BRANCH_PTR_SIZE; lp.len()];
                    right_body = Some(Body::Branch(lp.split_off(split_point(&sizes))));
                }
            }
            _ => {
                return Err(crate::Error::CorruptNode {
                    block: rb,
                    tree,
                    reason: "sibling nodes at one level disagree on being leaves".into(),
                });
            }
        }
        let left_key = left.first_key();
        let right_key = match right_body {
            Some(body) => {
                let rn = self.dirty_mut(rb)?;
                rn.body = body;
                rn.first_key()
            }
            None => {
                self.free_node(rb);
                None
            }
        };
        let parent = self.dirty_mut(b)?;
        if let Body::Branch(ptrs) = &mut parent.body {
            ptrs[l] = Ptr {
                key: left_key.unwrap_or(ptrs[l].key),
                bytenr: lb,
                generation: txn_gen,
            };
            match right_key {
                Some(k) => {
                    ptrs[r] = Ptr {
                        key: k,
                        bytenr: rb,
                        generation: txn_gen,
                    }
                }
                None => {
                    ptrs.remove(r);
                }
            }
        }
        Ok(())
    }
}
