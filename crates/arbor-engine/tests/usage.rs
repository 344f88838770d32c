//! `Engine::exclusive_usage`: the bytes only one tree holds. It must equal a brute-force
//! computation over every tree and pending drop read from the device, equal what
//! deleting the tree frees, and read only the exclusive nodes.
//!
//! Pending drops hold their blocks: a block that a live tree shares with a dropped tree
//! whose drop has not been released yet is not exclusive to the live tree (deleting
//! the live tree would not free it). The brute force counts each pending drop as a
//! holder of everything reachable from it.

mod common;

use arbor_engine::format::{
    Body, DropItem, EXTENT_FLAG_DATA, Expect, ExtentItem, Node, RootItem, RootPtr, Superblock,
    decode_node, item_type, objectid, partition_point,
};
use arbor_engine::storage::{MemStorage, Storage};
use arbor_engine::{Config, DataRefs, Engine, Error, Key, MkfsOptions, Usage, check_with};
use common::long_campaign;
use proptest::prelude::*;
use proptest::sample::Index;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Plain items: opaque values.
const PLAIN: u8 = 1;
/// Items of this type hold `bytenr, len` of a data extent, like a file extent item.
const DATA: u8 = 108;

#[derive(Debug)]
struct Hook;

impl DataRefs for Hook {
    fn data_ref(&self, _tree: u64, key: &Key, value: &[u8]) -> Result<Option<(u64, u64)>, String> {
        if key.ty != DATA {
            return Ok(None);
        }
        Ok(Some(named(value)?))
    }
}

fn named(value: &[u8]) -> Result<(u64, u64), String> {
    let field = |i: usize| {
        value
            .get(i..i + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| format!("value of {} bytes is too short", value.len()))
    };
    Ok((field(0)?, field(8)?))
}

fn item(bytenr: u64, len: u64) -> Vec<u8> {
    let mut v = bytenr.to_le_bytes().to_vec();
    v.extend_from_slice(&len.to_le_bytes());
    v
}

fn config(drop_nodes_per_commit: usize) -> Config {
    Config {
        data_refs: Some(Arc::new(Hook)),
        drop_nodes_per_commit,
        ..Config::default()
    }
}

fn engine_with(size: u64, nodesize: u32, cfg: Config) -> (Arc<MemStorage>, Engine) {
    let dev = Arc::new(MemStorage::new(size));
    let opts = MkfsOptions {
        nodesize: Some(nodesize),
        ..Default::default()
    };
    let e = Engine::create(dev.clone(), &opts, cfg).expect("mkfs");
    (dev, e)
}

fn engine(size: u64, nodesize: u32) -> (Arc<MemStorage>, Engine) {
    engine_with(size, nodesize, config(4096))
}

fn assert_clean(dev: &dyn Storage) -> u64 {
    let r = check_with(dev, Some(&Hook));
    assert!(r.is_clean(), "checker found problems:\n{r}");
    r.used_bytes
}

fn usage(e: &Engine, tree: u64) -> Usage {
    e.exclusive_usage(tree).expect("exclusive_usage")
}

fn usages(e: &Engine) -> BTreeMap<u64, Usage> {
    e.trees().into_iter().map(|t| (t, usage(e, t))).collect()
}

/// Writes the data item `(k, DATA, 0)` of `tree` naming `(bytenr, len)`, whose reference
/// the caller has already taken, and lets go of the extent the item named before, as
/// the filesystem does.
fn put_data(e: &mut Engine, tree: u64, k: u64, bytenr: u64, len: u64) {
    let key = Key::new(k, DATA, 0);
    let old = e.get(tree, key).unwrap();
    e.insert(tree, key, &item(bytenr, len)).unwrap();
    if let Some(v) = old {
        let (b, l) = named(&v).unwrap();
        e.data_ref(b, l, -1).unwrap();
    }
}

/// Deletes an item, and its data reference if it names an extent.
fn delete(e: &mut Engine, tree: u64, key: Key) {
    if let Some(v) = e.get(tree, key).unwrap() {
        e.delete(tree, key).unwrap();
        if key.ty == DATA {
            let (b, l) = named(&v).unwrap();
            e.data_ref(b, l, -1).unwrap();
        }
    }
}

// ---- brute force, from the device --------------------------------------------------

/// Who holds blocks: a live tree or a pending drop (keyed by the dropped node).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Holder {
    Tree(u64),
    Drop(u64),
}

