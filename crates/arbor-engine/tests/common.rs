//! Shared helpers for the engine's integration tests.
#![allow(dead_code)]

use arbor_engine::storage::{MemStorage, Storage};
use arbor_engine::{Config, Engine, Key, MkfsOptions, check};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The logical content of every user tree.
pub type Model = BTreeMap<u64, BTreeMap<Key, Vec<u8>>>;

pub fn small_opts(nodesize: u32) -> MkfsOptions {
    MkfsOptions {
        nodesize: Some(nodesize),
        ..Default::default()
    }
}

pub fn mem_engine(size: u64, nodesize: u32) -> (Arc<MemStorage>, Engine) {
    let dev = Arc::new(MemStorage::new(size));
    let e = Engine::create(dev.clone(), &small_opts(nodesize), Config::default())
        .expect("mkfs on a memory device");
    (dev, e)
}

/// Reads every user tree back into a model.
pub fn snapshot(e: &Engine) -> Model {
    let mut m = Model::new();
    for t in e.trees() {
        let items = e
            .range(t, ..)
            .expect("range")
            .collect::<Result<BTreeMap<_, _>, _>>();
        m.insert(t, items.expect("scan"));
    }
    m
}

/// Asserts that the checker finds nothing wrong, printing its report otherwise.
pub fn assert_clean(dev: &dyn Storage) {
    let r = check(dev);
    assert!(r.is_clean(), "checker found problems:\n{r}");
}

pub fn key(n: u64) -> Key {
    Key::new(n / 7, (n % 7) as u8, n * 3)
}

/// Describes the first difference between two models, or `None` if they are equal.
/// Used instead of `assert_eq!`, whose output for whole trees is unreadable.
pub fn first_difference(got: &Model, want: &Model) -> Option<String> {
    let trees: std::collections::BTreeSet<_> = got.keys().chain(want.keys()).collect();
    for t in trees {
        match (got.get(t), want.get(t)) {
            (None, _) => return Some(format!("tree {t} is missing")),
            (_, None) => return Some(format!("tree {t} should not exist")),
            (Some(g), Some(w)) => {
                let keys: std::collections::BTreeSet<_> = g.keys().chain(w.keys()).collect();
                for k in keys {
                    match (g.get(k), w.get(k)) {
                        (a, b) if a == b => {}
                        (None, _) => return Some(format!("tree {t}: key {k} is missing")),
                        (_, None) => return Some(format!("tree {t}: key {k} should not exist")),
                        (Some(a), Some(b)) => {
                            return Some(format!(
                                "tree {t}: key {k} holds {} bytes starting {:?}, expected {} starting {:?}",
                                a.len(),
                                a.first(),
                                b.len(),
                                b.first()
                            ));
                        }
                    }
                }
            }
        }
    }
    None
}

/// Asserts two models are equal, naming the first difference.
pub fn assert_same(got: &Model, want: &Model, context: &str) {
    if let Some(d) = first_difference(got, want) {
        panic!("{context}: {d}");
    }
}

/// True when `ARBOR_LONG=1`: tests then run their longer campaigns.
pub fn long_campaign() -> bool {
    std::env::var("ARBOR_LONG").is_ok_and(|v| v == "1")
}

/// Opens an image read-only, as a test that only inspects it must: a read-write open
/// commits an empty generation, which rewrites the superblocks.
pub fn open_ro(dev: std::sync::Arc<dyn Storage>) -> arbor_engine::Result<Engine> {
    Engine::open(
        dev,
        Config {
            read_only: true,
            ..Config::default()
        },
    )
}

/// Reads and validates the node at `bytenr`, as a parent pointer of that generation and
/// level would, for tests that forge on-disk structures.
pub fn read_node_at(
    dev: &dyn Storage,
    bytenr: u64,
    generation: u64,
    level: u8,
) -> arbor_engine::format::Node {
    let (sb, _) = arbor_engine::read_superblock(dev).expect("a superblock");
    let mut buf = vec![0u8; sb.nodesize as usize];
    dev.read_at(bytenr, &mut buf).expect("reading a node");
    let expect = arbor_engine::format::Expect {
        bytenr,
        generation,
        level,
        fsid: &sb.fsid,
        nodesize: sb.nodesize,
        total_bytes: sb.total_bytes,
        lo: None,
        hi: None,
    };
    arbor_engine::format::decode_node(&buf, &expect).expect("a valid node")
}

/// Replaces the items of the root tree, which must be a single leaf, with what `edit`
/// makes of them, and reseals the leaf.
pub fn forge_root_tree_leaf(dev: &dyn Storage, edit: impl FnOnce(&mut Vec<(Key, Vec<u8>)>)) {
    let (sb, _) = arbor_engine::read_superblock(dev).expect("a superblock");
    forge_leaf(dev, sb.root_tree, edit);
}

/// Like [`forge_root_tree_leaf`], for the extent tree.
pub fn forge_extent_tree_leaf(dev: &dyn Storage, edit: impl FnOnce(&mut Vec<(Key, Vec<u8>)>)) {
    let (sb, _) = arbor_engine::read_superblock(dev).expect("a superblock");
    forge_leaf(dev, sb.extent_tree, edit);
}

fn forge_leaf(
    dev: &dyn Storage,
    at: arbor_engine::format::RootPtr,
    edit: impl FnOnce(&mut Vec<(Key, Vec<u8>)>),
) {
    use arbor_engine::format::{Body, Leaf, Node, encode_node};
    let (sb, _) = arbor_engine::read_superblock(dev).expect("a superblock");
    assert_eq!(at.level, 0, "the tree is one leaf");
    let node = read_node_at(dev, at.bytenr, at.generation, 0);
    let Body::Leaf(leaf) = &node.body else {
        unreachable!()
    };
    let mut items: Vec<(Key, Vec<u8>)> = leaf.iter().map(|(k, v)| (k, v.to_vec())).collect();
    edit(&mut items);
    items.sort_by_key(|(k, _)| *k);
    let forged = Node {
        body: Body::Leaf(Leaf::from_items(items)),
        ..node
    };
    dev.write_at(at.bytenr, &encode_node(&forged, sb.nodesize, &sb.fsid))
        .expect("writing");
}
