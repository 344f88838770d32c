//! A commit that fails part-way (the device dies after N writes or flushes) leaves the
//! previous committed state intact on the image, and poisons the handle.

mod common;
use arbor_engine::storage::{FaultInjector, MemStorage, Storage};
use arbor_engine::{Config, Engine, Error};
use common::*;
use std::sync::Arc;

fn populated() -> (Arc<MemStorage>, Model) {
    let (dev, mut e) = mem_engine(16 << 20, 4096);
    e.create_tree(5).unwrap();
    for i in 0..2000 {
        e.insert(5, key(i), &[1; 50]).unwrap();
    }
    e.clone_tree(5, 6).unwrap();
    e.commit().unwrap();
    (dev, snapshot(&e))
}

/// On a 16 MiB device: the primary superblock, its flush, the mirror at 128 KiB.
const SUPERBLOCK_OPS: u64 = 3;

#[test]
fn a_commit_failing_at_any_write_leaves_the_previous_state() {
    let (dev, committed) = populated();
    let mut outcomes = Vec::new();
    let mut n = 0;
    let (total, new) = loop {
        let image = Arc::new(MemStorage::from_bytes(dev.to_bytes()));
        let faulty = Arc::new(FaultInjector::new(image.clone()));
        let mut e = Engine::open(faulty.clone(), Config::default()).unwrap();
        for i in 0..1500 {
            e.insert(6, key(i * 3), &[2; 60]).unwrap();
        }
        e.drop_tree(5).unwrap();
        faulty.fail_after(n);
        match e.commit() {
            Ok(()) => {
                assert!(n > 10, "the commit needed only {n} writes");
                break (n, snapshot(&e));
            }
            Err(err) => assert!(matches!(err, Error::Io { .. }), "{err}"),
        }
        assert!(matches!(e.insert(6, key(1), b"x"), Err(Error::Poisoned(_))));
        assert!(matches!(e.commit(), Err(Error::Poisoned(_))));
        assert_clean(&*image);
        let reopened = Engine::open(image.clone() as Arc<dyn Storage>, Config::default()).unwrap();
        outcomes.push(snapshot(&reopened));
        n += 1;
    };
    for (n, got) in outcomes.iter().enumerate() {
        let n = n as u64;
        let is_old = *got == committed;
        if n + SUPERBLOCK_OPS < total {
            assert!(
                is_old,
                "fault at operation {n} of {total}: the previous commit was lost"
            );
        } else {
            // The superblocks may have reached the device before the final flush failed.
            assert!(
                is_old || *got == new,
                "fault at operation {n} of {total}: neither state"
            );
        }
    }
}
