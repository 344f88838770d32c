//! `Engine::diff_trees`: the changes it reports equal a naive comparison of two full
//! scans, and it reads only the nodes the two trees do not share.

mod common;
use arbor_engine::format::{Body, RootPtr};
use arbor_engine::storage::Storage;
use arbor_engine::{DiffStats, Engine, Error, Key};
use common::*;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A change as owned data: key, old value, new value.
type OwnedChange = (Key, Option<Vec<u8>>, Option<Vec<u8>>);
type Diff = Vec<OwnedChange>;

fn diff(e: &Engine, old: u64, new: u64) -> (Diff, DiffStats) {
    let mut out = Diff::new();
    let stats = e
        .diff_trees(old, new, |c| {
            out.push((c.key, c.old.map(<[u8]>::to_vec), c.new.map(<[u8]>::to_vec)));
            Ok(())
        })
        .expect("diff_trees");
    assert_eq!(stats.changes, out.len() as u64, "changes counted");
    (out, stats)
}

fn contents(e: &Engine, tree: u64) -> BTreeMap<Key, Vec<u8>> {
    e.range(tree, ..)
        .expect("range")
        .collect::<Result<_, _>>()
        .expect("scan")
}

/// The diff computed from two full scans.
fn naive_diff(old: &BTreeMap<Key, Vec<u8>>, new: &BTreeMap<Key, Vec<u8>>) -> Diff {
    let keys: BTreeSet<&Key> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (a, b) = (old.get(k), new.get(k));
            (a != b).then(|| (*k, a.cloned(), b.cloned()))
        })
        .collect()
}

fn naive(e: &Engine, old: u64, new: u64) -> Diff {
    naive_diff(&contents(e, old), &contents(e, new))
}

/// Describes the first difference between two diffs, or `None` if they are equal.
fn first_mismatch(got: &Diff, want: &Diff) -> Option<String> {
    let show = |c: Option<&OwnedChange>| match c {
        None => "nothing".to_string(),
        Some((k, a, b)) => format!(
            "{k}: old {:?} bytes, new {:?} bytes",
            a.as_ref().map(Vec::len),
            b.as_ref().map(Vec::len)
        ),
    };
    (0..got.len().max(want.len()))
        .find(|&i| got.get(i) != want.get(i))
        .map(|i| {
            format!(
                "change {i} of {} (expected {}): got {}, expected {}",
                got.len(),
                want.len(),
                show(got.get(i)),
                show(want.get(i))
            )
        })
}

fn assert_diff_is_naive(e: &Engine, old: u64, new: u64, context: &str) -> DiffStats {
    let (got, stats) = diff(e, old, new);
    if let Some(m) = first_mismatch(&got, &naive(e, old, new)) {
        panic!("{context}: diff of trees {old} and {new}: {m}");
    }
    stats
}

/// How many nodes `tree` has: a diff against an empty tree reads every one of them.
fn node_count(e: &mut Engine, tree: u64) -> u64 {
    const EMPTY: u64 = 999;
    e.create_tree(EMPTY).expect("create");
    let (_, stats) = diff(e, EMPTY, tree);
    e.drop_tree(EMPTY).expect("drop");
    stats.new_nodes_read
}

fn value(rng: &mut StdRng, max_len: usize) -> Vec<u8> {
    let len = rng.gen_range(0..=max_len);
    (0..len).map(|_| rng.r#gen()).collect()
}

// ---- property test -----------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    /// Insert or replace an item with a random value.
    Insert {
        old: bool,
        k: u16,
    },
    /// Rewrite an item with the value it already has: the path is copied but the
    /// contents do not change, so nothing may be reported.
    Rewrite {
        old: bool,
        k: u16,
    },
    Delete {
        old: bool,
        k: u16,
    },
    DeleteRange {
        old: bool,
        start: u16,
        n: u16,
    },
    Bulk {
        old: bool,
        start: u16,
        n: u16,
    },
    Commit,
}

