//! Nodes: what the candidates are (level, first key, who points to them), who holds
//! each one alone, and which nodes below a candidate change owner with it.

use super::{Owner, State, drop_ref};
use crate::engine::{ChildRef, Engine};
use crate::error::{Error, Result};
use crate::format::{Body, Key, Node, RootPtr, header_claims, objectid};
use crate::tree::{child_index, child_ref};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The candidates' owners and who points to what, for the closures.
pub(super) struct Moved<'a> {
    pub cands: &'a BTreeSet<u64>,
    pub listed_by: &'a Parents,
    pub owners: &'a HashMap<u64, (Owner, Owner)>,
    /// Candidates whose content is at hand.
    pub contents: &'a HashMap<u64, Arc<Node>>,
}

impl Moved<'_> {
    /// The owner, on the side other than `side`, of a node counted once on both sides
    /// whose parent there is a candidate: that parent's owner.
    fn other_side_owner(&self, b: u64, side: State) -> Option<Owner> {
        self.listed_by
            .get(&b)?
            .iter()
            .filter_map(|p| self.owners.get(p).map(|o| side.other().of(o)))
            .find(|o| *o != Owner::Absent)
    }
}

impl Engine {
    /// Level, first key and writer of every candidate node, highest level first, and for
    /// each candidate the candidate branches pointing to it. (Only user trees' nodes
    /// are candidates: the root and extent trees change after the accounting, in the
    /// commit.) A node in memory (written in this transaction, or cached)
    /// says it itself, and its pointers say it of its candidate children, so the
    /// children a shared node's copy gained a reference to are not read; any other
    /// candidate is read by its address.
    pub(super) fn candidate_infos(&self, cands: &BTreeSet<u64>) -> Result<CandidateInfos> {
        let mut known = Vec::new();
        for &b in cands {
            let cached = match self.dirty.get(&b) {
                Some(n) => Some(n.clone()),
                None => self
                    .cache
                    .lock()
                    .map_err(|_| Error::Poisoned("cache lock".into()))?
                    .get(b),
            };
            known.extend(cached);
        }
        let mut k = Known {
            cands,
            infos: HashMap::new(),
            parents: HashMap::new(),
            seen: HashMap::new(),
        };
        for node in &known {
            k.note(node);
        }
        // The rest are read: branches first, whose pointers say who their candidate
        // children's parents are (and what those children are), then what is still
        // unknown; until a round reads nothing.
        loop {
            let branches: Vec<u64> = cands
                .iter()
                .copied()
                .filter(|b| !k.seen.contains_key(b) && k.infos.get(b).is_some_and(|i| i.level > 0))
                .collect();
            let to_read = if branches.is_empty() {
                cands
                    .iter()
                    .copied()
                    .filter(|b| !k.infos.contains_key(b))
                    .collect()
            } else {
                branches
            };
            if to_read.is_empty() {
                break;
            }
            for b in to_read {
                if !k.seen.contains_key(&b) {
                    let node = self.read_node_by_address(b)?;
                    k.note(&node);
                }
            }
        }
        let (infos, parent, contents) = (k.infos, k.parents, k.seen);
        let mut out: Vec<NodeInfo> = infos.into_values().collect();
        out.sort_by(|a, b| b.level.cmp(&a.level).then(a.bytenr.cmp(&b.bytenr)));
        Ok((out, parent, contents))
    }

    /// The owner of a candidate node in state `s`. `hint` is the owner there of a
    /// candidate branch that points to it: if that branch exists in `s` and the node
    /// is counted once, the branch is its only parent.
    pub(super) fn node_owner(
        &self,
        s: State,
        info: &NodeInfo,
        hint: Option<Owner>,
    ) -> Result<Owner> {
        let b = info.bytenr;
        match self.acct_count(s, b)? {
            0 => return Ok(Owner::Absent),
            1 => {}
            _ => return Ok(Owner::Shared),
        }
        if let Some(h @ (Owner::Tree(_) | Owner::Shared)) = hint {
            return Ok(h);
        }
        let roots = self.acct_roots(s);
        if let Some((t, _)) = roots.iter().find(|(_, r)| r.bytenr == b) {
            return Ok(Owner::Tree(*t));
        }
        let drops = self.acct_drops(s);
        if drops.iter().any(|(d, _)| *d == b) {
            return Ok(Owner::Shared);
        }
        let Some(key) = info.first else {
            return Err(Error::CorruptNode {
                block: b,
                tree: info.owner,
                reason: "an empty node that is not a root".into(),
            });
        };
        // The tree that wrote it first: the likeliest holder.
        let mut order: Vec<(u64, RootPtr)> = roots.clone();
        order.sort_by_key(|(t, _)| *t != info.owner);
        for (t, r) in order {
            if let Some(excl) = self.path_to(s, ChildRef::root(r), key, info.level, b)? {
                return Ok(if excl { Owner::Tree(t) } else { Owner::Shared });
            }
        }
        for (d, item) in drops {
            if self
                .path_to(s, drop_ref(d, &item), key, info.level, b)?
                .is_some()
            {
                return Ok(Owner::Shared);
            }
        }
        Err(Error::CorruptNode {
            block: b,
            tree: info.owner,
            reason: format!("counted once ({s:?} state) but no tree or drop reaches it"),
        })
    }

