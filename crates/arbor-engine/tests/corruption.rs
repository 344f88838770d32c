//! Corruption: bit flips in nodes and superblocks, garbage devices and lost writes are
//! detected and named, by the checker and by the engine, and never cause a panic or
//! wrong data.
//!
//! Each test builds a small image (4 KiB nodes, a few thousand items in several trees,
//! a clone, a drop in progress), damages it in place, checks, and restores it.

mod common;
use arbor_engine::format::{
    BRANCH_PTR_SIZE, Body, DropItem, Expect, Key, LEAF_ITEM_SIZE, NODE_HEADER_SIZE, RootItem,
    RootPtr, SUPERBLOCK_SIZE, decode_node, item_type, objectid, superblock_offsets,
};
use arbor_engine::storage::{MemStorage, Storage};
use arbor_engine::{CheckReport, Config, Engine, Error, check, read_superblock};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

const NODESIZE: u32 = 4096;

// ---- building an image ---------------------------------------------------------------

/// An image and what it must hold.
struct Built {
    dev: Arc<MemStorage>,
    /// The logical content of every user tree at the last commit.
    model: Model,
    /// The device bytes after each commit, oldest first (the last is the final image).
    history: Vec<Vec<u8>>,
}

fn value(tree: u64, i: u64, round: u64) -> Vec<u8> {
    let len = 4 + ((i * 7 + tree) % 45) as usize;
    let mut v = vec![(tree as u8) ^ (round as u8); len];
    v[..4].copy_from_slice(&(i as u32).to_le_bytes());
    v
}

/// Trees 5 (3000 items), 6 (a clone of 5, then changed), 9 (1000 items), and tree 10, a
/// changed clone of 9 that is dropped with only part of the drop done, so the image
/// holds a non-empty drop queue.
fn build(dev_size: u64) -> Built {
    let dev = Arc::new(MemStorage::new(dev_size));
    let cfg = Config {
        drop_nodes_per_commit: 2,
        ..Config::default()
    };
    let mut e = Engine::create(dev.clone(), &small_opts(NODESIZE), cfg.clone()).unwrap();
    let mut model = Model::new();
    let mut history = Vec::new();

    e.create_tree(5).unwrap();
    e.create_tree(9).unwrap();
    model.insert(5, BTreeMap::new());
    model.insert(9, BTreeMap::new());
    for i in 0..3000 {
        put(&mut e, &mut model, 5, key(i), value(5, i, 0));
        if i % 3 == 0 {
            put(&mut e, &mut model, 9, key(i), value(9, i, 0));
        }
    }
    e.commit().unwrap();
    history.push(dev.to_bytes());

    e.clone_tree(5, 6).unwrap();
    model.insert(6, model[&5].clone());
    for i in (0..600).step_by(10) {
        put(&mut e, &mut model, 6, key(i), value(6, i, 1));
    }
    for i in (2005..2400).step_by(40) {
        assert!(e.delete(5, key(i)).unwrap());
        model.get_mut(&5).unwrap().remove(&key(i));
    }
    e.commit().unwrap();
    history.push(dev.to_bytes());

    for i in (1..3000).step_by(6) {
        put(&mut e, &mut model, 9, key(i), value(9, i, 2));
    }
    for i in (2500..3000).step_by(25) {
        put(&mut e, &mut model, 5, key(i), value(5, i, 2));
    }
    e.commit().unwrap();
    history.push(dev.to_bytes());

    e.clone_tree(9, 10).unwrap();
    for i in (0..3000).step_by(9) {
        e.insert(10, key(i), &value(10, i, 3)).unwrap();
    }
    e.commit().unwrap();
    history.push(dev.to_bytes());
    e.drop_tree(10).unwrap();
    e.commit().unwrap();
    assert!(
        e.pending_drops() > 0,
        "the drop should still be in progress"
    );
    history.push(dev.to_bytes());

    // A reopened engine allocates from the start of the device again, so this commit
    // rewrites addresses that held older nodes (what a lost write would leave behind).
    drop(e);
    let mut e = Engine::open(dev.clone(), cfg).unwrap();
    for i in (0..3000).step_by(50) {
        put(&mut e, &mut model, 9, key(i), value(9, i, 4));
    }
    for i in (1000..1300).step_by(7) {
        put(&mut e, &mut model, 5, key(i), value(5, i, 4));
    }
    e.commit().unwrap();
    assert!(
        e.pending_drops() > 0,
        "the drop should still be in progress"
    );
    history.push(dev.to_bytes());

    assert_eq!(snapshot(&e), model, "the engine disagrees with the model");
    assert_clean(&*dev);
    Built {
        dev,
        model,
        history,
    }
}

fn put(e: &mut Engine, model: &mut Model, t: u64, k: Key, v: Vec<u8>) {
    e.insert(t, k, &v).unwrap();
    model.entry(t).or_default().insert(k, v);
}

// ---- finding nodes -------------------------------------------------------------------