/// Keys come from a space a little larger than the initial tree, so that changes hit
/// existing items as well as new ones.
fn kn() -> impl Strategy<Value = u16> {
    0u16..4000
}

/// Most changes go to the clone, some to the original.
fn side() -> impl Strategy<Value = bool> {
    prop_oneof![4 => Just(false), 1 => Just(true)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (side(), kn()).prop_map(|(old, k)| Op::Insert { old, k }),
        2 => (side(), kn()).prop_map(|(old, k)| Op::Rewrite { old, k }),
        4 => (side(), kn()).prop_map(|(old, k)| Op::Delete { old, k }),
        1 => (side(), kn(), 1u16..1000)
            .prop_map(|(old, start, n)| Op::DeleteRange { old, start, n }),
        1 => (side(), kn(), 1u16..500).prop_map(|(old, start, n)| Op::Bulk { old, start, n }),
        1 => Just(Op::Commit),
    ]
}

fn k(n: u16) -> Key {
    key(u64::from(n))
}

const OLD: u64 = 5;
const NEW: u64 = 6;

fn run_case(nodesize: u32, items: usize, seed: u64, commit_first: bool, ops: &[Op]) {
    let (dev, mut e) = mem_engine(32 << 20, nodesize);
    let mut rng = StdRng::seed_from_u64(seed);
    // Small values make wide leaves; large ones make trees three levels deep with
    // 4 KiB nodes.
    let max_len = [24, 300, 900][rng.gen_range(0..3)].min(e.max_value_size());
    e.create_tree(OLD).unwrap();
    for _ in 0..items {
        let v = value(&mut rng, max_len);
        e.insert(OLD, k(rng.gen_range(0..3000)), &v).unwrap();
    }
    if commit_first {
        e.commit().unwrap();
    }
    e.clone_tree(OLD, NEW).unwrap();
    let stats = assert_diff_is_naive(&e, OLD, NEW, "fresh clone");
    assert_eq!(stats.nodes_read(), 0, "a fresh clone shares its root");
    for op in ops {
        let tree = |old: bool| if old { OLD } else { NEW };
        match *op {
            Op::Insert { old, k: n } => {
                let v = value(&mut rng, max_len);
                e.insert(tree(old), k(n), &v).unwrap();
            }
            Op::Rewrite { old, k: n } => {
                if let Some(v) = e.get(tree(old), k(n)).unwrap() {
                    e.insert(tree(old), k(n), &v).unwrap();
                }
            }
            Op::Delete { old, k: n } => {
                e.delete(tree(old), k(n)).unwrap();
            }
            Op::DeleteRange { old, start, n } => {
                for i in 0..n {
                    e.delete(tree(old), k(start.saturating_add(i))).unwrap();
                }
            }
            Op::Bulk { old, start, n } => {
                for i in 0..n {
                    let v = value(&mut rng, max_len);
                    e.insert(tree(old), k(start.saturating_add(i)), &v).unwrap();
                }
            }
            Op::Commit => e.commit().unwrap(),
        }
    }
    let in_txn = assert_diff_is_naive(&e, OLD, NEW, "in the running transaction");
    assert_diff_is_naive(&e, NEW, OLD, "reversed, in the running transaction");
    let (same, s) = diff(&e, NEW, NEW);
    assert!(same.is_empty() && s.nodes_read() == 0);
    e.commit().unwrap();
    let committed = assert_diff_is_naive(&e, OLD, NEW, "after commit");
    assert_eq!(
        committed, in_txn,
        "a commit writes the dirty nodes where they are: the same walk"
    );
    drop(e);
    // A cold cache: every node comes from the device through the validator.
    let e = open_ro(dev.clone() as Arc<dyn Storage>).unwrap();
    let reopened = assert_diff_is_naive(&e, OLD, NEW, "after reopening");
    assert_eq!(reopened, committed, "the same walk on the same trees");
    // No node that both trees reach is ever read: each side reads at most the nodes
    // the other side does not have.
    let old_nodes = nodes_of(&*dev, e.tree_root(OLD).unwrap());
    let new_nodes = nodes_of(&*dev, e.tree_root(NEW).unwrap());
    let only_old = old_nodes.difference(&new_nodes).count() as u64;
    let only_new = new_nodes.difference(&old_nodes).count() as u64;
    assert!(
        reopened.old_nodes_read <= only_old && reopened.new_nodes_read <= only_new,
        "{reopened:?}: only {only_old} nodes are not shared in the old tree, {only_new} in the new"
    );
    assert_clean(&*dev);
}

