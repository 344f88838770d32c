//! Data extents: the anchors that say where the items naming an extent are, and the
//! search for those items that finds an extent's owner.

use super::{Owner, State, drop_ref};
use crate::engine::{ChildRef, Engine};
use crate::error::{Error, Result};
use crate::format::{AnchorItem, Body, Key, anchor_hash, item_type, objectid};
use crate::tree::child_ref;
use std::collections::{BTreeSet, HashMap};

impl Engine {
    /// Notes where an inserted item's data extent is named from, if the extent tree
    /// does not know that anchor yet.
    pub(crate) fn acct_note_item(&mut self, key: &Key, value: &[u8]) -> Result<()> {
        let Some(hook) = self.cfg.data_refs.clone() else {
            return Ok(());
        };
        let Ok(Some((b, _))) = hook.data_ref(0, key, value) else {
            return Ok(());
        };
        let a = hook.anchor(key, value);
        if self
            .acct
            .new_anchors
            .get(&b)
            .is_some_and(|s| s.contains(&a))
        {
            return Ok(());
        }
        if self
            .stored_anchor_item(b, &a)?
            .is_some_and(|i| i.0.contains(&a))
        {
            return Ok(());
        }
        self.acct.new_anchors.entry(b).or_default().insert(a);
        Ok(())
    }

    /// The extent tree's anchor item of extent `b` with `a`'s hash.
    pub(super) fn stored_anchor_item(&self, b: u64, a: &Key) -> Result<Option<AnchorItem>> {
        let key = Key::new(b, item_type::ANCHOR_ITEM, anchor_hash(a));
        let root = self.root(objectid::EXTENT_TREE)?;
        self.tree_get(objectid::EXTENT_TREE, root, key)?
            .map(|v| decode_anchor_item(key, &v))
            .transpose()
    }

    /// Every anchor of data extent `b`: the extent tree's and this transaction's.
    pub(super) fn anchors_of(&self, b: u64) -> Result<BTreeSet<Key>> {
        let mut out = self.acct.new_anchors.get(&b).cloned().unwrap_or_default();
        for (_, item) in self.stored_anchors(b)? {
            out.extend(item.0);
        }
        Ok(out)
    }

    /// The extent tree's anchor items of extent `b`.
    pub(super) fn stored_anchors(&self, b: u64) -> Result<Vec<(Key, AnchorItem)>> {
        let lo = Key::new(b, item_type::ANCHOR_ITEM, 0);
        let hi = Key::new(b, item_type::ANCHOR_ITEM, u64::MAX);
        let mut out = Vec::new();
        for item in self.range(objectid::EXTENT_TREE, lo..=hi)? {
            let (key, value) = item?;
            out.push((key, decode_anchor_item(key, &value)?));
        }
        Ok(out)
    }

    /// Writes this transaction's new anchors into the extent tree and removes those of
    /// the data extents it freed.
    pub(super) fn store_anchors(&mut self, freed: &[u64]) -> Result<()> {
        let tree = objectid::EXTENT_TREE;
        for b in freed {
            for (key, _) in self.stored_anchors(*b)? {
                self.tree_delete(tree, key)?;
            }
        }
        for (b, anchors) in std::mem::take(&mut self.acct.new_anchors) {
            if self.refcount(b)? == 0 {
                continue;
            }
            for a in anchors {
                let mut item = self
                    .stored_anchor_item(b, &a)?
                    .unwrap_or(AnchorItem(Vec::new()));
                if !item.0.contains(&a) {
                    item.0.push(a);
                    let key = Key::new(b, item_type::ANCHOR_ITEM, anchor_hash(&a));
                    self.tree_insert(tree, key, &item.encode())?;
                }
            }
        }
        Ok(())
    }