/// A node reachable from the superblock.
#[derive(Clone, Debug)]
struct NodeInfo {
    bytenr: u64,
    generation: u64,
    level: u8,
    /// Trees through which it is reached: 1 root, 2 extent, 3 drop queue, user trees.
    trees: BTreeSet<u64>,
    /// End of the item headers or branch pointers.
    items_end: usize,
    /// Start of the packed leaf data (nodesize for branches and empty leaves).
    data_start: usize,
}

/// Every node reachable from the superblock, found with the public format decoder.
fn reachable(dev: &dyn Storage) -> BTreeMap<u64, NodeInfo> {
    let (sb, problems) = read_superblock(dev).expect("a valid superblock");
    assert!(problems.is_empty(), "{problems:?}");
    let mut out = BTreeMap::new();
    let roots = walk(dev, &sb, objectid::ROOT_TREE, sb.root_tree, &mut out);
    walk(dev, &sb, objectid::EXTENT_TREE, sb.extent_tree, &mut out);
    for (k, v) in roots {
        let root = match k.ty {
            item_type::ROOT_ITEM => (k.objectid, RootItem::decode(&v).unwrap().root),
            item_type::DROP_ITEM => {
                let d = DropItem::decode(&v).unwrap();
                let ptr = RootPtr {
                    bytenr: k.offset,
                    generation: d.generation,
                    level: d.level,
                };
                (objectid::DROP_QUEUE, ptr)
            }
            other => panic!("unexpected root tree item type {other}"),
        };
        walk(dev, &sb, root.0, root.1, &mut out);
    }
    out
}

fn walk(
    dev: &dyn Storage,
    sb: &arbor_engine::format::Superblock,
    tree: u64,
    root: RootPtr,
    out: &mut BTreeMap<u64, NodeInfo>,
) -> Vec<(Key, Vec<u8>)> {
    let ns = sb.nodesize as usize;
    let mut items = Vec::new();
    let mut stack = vec![(root.bytenr, root.generation, root.level, None, None)];
    while let Some((bytenr, generation, level, lo, hi)) = stack.pop() {
        let mut buf = vec![0u8; ns];
        dev.read_at(bytenr, &mut buf).unwrap();
        let expect = Expect {
            bytenr,
            generation,
            level,
            fsid: &sb.fsid,
            nodesize: sb.nodesize,
            total_bytes: sb.total_bytes,
            lo,
            hi,
        };
        let node = decode_node(&buf, &expect).expect("a valid image decodes");
        let (items_end, data_start) = match &node.body {
            Body::Leaf(leaf) => (
                NODE_HEADER_SIZE + leaf.len() * LEAF_ITEM_SIZE,
                ns - leaf.iter().map(|(_, v)| v.len()).sum::<usize>(),
            ),
            Body::Branch(ptrs) => (NODE_HEADER_SIZE + ptrs.len() * BRANCH_PTR_SIZE, ns),
        };
        out.entry(bytenr)
            .or_insert_with(|| NodeInfo {
                bytenr,
                generation,
                level,
                trees: BTreeSet::new(),
                items_end,
                data_start,
            })
            .trees
            .insert(tree);
        match node.body {
            Body::Leaf(leaf) => items.extend(leaf.iter().map(|(k, v)| (k, v.to_vec()))),
            Body::Branch(ptrs) => {
                for (i, p) in ptrs.iter().enumerate() {
                    let child_hi = ptrs.get(i + 1).map(|n| n.key).or(hi);
                    stack.push((p.bytenr, p.generation, level - 1, Some(p.key), child_hi));
                }
            }
        }
    }
    items.sort_by_key(|(k, _)| *k);
    items
}

// ---- damaging and judging ------------------------------------------------------------

fn read_byte(dev: &MemStorage, at: u64) -> u8 {
    let mut b = [0u8];
    dev.read_at(at, &mut b).unwrap();
    b[0]
}

fn write_byte(dev: &MemStorage, at: u64, v: u8) {
    dev.write_at(at, &[v]).unwrap();
}

fn flip_bit(dev: &MemStorage, at: u64, bit: u8) {
    write_byte(dev, at, read_byte(dev, at) ^ (1 << bit));
}