/// Everything reachable from one holder.
#[derive(Debug, Default)]
struct Reach {
    nodes: BTreeSet<u64>,
    extents: BTreeSet<u64>,
}

/// The committed image, walked completely.
struct Image {
    sb: Superblock,
    holders: BTreeMap<Holder, Reach>,
    /// Allocated length of every data extent.
    data_len: BTreeMap<u64, u64>,
    /// Nodes of the root tree and the extent tree.
    system_nodes: u64,
}

fn read(dev: &dyn Storage, sb: &Superblock, bytenr: u64, generation: u64, level: u8) -> Node {
    let mut buf = vec![0u8; sb.nodesize as usize];
    dev.read_at(bytenr, &mut buf).expect("reading a node");
    let expect = Expect {
        bytenr,
        generation,
        level,
        fsid: &sb.fsid,
        nodesize: sb.nodesize,
        total_bytes: sb.total_bytes,
        lo: None,
        hi: None,
    };
    decode_node(&buf, &expect).expect("a valid node")
}

/// Every node under `root`, the data extents its leaves name, and (if asked) its items.
fn walk(
    dev: &dyn Storage,
    sb: &Superblock,
    root: RootPtr,
    reach: &mut Reach,
    mut items: Option<&mut Vec<(Key, Vec<u8>)>>,
) {
    let mut todo = vec![(root.bytenr, root.generation, root.level)];
    while let Some((bytenr, generation, level)) = todo.pop() {
        assert!(reach.nodes.insert(bytenr), "block {bytenr} reached twice");
        match read(dev, sb, bytenr, generation, level).body {
            Body::Branch(ptrs) => {
                todo.extend(ptrs.iter().map(|p| (p.bytenr, p.generation, level - 1)));
            }
            Body::Leaf(leaf) => {
                for (key, value) in leaf.iter() {
                    if let Some((b, _)) = Hook.data_ref(0, &key, value).unwrap() {
                        reach.extents.insert(b);
                    }
                    if let Some(items) = items.as_deref_mut() {
                        items.push((key, value.to_vec()));
                    }
                }
            }
        }
    }
}

fn image(dev: &dyn Storage) -> Image {
    let (sb, _) = arbor_engine::read_superblock(dev).expect("a superblock");
    let mut system = Reach::default();
    let (mut root_items, mut extent_items) = (Vec::new(), Vec::new());
    walk(dev, &sb, sb.root_tree, &mut system, Some(&mut root_items));
    walk(
        dev,
        &sb,
        sb.extent_tree,
        &mut system,
        Some(&mut extent_items),
    );
    let mut data_len = BTreeMap::new();
    for (key, value) in extent_items {
        if key.ty == item_type::ANCHOR_ITEM {
            continue;
        }
        assert_eq!(key.ty, item_type::EXTENT_ITEM);
        if ExtentItem::decode(&value).unwrap().flags == EXTENT_FLAG_DATA {
            data_len.insert(key.objectid, key.offset);
        }
    }
    let mut holders = BTreeMap::new();
    for (key, value) in root_items {
        let (holder, root) = match key.ty {
            item_type::ROOT_ITEM => (
                Holder::Tree(key.objectid),
                RootItem::decode(&value).unwrap().root,
            ),
            item_type::DROP_ITEM => {
                assert_eq!(key.objectid, objectid::DROP_QUEUE);
                let d = DropItem::decode(&value).unwrap();
                let root = RootPtr {
                    bytenr: key.offset,
                    generation: d.generation,
                    level: d.level,
                };
                (Holder::Drop(key.offset), root)
            }
            other => panic!("root tree item of type {other}"),
        };
        let mut reach = Reach::default();
        walk(dev, &sb, root, &mut reach, None);
        holders.insert(holder, reach);
    }
    Image {
        sb,
        holders,
        data_len,
        system_nodes: system.nodes.len() as u64,
    }
}

/// What only `tree` reaches: nodes and data extents that no other tree and no pending
/// drop reaches.
fn brute_usage(img: &Image, tree: u64) -> Usage {
    let me = &img.holders[&Holder::Tree(tree)];
    let (mut nodes, mut extents) = (me.nodes.clone(), me.extents.clone());
    for (h, other) in &img.holders {
        if *h != Holder::Tree(tree) {
            nodes.retain(|b| !other.nodes.contains(b));
            extents.retain(|b| !other.extents.contains(b));
        }
    }
    let n = nodes.len() as u64;
    Usage {
        exclusive_node_bytes: n * u64::from(img.sb.nodesize),
        exclusive_data_bytes: extents.iter().map(|b| img.data_len[b]).sum(),
        nodes_read: n,
    }
}

