//! Each user tree's exclusive bytes, kept current at every commit instead of walked on
//! request (`docs/format.md`, "Exclusive usage").
//!
//! At commit, every block whose ownership may have changed is a candidate: each node
//! whose reference count changed, each data extent whose count was touched at all, and
//! the old and new roots of every tree whose root pointer changed. For each candidate its owner is found in the committed state and in
//! the new one: the tree that holds it alone, or none. Where they differ, the block moves
//! between the two trees' counters, together with its closure: the blocks below it that
//! are counted once and are not candidates themselves (their owner follows it).
//!
//! A node's owner: a count of 1 means one parent, found by searching each tree (and each
//! pending drop) for the node's first key at its level; the tree owns the node if every
//! node on that path is counted once. A data extent's owner: every item naming it is
//! found from its anchors (the keys where runs of items naming it start, see
//! [`crate::DataRefs::anchor`]), which the extent tree keeps; a tree owns the extent if
//! all those items, as many as its count, lie in leaves that tree owns.

mod data;
mod nodes;

use crate::engine::{ChildRef, Engine};
use crate::error::Result;
use crate::format::{DropItem, EXTENT_FLAG_DATA, Key, Node, RootPtr, objectid};
use nodes::Moved;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counters and the committed state they describe.
#[derive(Debug, Default)]
pub(crate) struct Accounting {
    /// Exclusive bytes of every user tree as of the last commit.
    pub excl: BTreeMap<u64, u64>,
    /// User trees' roots as of the last commit.
    pub roots: BTreeMap<u64, RootPtr>,
    /// The drop queue as of the last commit.
    pub drops: BTreeMap<u64, DropItem>,
    /// Anchors learned in this transaction that the extent tree does not have yet.
    pub new_anchors: BTreeMap<u64, BTreeSet<Key>>,
    /// Nodes the last commit's accounting read (the cost it should keep low).
    pub reads: AtomicU64,
    /// A tree was created, cloned or dropped in this transaction.
    pub trees_changed: bool,
    /// Data extents whose count this transaction changed, even if back to where it
    /// was, with their lengths.
    pub touched_data: BTreeMap<u64, u64>,
    /// Set once the state the counters describe is known (after mkfs's first commit,
    /// which writes only the engine's own trees, or at open).
    pub active: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Absent,
    Shared,
    Tree(u64),
}

/// The committed state or the new one; also a side of an owner pair `(old, new)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Old,
    New,
}

impl State {
    fn of(self, pair: &(Owner, Owner)) -> Owner {
        match self {
            State::Old => pair.0,
            State::New => pair.1,
        }
    }

    fn other(self) -> State {
        match self {
            State::Old => State::New,
            State::New => State::Old,
        }
    }
}

impl Engine {
    fn acct_count(&self, s: State, bytenr: u64) -> Result<u64> {
        match s {
            State::New => self.refcount(bytenr),
            State::Old => {
                if self.dirty.contains_key(&bytenr) {
                    return Ok(0);
                }
                Ok(self.extent_lookup(bytenr)?.map_or(0, |(_, i)| i.refs))
            }
        }
    }

    fn acct_roots(&self, s: State) -> Vec<(u64, RootPtr)> {
        match s {
            State::Old => self.acct.roots.iter().map(|(t, r)| (*t, *r)).collect(),
            State::New => self
                .roots
                .iter()
                .filter(|(t, _)| **t >= objectid::FIRST_USER_TREE)
                .map(|(t, r)| (*t, *r))
                .collect(),
        }
    }

    fn acct_drops(&self, s: State) -> Vec<(u64, DropItem)> {
        match s {
            State::Old => self.acct.drops.iter().map(|(b, d)| (*b, *d)).collect(),
            State::New => self.drops.iter().map(|(b, d)| (*b, *d)).collect(),
        }
    }

    /// Takes the loaded state as the committed one (at open and after mkfs).
    pub(crate) fn acct_start(&mut self) {
        self.acct.roots = self.acct_roots(State::New).into_iter().collect();
        self.acct.drops = self.drops.clone();
        self.acct.new_anchors.clear();
        self.acct.touched_data.clear();
        self.acct.active = true;
    }

    /// The bytes only `tree` holds, as of the last commit: kept by every commit, so
    /// asking costs nothing. `None` for a tree that did not exist then.
    pub fn exclusive_bytes(&self, tree: u64) -> Option<u64> {
        self.acct.excl.get(&tree).copied()
    }

    /// Nodes the last commit read to keep the counters: about the copied paths and the
    /// searches for their holders, not the trees' sizes.
    pub fn accounting_nodes_read(&self) -> u64 {
        self.acct.reads.load(Ordering::Relaxed)
    }

    /// A node read for the accounting, counted.
    fn acct_read(&self, at: &ChildRef) -> Result<Arc<Node>> {
        self.acct.reads.fetch_add(1, Ordering::Relaxed);
        self.read_node(objectid::DROP_QUEUE, at)
    }