/// True when `text` names `block N` exactly, not a longer number that starts with N.
fn names_block(text: &str, block: u64) -> bool {
    let needle = format!("block {block}");
    text.match_indices(&needle).any(|(at, _)| {
        !text[at + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// Runs the checker, turning a panic into a failure that says what was damaged.
fn check_no_panic(dev: &dyn Storage, what: &str) -> CheckReport {
    match catch_unwind(AssertUnwindSafe(|| check(dev))) {
        Ok(r) => r,
        Err(_) => panic!("check() panicked on {what}"),
    }
}

fn is_corrupt_block(err: &Error, bad: u64) -> bool {
    matches!(err, Error::CorruptNode { block, .. } if *block == bad)
}

/// Opens the device and reads every tree of the model (full scans and point lookups).
/// `bad` is the damaged block and `trees` the trees it belongs to. Every read must
/// return the model's data, or fail naming `bad`, and only where `bad` is on the way.
fn judge_reads(
    dev: &Arc<MemStorage>,
    model: &Model,
    bad: u64,
    trees: &BTreeSet<u64>,
) -> Result<(), String> {
    let opened = catch_unwind(AssertUnwindSafe(|| open_ro(dev.clone())))
        .map_err(|_| "Engine::open panicked".to_string())?;
    let system = trees.contains(&objectid::ROOT_TREE) || trees.contains(&objectid::EXTENT_TREE);
    let e = match opened {
        Err(err) if system && is_corrupt_block(&err, bad) => return Ok(()),
        Err(err) => return Err(format!("open failed: {err}")),
        Ok(_) if system => {
            return Err("open succeeded although a root or extent tree node is corrupt".into());
        }
        Ok(e) => e,
    };
    let found: Vec<u64> = e.trees();
    let want: Vec<u64> = model.keys().copied().collect();
    if found != want {
        return Err(format!("trees {found:?}, expected {want:?}"));
    }
    for (&t, items) in model {
        let on_path = trees.contains(&t);
        let scan = catch_unwind(AssertUnwindSafe(|| {
            let mut got = Vec::new();
            let it = match e.range(t, ..) {
                Ok(it) => it,
                Err(err) => return (got, Some(err)),
            };
            for item in it {
                match item {
                    Ok(kv) => got.push(kv),
                    Err(err) => return (got, Some(err)),
                }
            }
            (got, None)
        }))
        .map_err(|_| format!("scanning tree {t} panicked"))?;
        let (got, err) = scan;
        for (n, ((k, v), (mk, mv))) in got.iter().zip(items.iter()).enumerate() {
            if k != mk || v != mv {
                return Err(format!(
                    "tree {t}: scan item {n} is {k} {v:?}, expected {mk} {mv:?}"
                ));
            }
        }
        match err {
            None if on_path => {
                return Err(format!(
                    "tree {t}: a full scan did not notice the corrupt block"
                ));
            }
            None if got.len() != items.len() => {
                return Err(format!(
                    "tree {t}: scan returned {} of {} items",
                    got.len(),
                    items.len()
                ));
            }
            None => {}
            Some(err) if on_path && is_corrupt_block(&err, bad) => {}
            Some(err) => return Err(format!("tree {t}: scan failed: {err}")),
        }
        let probes = items
            .iter()
            .step_by(37)
            .map(|(k, v)| (*k, Some(v.clone())))
            .chain(items.iter().next_back().map(|(k, v)| (*k, Some(v.clone()))))
            .chain([(Key::new(u64::MAX - 1, 0, 0), None), (Key::MIN, None)]);
        for (k, want) in probes {
            let want = want.or_else(|| items.get(&k).cloned());
            let got = catch_unwind(AssertUnwindSafe(|| e.get(t, k)))
                .map_err(|_| format!("tree {t}: get {k} panicked"))?;
            match got {
                Ok(v) if v == want => {}
                Ok(v) => {
                    return Err(format!(
                        "tree {t}: get {k} returned {v:?}, expected {want:?}"
                    ));
                }
                Err(err) if on_path && is_corrupt_block(&err, bad) => {}
                Err(err) => return Err(format!("tree {t}: get {k} failed: {err}")),
            }
        }
    }
    Ok(())
}

/// Byte offsets within a node to flip, chosen per node so that together they cover the
/// header fields, the item (or pointer) area, the free space and the leaf data.
fn flip_offsets(n: usize, node: &NodeInfo, ns: usize) -> Vec<usize> {
    // checksum, level, flags, nritems, fsid, bytenr, generation, owner, reserved
    const HEADER: [usize; 9] = [1, 4, 5, 6, 13, 26, 33, 42, 55];
    let mut v = vec![
        HEADER[(2 * n) % HEADER.len()],
        HEADER[(2 * n + 1) % HEADER.len()],
    ];
    let items = node.items_end - NODE_HEADER_SIZE;
    if items > 0 {
        v.push(NODE_HEADER_SIZE + (n * 131 + 17) % items);
    }
    let free = node.data_start.saturating_sub(node.items_end);
    if free > 0 {
        v.push(node.items_end + (n * 61) % free);
    }
    let data = ns - node.data_start;
    if data > 0 {
        v.push(node.data_start + (n * 97 + 3) % data);
    }
    v.push(ns - 1);
    v
}

// ---- tests -----------------------------------------------------------------------------

#[test]
fn bit_flips_in_every_reachable_node_are_detected_and_named() {
    let built = build(16 << 20);
    let dev = &built.dev;
    let nodes = reachable(&**dev);
    let report = check(&**dev);
    assert_eq!(
        report.nodes,
        nodes.len() as u64,
        "the walk disagrees with check()"
    );
    for tree in [1, 2, 3, 5, 6, 9] {
        assert!(
            nodes.values().any(|n| n.trees.contains(&tree)),
            "no node of tree {tree}"
        );
    }
    assert!(nodes.values().any(|n| n.level > 0), "no branch nodes");
    assert!(nodes.values().any(|n| n.trees.len() > 1), "no shared nodes");

    let ns = NODESIZE as usize;
    let mut flips = 0;
    for (n, node) in nodes.values().enumerate() {
        for (k, off) in flip_offsets(n, node, ns).into_iter().enumerate() {
            let bit = ((n + 3 * k) % 8) as u8;
            let at = node.bytenr + off as u64;
            let what = format!(
                "bit {bit} of byte {off} in block {} (level {}, trees {:?})",
                node.bytenr, node.level, node.trees
            );
            flip_bit(dev, at, bit);
            let r = check_no_panic(&**dev, &what);
            let named = r.problems.iter().any(|p| names_block(p, node.bytenr));
            assert!(named, "{what}: check did not name the block:\n{r}");
            if let Err(why) = judge_reads(dev, &built.model, node.bytenr, &node.trees) {
                panic!("{what}: {why}");
            }
            flip_bit(dev, at, bit);
            flips += 1;
        }
    }
    eprintln!(
        "{flips} bit flips in {} nodes, each detected and named",
        nodes.len()
    );
    assert!(flips > 500, "only {flips} flips");
    assert_clean(&**dev);
}

#[test]
fn a_flipped_superblock_copy_is_named_and_the_other_copy_is_used() {
    let built = build(16 << 20);
    let dev = &built.dev;
    let generation = check(&**dev).generation;
    let copies = superblock_offsets(16 << 20);
    assert_eq!(copies.len(), 2);
    for (copy, &base) in copies.iter().enumerate() {
        // checksum, version, magic, fsid, generation, sizes, root pointers, copy index,
        // label, reserved bytes at the end
        for (n, off) in [0usize, 5, 9, 20, 33, 45, 57, 70, 100, 113, 130, 4095]
            .into_iter()
            .enumerate()
        {
            let at = base + off as u64;
            let bit = (n % 8) as u8;
            let what = format!("bit {bit} of byte {off} of superblock copy {copy}");
            flip_bit(dev, at, bit);
            let r = check_no_panic(&**dev, &what);
            let mentions = |c: usize| {
                r.problems
                    .iter()
                    .any(|p| p.contains(&format!("superblock copy {c}")))
            };
            assert!(mentions(copy), "{what}: not named:\n{r}");
            assert!(
                !mentions(1 - copy),
                "{what}: the good copy was blamed:\n{r}"
            );
            assert_eq!(
                r.problems.len(),
                1,
                "{what}: the trees should still check clean:\n{r}"
            );
            assert_eq!(r.generation, generation);
            let e = catch_unwind(AssertUnwindSafe(|| open_ro(dev.clone())))
                .unwrap_or_else(|_| panic!("{what}: open panicked"))
                .unwrap_or_else(|err| panic!("{what}: open failed: {err}"));
            assert_eq!(e.committed_generation(), generation, "{what}");
            assert_eq!(snapshot(&e), built.model, "{what}");
            drop(e);
            flip_bit(dev, at, bit);
        }
    }
    assert_clean(&**dev);
}

#[test]
fn bit_flips_in_every_superblock_copy_fail_open_with_no_superblock() {
    let built = build(72 << 20);
    let dev = &built.dev;
    let copies = superblock_offsets(72 << 20);
    assert_eq!(copies.len(), 3);
    for (n, &base) in copies.iter().enumerate() {
        flip_bit(dev, base + 40 + n as u64, 2);
    }
    let r = check_no_panic(&**dev, "all superblock copies");
    assert!(!r.is_clean());
    let text = r.to_string();
    assert!(text.contains("no valid superblock"), "{text}");
    for c in 0..copies.len() {
        assert!(
            text.contains(&format!("superblock copy {c}")),
            "copy {c} not named:\n{text}"
        );
    }
    let err = catch_unwind(AssertUnwindSafe(|| open_ro(dev.clone())))
        .expect("open panicked")
        .expect_err("open succeeded without a valid superblock");
    assert!(matches!(err, Error::NoSuperblock(_)), "{err}");
    assert_eq!(err.errno(), 117);

    // Repairing any one copy is enough.
    flip_bit(dev, copies[2] + 42, 2);
    let e = open_ro(dev.clone()).expect("copy 2 alone opens");
    assert_eq!(snapshot(&e), built.model);
}

#[test]
fn a_stale_superblock_copy_loses_to_the_newest() {
    let built = build(72 << 20);
    let dev = &built.dev;
    let newest = check(&**dev).generation;
    let old_image = &built.history[built.history.len() - 3];
    let old_gen = check(&MemStorage::from_bytes(old_image.clone())).generation;
    assert!(old_gen < newest);
    let copies = superblock_offsets(72 << 20);
    let len = SUPERBLOCK_SIZE;
    for (stale, &at) in copies.iter().enumerate() {
        // One copy from an older commit, as after a crash between superblock writes.
        let current = {
            let mut b = vec![0u8; len];
            dev.read_at(at, &mut b).unwrap();
            b
        };
        dev.write_at(at, &old_image[at as usize..at as usize + len])
            .unwrap();
        let (sb, problems) = read_superblock(&**dev).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(sb.generation, newest, "stale copy {stale} won");
        let e = open_ro(dev.clone()).unwrap();
        assert_eq!(e.committed_generation(), newest);
        assert_eq!(snapshot(&e), built.model);
        drop(e);
        dev.write_at(at, &current).unwrap();
    }
    // Only the stale copies valid: the engine falls back to the older commit, whose
    // superblock is intact; it must not panic whatever it then finds.
    for (i, &at) in copies.iter().enumerate() {
        if i > 0 {
            flip_bit(dev, at + 50, 0);
        }
    }
    dev.write_at(
        copies[0],
        &old_image[copies[0] as usize..copies[0] as usize + len],
    )
    .unwrap();
    let (sb, _) = read_superblock(&**dev).unwrap();
    assert_eq!(sb.generation, old_gen);
    let _ = check_no_panic(&**dev, "a device with only a stale superblock");
    catch_unwind(AssertUnwindSafe(|| {
        if let Ok(e) = open_ro(dev.clone()) {
            for t in e.trees() {
                if let Ok(it) = e.range(t, ..) {
                    it.for_each(drop);
                }
            }
        }
    }))
    .expect("reading a rolled back image panicked");
}

/// Opens a device that holds no valid arbor image: open must fail cleanly and check
/// must report a problem, neither may panic.
fn assert_rejected(bytes: Vec<u8>, what: &str) -> (Error, CheckReport) {
    let dev = Arc::new(MemStorage::from_bytes(bytes));
    let r = check_no_panic(&*dev, what);
    assert!(!r.is_clean(), "{what}: check found nothing wrong");
    let opened = catch_unwind(AssertUnwindSafe(|| open_ro(dev.clone())))
        .unwrap_or_else(|_| panic!("{what}: open panicked"));
    let err = match opened {
        Ok(_) => panic!("{what}: open succeeded"),
        Err(err) => err,
    };
    (err, r)
}

#[test]
fn garbage_devices_fail_to_open_cleanly_and_check_reports_them() {
    for size in [
        0u64,
        4096,
        (64 << 10) - 1,
        (64 << 10) + 100,
        1 << 20,
        16 << 20,
    ] {
        let (err, r) = assert_rejected(vec![0; size as usize], &format!("{size} zero bytes"));
        assert!(matches!(err, Error::NoSuperblock(_)), "{size} zeros: {err}");
        assert!(r.problems[0].contains("no valid superblock"), "{r}");
    }
    let mut rng = StdRng::seed_from_u64(7);
    for size in [(64 << 10) + 4096, 1 << 20, 16 << 20] {
        let mut b = vec![0u8; size];
        rng.fill(&mut b[..]);
        let (err, _) = assert_rejected(b, &format!("{size} random bytes"));
        assert!(matches!(err, Error::NoSuperblock(_)), "{err}");
    }
}

#[test]
fn a_truncated_image_fails_to_open_cleanly() {
    let built = build(16 << 20);
    let image = built.history.last().unwrap();
    for len in [
        (64 << 10) + 2048,
        (128 << 10) + 2048,
        1 << 20,
        2 << 20,
        (16 << 20) - 4096,
    ] {
        let (err, r) = assert_rejected(image[..len].to_vec(), &format!("image cut to {len} bytes"));
        assert!(matches!(err, Error::NoSuperblock(_)), "{len}: {err}");
        assert!(r.to_string().contains("no valid superblock"), "{r}");
    }
}

#[test]
fn valid_superblocks_over_random_nodes_fail_cleanly() {
    let built = build(16 << 20);
    let nodes = reachable(&*built.dev);
    let mut image = built.dev.to_bytes();
    let mut rng = StdRng::seed_from_u64(11);
    rng.fill(&mut image[1 << 20..]);
    let sb = read_superblock(&MemStorage::from_bytes(image.clone()))
        .unwrap()
        .0;
    let (err, r) = assert_rejected(image, "random bytes under valid superblocks");
    assert!(is_corrupt_block(&err, sb.root_tree.bytenr), "{err}");
    assert!(
        r.problems
            .iter()
            .any(|p| names_block(p, sb.root_tree.bytenr)),
        "{r}"
    );
    assert!(nodes.contains_key(&sb.root_tree.bytenr));
}

#[test]
fn a_lost_write_is_caught_by_the_generation_check_and_named() {
    let built = build(16 << 20);
    let dev = &built.dev;
    let sb = read_superblock(&**dev).unwrap().0;
    let nodes = reachable(&**dev);
    let ns = NODESIZE as usize;
    let mut lost = 0;
    for node in nodes.values() {
        let at = node.bytenr as usize;
        // The newest older version of this block that is a node written at this address.
        let old = built.history[..built.history.len() - 1]
            .iter()
            .rev()
            .find_map(|img| {
                let b = &img[at..at + ns];
                let header_bytenr = u64::from_le_bytes(b[24..32].try_into().unwrap());
                let header_gen = u64::from_le_bytes(b[32..40].try_into().unwrap());
                (header_bytenr == node.bytenr
                    && b[8..24] == sb.fsid
                    && header_gen != node.generation)
                    .then(|| (b.to_vec(), header_gen))
            });
        let Some((old, old_gen)) = old else { continue };
        let current = {
            let mut b = vec![0u8; ns];
            dev.read_at(node.bytenr, &mut b).unwrap();
            b
        };
        dev.write_at(node.bytenr, &old).unwrap();
        let what = format!(
            "block {} (trees {:?}) rolled back from generation {} to {old_gen}",
            node.bytenr, node.trees, node.generation
        );
        let r = check_no_panic(&**dev, &what);
        let named = r
            .problems
            .iter()
            .any(|p| names_block(p, node.bytenr) && p.contains("generation mismatch"));
        assert!(named, "{what}: not named as a generation mismatch:\n{r}");
        if let Err(why) = judge_reads(dev, &built.model, node.bytenr, &node.trees) {
            panic!("{what}: {why}");
        }
        dev.write_at(node.bytenr, &current).unwrap();
        lost += 1;
    }
    eprintln!("{lost} lost writes detected and named");
    assert!(
        lost >= 5,
        "only {lost} blocks were rewritten at the same address"
    );
    assert_clean(&**dev);
}

/// CRC-32C (Castagnoli), bit by bit: enough to reseal a handful of test nodes.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82f6_3b78 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

fn reseal(node: &mut [u8]) {
    let c = crc32c(&node[4..]);
    node[..4].copy_from_slice(&c.to_le_bytes());
}

/// Damage that keeps the checksum valid (a bug in a writer, not a bad disk) may go
/// unnoticed where it only changes values, but must never make anything panic.
#[test]
fn resealed_structural_damage_never_panics() {
    let built = build(16 << 20);
    let dev = &built.dev;
    let nodes = reachable(&**dev);
    let ns = NODESIZE as usize;
    let mut rng = StdRng::seed_from_u64(5);
    let mut detected = 0;
    let mut cases = 0;
    for (n, node) in nodes.values().enumerate() {
        let mut original = vec![0u8; ns];
        dev.read_at(node.bytenr, &mut original).unwrap();
        assert_eq!(
            crc32c(&original[4..]).to_le_bytes(),
            original[..4],
            "the test's crc32c disagrees with the engine's"
        );
        for kind in 0..4 {
            let mut b = original.clone();
            let entries = (node.items_end - NODE_HEADER_SIZE)
                / if node.level == 0 {
                    LEAF_ITEM_SIZE
                } else {
                    BRANCH_PTR_SIZE
                };
            match (kind + n) % 4 {
                // nritems anywhere in 0..=u16::MAX
                0 => b[6..8].copy_from_slice(&rng.r#gen::<u16>().to_le_bytes()),
                // a random byte in the item or pointer area
                1 if entries > 0 => {
                    let at = NODE_HEADER_SIZE + rng.gen_range(0..node.items_end - NODE_HEADER_SIZE);
                    b[at] = rng.r#gen();
                }
                // a child address or a data offset set to something plausible
                2 if entries > 0 => {
                    let slot = rng.gen_range(0..entries);
                    if node.level == 0 {
                        let at = NODE_HEADER_SIZE + slot * LEAF_ITEM_SIZE + 17;
                        let v = rng.gen_range(0..ns as u32 + 64);
                        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
                    } else {
                        let at = NODE_HEADER_SIZE + slot * BRANCH_PTR_SIZE + 17;
                        let other = nodes.keys().nth(rng.gen_range(0..nodes.len())).unwrap();
                        b[at..at + 8].copy_from_slice(&other.to_le_bytes());
                    }
                }
                // the level, or two keys swapped
                _ => {
                    if entries >= 2 && rng.gen_bool(0.5) {
                        let size = if node.level == 0 {
                            LEAF_ITEM_SIZE
                        } else {
                            BRANCH_PTR_SIZE
                        };
                        let i = rng.gen_range(0..entries - 1);
                        let (x, y) = (
                            NODE_HEADER_SIZE + i * size,
                            NODE_HEADER_SIZE + (i + 1) * size,
                        );
                        for j in 0..17 {
                            b.swap(x + j, y + j);
                        }
                    } else {
                        b[4] = rng.gen_range(0..10);
                    }
                }
            }
            reseal(&mut b);
            if b == original {
                continue;
            }
            dev.write_at(node.bytenr, &b).unwrap();
            let what = format!(
                "resealed damage {kind} in block {} (trees {:?})",
                node.bytenr, node.trees
            );
            let r = check_no_panic(&**dev, &what);
            if r.problems.iter().any(|p| names_block(p, node.bytenr)) {
                detected += 1;
            }
            catch_unwind(AssertUnwindSafe(|| {
                if let Ok(e) = open_ro(dev.clone()) {
                    for t in e.trees() {
                        if let Ok(it) = e.range(t, ..) {
                            it.take(100_000).for_each(drop);
                        }
                        for i in (0..3000).step_by(101) {
                            let _ = e.get(t, key(i));
                        }
                    }
                }
            }))
            .unwrap_or_else(|_| panic!("{what}: reading panicked"));
            dev.write_at(node.bytenr, &original).unwrap();
            cases += 1;
        }
    }
    eprintln!("{detected} of {cases} resealed damages named by check, no panics");
    assert!(cases > 300, "only {cases} cases");
    assert!(
        detected * 2 > cases,
        "only {detected} of {cases} structural damages were named"
    );
    assert_clean(&**dev);
}

/// Rewrites every superblock copy with `edit` applied, resealed.
fn edit_superblocks(dev: &MemStorage, edit: impl Fn(&mut [u8])) {
    let len = dev.len().unwrap();
    for at in superblock_offsets(len) {
        let mut b = vec![0u8; SUPERBLOCK_SIZE];
        dev.read_at(at, &mut b).unwrap();
        edit(&mut b);
        reseal(&mut b);
        dev.write_at(at, &b).unwrap();
    }
}

/// What [`exercise`] saw: the checker's report and the open error, or which of them
/// panicked.
struct Outcome {
    report: Option<CheckReport>,
    open_error: Option<String>,
    panics: Vec<String>,
}

/// Runs check, open and full reads of every tree, catching panics.
fn exercise(dev: &Arc<MemStorage>, what: &str) -> Outcome {
    let mut panics = Vec::new();
    let report = catch_unwind(AssertUnwindSafe(|| check(&**dev)))
        .map_err(|_| panics.push(format!("{what}: check() panicked")))
        .ok();
    let open_error = catch_unwind(AssertUnwindSafe(|| match open_ro(dev.clone()) {
        Ok(e) => {
            for t in e.trees() {
                if let Ok(it) = e.range(t, ..) {
                    it.take(100_000).for_each(drop);
                }
            }
            None
        }
        Err(err) => Some(err.to_string()),
    }))
    .unwrap_or_else(|_| {
        panics.push(format!("{what}: open or reading panicked"));
        None
    });
    Outcome {
        report,
        open_error,
        panics,
    }
}

type Edit = Box<dyn Fn(&mut [u8])>;

fn put_u64_at(off: usize, v: u64) -> Edit {
    Box::new(move |b: &mut [u8]| b[off..off + 8].copy_from_slice(&v.to_le_bytes()))
}

fn put_u32_at(off: usize, v: u32) -> Edit {
    Box::new(move |b: &mut [u8]| b[off..off + 4].copy_from_slice(&v.to_le_bytes()))
}

/// Applies each superblock edit to every copy of a fresh image, exercises the image,
/// and returns every panic.
fn superblock_edit_panics(cases: Vec<(String, Edit)>) -> Vec<String> {
    let built = build(16 << 20);
    let dev = &built.dev;
    let image = dev.to_bytes();
    let mut failures = Vec::new();
    for (what, edit) in &cases {
        edit_superblocks(dev, edit);
        failures.extend(exercise(dev, what).panics);
        dev.write_at(0, &image).unwrap();
    }
    assert_clean(&**dev);
    failures
}

/// Superblocks with a valid checksum but extreme field values (a buggy or hostile
/// writer) are rejected or survived, never a panic.
#[test]
fn resealed_superblocks_with_extreme_fields_never_panic() {
    let mut cases: Vec<(String, Edit)> = Vec::new();
    for v in [0, 1, u64::MAX - 1] {
        cases.push((format!("generation {v}"), put_u64_at(32, v)));
    }
    for v in [
        0,
        4096,
        1 << 20,
        (16 << 20) - 1,
        (16 << 20) + 4096,
        u64::MAX,
    ] {
        cases.push((format!("total_bytes {v}"), put_u64_at(40, v)));
    }
    for v in [0, u64::MAX] {
        cases.push((format!("bytes_used {v}"), put_u64_at(48, v)));
    }
    for v in [0, 512, 8192, 65536, 1 << 31] {
        cases.push((format!("nodesize {v}"), put_u32_at(56, v)));
    }
    for (name, off) in [("root tree", 64usize), ("extent tree", 88)] {
        for v in [0, 4096, 1 << 20, 1 << 62] {
            cases.push((format!("{name} bytenr {v}"), put_u64_at(off, v)));
        }
        for v in [0, 1, u64::MAX] {
            cases.push((format!("{name} generation {v}"), put_u64_at(off + 8, v)));
        }
        for v in [1u8, 7, 8, 255] {
            cases.push((
                format!("{name} level {v}"),
                Box::new(move |b: &mut [u8]| b[off + 16] = v),
            ));
        }
    }
    cases.push((
        "a label that is not UTF-8".into(),
        Box::new(|b: &mut [u8]| b[128..132].copy_from_slice(&[0xff, 0xfe, 0xc0, 0x80])),
    ));
    let failures = superblock_edit_panics(cases);
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Engine bug: `Engine::open` computes `sb.generation + 1` (engine.rs, `Engine::empty`),
/// which overflows for a superblock with a valid checksum and generation `u64::MAX`.
#[test]
fn a_superblock_generation_of_u64_max_does_not_panic() {
    let cases = vec![("generation u64::MAX".to_string(), put_u64_at(32, u64::MAX))];
    let failures = superblock_edit_panics(cases);
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Engine bug: `Superblock::validate` computes `r.bytenr + nodesize`, which overflows
/// for a root pointer near `u64::MAX`; both `check()` and `Engine::open` panic.
#[test]
fn a_superblock_root_pointer_near_u64_max_does_not_panic() {
    let cases = vec![
        (
            "root tree bytenr u64::MAX - 4095".to_string(),
            put_u64_at(64, u64::MAX - 4095),
        ),
        (
            "extent tree bytenr u64::MAX - 4095".to_string(),
            put_u64_at(88, u64::MAX - 4095),
        ),
    ];
    let failures = superblock_edit_panics(cases);
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Rewrites one field of the last extent item in the last extent tree leaf (valid
/// checksum), exercises the image, and returns what went wrong: panics, a clean check,
/// or an open that accepted it.
fn extent_edit_failures(cases: &[(&str, usize, u64)]) -> Vec<String> {
    let built = build(16 << 20);
    let dev = &built.dev;
    let nodes = reachable(&**dev);
    let ns = NODESIZE as usize;
    let leaf = nodes
        .values()
        .rfind(|n| n.level == 0 && n.trees.contains(&objectid::EXTENT_TREE))
        .expect("an extent tree leaf");
    let mut original = vec![0u8; ns];
    dev.read_at(leaf.bytenr, &mut original).unwrap();
    let nitems = (leaf.items_end - NODE_HEADER_SIZE) / LEAF_ITEM_SIZE;
    let last = NODE_HEADER_SIZE + (nitems - 1) * LEAF_ITEM_SIZE;
    let mut failures = Vec::new();
    for &(what, field, v) in cases {
        let at = last + field;
        let mut b = original.clone();
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        reseal(&mut b);
        dev.write_at(leaf.bytenr, &b).unwrap();
        let out = exercise(dev, what);
        failures.extend(out.panics);
        if out.report.as_ref().is_some_and(|r| r.is_clean()) {
            failures.push(format!("{what}: check found nothing wrong"));
        }
        if out.open_error.is_none() {
            failures.push(format!("{what}: open accepted it"));
        }
        dev.write_at(leaf.bytenr, &original).unwrap();
    }
    assert_clean(&**dev);
    failures
}

/// An extent key is (address, EXTENT_ITEM, length).
const EXTENT_ADDRESS: usize = 0;
const EXTENT_LENGTH: usize = 9;

/// Extent items whose lengths or addresses are absurd (with valid node checksums) are
/// reported by check and refused by open, without a panic.
#[test]
fn resealed_extent_items_with_absurd_values_are_refused() {
    let failures = extent_edit_failures(&[
        ("last extent length 2^63", EXTENT_LENGTH, 1 << 63),
        ("last extent length 2^40", EXTENT_LENGTH, 1 << 40),
        (
            "last extent address u64::MAX - 4095",
            EXTENT_ADDRESS,
            u64::MAX - 4095,
        ),
        ("last extent address 0", EXTENT_ADDRESS, 0),
    ]);
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Engine bugs: with a last extent length of `u64::MAX`, `load_extent_tree` overflows
/// `used += key.offset` (engine.rs) and `check()` overflows `reserved + used` (check.rs).
#[test]
fn an_extent_length_of_u64_max_does_not_panic() {
    let failures =
        extent_edit_failures(&[("last extent length u64::MAX", EXTENT_LENGTH, u64::MAX)]);
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Engine bug: `load_extent_tree` accepts an extent of length 0 (`mark_used` of zero
/// sectors succeeds), so the tree node it describes is free to the allocator and will be
/// overwritten by a later allocation while still referenced. check() does report it.
#[test]
fn an_extent_of_length_zero_is_refused_at_open() {
    let failures = extent_edit_failures(&[("last extent length 0", EXTENT_LENGTH, 0)]);
    assert!(failures.is_empty(), "{failures:#?}");
}