/// Every node of a committed tree.
fn all_nodes(dev: &dyn Storage, tree: u64) -> BTreeSet<u64> {
    let img = image(dev);
    img.holders[&Holder::Tree(tree)].nodes.clone()
}

/// The nodes on the path from a committed tree's root to the leaf that holds `key`.
fn path(dev: &dyn Storage, root: RootPtr, key: Key) -> Vec<u64> {
    let (sb, _) = arbor_engine::read_superblock(dev).unwrap();
    let mut out = Vec::new();
    let (mut bytenr, mut generation, mut level) = (root.bytenr, root.generation, root.level);
    loop {
        out.push(bytenr);
        match read(dev, &sb, bytenr, generation, level).body {
            Body::Leaf(_) => return out,
            Body::Branch(ptrs) => {
                let i = partition_point(&ptrs, |p| p.key <= key).saturating_sub(1);
                (bytenr, generation, level) = (ptrs[i].bytenr, ptrs[i].generation, level - 1);
            }
        }
    }
}

/// Compares the usage of every tree in the running transaction, after committing it,
/// and with the brute force; returns the committed usages.
fn assert_usage_is_brute_force(
    e: &mut Engine,
    dev: &dyn Storage,
    context: &str,
) -> BTreeMap<u64, Usage> {
    let in_txn = usages(e);
    let pending = e.pending_drops();
    e.commit().unwrap();
    let committed = usages(e);
    if pending == 0 {
        // Without drops to release, a commit writes the dirty nodes where they are and
        // changes no count: the same answer.
        assert_eq!(
            committed, in_txn,
            "{context}: in the transaction and committed"
        );
    }
    let img = image(dev);
    for (t, u) in &committed {
        assert_eq!(
            e.exclusive_bytes(*t),
            Some(u.exclusive_node_bytes + u.exclusive_data_bytes),
            "{context}: tree {t}'s kept counter ({u:?})"
        );
        assert_eq!(
            *u,
            brute_usage(&img, *t),
            "{context}: tree {t} ({} pending drops)",
            e.pending_drops()
        );
    }
    assert_clean(dev);
    committed
}

// ---- property test -----------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    /// A plain item.
    Put {
        t: u8,
        k: u16,
        len: u8,
    },
    /// Many plain items with large values: trees three levels deep.
    Bulk {
        t: u8,
        start: u16,
        n: u16,
    },
    /// An item naming a newly allocated data extent (allocated with a ragged length,
    /// rounded up to whole sectors).
    NewData {
        t: u8,
        k: u16,
        sectors: u8,
        ragged: bool,
    },
    /// An item naming an extent that exists already, in this tree or another.
    ShareData {
        t: u8,
        k: u16,
        pick: Index,
    },
    /// An item next to an item of the same tree, naming the same extent: two items of
    /// one leaf naming one extent.
    Reflink {
        t: u8,
        pick: Index,
    },
    Delete {
        t: u8,
        k: u16,
        data: bool,
    },
    Clone {
        t: u8,
    },
    Drop {
        t: u8,
    },
    Commit,
    Check,
}

fn k() -> impl Strategy<Value = u16> {
    0u16..1500
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u8>(), k(), 0u8..120).prop_map(|(t, k, len)| Op::Put { t, k, len }),
        1 => (any::<u8>(), k(), 1u16..300).prop_map(|(t, start, n)| Op::Bulk { t, start, n }),
        4 => (any::<u8>(), k(), 1u8..=4, any::<bool>())
            .prop_map(|(t, k, sectors, ragged)| Op::NewData { t, k, sectors, ragged }),
        3 => (any::<u8>(), k(), any::<Index>()).prop_map(|(t, k, pick)| Op::ShareData { t, k, pick }),
        2 => (any::<u8>(), any::<Index>()).prop_map(|(t, pick)| Op::Reflink { t, pick }),
        4 => (any::<u8>(), k(), any::<bool>()).prop_map(|(t, k, data)| Op::Delete { t, k, data }),
        2 => any::<u8>().prop_map(|t| Op::Clone { t }),
        2 => any::<u8>().prop_map(|t| Op::Drop { t }),
        1 => Just(Op::Commit),
        2 => Just(Op::Check),
    ]
}

