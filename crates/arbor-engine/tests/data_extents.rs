//! Data extents: allocation, reference counts through clones, copies of shared leaves
//! and drops, and the checker's accounting of them.

mod common;

use arbor_engine::storage::{MemStorage, Storage};
use arbor_engine::{Config, DataRefs, Engine, Key, MkfsOptions, check_with};
use std::sync::Arc;

/// Items of type 108 hold `bytenr, len` of a data extent, like a file extent item.
#[derive(Debug)]
struct Hook;

impl DataRefs for Hook {
    fn data_ref(&self, _tree: u64, key: &Key, value: &[u8]) -> Result<Option<(u64, u64)>, String> {
        if key.ty != 108 {
            return Ok(None);
        }
        let field = |i: usize| {
            value
                .get(i..i + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| format!("value of {} bytes is too short", value.len()))
        };
        Ok(Some((field(0)?, field(8)?)))
    }
}

fn cfg() -> Config {
    Config {
        data_refs: Some(Arc::new(Hook)),
        ..Config::default()
    }
}

fn engine() -> (Arc<MemStorage>, Engine) {
    let dev = Arc::new(MemStorage::new(64 << 20));
    let opts = MkfsOptions {
        nodesize: Some(4096),
        ..Default::default()
    };
    let e = Engine::create(dev.clone(), &opts, cfg()).expect("mkfs");
    (dev, e)
}

fn item(bytenr: u64, len: u64) -> Vec<u8> {
    let mut v = bytenr.to_le_bytes().to_vec();
    v.extend_from_slice(&len.to_le_bytes());
    v
}

fn assert_clean(dev: &dyn Storage) {
    let r = check_with(dev, Some(&Hook));
    assert!(r.is_clean(), "checker found problems:\n{r}");
}

#[test]
fn data_extents_are_counted_and_freed_with_their_last_reference() {
    let (dev, mut e) = engine();
    e.create_tree(5).unwrap();
    let free0 = e.space().free_bytes;
    let a = e.alloc_data(10_000).unwrap();
    e.storage().write_at(a, &[7u8; 12288]).unwrap();
    e.insert(5, Key::new(1, 108, 0), &item(a, 12288)).unwrap();
    e.commit().unwrap();
    assert_clean(&*dev);
    assert_eq!(e.data_refcount(a).unwrap(), 1);
    // A second item naming the same extent (a reflink within the tree).
    e.data_ref(a, 12288, 1).unwrap();
    e.insert(5, Key::new(2, 108, 0), &item(a, 12288)).unwrap();
    e.commit().unwrap();
    assert_clean(&*dev);
    assert_eq!(e.data_refcount(a).unwrap(), 2);
    for ino in [1, 2] {
        e.delete(5, Key::new(ino, 108, 0)).unwrap();
        e.data_ref(a, 12288, -1).unwrap();
    }
    e.commit().unwrap();
    e.commit().unwrap();
    assert_clean(&*dev);
    assert_eq!(e.data_refcount(a).unwrap(), 0);
    assert!(e.space().free_bytes >= free0 - 8 * 4096);
}

#[test]
fn a_leaked_data_extent_and_a_wrong_count_are_reported() {
    let (dev, mut e) = engine();
    e.create_tree(5).unwrap();
    let a = e.alloc_data(4096).unwrap();
    e.commit().unwrap();
    let r = check_with(&*dev, Some(&Hook));
    assert!(r.problems.iter().any(|p| p.contains("leaked")), "{r}");
    e.insert(5, Key::new(1, 108, 0), &item(a, 4096)).unwrap();
    e.insert(5, Key::new(2, 108, 0), &item(a, 4096)).unwrap();
    e.commit().unwrap();
    let r = check_with(&*dev, Some(&Hook));
    assert!(
        r.problems.iter().any(|p| p.contains("found 2 references")),
        "{r}"
    );
}

#[test]
fn cloned_trees_share_data_until_a_leaf_is_copied_and_drops_release_it() {
    let (dev, mut e) = engine();
    e.create_tree(5).unwrap();
    let mut extents = Vec::new();
    for i in 0..400u64 {
        let a = e.alloc_data(4096).unwrap();
        e.insert(5, Key::new(i, 108, 0), &item(a, 4096)).unwrap();
        extents.push(a);
    }
    e.commit().unwrap();
    e.clone_tree(5, 6).unwrap();
    e.commit().unwrap();
    assert_clean(&*dev);
    // Leaves are shared: one reference each.
    assert_eq!(e.data_refcount(extents[0]).unwrap(), 1);
    // Changing one key copies its leaf: the extents named there gain a reference.
    e.insert(6, Key::new(0, 1, 0), b"x").unwrap();
    e.commit().unwrap();
    assert_clean(&*dev);
    assert_eq!(e.data_refcount(extents[0]).unwrap(), 2);
    // Dropping the original releases its private leaves' references.
    e.drop_tree(5).unwrap();
    e.finish_drops().unwrap();
    assert_clean(&*dev);
    assert_eq!(e.data_refcount(extents[0]).unwrap(), 1);
    e.drop_tree(6).unwrap();
    e.finish_drops().unwrap();
    e.commit().unwrap();
    assert_clean(&*dev);
    for a in extents {
        assert_eq!(e.data_refcount(a).unwrap(), 0);
    }
}

#[test]
fn freed_blocks_are_held_until_released() {
    let dev = Arc::new(MemStorage::new(64 << 20));
    let opts = MkfsOptions::default();
    let c = Config {
        hold_freed: true,
        ..cfg()
    };
    let mut e = Engine::create(dev.clone(), &opts, c).unwrap();
    e.create_tree(5).unwrap();
    let a = e.alloc_data(1 << 20).unwrap();
    e.insert(5, Key::new(1, 108, 0), &item(a, 1 << 20)).unwrap();
    e.commit().unwrap();
    e.delete(5, Key::new(1, 108, 0)).unwrap();
    e.data_ref(a, 1 << 20, -1).unwrap();
    e.commit().unwrap();
    let held = e.space().pinned_bytes;
    assert!(held >= 1 << 20, "held {held}");
    e.release_freed(u64::MAX);
    assert!(e.space().pinned_bytes < 1 << 20);
    assert_clean(&*dev);
}

#[test]
fn a_commit_in_three_steps_refuses_changes_while_it_writes() {
    let (dev, mut e) = engine();
    e.create_tree(5).unwrap();
    e.insert(5, Key::new(1, 1, 0), b"one").unwrap();
    let prepared = e.commit_begin().unwrap().expect("changes to commit");
    assert!(e.insert(5, Key::new(2, 1, 0), b"two").is_err());
    // Readers may read the transaction while it is written.
    assert_eq!(
        e.get(5, Key::new(1, 1, 0)).unwrap().as_deref(),
        Some(&b"one"[..])
    );
    let written = e.commit_write(&prepared);
    e.commit_end(prepared, written).unwrap();
    e.insert(5, Key::new(2, 1, 0), b"two").unwrap();
    e.commit().unwrap();
    assert!(
        e.commit_begin().unwrap().is_none(),
        "nothing left to commit"
    );
    drop(e);
    let e = Engine::open(dev.clone(), cfg()).unwrap();
    assert_eq!(
        e.get(5, Key::new(2, 1, 0)).unwrap().as_deref(),
        Some(&b"two"[..])
    );
    assert_clean(&*dev);
}