    /// The owner of data extent `e` (of `len` bytes) in state `s`. The trees in
    /// `changed` (those this transaction changed, which new items are in) are searched
    /// first, then the others newest first (a snapshot taken after the extent was
    /// written holds it), then the pending drops. `anchors` caches the extent's anchors
    /// between the two states' calls: they are read once, when first needed.
    pub(super) fn data_owner(
        &self,
        s: State,
        e: u64,
        len: u64,
        changed: &BTreeSet<u64>,
        anchors: &mut Option<BTreeSet<Key>>,
    ) -> Result<Owner> {
        let count = self.acct_count(s, e)?;
        if count == 0 {
            return Ok(Owner::Absent);
        }
        if self.cfg.data_refs.is_none() {
            return Ok(Owner::Shared);
        }
        let anchors = match anchors {
            Some(a) => a,
            None => anchors.insert(self.anchors_of(e)?),
        };
        // (leaf, key) -> the tree that owns the leaf, if one does.
        let mut found: HashMap<(u64, Key), Option<u64>> = HashMap::new();
        let mut roots = self.acct_roots(s);
        roots.sort_by_key(|(t, _)| (!changed.contains(t), std::cmp::Reverse(*t)));
        let holders = roots
            .into_iter()
            .map(|(t, r)| (Some(t), ChildRef::root(r)))
            .chain(
                self.acct_drops(s)
                    .into_iter()
                    .map(|(d, item)| (None, drop_ref(d, &item))),
            );
        for (t, root) in holders {
            self.items_naming(s, t, root, e, len, anchors, &mut found)?;
            // An item in a leaf no tree owns settles it; so does finding them all, as a
            // leaf one tree owns is reached from no other.
            if found.values().any(Option::is_none) {
                return Ok(Owner::Shared);
            }
            if found.len() as u64 == count {
                return Ok(sole_owner(found.values()));
            }
        }
        Ok(Owner::Shared)
    }

    /// Finds, under `root`, the items naming extent `e` in the key ranges its anchors
    /// give, each with the tree owning its leaf (`t` if the path there is counted once
    /// all along).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn items_naming(
        &self,
        s: State,
        t: Option<u64>,
        root: ChildRef,
        e: u64,
        len: u64,
        anchors: &BTreeSet<Key>,
        found: &mut HashMap<(u64, Key), Option<u64>>,
    ) -> Result<()> {
        let Some(hook) = self.cfg.data_refs.clone() else {
            return Ok(());
        };
        for a in anchors {
            let hi = Key::new(a.objectid, a.ty, a.offset.saturating_add(len));
            let mut todo = vec![(root, true)];
            while let Some((at, excl)) = todo.pop() {
                let excl = excl && self.acct_count(s, at.bytenr)? == 1;
                let node = self.acct_read(&at)?;
                match &node.body {
                    Body::Branch(ptrs) => {
                        for i in 0..ptrs.len() {
                            let c = child_ref(node.level, ptrs, i, at.hi);
                            let below_hi = c.lo.is_none_or(|lo| lo < hi);
                            let above_lo = c.hi.is_none_or(|h| h > *a);
                            if below_hi && above_lo {
                                todo.push((c, excl));
                            }
                        }
                    }
                    Body::Leaf(leaf) => {
                        for (key, value) in leaf.iter() {
                            if key < *a || key >= hi {
                                continue;
                            }
                            if let Ok(Some((b, _))) = hook.data_ref(0, &key, value)
                                && b == e
                            {
                                let owner = t.filter(|_| excl);
                                let slot = found.entry((at.bytenr, key)).or_insert(owner);
                                if *slot != owner {
                                    *slot = None;
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// An anchor item of the extent tree, decoded; a damaged one is named by its key.
fn decode_anchor_item(key: Key, value: &[u8]) -> Result<AnchorItem> {
    AnchorItem::decode(value).map_err(|reason| Error::CorruptItem {
        tree: objectid::EXTENT_TREE,
        key: key.to_string(),
        reason,
    })
}

/// The tree that owns every one of the items found, if one does.
fn sole_owner<'a>(mut owners: impl Iterator<Item = &'a Option<u64>>) -> Owner {
    match owners.next().copied().flatten() {
        Some(first) if owners.all(|o| *o == Some(first)) => Owner::Tree(first),
        _ => Owner::Shared,
    }
}