/// The items of a tree that name data extents.
fn data_items(e: &Engine, tree: u64) -> Vec<(Key, Vec<u8>)> {
    e.range(tree, ..)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.ty == DATA)
        .collect()
}

fn run_case(nodesize: u32, drop_budget: usize, initial: u16, ops: &[Op]) {
    let (dev, mut e) = engine_with(64 << 20, nodesize, config(drop_budget));
    e.create_tree(5).unwrap();
    // Large values: with 4 KiB nodes, a thousand items make a tree three levels deep.
    for k in 0..u64::from(initial) {
        let v = vec![k as u8; 300 + (k as usize * 37) % 600];
        e.insert(5, Key::new(k, PLAIN, 0), &v).unwrap();
    }
    let mut live = vec![5u64];
    let mut next_id = 6;
    let mut checks = 0;
    for op in ops {
        let pick = |t: u8| live[usize::from(t) % live.len()];
        match *op {
            Op::Put { t, k, len } => {
                let v = vec![len ^ (k as u8); usize::from(len)];
                e.insert(pick(t), Key::new(k.into(), PLAIN, 0), &v).unwrap();
            }
            Op::Bulk { t, start, n } => {
                let tree = pick(t);
                for i in 0..n {
                    let k = u64::from(start) + u64::from(i);
                    let v = vec![i as u8; 200 + usize::from(i % 200)];
                    e.insert(tree, Key::new(k, PLAIN, 0), &v).unwrap();
                }
            }
            Op::NewData {
                t,
                k,
                sectors,
                ragged,
            } => {
                let len = u64::from(sectors) * 4096;
                let a = e.alloc_data(len - if ragged { 100 } else { 0 }).unwrap();
                put_data(&mut e, pick(t), k.into(), a, len);
            }
            Op::ShareData { t, k, pick: i } => {
                // The extents the live trees name: each has at least that reference.
                let mut alive = BTreeSet::new();
                for &tree in &live {
                    for (key, v) in data_items(&e, tree) {
                        alive.insert(named(&v).unwrap_or_else(|w| panic!("{key}: {w}")));
                    }
                }
                if !alive.is_empty() {
                    let alive: Vec<(u64, u64)> = alive.into_iter().collect();
                    let (a, len) = *i.get(&alive);
                    e.data_ref(a, len, 1).unwrap();
                    put_data(&mut e, pick(t), k.into(), a, len);
                }
            }
            Op::Reflink { t, pick: i } => {
                let tree = pick(t);
                let items = data_items(&e, tree);
                if !items.is_empty() {
                    let (key, v) = i.get(&items);
                    let (a, len) = named(v).unwrap();
                    e.data_ref(a, len, 1).unwrap();
                    put_data(&mut e, tree, key.objectid + 1, a, len);
                }
            }
            Op::Delete { t, k, data } => {
                let ty = if data { DATA } else { PLAIN };
                delete(&mut e, pick(t), Key::new(k.into(), ty, 0));
            }
            Op::Clone { t } => {
                if live.len() < 6 {
                    e.clone_tree(pick(t), next_id).unwrap();
                    live.push(next_id);
                    next_id += 1;
                }
            }
            Op::Drop { t } => {
                if live.len() > 1 {
                    let tree = pick(t);
                    e.drop_tree(tree).unwrap();
                    live.retain(|&x| x != tree);
                }
            }
            Op::Commit => e.commit().unwrap(),
            Op::Check => {
                checks += 1;
                assert_usage_is_brute_force(&mut e, &*dev, &format!("check {checks}"));
            }
        }
    }
    assert_eq!(e.trees(), live);
    assert_usage_is_brute_force(&mut e, &*dev, "at the end");
    e.finish_drops().unwrap();
    assert_usage_is_brute_force(&mut e, &*dev, "with no drop pending");
    // Deleting each tree in turn frees exactly its exclusive bytes (plus whatever the
    // root and extent trees shrink or grow by).
    let ns = i128::from(e.nodesize());
    for tree in live {
        e.commit().unwrap();
        let u = usage(&e, tree);
        let (used, system) = (assert_clean(&*dev), image(&*dev).system_nodes);
        e.drop_tree(tree).unwrap();
        e.finish_drops().unwrap();
        e.commit().unwrap();
        let (used_after, system_after) = (assert_clean(&*dev), image(&*dev).system_nodes);
        let freed = i128::from(used) - i128::from(used_after);
        let system_shrank = (i128::from(system) - i128::from(system_after)) * ns;
        assert_eq!(
            freed - system_shrank,
            i128::from(u.exclusive_node_bytes + u.exclusive_data_bytes),
            "deleting tree {tree} frees its exclusive bytes ({u:?})"
        );
        for (t, u) in usages(&e) {
            assert_eq!(u, brute_usage(&image(&*dev), t), "after deleting {tree}");
        }
    }
    assert_eq!(assert_clean(&*dev), image(&*dev).system_nodes * ns as u64);
    // The engine's own idea of free space is the image's: no block it allocated (the
    // extent tree's own nodes included) is still held without being counted.
    e.commit().unwrap();
    let r = check_with(&*dev, Some(&Hook));
    let space = e.space();
    assert_eq!(
        space.free_bytes + space.pinned_bytes,
        r.free_bytes,
        "free space in memory and in the image"
    );
}