    /// Whether the path from `at` to the parent of node `b` (at `level`, first key
    /// `key`) exists, and if so whether every node on it is counted once.
    pub(super) fn path_to(
        &self,
        s: State,
        mut at: ChildRef,
        key: Key,
        level: u8,
        b: u64,
    ) -> Result<Option<bool>> {
        let mut excl = true;
        loop {
            if at.level <= level {
                return Ok(None);
            }
            if self.acct_count(s, at.bytenr)? != 1 {
                excl = false;
            }
            let node = self.acct_read(&at)?;
            let Body::Branch(ptrs) = &node.body else {
                return Ok(None);
            };
            if ptrs.is_empty() {
                return Ok(None);
            }
            let i = child_index(ptrs, &key);
            let c = child_ref(node.level, ptrs, i, at.hi);
            if node.level == level + 1 {
                return Ok((c.bytenr == b).then_some(excl));
            }
            at = c;
        }
    }

    /// The nodes below candidate `info` that change owner with it, counted, in state
    /// `side`, where it has owner `owner`; the data extents the leaves among them (and
    /// it, if a leaf) name become candidates. A child that is a candidate is left to
    /// its own evaluation. A child counted once whose owner on the other side is the
    /// same (its parent there is another candidate of the same tree, as when a node a
    /// tree held alone was copied, split or merged) keeps its owner and is not entered;
    /// below the children, every node counted once follows.
    pub(super) fn closure(
        &self,
        side: State,
        info: &NodeInfo,
        owner: Owner,
        moved: &Moved<'_>,
        data: &mut BTreeMap<u64, u64>,
    ) -> Result<u64> {
        let mut n = 0;
        let mut todo = vec![(
            ChildRef {
                bytenr: info.bytenr,
                generation: info.generation,
                level: info.level,
                lo: None,
                hi: None,
            },
            true,
        )];
        while let Some((at, top)) = todo.pop() {
            if !top {
                n += 1;
            }
            let node = match moved.contents.get(&at.bytenr) {
                Some(n) if top => Arc::clone(n),
                _ => self.acct_read(&at)?,
            };
            match &node.body {
                Body::Branch(ptrs) => {
                    for i in 0..ptrs.len() {
                        let c = child_ref(node.level, ptrs, i, at.hi);
                        if moved.cands.contains(&c.bytenr)
                            || (top && moved.other_side_owner(c.bytenr, side) == Some(owner))
                            || self.acct_count(side, c.bytenr)? != 1
                        {
                            continue;
                        }
                        todo.push((c, false));
                    }
                }
                Body::Leaf(leaf) => {
                    if let Some(hook) = &self.cfg.data_refs {
                        for (key, value) in leaf.iter() {
                            if let Ok(Some((b, len))) = hook.data_ref(0, &key, value) {
                                data.entry(b).or_insert(len);
                            }
                        }
                    }
                }
            }
        }
        Ok(n)
    }

    /// A candidate node read by its address alone (a changed count does not say which
    /// pointer named it): from the cache, or from the device through the validator,
    /// with the level and generation its header claims. The checksum, address and
    /// structure are still checked; a node that lies about its generation can only make
    /// a counter wrong, which the checker reports.
    fn read_node_by_address(&self, b: u64) -> Result<Arc<Node>> {
        self.acct.reads.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = self
            .cache
            .lock()
            .map_err(|_| Error::Poisoned("cache lock".into()))?
            .get(b)
        {
            return Ok(n);
        }
        let mut buf = vec![0u8; self.sb.nodesize as usize];
        self.storage.read_at(b, &mut buf).map_err(Error::io(b))?;
        let (level, generation) = header_claims(&buf).ok_or_else(|| Error::CorruptNode {
            block: b,
            tree: objectid::DROP_QUEUE,
            reason: "too short for a header".into(),
        })?;
        let at = ChildRef {
            bytenr: b,
            generation,
            level,
            lo: None,
            hi: None,
        };
        self.read_node(objectid::DROP_QUEUE, &at)
    }
}

/// For each child of a candidate branch, the candidate branches pointing to it.
pub(super) type Parents = HashMap<u64, Vec<u64>>;

/// The candidate nodes of a user tree (highest level first), who points to what, and
/// the candidates whose content is at hand.
pub(super) type CandidateInfos = (Vec<NodeInfo>, Parents, HashMap<u64, Arc<Node>>);

/// What the candidate nodes' contents said so far.
struct Known<'a> {
    cands: &'a BTreeSet<u64>,
    infos: HashMap<u64, NodeInfo>,
    parents: Parents,
    /// Candidates whose own content has been seen, with it.
    seen: HashMap<u64, Arc<Node>>,
}

impl Known<'_> {
    fn note(&mut self, node: &Arc<Node>) {
        self.seen.insert(node.bytenr, Arc::clone(node));
        if let Body::Branch(ptrs) = &node.body {
            for p in ptrs {
                self.parents.entry(p.bytenr).or_default().push(node.bytenr);
                if !self.cands.contains(&p.bytenr) {
                    continue;
                }
                self.infos.entry(p.bytenr).or_insert(NodeInfo {
                    bytenr: p.bytenr,
                    generation: p.generation,
                    level: node.level.saturating_sub(1),
                    first: Some(p.key),
                    owner: node.owner,
                });
            }
        }
        self.infos.insert(node.bytenr, info_of(node));
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) struct NodeInfo {
    pub bytenr: u64,
    generation: u64,
    level: u8,
    first: Option<Key>,
    /// The tree whose id the node's header (or its parent's) names: only where to
    /// search first, since nothing checks it.
    owner: u64,
}

fn info_of(node: &Node) -> NodeInfo {
    let first = match &node.body {
        Body::Branch(p) => p.first().map(|p| p.key),
        Body::Leaf(l) => l.iter().next().map(|(k, _)| k),
    };
    NodeInfo {
        bytenr: node.bytenr,
        generation: node.generation,
        level: node.level,
        first,
        owner: node.owner,
    }
}