    /// Moves bytes between counters for this transaction's changes (at commit, after
    /// the drop step, before the extent tree is updated).
    pub(crate) fn acct_commit(&mut self) -> Result<()> {
        if !self.acct.active {
            return Ok(());
        }
        self.acct.reads.store(0, Ordering::Relaxed);
        let ns = u64::from(self.sb.nodesize);
        let mut node_cands: BTreeSet<u64> = BTreeSet::new();
        // Every data extent an item was added or removed for, even if the counts
        // cancel out: an item may have left one tree for another.
        let mut data_cands = std::mem::take(&mut self.acct.touched_data);
        for (b, d) in &self.refs {
            if d.flags == EXTENT_FLAG_DATA {
                data_cands.entry(*b).or_insert(d.len);
            } else {
                node_cands.insert(*b);
            }
        }
        let old_roots = self.acct.roots.clone();
        let new_roots: BTreeMap<u64, RootPtr> = self.acct_roots(State::New).into_iter().collect();
        for (t, r) in &old_roots {
            if new_roots.get(t).map(|n| n.bytenr) != Some(r.bytenr) {
                node_cands.insert(r.bytenr);
            }
        }
        let mut changed = BTreeSet::new();
        for (t, r) in &new_roots {
            if old_roots.get(t).map(|o| o.bytenr) != Some(r.bytenr) {
                node_cands.insert(r.bytenr);
                changed.insert(*t);
            }
        }
        // Trees whose new root is shared hold nothing alone, and dropped trees have no
        // counter: what leaves them needs no counting.
        let mut reset: BTreeSet<u64> = old_roots
            .keys()
            .filter(|t| !new_roots.contains_key(t))
            .copied()
            .collect();
        for (t, r) in &new_roots {
            if self.refcount(r.bytenr)? >= 2 {
                reset.insert(*t);
            }
        }
        let mut delta: BTreeMap<u64, i128> = BTreeMap::new();
        let mut freed = Vec::new();
        let (infos, listed_by, contents) = self.candidate_infos(&node_cands)?;
        // Parents before children: a candidate counted once whose parent is a candidate
        // that exists in that state has that parent's owner, without a search.
        let mut owners: HashMap<u64, (Owner, Owner)> = HashMap::new();
        for info in &infos {
            let parent_owner = |side: State| {
                listed_by
                    .get(&info.bytenr)
                    .into_iter()
                    .flatten()
                    .filter_map(|p| owners.get(p).map(|o| side.of(o)))
                    .find(|o| *o != Owner::Absent)
            };
            let hints = (parent_owner(State::Old), parent_owner(State::New));
            let o = self.node_owner(State::Old, info, hints.0)?;
            let n = self.node_owner(State::New, info, hints.1)?;
            owners.insert(info.bytenr, (o, n));
        }
        let moved = Moved {
            cands: &node_cands,
            listed_by: &listed_by,
            owners: &owners,
            contents: &contents,
        };
        // Unless a tree was created, cloned or dropped in this transaction (a clone
        // reaches its source's nodes and can free them by copying them; a dropped
        // clone's drop can free them), a freed node that a live tree held alone was
        // copied, split or merged within that tree: what it pointed to (its children,
        // its items' extents) is now under new nodes of the same tree, or is a
        // candidate itself, so nothing below it changes owner. A new node's children
        // come from freed nodes, so they change owner only if some freed node was not
        // such a node: shared, or held by a tree that no longer holds anything alone.
        let within_trees = !self.acct.trees_changed;
        let freed_elsewhere = owners.values().any(|(o, n)| {
            *n == Owner::Absent
                && match o {
                    Owner::Absent => false,
                    Owner::Shared => true,
                    Owner::Tree(t) => reset.contains(t),
                }
        });
        for info in &infos {
            let (o, n) = owners
                .get(&info.bytenr)
                .copied()
                .unwrap_or((Owner::Absent, Owner::Absent));
            if o == n {
                continue;
            }
            if let Owner::Tree(t) = o
                && !reset.contains(&t)
            {
                let c = match n {
                    Owner::Absent if within_trees => 0,
                    _ => self.closure(State::Old, info, o, &moved, &mut data_cands)?,
                };
                *delta.entry(t).or_default() -= i128::from(ns.saturating_mul(c.saturating_add(1)));
            }
            if let Owner::Tree(t) = n {
                let c = match o {
                    Owner::Absent if within_trees && !freed_elsewhere => 0,
                    _ => self.closure(State::New, info, n, &moved, &mut data_cands)?,
                };
                *delta.entry(t).or_default() += i128::from(ns.saturating_mul(c.saturating_add(1)));
            }
        }
        for (&e, &len) in &data_cands {
            let mut anchors = None;
            let o = self.data_owner(State::Old, e, len, &changed, &mut anchors)?;
            let n = self.data_owner(State::New, e, len, &changed, &mut anchors)?;
            if o == n {
                continue;
            }
            if let Owner::Tree(t) = o
                && !reset.contains(&t)
            {
                *delta.entry(t).or_default() -= i128::from(len);
            }
            if let Owner::Tree(t) = n {
                *delta.entry(t).or_default() += i128::from(len);
            }
            if n == Owner::Absent {
                freed.push(e);
            }
        }
        let mut excl = BTreeMap::new();
        for t in new_roots.keys() {
            let before = i128::from(self.acct.excl.get(t).copied().unwrap_or(0));
            let after = if reset.contains(t) {
                0
            } else {
                before + delta.get(t).copied().unwrap_or(0)
            };
            // Only a damaged counter (read from a damaged image) can leave the range; it
            // must not stop writes. The checker reports it.
            let clamped = u64::try_from(after.max(0)).unwrap_or(u64::MAX);
            if i128::from(clamped) != after {
                tracing::warn!(
                    tree = t,
                    "exclusive bytes would be {after}; kept as {clamped}"
                );
            }
            excl.insert(*t, clamped);
        }
        for (t, c) in &excl {
            if self.acct.excl.get(t) != Some(c) {
                self.dirty_roots.insert(*t);
            }
        }
        self.acct.excl = excl;
        self.acct.trees_changed = false;
        self.acct.roots = new_roots;
        self.acct.drops = self.drops.clone();
        self.store_anchors(&freed)
    }
}

fn drop_ref(b: u64, d: &DropItem) -> ChildRef {
    ChildRef {
        bytenr: b,
        generation: d.generation,
        level: d.level,
        lo: None,
        hi: None,
    }
}
