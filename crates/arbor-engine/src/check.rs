//! The offline checker. It trusts nothing the engine keeps in memory: it reads the
//! superblocks, walks every tree from its root through the validator, counts the real
//! references to every block, and compares them with the extent tree, with the
//! superblock's space accounting and with each tree's kept exclusive bytes.

use crate::engine::DataRefs;
use crate::format::{
    AnchorItem, Body, DropItem, EXTENT_FLAG_DATA, EXTENT_FLAG_TREE_BLOCK, Expect, ExtentItem, Key,
    Leaf, Node, RootItem, RootPtr, Superblock, anchor_hash, decode_node, item_type, objectid,
    reserved_ranges, validate_extent,
};
use crate::open::read_superblock;
use crate::storage::Storage;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What the checker found.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Each problem, naming the block, tree or superblock copy.
    pub problems: Vec<String>,
    /// The committed generation that was checked.
    pub generation: u64,
    /// User trees found.
    pub trees: usize,
    /// Distinct nodes visited.
    pub nodes: u64,
    /// The address of every node reached, sorted.
    pub blocks: Vec<u64>,
    /// Sum of the lengths of the extent items.
    pub used_bytes: u64,
    /// Bytes neither allocated nor reserved: what the allocator must call free.
    pub free_bytes: u64,
    /// Size of the filesystem.
    pub total_bytes: u64,
}

impl CheckReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "generation {}: {} user trees, {} nodes, {} bytes used, {} free of {}",
            self.generation,
            self.trees,
            self.nodes,
            self.used_bytes,
            self.free_bytes,
            self.total_bytes
        )?;
        if self.problems.is_empty() {
            writeln!(f, "no problems found")
        } else {
            writeln!(f, "{} problems found:", self.problems.len())?;
            for p in &self.problems {
                writeln!(f, "  {p}")?;
            }
            Ok(())
        }
    }
}

struct Walker<'a> {
    storage: &'a dyn Storage,
    sb: Superblock,
    /// Every node reached, with the generation and level it was reached as.
    seen: HashMap<u64, (u64, u8)>,
    /// References found to each block: parent pointers, root pointers, pending drops.
    refs: HashMap<u64, u64>,
    problems: Vec<String>,
    nodes: u64,
    /// Names the data extents that leaf items reference, when the caller knows.
    data_hook: Option<&'a dyn DataRefs>,
    /// References to each data extent found in leaves: (length, count).
    data: HashMap<u64, (u64, u64)>,
    /// The anchors the items naming each data extent have.
    named_anchors: HashMap<u64, BTreeSet<Key>>,
    /// The anchors the extent tree records for each data extent.
    stored_anchors: HashMap<u64, BTreeSet<Key>>,
}

/// Checks the image on `storage`. Problems are collected, never raised: the report says
/// everything that is wrong, and a corrupt image never makes the checker panic.
pub fn check(storage: &dyn Storage) -> CheckReport {
    check_with(storage, None)
}