fn cases() -> u32 {
    if long_campaign() { 500 } else { 64 }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn exclusive_usage_equals_the_brute_force_over_all_trees_and_pending_drops(
        nodesize in prop_oneof![3 => Just(4096u32), 1 => Just(16384u32)],
        drop_budget in prop_oneof![Just(1usize), Just(3usize), Just(4096usize)],
        initial in prop_oneof![Just(0u16), 0u16..200, 800u16..1500],
        ops in proptest::collection::vec(op(), 0..60),
    ) {
        run_case(nodesize, drop_budget, initial, &ops);
    }
}

// ---- clones and cost ---------------------------------------------------------------

/// A tree of `n` plain items, with a data item naming its own extent at every
/// `data_every`-th key.
fn fill(e: &mut Engine, tree: u64, n: u64, data_every: u64) {
    for i in 0..n {
        if i % data_every == data_every / 2 {
            let a = e.alloc_data(4096).unwrap();
            put_data(e, tree, i, a, 4096);
        } else {
            e.insert(tree, Key::new(i, PLAIN, 0), &i.to_le_bytes())
                .unwrap();
        }
    }
}

#[test]
fn a_fresh_clone_and_its_source_hold_nothing_exclusively_and_read_no_node() {
    for commit_first in [false, true] {
        let (dev, mut e) = engine(64 << 20, 4096);
        e.create_tree(5).unwrap();
        fill(&mut e, 5, 20_000, 500);
        if commit_first {
            e.commit().unwrap();
        }
        let alone = usage(&e, 5);
        assert_eq!(alone.exclusive_data_bytes, 40 * 4096);
        e.clone_tree(5, 6).unwrap();
        for when in ["in the transaction of the clone", "committed"] {
            for tree in [5, 6] {
                let u = usage(&e, tree);
                assert_eq!(
                    (u.exclusive_node_bytes, u.exclusive_data_bytes),
                    (0, 0),
                    "{when}, tree {tree}, commit first {commit_first}"
                );
                assert!(u.nodes_read <= 2, "{when}: {u:?}");
            }
            e.commit().unwrap();
        }
        let img = image(&*dev);
        assert_eq!(alone.nodes_read, all_nodes(&*dev, 5).len() as u64);
        assert_eq!(brute_usage(&img, 5), Usage::default());
        // Dropping the clone gives everything back to the source, once released.
        e.drop_tree(6).unwrap();
        assert_eq!(usage(&e, 5), Usage::default(), "the drop is pending");
        e.finish_drops().unwrap();
        assert_eq!(usage(&e, 5), alone);
    }
}

