//! Comparing two user trees by walking only the parts that differ.
//!
//! Trees share nodes after a clone, and a node reached through equal pointers (same
//! address, same generation) has the same contents in both trees: a node that two
//! trees share is never changed in place, it is copied. So the walk keeps one cursor
//! per tree and merges them in key order, and when both cursors stand on the same
//! child pointer it steps over that subtree on both sides without reading it. The cost
//! follows the size of the change, not the size of the trees.
//!
//! The two trees may have different heights and different split points. Each cursor
//! yields a sequence of *entries*: a subtree not yet read (a child pointer, or the
//! root pointer) or a leaf item. At each step the entry with the smaller first key is
//! dealt with (an item is reported, a subtree is read and replaced by its own entries);
//! when both start at the same key, the subtree at the higher level is read, or both
//! when they are at the same level and differ. This reads no node that both trees
//! reach through the same pointer: a shared node is reached by both cursors at the
//! same point of the merge, since in a B-tree only one node per level can hold a
//! given key.

use crate::engine::{ChildRef, Engine};
use crate::error::Result;
use crate::format::{Body, Key, Node};
use crate::tree::child_ref;
use std::cmp::Ordering;
use std::sync::Arc;

/// One difference between two trees, reported by [`Engine::diff_trees`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change<'a> {
    /// The item's key.
    pub key: Key,
    /// The value in the old tree, or `None` if the key is only in the new one.
    pub old: Option<&'a [u8]>,
    /// The value in the new tree, or `None` if the key is only in the old one.
    pub new: Option<&'a [u8]>,
}

/// What a [`Engine::diff_trees`] walk cost and found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiffStats {
    /// Nodes of the old tree read (from the cache, the running transaction or the
    /// device).
    pub old_nodes_read: u64,
    /// Nodes of the new tree read.
    pub new_nodes_read: u64,
    /// Subtrees both trees share that were skipped without being read (the root
    /// included, when both trees have the same root).
    pub shared_subtrees_skipped: u64,
    /// Changes reported.
    pub changes: u64,
}

impl DiffStats {
    /// Nodes read on both sides.
    pub fn nodes_read(&self) -> u64 {
        self.old_nodes_read + self.new_nodes_read
    }
}

/// The next entry of a cursor.
#[derive(Clone, Copy, Debug)]
enum Head {
    /// A subtree not read yet.
    Subtree(ChildRef),
    /// The item at this index of the leaf on top of the stack.
    Item(Key),
    /// The tree has nothing more.
    End,
}

impl Head {
    /// The smallest key the entry can hold. A pointer's key is the first key of its
    /// subtree; the root has no pointer key and starts at the smallest key.
    fn lo(&self) -> Key {
        match self {
            Head::Subtree(c) => c.lo.unwrap_or(Key::MIN),
            Head::Item(k) => *k,
            Head::End => Key::MAX,
        }
    }

    /// The level of the entry: an item ranks below a leaf.
    fn rank(&self) -> i16 {
        match self {
            Head::Subtree(c) => i16::from(c.level),
            Head::Item(_) | Head::End => -1,
        }
    }
}

/// A node being walked and the index of its next entry.
#[derive(Debug)]
struct Frame {
    node: Arc<Node>,
    idx: usize,
    /// The node's upper key bound, for its children's pointers.
    hi: Option<Key>,
}

/// One side of the walk: the root pointer until it is read, then the path of nodes
/// whose entries are not all consumed. Every frame on the stack has an entry left.
#[derive(Debug)]
struct Cursor {
    tree: u64,
    root: Option<ChildRef>,
    stack: Vec<Frame>,
    nodes_read: u64,
}

impl Cursor {
    fn new(tree: u64, root: ChildRef) -> Self {
        Self {
            tree,
            root: Some(root),
            stack: Vec::new(),
            nodes_read: 0,
        }
    }

    fn head(&self) -> Head {
        if let Some(root) = self.root {
            return Head::Subtree(root);
        }
        let Some(top) = self.stack.last() else {
            return Head::End;
        };
        match &top.node.body {
            Body::Branch(ptrs) => Head::Subtree(child_ref(top.node.level, ptrs, top.idx, top.hi)),
            Body::Leaf(leaf) => match leaf.keys().get(top.idx) {
                Some(&k) => Head::Item(k),
                None => Head::End,
            },
        }
    }

    /// The value of the item at the head, if the head is an item.
    fn value(&self) -> Option<&[u8]> {
        let top = self.stack.last()?;
        match &top.node.body {
            Body::Leaf(leaf) if top.idx < leaf.len() => Some(leaf.value(top.idx)),
            _ => None,
        }
    }

    /// Consumes the head entry without reading it.
    fn skip(&mut self) {
        if self.root.take().is_some() {
            return;
        }
        if let Some(top) = self.stack.last_mut() {
            top.idx += 1;
        }
        self.settle();
    }