/// [`check()`], also counting the references to data extents that `data_refs` finds in
/// the leaves of user trees and comparing them with the extent tree. Without it, data
/// extents are only checked for placement.
pub fn check_with(storage: &dyn Storage, data_refs: Option<&dyn DataRefs>) -> CheckReport {
    let mut report = CheckReport::default();
    let (sb, sb_problems) = match read_superblock(storage) {
        Ok(found) => found,
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    };
    report.problems.extend(sb_problems);
    report.generation = sb.generation;
    report.total_bytes = sb.total_bytes;
    let mut w = Walker {
        storage,
        sb: sb.clone(),
        seen: HashMap::new(),
        refs: HashMap::new(),
        problems: Vec::new(),
        nodes: 0,
        data_hook: data_refs,
        data: HashMap::new(),
        named_anchors: HashMap::new(),
        stored_anchors: HashMap::new(),
    };
    // (tree, root, kept exclusive bytes) of every valid root item.
    let mut trees = Vec::new();
    let root_items = w.walk_root(objectid::ROOT_TREE, sb.root_tree);
    let extent_items = w.walk_root(objectid::EXTENT_TREE, sb.extent_tree);
    for (key, value) in root_items {
        match key.ty {
            item_type::ROOT_ITEM
                if key.objectid >= objectid::FIRST_USER_TREE && key.offset == 0 =>
            {
                let valid = RootItem::decode(&value).and_then(|item| {
                    item.root
                        .validate(sb.generation, sb.nodesize, sb.total_bytes)?;
                    Ok(item)
                });
                match valid {
                    Ok(item) => {
                        report.trees += 1;
                        w.walk_root(key.objectid, item.root);
                        trees.push((key.objectid, item.root, item.exclusive));
                    }
                    Err(why) => w.problems.push(format!("root tree item {key}: {why}")),
                }
            }
            item_type::DROP_ITEM if key.objectid == objectid::DROP_QUEUE => {
                let ptr = |d: &DropItem| RootPtr {
                    bytenr: key.offset,
                    generation: d.generation,
                    level: d.level,
                };
                let valid = DropItem::decode(&value).and_then(|d| {
                    ptr(&d).validate(sb.generation, sb.nodesize, sb.total_bytes)?;
                    Ok(d)
                });
                match valid {
                    Ok(d) => {
                        w.walk_root(objectid::DROP_QUEUE, ptr(&d));
                        *w.refs.entry(key.offset).or_default() += u64::from(d.count) - 1;
                    }
                    Err(why) => w.problems.push(format!("root tree item {key}: {why}")),
                }
            }
            _ => w
                .problems
                .push(format!("root tree item {key}: unexpected item type")),
        }
    }
    let extents = w.decode_extents(extent_items);
    w.compare_refs(&extents);
    if w.problems.is_empty() {
        w.compare_exclusive(&trees, &extents);
    }
    let used = w.check_layout(&extents);
    if used != sb.bytes_used {
        w.problems.push(format!(
            "superblock: bytes_used is {} but the extent tree accounts for {used}",
            sb.bytes_used
        ));
    }
    let reserved: u64 = reserved_ranges(sb.total_bytes)
        .iter()
        .map(|(s, e)| e - s)
        .sum();
    report.used_bytes = used;
    report.free_bytes = sb.total_bytes.saturating_sub(reserved.saturating_add(used));
    report.nodes = w.nodes;
    report.blocks = w.seen.keys().copied().collect();
    report.blocks.sort_unstable();
    report.problems.extend(w.problems);
    report
}