#[test]
fn keeping_the_counters_costs_what_changed_not_the_size_of_the_trees() {
    const N: u64 = 100_000;
    let (dev, mut e) = engine(128 << 20, 4096);
    e.create_tree(5).unwrap();
    fill(&mut e, 5, N, 997);
    e.commit().unwrap();
    let full = all_nodes(&*dev, 5).len() as u64;
    let kept = |e: &Engine, t: u64| e.exclusive_bytes(t).unwrap();
    let walked = |e: &Engine, t: u64| {
        let u = usage(e, t);
        u.exclusive_node_bytes + u.exclusive_data_bytes
    };
    assert_eq!(kept(&e, 5), walked(&e, 5));
    // One key changed and committed: about one path read, and the counter right.
    let one_change = |e: &mut Engine, t: u64, k: u64| {
        e.insert(t, Key::new(k, PLAIN, 0), b"changed").unwrap();
        e.commit().unwrap();
        let reads = e.accounting_nodes_read();
        assert!(reads <= 20, "tree {t}, key {k}: {reads} nodes read");
        assert_eq!(kept(e, t), walked(e, t), "tree {t}");
    };
    // A tree that shares nothing: a change copies one path, whose old and new nodes
    // both belong to it; nothing below them is entered.
    one_change(&mut e, 5, 777);
    e.clone_tree(5, 6).unwrap();
    e.commit().unwrap();
    assert_eq!((kept(&e, 5), kept(&e, 6)), (0, 0));
    assert!(
        e.accounting_nodes_read() <= 4,
        "a clone: {}",
        e.accounting_nodes_read()
    );
    // Ten keys far apart in each tree: twenty copied paths.
    for j in 0..10 {
        let k = j * (N / 10) + 4321;
        e.insert(5, Key::new(k, PLAIN, 0), b"source").unwrap();
        e.insert(6, Key::new(k, PLAIN, 0), b"clone").unwrap();
    }
    e.commit().unwrap();
    let reads = e.accounting_nodes_read();
    assert!(reads * 10 < full, "{reads} nodes read of {full}");
    for t in [5, 6] {
        assert_eq!(kept(&e, t), walked(&e, t), "tree {t}");
    }
    // The next change to an already copied path costs about its height.
    one_change(&mut e, 6, 4322);
    assert_clean(&*dev);
}

/// The accounting of a commit reads about as many nodes with 100 snapshots of the
/// changed tree as with 10: finding who holds a block stops at the first two holders,
/// and a block new in this transaction is known from its parent, so the number of
/// trees does not multiply the searches.
#[test]
fn the_accounting_of_a_commit_does_not_grow_with_the_number_of_snapshots() {
    let reads_with = |snapshots: u64| {
        let (dev, mut e) = engine(512 << 20, 4096);
        e.create_tree(5).unwrap();
        fill(&mut e, 5, 20_000, 10);
        e.commit().unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut data_key = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 2000 * 10 + 5
        };
        let overwrite = |e: &mut Engine, k: u64| {
            let a = e.alloc_data(4096).unwrap();
            put_data(e, 5, k, a, 4096);
        };
        for j in 0..snapshots {
            for _ in 0..20 {
                overwrite(&mut e, data_key());
            }
            e.clone_tree(5, 100 + j).unwrap();
            e.commit().unwrap();
        }
        // Each commit: 10 new files' extents and 10 overwrites of shared ones.
        let mut reads = 0;
        for c in 0..10u64 {
            for i in 0..10 {
                overwrite(&mut e, 1_000_000 + c * 100 + i);
            }
            for _ in 0..10 {
                overwrite(&mut e, data_key());
            }
            e.commit().unwrap();
            reads += e.accounting_nodes_read();
        }
        assert_eq!(
            e.exclusive_bytes(5).unwrap(),
            {
                let u = usage(&e, 5);
                u.exclusive_node_bytes + u.exclusive_data_bytes
            },
            "{snapshots} snapshots"
        );
        assert_clean(&*dev);
        reads
    };
    let (few, many) = (reads_with(10), reads_with(100));
    assert!(
        many * 2 < few * 3,
        "10 commits read {few} nodes with 10 snapshots, {many} with 100"
    );
}