/// The addresses of every node of a committed tree, read from the device.
fn nodes_of(dev: &dyn Storage, root: RootPtr) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    let mut todo = vec![(root.bytenr, root.generation, root.level)];
    while let Some((bytenr, generation, level)) = todo.pop() {
        out.insert(bytenr);
        if let Body::Branch(ptrs) = read_node_at(dev, bytenr, generation, level).body {
            todo.extend(ptrs.iter().map(|p| (p.bytenr, p.generation, level - 1)));
        }
    }
    out
}

fn cases() -> u32 {
    if long_campaign() { 1000 } else { 48 }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn diff_equals_the_naive_comparison_of_two_full_scans(
        nodesize in prop_oneof![3 => Just(4096u32), 1 => Just(16384u32)],
        items in 0usize..3000,
        seed in any::<u64>(),
        commit_first in any::<bool>(),
        ops in proptest::collection::vec(op(), 0..60),
    ) {
        run_case(nodesize, items, seed, commit_first, &ops);
    }
}

// ---- cost ----------------------------------------------------------------------------

fn big_key(i: u64) -> Key {
    Key::new(i, 1, 0)
}

fn big_value(i: u64, stamp: u8) -> Vec<u8> {
    let mut v = i.to_le_bytes().to_vec();
    v.extend_from_slice(&[stamp; 8]);
    v
}

#[test]
fn diff_of_a_clone_reads_only_the_changed_paths_of_a_large_tree() {
    const N: u64 = 200_000;
    let (_dev, mut e) = mem_engine(128 << 20, 4096);
    e.create_tree(OLD).unwrap();
    for i in 0..N {
        e.insert(OLD, big_key(i * 2), &big_value(i, 0)).unwrap();
    }
    e.commit().unwrap();
    e.clone_tree(OLD, NEW).unwrap();
    let mut want = Diff::new();
    for j in 0..10u64 {
        let i = j * (N / 10) + 4321;
        let key = big_key(i * 2);
        let old = Some(big_value(i, 0));
        match j % 3 {
            0 => {
                e.insert(NEW, key, &big_value(i, 1)).unwrap();
                want.push((key, old, Some(big_value(i, 1))));
            }
            1 => {
                assert!(e.delete(NEW, key).unwrap());
                want.push((key, old, None));
            }
            _ => {
                let added = big_key(i * 2 + 1);
                e.insert(NEW, added, b"new").unwrap();
                want.push((added, None, Some(b"new".to_vec())));
            }
        }
    }
    let height = u64::from(e.tree_root(NEW).unwrap().level) + 1;
    let bound = 10 * height * 2 + 8;
    for when in ["in the running transaction", "after commit"] {
        let (got, stats) = diff(&e, OLD, NEW);
        if let Some(m) = first_mismatch(&got, &want) {
            panic!("{when}: {m}");
        }
        assert!(
            stats.nodes_read() <= bound,
            "{when}: read {} nodes for 10 changes in a tree of height {height}, \
             at most {bound} expected ({stats:?})",
            stats.nodes_read()
        );
        assert!(stats.shared_subtrees_skipped > 0);
        e.commit().unwrap();
    }
    let full = node_count(&mut e, OLD);
    let (_, stats) = diff(&e, OLD, NEW);
    assert!(
        full >= 1000 && stats.nodes_read() * 50 < full,
        "a full walk reads {full} nodes, the diff {}",
        stats.nodes_read()
    );
}