    /// Pops the nodes whose entries are all consumed.
    fn settle(&mut self) {
        while self.stack.last().is_some_and(|f| f.idx >= f.node.len()) {
            self.stack.pop();
        }
    }

    /// Consumes the head entry, a subtree, by reading its node: its entries become the
    /// next ones.
    fn descend(&mut self, engine: &Engine, child: &ChildRef) -> Result<()> {
        let node = engine.read_node(self.tree, child)?;
        self.nodes_read += 1;
        self.skip();
        self.stack.push(Frame {
            node,
            idx: 0,
            hi: child.hi,
        });
        self.settle();
        Ok(())
    }
}

/// Which side a change comes from when only one side has the key.
#[derive(Clone, Copy)]
enum Side {
    Old,
    New,
}

impl Engine {
    /// Compares two user trees and calls `f` for every key whose value differs, in
    /// ascending key order: with both values when the key is in both trees with
    /// different values, with only `old` or only `new` when it is in one tree. Keys
    /// whose values are byte-equal are not reported.
    ///
    /// Subtrees that both trees reach through equal child pointers (as left by
    /// [`Engine::clone_tree`] and copy-on-write) are skipped without being read, so
    /// the cost follows the size of the change: comparing a tree with a clone of it
    /// that differs in `n` keys reads about `2 n (height + 1)` nodes, and comparing a
    /// tree with itself or with an unchanged clone reads none. Trees that share nothing
    /// are compared item by item.
    ///
    /// Both trees are read as they stand in the running transaction. An error from `f`
    /// stops the walk and is returned.
    pub fn diff_trees(
        &self,
        old: u64,
        new: u64,
        mut f: impl FnMut(Change<'_>) -> Result<()>,
    ) -> Result<DiffStats> {
        self.check_usable()?;
        let old_root = self.user_root(old)?;
        let new_root = self.user_root(new)?;
        let mut a = Cursor::new(old, ChildRef::root(old_root));
        let mut b = Cursor::new(new, ChildRef::root(new_root));
        let mut stats = DiffStats::default();
        loop {
            let (ha, hb) = (a.head(), b.head());
            match (ha, hb) {
                (Head::End, Head::End) => break,
                (Head::Subtree(x), Head::Subtree(y)) if same_subtree(&x, &y) => {
                    a.skip();
                    b.skip();
                    stats.shared_subtrees_skipped += 1;
                }
                (Head::Item(ka), Head::Item(kb)) if ka == kb => {
                    let (va, vb) = (a.value(), b.value());
                    if va != vb {
                        stats.changes += 1;
                        f(Change {
                            key: ka,
                            old: va,
                            new: vb,
                        })?;
                    }
                    a.skip();
                    b.skip();
                }
                _ => {
                    // Deal with the entry that starts first; on a tie (at least one
                    // is a subtree) read the higher subtree, or both at equal levels.
                    let (take_a, take_b) = match (ha, hb) {
                        (_, Head::End) => (true, false),
                        (Head::End, _) => (false, true),
                        _ => match ha.lo().cmp(&hb.lo()) {
                            Ordering::Less => (true, false),
                            Ordering::Greater => (false, true),
                            Ordering::Equal => match ha.rank().cmp(&hb.rank()) {
                                Ordering::Greater => (true, false),
                                Ordering::Less => (false, true),
                                Ordering::Equal => (true, true),
                            },
                        },
                    };
                    if take_a {
                        self.diff_step(&mut a, ha, Side::Old, &mut stats, &mut f)?;
                    }
                    if take_b {
                        self.diff_step(&mut b, hb, Side::New, &mut stats, &mut f)?;
                    }
                }
            }
        }
        stats.old_nodes_read = a.nodes_read;
        stats.new_nodes_read = b.nodes_read;
        Ok(stats)
    }

    /// Deals with the head `h` of one cursor, which the other side cannot match: a
    /// subtree is read, an item is reported as present on that side only.
    fn diff_step(
        &self,
        c: &mut Cursor,
        h: Head,
        side: Side,
        stats: &mut DiffStats,
        f: &mut impl FnMut(Change<'_>) -> Result<()>,
    ) -> Result<()> {
        match h {
            Head::Subtree(child) => c.descend(self, &child),
            Head::Item(key) => {
                let v = c.value();
                stats.changes += 1;
                f(match side {
                    Side::Old => Change {
                        key,
                        old: v,
                        new: None,
                    },
                    Side::New => Change {
                        key,
                        old: None,
                        new: v,
                    },
                })?;
                c.skip();
                Ok(())
            }
            Head::End => Ok(()),
        }
    }
}

/// Both pointers name the same node for the same key range: the node's contents are
/// fixed, so the two subtrees hold the same items.
fn same_subtree(x: &ChildRef, y: &ChildRef) -> bool {
    x.bytenr == y.bytenr && x.generation == y.generation && x.level == y.level && x.lo == y.lo
}