#[test]
fn the_walk_reads_only_the_copied_paths_of_a_large_cloned_tree() {
    const N: u64 = 100_000;
    let (dev, mut e) = engine(128 << 20, 4096);
    e.create_tree(5).unwrap();
    // Ten data items, 10,000 keys apart: no two share a node below the root.
    let changed: Vec<u64> = (0..10).map(|j| j * (N / 10) + 4321).collect();
    for i in 0..N {
        if !changed.contains(&i) {
            e.insert(5, Key::new(i, PLAIN, 0), &i.to_le_bytes())
                .unwrap();
        }
    }
    let mut old_extents = Vec::new();
    for &i in &changed {
        let a = e.alloc_data(4096).unwrap();
        put_data(&mut e, 5, i, a, 4096);
        old_extents.push(a);
    }
    e.commit().unwrap();
    let full = all_nodes(&*dev, 5).len() as u64;
    let whole = usage(&e, 5);
    assert_eq!(whole.nodes_read, full);
    assert_eq!(whole.exclusive_data_bytes, 10 * 4096);

    e.clone_tree(5, 6).unwrap();
    // The clone points its ten items at new extents: the old ones are then named only
    // by the source's leaves, which the copies no longer share.
    for &i in &changed {
        let a = e.alloc_data(4096).unwrap();
        put_data(&mut e, 6, i, a, 4096);
    }
    let height = u64::from(e.tree_root(6).unwrap().level) + 1;
    assert_eq!(height, u64::from(e.tree_root(5).unwrap().level) + 1);
    assert!(height >= 3, "height {height}");
    let copied = 1 + 10 * (height - 1);
    let ns = u64::from(e.nodesize());
    let want = Usage {
        exclusive_node_bytes: copied * ns,
        exclusive_data_bytes: 10 * 4096,
        nodes_read: copied,
    };
    for when in ["in the running transaction", "committed"] {
        for tree in [5, 6] {
            let u = usage(&e, tree);
            assert_eq!(u, want, "{when}, tree {tree}: {full} nodes in all");
            assert!(u.nodes_read <= 40 && u.nodes_read * 50 < full);
        }
        e.commit().unwrap();
    }
    // The copied paths, read from the device: exactly the nodes counted.
    for tree in [5, 6] {
        let root = e.tree_root(tree).unwrap();
        let nodes: BTreeSet<u64> = changed
            .iter()
            .flat_map(|&i| path(&*dev, root, Key::new(i, DATA, 0)))
            .collect();
        assert_eq!(nodes.len() as u64, copied, "tree {tree}");
    }
    let img = image(&*dev);
    for tree in [5, 6] {
        assert_eq!(brute_usage(&img, tree), want, "tree {tree}");
    }
    for a in old_extents {
        assert_eq!(e.data_refcount(a).unwrap(), 1);
    }
    // A cold cache: the same walk through the device and the validator.
    drop(e);
    let e = Engine::open(
        dev.clone(),
        Config {
            read_only: true,
            ..config(4096)
        },
    )
    .unwrap();
    assert_eq!(usage(&e, 5), want);
    assert_eq!(usage(&e, 6), want);
}

#[test]
fn a_tree_that_shares_nothing_holds_all_its_nodes_and_extents() {
    let (dev, mut e) = engine(64 << 20, 4096);
    e.create_tree(5).unwrap();
    e.create_tree(7).unwrap();
    fill(&mut e, 7, 3000, 100);
    let mut want_data = 0;
    for i in 0..3000u64 {
        e.insert(5, Key::new(i, PLAIN, 0), &[i as u8; 40]).unwrap();
        if i % 150 == 0 {
            // 5000 bytes are allocated as two sectors: the freed length counts.
            let a = e.alloc_data(5000).unwrap();
            want_data += 8192;
            put_data(&mut e, 5, i, a, 8192);
            // Two more items naming the same extent, one in the same leaf.
            for k in [i + 1, i + 77] {
                e.data_ref(a, 8192, 1).unwrap();
                put_data(&mut e, 5, k, a, 8192);
            }
        }
    }
    let in_txn = usage(&e, 5);
    e.commit().unwrap();
    let nodes = all_nodes(&*dev, 5).len() as u64;
    assert!(nodes > 50);
    let want = Usage {
        exclusive_node_bytes: nodes * 4096,
        exclusive_data_bytes: want_data,
        nodes_read: nodes,
    };
    assert_eq!(in_txn, want);
    assert_eq!(usage(&e, 5), want);
    assert_eq!(brute_usage(&image(&*dev), 5), want);
    assert_eq!(
        usage(&e, 7).nodes_read,
        all_nodes(&*dev, 7).len() as u64,
        "the other tree shares nothing either"
    );
    assert_clean(&*dev);
}

#[test]
fn a_data_extent_named_from_two_trees_is_exclusive_to_neither() {
    let (_dev, mut e) = engine(16 << 20, 4096);
    e.create_tree(5).unwrap();
    e.create_tree(6).unwrap();
    let a = e.alloc_data(4096).unwrap();
    put_data(&mut e, 5, 1, a, 4096);
    assert_eq!(usage(&e, 5).exclusive_data_bytes, 4096);
    e.data_ref(a, 4096, 1).unwrap();
    put_data(&mut e, 6, 1, a, 4096);
    assert_eq!(usage(&e, 5).exclusive_data_bytes, 0);
    assert_eq!(usage(&e, 6).exclusive_data_bytes, 0);
    e.commit().unwrap();
    delete(&mut e, 5, Key::new(1, DATA, 0));
    assert_eq!(usage(&e, 5).exclusive_data_bytes, 0);
    assert_eq!(usage(&e, 6).exclusive_data_bytes, 4096);
    // A reference held outside any leaf (an extent being moved by the layer above)
    // keeps it from being exclusive too.
    e.data_ref(a, 4096, 1).unwrap();
    assert_eq!(usage(&e, 6).exclusive_data_bytes, 0);
}