#[test]
fn identical_trees_and_unchanged_clones_read_no_node() {
    let (_dev, mut e) = mem_engine(32 << 20, 4096);
    e.create_tree(OLD).unwrap();
    for i in 0..5000 {
        e.insert(OLD, key(i), &[i as u8; 20]).unwrap();
    }
    e.clone_tree(OLD, NEW).unwrap();
    for (a, b) in [(OLD, OLD), (OLD, NEW), (NEW, OLD)] {
        let (got, stats) = diff(&e, a, b);
        assert!(got.is_empty());
        assert_eq!(stats.nodes_read(), 0);
        assert_eq!(stats.shared_subtrees_skipped, 1, "the root, once");
    }
    // Rewriting an item with its own value copies its path but changes nothing.
    e.insert(NEW, key(1234), &[1234u16 as u8; 20]).unwrap();
    let (got, stats) = diff(&e, OLD, NEW);
    assert!(got.is_empty(), "{got:?}");
    assert!(stats.nodes_read() > 0);
}

#[test]
fn trees_of_different_heights_are_compared_correctly() {
    let (_dev, mut e) = mem_engine(64 << 20, 4096);
    e.create_tree(OLD).unwrap();
    for i in 0..20_000 {
        e.insert(OLD, key(i), &[(i % 251) as u8; 30]).unwrap();
    }
    e.commit().unwrap();
    e.clone_tree(OLD, NEW).unwrap();
    // The clone shrinks to a few leaves...
    for i in 100..19_900 {
        e.delete(NEW, key(i)).unwrap();
    }
    let (lo, hi) = (e.tree_root(NEW).unwrap(), e.tree_root(OLD).unwrap());
    assert!(lo.level < hi.level, "heights {} and {}", lo.level, hi.level);
    assert_diff_is_naive(&e, OLD, NEW, "shrunken clone");
    assert_diff_is_naive(&e, NEW, OLD, "shrunken clone, reversed");
    // ...and a second clone of it grows again, with other split points.
    e.clone_tree(NEW, 7).unwrap();
    for i in (0..40_000).step_by(3) {
        e.insert(7, key(i), &[(i % 7) as u8; 30]).unwrap();
    }
    assert!(e.tree_root(7).unwrap().level > lo.level);
    for (a, b) in [(NEW, 7), (7, NEW), (OLD, 7), (7, OLD)] {
        assert_diff_is_naive(&e, a, b, "regrown clone");
    }
    e.commit().unwrap();
    for (a, b) in [(NEW, 7), (OLD, 7)] {
        assert_diff_is_naive(&e, a, b, "committed");
    }
}

#[test]
fn diff_of_unrelated_trees_is_correct_and_reads_each_node_once() {
    let (_dev, mut e) = mem_engine(64 << 20, 4096);
    let mut rng = StdRng::seed_from_u64(7);
    e.create_tree(OLD).unwrap();
    e.create_tree(NEW).unwrap();
    for i in 0..6000u64 {
        // Overlapping key sets; where both trees hold a key, the values are sometimes
        // equal and must then not be reported.
        let v = vec![(i % 13) as u8; (i % 40) as usize];
        if rng.gen_bool(0.7) {
            e.insert(OLD, key(i), &v).unwrap();
        }
        if rng.gen_bool(0.7) {
            let v = if rng.gen_bool(0.5) {
                v
            } else {
                value(&mut rng, 60)
            };
            e.insert(NEW, key(i), &v).unwrap();
        }
    }
    e.commit().unwrap();
    let stats = assert_diff_is_naive(&e, OLD, NEW, "unrelated trees");
    assert_diff_is_naive(&e, NEW, OLD, "unrelated trees, reversed");
    assert_eq!(stats.shared_subtrees_skipped, 0);
    let (old_nodes, new_nodes) = (node_count(&mut e, OLD), node_count(&mut e, NEW));
    assert_eq!(
        (stats.old_nodes_read, stats.new_nodes_read),
        (old_nodes, new_nodes)
    );
}

