//! Regression test for a hang found by fuzzing (`fuzz/` target `open_image`): an extent
//! tree that does not account for live nodes lets the allocator hand those blocks out
//! again. A copy-on-write then wrote new nodes over blocks that old pointers still
//! named, a pointer cycle formed, and insert recursed until the stack overflowed. Now a
//! pointer read from the device that leads to a block reused by the running transaction
//! is a corruption error naming the block.

mod common;
use arbor_engine::format::{
    Body, EXTENT_FLAG_TREE_BLOCK, ExtentItem, Key, Leaf, Node, encode_node, item_type,
};
use arbor_engine::storage::{MemStorage, Storage};
use arbor_engine::{Config, Engine, Error, read_superblock};
use common::*;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

/// Forges the (single-leaf) extent tree so that the lowest block the allocator will
/// hand out is `victim`, a live child of tree 5's root: its extent item is dropped, and
/// every free block below it gets one (leaked, but out of the way).
fn make_live_block_look_free(dev: &MemStorage, victim: u64) {
    let (sb, _) = read_superblock(dev).unwrap();
    let ns = sb.nodesize;
    let at = sb.extent_tree;
    assert_eq!(at.level, 0, "the test image's extent tree is one leaf");
    let node = read_node_at(dev, at.bytenr, at.generation, 0);
    let Body::Leaf(items) = &node.body else {
        unreachable!()
    };
    let used: Vec<u64> = items.keys().iter().map(|k| k.objectid).collect();
    let mut forged: Vec<(Key, Vec<u8>)> = items
        .iter()
        .filter(|(k, _)| k.objectid != victim)
        .map(|(k, v)| (k, v.to_vec()))
        .collect();
    let filler = ExtentItem {
        refs: 1,
        flags: EXTENT_FLAG_TREE_BLOCK,
    }
    .encode();
    for block in (1u64 << 20..victim).step_by(ns as usize) {
        if !used.contains(&block) {
            forged.push((
                Key::new(block, item_type::EXTENT_ITEM, u64::from(ns)),
                filler.clone(),
            ));
        }
    }
    forged.sort_by_key(|(k, _)| *k);
    let forged = Node {
        body: Body::Leaf(Leaf::from_items(forged)),
        ..node
    };
    dev.write_at(at.bytenr, &encode_node(&forged, ns, &sb.fsid))
        .unwrap();
}

#[test]
fn writes_over_unaccounted_live_blocks_fail_cleanly_instead_of_hanging() {
    let (dev, mut e) = mem_engine(8 << 20, 4096);
    e.create_tree(5).unwrap();
    for i in 0..1500 {
        e.insert(5, key(i), &[5; 20]).unwrap();
    }
    e.commit().unwrap();
    let root = e.tree_root(5).unwrap();
    drop(e);
    assert_eq!(root.level, 1, "tree 5 is a root branch over leaves");
    let Body::Branch(ptrs) = read_node_at(&*dev, root.bytenr, root.generation, 1).body else {
        unreachable!()
    };
    let victim = *ptrs.iter().min_by_key(|p| p.bytenr).unwrap();
    make_live_block_look_free(&dev, victim.bytenr);
    assert!(
        !arbor_engine::check(&*dev).is_clean(),
        "the checker sees the damage"
    );

    let (done, wait) = mpsc::channel();
    let worker_dev: Arc<dyn Storage> = dev.clone();
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let mut e = Engine::open(worker_dev, Config::default())?;
            // The change shadows the root into the victim's block, then follows the old
            // pointer to the victim into that same block.
            e.insert(5, victim.key, &[6; 30])?;
            e.insert(5, victim.key, &[7; 30])
        }));
        let _ = done.send(outcome.map_err(|_| ()));
    });
    let outcome = match wait.recv_timeout(Duration::from_secs(60)) {
        Ok(outcome) => outcome.expect("the engine panicked"),
        Err(_) => panic!("the engine hung on an image with an unaccounted live block"),
    };
    match outcome {
        Err(Error::CorruptNode { block, reason, .. }) => {
            assert_eq!(block, victim.bytenr, "{reason}");
        }
        other => panic!("expected a corruption error naming the victim, got {other:?}"),
    }
}
