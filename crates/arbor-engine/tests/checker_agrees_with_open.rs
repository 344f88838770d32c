//! The checker and `Engine::open` apply the same rules: an image the checker passes
//! opens. Regression for a disagreement found by the fuzzer's differential oracle
//! (`ARBOR_FUZZ_ORACLE=1`): a root item whose key offset is not 0.

mod common;
use arbor_engine::check;
use arbor_engine::format::{Key, item_type};
use common::*;

#[test]
fn a_root_item_with_a_nonzero_offset_is_a_problem_for_both() {
    let (dev, mut e) = mem_engine(8 << 20, 4096);
    e.create_tree(5).unwrap();
    e.insert(5, key(1), b"one").unwrap();
    e.commit().unwrap();
    drop(e);
    forge_root_tree_leaf(&*dev, |items| {
        for (k, _) in items.iter_mut() {
            if *k == Key::new(5, item_type::ROOT_ITEM, 0) {
                k.offset = 13312;
            }
        }
    });
    let report = check(&*dev);
    assert!(
        report.problems.iter().any(|p| p.contains("(5 132 13312)")),
        "the checker must name the item:\n{report}"
    );
    assert!(open_ro(dev.clone()).is_err(), "open refuses it too");
}