#[test]
fn blocks_shared_with_a_pending_drop_are_not_exclusive_until_it_is_released() {
    // One node released per commit: the drop of a three-level tree takes many commits.
    let (dev, mut e) = engine_with(64 << 20, 4096, config(1));
    e.create_tree(5).unwrap();
    fill(&mut e, 5, 30_000, 1000);
    e.commit().unwrap();
    let whole = usage(&e, 5);
    e.clone_tree(5, 6).unwrap();
    e.insert(6, Key::new(7, PLAIN, 0), b"changed").unwrap();
    let source_path = usage(&e, 5);
    assert!(source_path.nodes_read >= 3 && source_path.nodes_read < 10);
    e.drop_tree(6).unwrap();
    assert!(matches!(e.exclusive_usage(6), Err(Error::NoSuchTree(6))));
    // Everything the dropped clone shared with tree 5 is still held by the drop.
    assert_eq!(usage(&e, 5), source_path);
    let mut commits = 0;
    let mut last = source_path;
    while e.pending_drops() > 0 {
        e.commit().unwrap();
        commits += 1;
        let u = usage(&e, 5);
        assert_eq!(u, brute_usage(&image(&*dev), 5), "after {commits} commits");
        assert!(
            u.nodes_read >= last.nodes_read,
            "only grows: {last:?} then {u:?}"
        );
        if commits == 1 {
            // The clone's root is released, its children are queued: they still hold
            // what they share with tree 5.
            assert!(e.pending_drops() > 0);
            assert!(u.exclusive_node_bytes < whole.exclusive_node_bytes, "{u:?}");
        }
        last = u;
    }
    assert_eq!(last, whole, "released after {commits} commits");
    assert!(commits > 1);
    assert_clean(&*dev);
}

#[test]
fn usage_is_the_same_while_a_commit_is_being_written() {
    let (_dev, mut e) = engine(32 << 20, 4096);
    e.create_tree(5).unwrap();
    fill(&mut e, 5, 5000, 100);
    e.commit().unwrap();
    e.clone_tree(5, 6).unwrap();
    for i in (0..5000).step_by(700) {
        e.insert(6, Key::new(i, PLAIN, 0), b"x").unwrap();
    }
    let before = usages(&e);
    assert!(before[&6].nodes_read > 0);
    let prepared = e.commit_begin().unwrap().expect("changes");
    assert_eq!(usages(&e), before, "after commit_begin");
    let written = e.commit_write(&prepared);
    assert_eq!(usages(&e), before, "after commit_write");
    e.commit_end(prepared, written).unwrap();
    assert_eq!(usages(&e), before, "after commit_end");
}

#[test]
fn without_a_data_hook_only_nodes_are_counted() {
    let (_dev, mut e) = engine_with(16 << 20, 4096, Config::default());
    e.create_tree(5).unwrap();
    let a = e.alloc_data(4096).unwrap();
    e.insert(5, Key::new(1, DATA, 0), &item(a, 4096)).unwrap();
    let u = usage(&e, 5);
    assert_eq!(
        u,
        Usage {
            exclusive_node_bytes: 4096,
            exclusive_data_bytes: 0,
            nodes_read: 1
        }
    );
}

#[test]
fn missing_dropped_and_reserved_trees_are_refused() {
    let (_dev, mut e) = engine(16 << 20, 4096);
    e.create_tree(5).unwrap();
    e.clone_tree(5, 6).unwrap();
    e.drop_tree(6).unwrap();
    assert!(matches!(e.exclusive_usage(6), Err(Error::NoSuchTree(6))));
    assert!(matches!(e.exclusive_usage(9), Err(Error::NoSuchTree(9))));
    assert!(matches!(
        e.exclusive_usage(objectid::EXTENT_TREE),
        Err(Error::InvalidArgument(_))
    ));
    e.commit().unwrap();
    assert!(matches!(e.exclusive_usage(6), Err(Error::NoSuchTree(6))));
}