impl Walker<'_> {
    /// Walks one tree from a root pointer and returns its leaf items.
    fn walk_root(&mut self, tree: u64, root: RootPtr) -> Vec<(Key, Vec<u8>)> {
        *self.refs.entry(root.bytenr).or_default() += 1;
        let mut items = Vec::new();
        let mut stack = vec![(root.bytenr, root.generation, root.level, None, None)];
        while let Some((bytenr, generation, level, lo, hi)) = stack.pop() {
            if let Some(&(g, l)) = self.seen.get(&bytenr) {
                if (g, l) != (generation, level) {
                    self.problems.push(format!(
                        "tree {tree}: block {bytenr} is referenced as generation {generation} level {level} but also as generation {g} level {l} (owned twice)"
                    ));
                }
                continue;
            }
            self.seen.insert(bytenr, (generation, level));
            let node = match self.read_node(bytenr, generation, level, lo, hi) {
                Ok(n) => n,
                Err(why) => {
                    self.problems
                        .push(format!("tree {tree}: block {bytenr}: {why}"));
                    continue;
                }
            };
            self.nodes += 1;
            if generation > self.sb.generation {
                self.problems.push(format!(
                    "tree {tree}: block {bytenr} has generation {generation}, newer than the superblock's {}",
                    self.sb.generation
                ));
            }
            match node.body {
                Body::Leaf(leaf) => {
                    if tree >= objectid::FIRST_USER_TREE || tree == objectid::DROP_QUEUE {
                        self.count_data_refs(tree, bytenr, &leaf);
                    }
                    if tree != objectid::DROP_QUEUE {
                        items.extend(leaf.iter().map(|(k, v)| (k, v.to_vec())));
                    }
                }
                Body::Branch(ptrs) => {
                    for (i, p) in ptrs.iter().enumerate() {
                        *self.refs.entry(p.bytenr).or_default() += 1;
                        let child_hi = ptrs.get(i + 1).map(|n| n.key).or(hi);
                        stack.push((p.bytenr, p.generation, level - 1, Some(p.key), child_hi));
                    }
                }
            }
        }
        items.sort_by_key(|(k, _)| *k);
        items
    }

    /// Reads the node a pointer names and decodes it through the validator; the error
    /// says why it is not that node.
    fn read_node(
        &self,
        bytenr: u64,
        generation: u64,
        level: u8,
        lo: Option<Key>,
        hi: Option<Key>,
    ) -> Result<Node, String> {
        let mut buf = vec![0u8; self.sb.nodesize as usize];
        self.storage
            .read_at(bytenr, &mut buf)
            .map_err(|e| format!("read failed: {e}"))?;
        let expect = Expect {
            bytenr,
            generation,
            level,
            fsid: &self.sb.fsid,
            nodesize: self.sb.nodesize,
            total_bytes: self.sb.total_bytes,
            lo,
            hi,
        };
        decode_node(&buf, &expect)
    }

    /// Counts the data extents a leaf names (once per leaf, however many trees share it).
    fn count_data_refs(&mut self, tree: u64, block: u64, leaf: &Leaf) {
        let Some(hook) = self.data_hook else {
            return;
        };
        for (key, value) in leaf.iter() {
            match hook.data_ref(tree, &key, value) {
                Ok(Some((bytenr, len))) => {
                    let e = self.data.entry(bytenr).or_insert((len, 0));
                    if e.0 != len {
                        self.problems.push(format!(
                            "tree {tree}: block {block}: item {key} names data extent {bytenr} as {len} bytes, elsewhere as {}",
                            e.0
                        ));
                    }
                    e.1 += 1;
                    self.named_anchors
                        .entry(bytenr)
                        .or_default()
                        .insert(hook.anchor(&key, value));
                }
                Ok(None) => {}
                Err(why) => self
                    .problems
                    .push(format!("tree {tree}: block {block}: item {key}: {why}")),
            }
        }
    }

    fn decode_extents(&mut self, items: Vec<(Key, Vec<u8>)>) -> BTreeMap<u64, (u64, ExtentItem)> {
        let mut extents = BTreeMap::new();
        for (key, value) in items {
            if key.ty == item_type::ANCHOR_ITEM {
                match AnchorItem::decode(&value) {
                    Ok(a) if a.0.iter().all(|k| anchor_hash(k) == key.offset) => {
                        self.stored_anchors
                            .entry(key.objectid)
                            .or_default()
                            .extend(a.0);
                    }
                    Ok(_) => self.problems.push(format!(
                        "extent tree item {key}: an anchor stored under another hash"
                    )),
                    Err(why) => self.problems.push(format!("extent tree item {key}: {why}")),
                }
                continue;
            }
            if key.ty != item_type::EXTENT_ITEM {
                self.problems
                    .push(format!("extent tree item {key}: unexpected item type"));
                continue;
            }
            let (ns, total) = (self.sb.nodesize, self.sb.total_bytes);
            let valid = ExtentItem::decode(&value).and_then(|item| {
                validate_extent(key.objectid, key.offset, item.flags, ns, total)?;
                Ok(item)
            });
            match valid {
                Ok(item) => {
                    extents.insert(key.objectid, (key.offset, item));
                }
                Err(why) => self.problems.push(format!("extent tree item {key}: {why}")),
            }
        }
        extents
    }

    fn compare_refs(&mut self, extents: &BTreeMap<u64, (u64, ExtentItem)>) {
        let ns = u64::from(self.sb.nodesize);
        let mut found: Vec<(u64, u64)> = self.refs.iter().map(|(b, n)| (*b, *n)).collect();
        found.sort_unstable();
        for (bytenr, n) in found {
            match extents.get(&bytenr) {
                None => self.problems.push(format!(
                    "block {bytenr}: referenced {n} times but has no extent item (unaccounted allocation)"
                )),
                Some((len, item)) => {
                    if item.refs != n {
                        self.problems.push(format!(
                            "block {bytenr}: extent tree says refcount {}, found {n} references",
                            item.refs
                        ));
                    }
                    if *len != ns || item.flags != EXTENT_FLAG_TREE_BLOCK {
                        self.problems.push(format!(
                            "block {bytenr}: is a tree node but its extent has length {len} flags {:#x}",
                            item.flags
                        ));
                    }
                }
            }
        }
        if self.data_hook.is_some() {
            self.compare_data_refs(extents);
        }
        for (bytenr, (_, item)) in extents {
            if !self.refs.contains_key(bytenr) && item.flags & EXTENT_FLAG_TREE_BLOCK != 0 {
                self.problems.push(format!(
                    "block {bytenr}: allocated with refcount {} but nothing references it (leaked)",
                    item.refs
                ));
            }
        }
    }

    fn compare_data_refs(&mut self, extents: &BTreeMap<u64, (u64, ExtentItem)>) {
        let mut found: Vec<(u64, (u64, u64))> = self.data.iter().map(|(b, v)| (*b, *v)).collect();
        found.sort_unstable();
        for (bytenr, (len, n)) in found {
            match extents.get(&bytenr) {
                None => self.problems.push(format!(
                    "data extent {bytenr}: referenced {n} times but has no extent item"
                )),
                Some((elen, item)) => {
                    if item.flags != EXTENT_FLAG_DATA || *elen != len {
                        self.problems.push(format!(
                            "data extent {bytenr}: named as {len} bytes of data but the extent tree has {elen} bytes with flags {:#x}",
                            item.flags
                        ));
                    } else if item.refs != n {
                        self.problems.push(format!(
                            "data extent {bytenr}: extent tree says refcount {}, found {n} references",
                            item.refs
                        ));
                    }
                }
            }
        }
        let mut anchored: Vec<(&u64, &BTreeSet<Key>)> = self.named_anchors.iter().collect();
        anchored.sort_unstable();
        for (bytenr, named) in anchored {
            let stored = self.stored_anchors.get(bytenr);
            for a in named {
                if !stored.is_some_and(|s| s.contains(a)) {
                    self.problems.push(format!(
                        "data extent {bytenr}: items anchored at {a} name it, but the extent tree does not record that anchor"
                    ));
                }
            }
        }
        let mut stored: Vec<&u64> = self.stored_anchors.keys().collect();
        stored.sort_unstable();
        for bytenr in stored {
            if extents
                .get(bytenr)
                .is_none_or(|(_, i)| i.flags != EXTENT_FLAG_DATA)
            {
                self.problems.push(format!(
                    "extent tree: anchors of {bytenr}, which is not an allocated data extent"
                ));
            }
        }
        for (bytenr, (_, item)) in extents {
            if item.flags == EXTENT_FLAG_DATA && !self.data.contains_key(bytenr) {
                self.problems.push(format!(
                    "data extent {bytenr}: allocated with refcount {} but nothing references it (leaked)",
                    item.refs
                ));
            }
        }
    }

    /// Compares each tree's kept exclusive bytes with the blocks it holds alone, found
    /// from the references counted here: the nodes reached from its root through nodes
    /// referenced once, and the data extents all of whose references are items of those
    /// nodes' leaves.
    fn compare_exclusive(
        &mut self,
        trees: &[(u64, RootPtr, u64)],
        extents: &BTreeMap<u64, (u64, ExtentItem)>,
    ) {
        let ns = u64::from(self.sb.nodesize);
        for &(tree, root, kept) in trees {
            let mut bytes = 0u64;
            let mut named: HashMap<u64, u64> = HashMap::new();
            let mut stack = Vec::new();
            if self.refs.get(&root.bytenr) == Some(&1) {
                stack.push((root.bytenr, root.generation, root.level, None, None));
            }
            while let Some((bytenr, generation, level, lo, hi)) = stack.pop() {
                let Ok(node) = self.read_node(bytenr, generation, level, lo, hi) else {
                    return;
                };
                bytes += ns;
                match node.body {
                    Body::Branch(ptrs) => {
                        for (i, p) in ptrs.iter().enumerate() {
                            if self.refs.get(&p.bytenr) == Some(&1) {
                                let child_hi = ptrs.get(i + 1).map(|n| n.key).or(hi);
                                stack.push((
                                    p.bytenr,
                                    p.generation,
                                    level - 1,
                                    Some(p.key),
                                    child_hi,
                                ));
                            }
                        }
                    }
                    Body::Leaf(leaf) => {
                        let Some(hook) = self.data_hook else {
                            continue;
                        };
                        for (key, value) in leaf.iter() {
                            if let Ok(Some((b, _))) = hook.data_ref(tree, &key, value) {
                                *named.entry(b).or_default() += 1;
                            }
                        }
                    }
                }
            }
            for (b, n) in named {
                if self.data.get(&b).is_some_and(|(_, total)| *total == n) {
                    bytes += extents.get(&b).map_or(0, |(len, _)| *len);
                }
            }
            if bytes != kept {
                self.problems.push(format!(
                    "tree {tree}: its root item keeps {kept} exclusive bytes, but it holds {bytes} bytes alone"
                ));
            }
        }
    }

    /// Checks that extents lie on the device, miss the reserved areas and do not
    /// overlap. Returns the sum of their lengths.
    fn check_layout(&mut self, extents: &BTreeMap<u64, (u64, ExtentItem)>) -> u64 {
        let reserved = reserved_ranges(self.sb.total_bytes);
        let mut used = 0u64;
        let mut prev_end = 0u64;
        let mut prev = None;
        for (&bytenr, &(len, _)) in extents {
            let end = bytenr.saturating_add(len);
            used = used.saturating_add(len);
            if end > self.sb.total_bytes {
                self.problems.push(format!(
                    "extent at {bytenr} of {len} bytes runs past the device end"
                ));
            }
            if reserved.iter().any(|&(s, e)| bytenr < e && s < end) {
                self.problems.push(format!(
                    "extent at {bytenr} of {len} bytes overlaps a reserved area"
                ));
            }
            if let Some(p) = prev
                && bytenr < prev_end
            {
                self.problems
                    .push(format!("extents at {p} and {bytenr} overlap (owned twice)"));
            }
            prev = Some(bytenr);
            prev_end = prev_end.max(end);
        }
        used
    }
}
