//! Point lookups and ordered range scans.

use super::{child_index, child_ref};
use crate::engine::{ChildRef, Engine};
use crate::error::Result;
use crate::format::{Body, Key, Node, RootPtr};
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

impl Engine {
    /// Looks `key` up in any tree.
    pub(crate) fn tree_get(&self, tree: u64, root: RootPtr, key: Key) -> Result<Option<Vec<u8>>> {
        let mut at = ChildRef::root(root);
        loop {
            let node = self.read_node(tree, &at)?;
            match &node.body {
                Body::Leaf(leaf) => return Ok(leaf.get(&key).map(<[u8]>::to_vec)),
                Body::Branch(ptrs) => {
                    let i = child_index(ptrs, &key);
                    at = child_ref(node.level, ptrs, i, at.hi);
                }
            }
        }
    }

    /// Items of `tree` within `bounds`, in key order.
    pub fn range<R: RangeBounds<Key>>(&self, tree: u64, bounds: R) -> Result<Range<'_>> {
        self.check_usable()?;
        let root = self.root(tree)?;
        let start = match bounds.start_bound() {
            Bound::Included(k) => Some(*k),
            Bound::Excluded(k) => k.successor(),
            Bound::Unbounded => Some(Key::MIN),
        };
        let end = bounds.end_bound().cloned();
        let mut range = Range {
            engine: self,
            tree,
            stack: Vec::new(),
            leaf: None,
            idx: 0,
            end,
            done: false,
        };
        match start {
            Some(start) => range.seek(ChildRef::root(root), start)?,
            None => range.done = true,
        }
        Ok(range)
    }
}

/// An ordered scan over part of a tree. Each item is read from the state of the
/// running transaction at the time of the call.
#[derive(Debug)]
pub struct Range<'a> {
    engine: &'a Engine,
    tree: u64,
    /// Ancestors of the current leaf: node, index of the child being visited, and the
    /// node's upper key bound.
    stack: Vec<(Arc<Node>, usize, Option<Key>)>,
    leaf: Option<Arc<Node>>,
    idx: usize,
    end: Bound<Key>,
    done: bool,
}

impl Range<'_> {
    fn seek(&mut self, mut at: ChildRef, key: Key) -> Result<()> {
        loop {
            let node = self.engine.read_node(self.tree, &at)?;
            match &node.body {
                Body::Leaf(items) => {
                    self.idx = items.lower_bound(&key);
                    self.leaf = Some(node);
                    return Ok(());
                }
                Body::Branch(ptrs) => {
                    let i = child_index(ptrs, &key);
                    let next = child_ref(node.level, ptrs, i, at.hi);
                    self.stack.push((node.clone(), i, at.hi));
                    at = next;
                }
            }
        }
    }

    /// Moves to the first item of the next leaf; false at the end of the tree.
    fn next_leaf(&mut self) -> Result<bool> {
        while let Some((node, i, hi)) = self.stack.pop() {
            let Body::Branch(ptrs) = &node.body else {
                continue;
            };
            if i + 1 < ptrs.len() {
                let next = child_ref(node.level, ptrs, i + 1, hi);
                self.stack.push((node.clone(), i + 1, hi));
                self.seek(next, Key::MIN)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn step(&mut self) -> Result<Option<(Key, Vec<u8>)>> {
        loop {
            let Some(leaf) = &self.leaf else {
                return Ok(None);
            };
            let Body::Leaf(items) = &leaf.body else {
                return Ok(None);
            };
            if let Some(&k) = items.keys().get(self.idx) {
                let in_range = match self.end {
                    Bound::Included(e) => k <= e,
                    Bound::Excluded(e) => k < e,
                    Bound::Unbounded => true,
                };
                if !in_range {
                    return Ok(None);
                }
                let value = items.value(self.idx).to_vec();
                self.idx += 1;
                return Ok(Some((k, value)));
            }
            if !self.next_leaf()? {
                return Ok(None);
            }
        }
    }
}

impl Iterator for Range<'_> {
    type Item = Result<(Key, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