#[test]
fn diff_against_an_empty_tree_lists_every_item() {
    let (_dev, mut e) = mem_engine(32 << 20, 4096);
    e.create_tree(OLD).unwrap();
    e.create_tree(NEW).unwrap();
    let (got, _) = diff(&e, OLD, NEW);
    assert!(got.is_empty(), "two empty trees");
    for i in 0..3000 {
        e.insert(NEW, key(i), &i.to_le_bytes()).unwrap();
    }
    let items = contents(&e, NEW);
    let (added, _) = diff(&e, OLD, NEW);
    let want: Diff = items
        .iter()
        .map(|(k, v)| (*k, None, Some(v.clone())))
        .collect();
    assert_eq!(added, want);
    let (removed, _) = diff(&e, NEW, OLD);
    let want: Diff = items
        .iter()
        .map(|(k, v)| (*k, Some(v.clone()), None))
        .collect();
    assert_eq!(removed, want);
}

// ---- errors --------------------------------------------------------------------------

#[test]
fn diff_of_a_missing_or_reserved_tree_is_an_error() {
    let (_dev, mut e) = mem_engine(8 << 20, 4096);
    e.create_tree(OLD).unwrap();
    let r = e.diff_trees(OLD, 42, |_| Ok(()));
    assert!(matches!(r, Err(Error::NoSuchTree(42))), "{r:?}");
    let r = e.diff_trees(42, 42, |_| Ok(()));
    assert!(matches!(r, Err(Error::NoSuchTree(42))), "{r:?}");
    let r = e.diff_trees(1, OLD, |_| Ok(()));
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
}

#[test]
fn an_error_from_the_visitor_stops_the_walk() {
    let (_dev, mut e) = mem_engine(16 << 20, 4096);
    e.create_tree(OLD).unwrap();
    e.create_tree(NEW).unwrap();
    for i in 0..1000 {
        e.insert(NEW, key(i), b"v").unwrap();
    }
    let mut seen = 0;
    let r = e.diff_trees(OLD, NEW, |_| {
        seen += 1;
        if seen == 3 {
            return Err(Error::InvalidArgument("enough".into()));
        }
        Ok(())
    });
    assert!(
        matches!(r, Err(Error::InvalidArgument(ref m)) if m == "enough"),
        "{r:?}"
    );
    assert_eq!(seen, 3);
}

#[test]
fn a_corrupt_node_in_the_changed_part_is_reported_not_used() {
    let (dev, mut e) = mem_engine(32 << 20, 4096);
    e.create_tree(OLD).unwrap();
    for i in 0..3000 {
        e.insert(OLD, key(i), &[7; 40]).unwrap();
    }
    e.commit().unwrap();
    e.clone_tree(OLD, NEW).unwrap();
    e.insert(NEW, key(10), b"changed").unwrap();
    e.commit().unwrap();
    let root = e.tree_root(NEW).unwrap();
    drop(e);
    // Flip a byte of the clone's root, which the old tree does not share.
    let mut b = [0u8; 1];
    dev.read_at(root.bytenr + 100, &mut b).unwrap();
    b[0] ^= 0x40;
    dev.write_at(root.bytenr + 100, &b).unwrap();
    let e = open_ro(dev.clone() as Arc<dyn Storage>).unwrap();
    let r = e.diff_trees(OLD, NEW, |_| Ok(()));
    assert!(
        matches!(r, Err(Error::CorruptNode { block, tree: NEW, .. }) if block == root.bytenr),
        "{r:?}"
    );
    // The old tree alone is intact.
    let (got, stats) = diff(&e, OLD, OLD);
    assert!(got.is_empty() && stats.nodes_read() == 0);
}
