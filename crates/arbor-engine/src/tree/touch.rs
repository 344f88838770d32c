//! Shadowing a root-to-leaf path without changing any key, so that a caller can then
//! edit the leaf in place (the commit's batched extent tree updates do).

use super::{child_index, child_ref};
use crate::engine::{ChildRef, Engine};
use crate::error::Result;
use crate::format::{Body, Key, RootPtr};

impl Engine {
    /// Makes every node on the path to the leaf that holds (or would hold) `key`
    /// writable, and returns the leaf's address and the upper bound of its key range
    /// (`None` for the rightmost leaf).
    pub(crate) fn tree_touch(&mut self, tree: u64, key: Key) -> Result<(u64, Option<Key>)> {
        let root = self.root(tree)?;
        let (bytenr, leaf, hi) = self.touch_rec(tree, &ChildRef::root(root), key)?;
        let generation = self.generation;
        self.set_root(
            tree,
            RootPtr {
                bytenr,
                generation,
                level: root.level,
            },
        );
        Ok((leaf, hi))
    }

    fn touch_rec(&mut self, tree: u64, at: &ChildRef, key: Key) -> Result<(u64, u64, Option<Key>)> {
        let b = self.cow(tree, at)?;
        let child = match self.dirty.get(&b).map(|n| (n.level, &n.body)) {
            Some((level, Body::Branch(ptrs))) => {
                let i = child_index(ptrs, &key);
                (i, child_ref(level, ptrs, i, at.hi))
            }
            _ => return Ok((b, b, at.hi)),
        };
        let (i, child) = child;
        let (nb, leaf, hi) = self.touch_rec(tree, &child, key)?;
        let generation = self.generation;
        if let Body::Branch(ptrs) = &mut self.dirty_mut(b)?.body {
            ptrs[i].bytenr = nb;
            ptrs[i].generation = generation;
        }
        Ok((b, leaf, hi))
    }
}
