//! Counts near the limits of their types, on images whose checksums are valid, are
//! corruption errors, not arithmetic overflows (found by reading the code behind the
//! fuzz target `open_image`).

mod common;
use arbor_engine::format::{DropItem, ExtentItem, Key, item_type, objectid};
use arbor_engine::{Config, Engine, Error, check};
use common::*;

fn one_tree() -> (
    std::sync::Arc<arbor_engine::storage::MemStorage>,
    arbor_engine::format::RootPtr,
) {
    let (dev, mut e) = mem_engine(4 << 20, 4096);
    e.create_tree(5).unwrap();
    e.insert(5, Key::new(1, 1, 1), b"x").unwrap();
    e.commit().unwrap();
    let root = e.tree_root(5).unwrap();
    (dev, root)
}

#[test]
fn a_huge_reference_count_is_a_corruption_error() {
    let (dev, root) = one_tree();
    forge_extent_tree_leaf(&*dev, |items| {
        for (k, v) in items.iter_mut() {
            if k.objectid == root.bytenr {
                let item = ExtentItem::decode(v).unwrap();
                *v = ExtentItem {
                    refs: u64::MAX,
                    ..item
                }
                .encode();
            }
        }
    });
    assert!(!check(&*dev).is_clean());
    let mut e = Engine::open(dev.clone(), Config::default()).unwrap();
    e.clone_tree(5, 6).unwrap();
    let r = e
        .insert(6, Key::new(2, 2, 2), b"y")
        .and_then(|()| e.commit());
    assert!(matches!(r, Err(Error::CorruptItem { .. })), "{r:?}");
}

#[test]
fn a_drop_count_that_would_overflow_is_a_corruption_error() {
    let (dev, root) = one_tree();
    forge_root_tree_leaf(&*dev, |items| {
        let d = DropItem {
            generation: root.generation,
            count: u32::MAX,
            level: root.level,
        };
        items.push((
            Key::new(objectid::DROP_QUEUE, item_type::DROP_ITEM, root.bytenr),
            d.encode(),
        ));
    });
    assert!(!check(&*dev).is_clean());
    let mut e = Engine::open(dev.clone(), Config::default()).unwrap();
    let r = e.drop_tree(5);
    assert!(matches!(r, Err(Error::CorruptItem { .. })), "{r:?}");
    assert!(e.tree_exists(5), "a refused drop leaves the tree in place");
}
