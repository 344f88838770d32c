//! Basic behaviour of the engine: items survive commits and reopening, clones are
//! independent, drops return space, and the checker agrees with the allocator.

mod common;
use arbor_engine::{Config, Engine, Error, Key};
use common::*;
use std::sync::Arc;

#[test]
fn items_survive_commit_and_reopen() {
    let (dev, mut e) = mem_engine(16 << 20, 4096);
    e.create_tree(5).unwrap();
    for i in 0..5000u64 {
        e.insert(5, key(i), &i.to_le_bytes()).unwrap();
    }
    e.commit().unwrap();
    assert_clean(&*dev);
    let before = snapshot(&e);
    let e2 = Engine::open(dev.clone(), Config::default()).unwrap();
    assert_same(&snapshot(&e2), &before, "after reopen");
    assert_eq!(before[&5].len(), 5000);
    assert_eq!(
        e2.get(5, key(77)).unwrap(),
        Some(77u64.to_le_bytes().to_vec())
    );
}

#[test]
fn deleting_everything_shrinks_the_tree_back_to_one_leaf() {
    let (dev, mut e) = mem_engine(16 << 20, 4096);
    e.create_tree(5).unwrap();
    for i in 0..3000u64 {
        e.insert(5, key(i), &[1; 40]).unwrap();
    }
    e.commit().unwrap();
    let used_full = e.space().used_bytes;
    for i in 0..3000u64 {
        assert!(e.delete(5, key(i)).unwrap(), "key {i} was present");
    }
    assert!(!e.delete(5, key(1)).unwrap());
    e.commit().unwrap();
    assert_clean(&*dev);
    assert_eq!(e.range(5, ..).unwrap().count(), 0);
    assert!(e.space().used_bytes < used_full / 10);
}

#[test]
fn clones_share_nodes_and_diverge_independently() {
    let (dev, mut e) = mem_engine(32 << 20, 4096);
    e.create_tree(5).unwrap();
    for i in 0..4000u64 {
        e.insert(5, key(i), &[2; 30]).unwrap();
    }
    e.commit().unwrap();
    let used = e.space().used_bytes;
    e.clone_tree(5, 6).unwrap();
    e.commit().unwrap();
    assert_eq!(e.space().used_bytes, used, "a clone costs no nodes");
    e.insert(6, key(10), b"changed").unwrap();
    e.delete(5, key(11)).unwrap();
    e.commit().unwrap();
    assert_clean(&*dev);
    assert_eq!(e.get(5, key(10)).unwrap(), Some(vec![2; 30]));
    assert_eq!(e.get(6, key(10)).unwrap(), Some(b"changed".to_vec()));
    assert_eq!(e.get(5, key(11)).unwrap(), None);
    assert_eq!(e.get(6, key(11)).unwrap(), Some(vec![2; 30]));
    let grown = e.space().used_bytes - used;
    assert!(
        grown < 16 * 4096,
        "clone-then-modify copied {grown} bytes, not just two paths"
    );
}

#[test]
fn dropping_a_clone_frees_only_its_private_nodes() {
    let (dev, mut e) = mem_engine(32 << 20, 4096);
    e.create_tree(5).unwrap();
    for i in 0..4000u64 {
        e.insert(5, key(i), &[3; 30]).unwrap();
    }
    e.commit().unwrap();
    let base = e.space().used_bytes;
    e.clone_tree(5, 6).unwrap();
    for i in 0..500u64 {
        e.insert(6, key(i * 8), &[4; 30]).unwrap();
    }
    e.commit().unwrap();
    assert!(e.space().used_bytes > base);
    e.drop_tree(6).unwrap();
    e.finish_drops().unwrap();
    assert_clean(&*dev);
    assert_eq!(e.space().used_bytes, base);
    assert_eq!(e.range(5, ..).unwrap().count(), 4000);
    e.drop_tree(5).unwrap();
    e.finish_drops().unwrap();
    assert_clean(&*dev);
    let r = arbor_engine::check(&*dev);
    assert_eq!(r.nodes, 2, "only the root and extent tree roots remain");
}

#[test]
fn checker_free_space_equals_the_allocator() {
    let (dev, mut e) = mem_engine(16 << 20, 4096);
    e.create_tree(5).unwrap();
    e.create_tree(9).unwrap();
    for i in 0..2000u64 {
        e.insert(5, key(i), &[5; 50]).unwrap();
        if i % 3 == 0 {
            e.insert(9, key(i), &[6; 10]).unwrap();
        }
    }
    e.clone_tree(9, 10).unwrap();
    e.commit().unwrap();
    let r = arbor_engine::check(&*dev);
    assert!(r.is_clean(), "{r}");
    let s = e.space();
    assert_eq!(s.pinned_bytes, 0);
    assert_eq!(r.free_bytes, s.free_bytes);
    assert_eq!(r.used_bytes, s.used_bytes);
    let reopened = Engine::open(dev.clone(), Config::default()).unwrap();
    assert_eq!(reopened.space(), s);
}

#[test]
fn oversized_items_and_reserved_trees_are_rejected() {
    let (_dev, mut e) = mem_engine(8 << 20, 4096);
    e.create_tree(5).unwrap();
    let big = vec![0; e.max_value_size() + 1];
    assert!(matches!(
        e.insert(5, key(1), &big),
        Err(Error::ItemTooLarge { .. })
    ));
    assert!(matches!(
        e.insert(1, key(1), b"x"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        e.insert(7, key(1), b"x"),
        Err(Error::NoSuchTree(7))
    ));
    assert!(matches!(e.create_tree(5), Err(Error::TreeExists(5))));
    e.insert(5, Key::MAX, &vec![1; e.max_value_size()]).unwrap();
}

#[test]
fn filling_the_device_is_a_clean_error_and_keeps_what_fit() {
    let (dev, mut e) = mem_engine(2 << 20, 4096);
    e.create_tree(5).unwrap();
    let mut stored = 0u64;
    let err = loop {
        match e.insert(5, key(stored), &[7; 200]) {
            Ok(()) => stored += 1,
            Err(err) => break err,
        }
        assert!(stored < 1_000_000, "a 2 MiB device never filled up");
    };
    assert!(matches!(err, Error::NoSpace { .. }), "{err}");
    assert_eq!(err.errno(), 28);
    e.commit().unwrap();
    assert_clean(&*dev);
    let e2 = Engine::open(dev.clone(), Config::default()).unwrap();
    assert_eq!(e2.range(5, ..).unwrap().count() as u64, stored);
    // Deleting still works on a full device, and frees room for more.
    drop(e2);
    for i in 0..stored / 2 {
        e.delete(5, key(i)).unwrap();
    }
    e.commit().unwrap();
    e.insert(5, key(0), &[8; 200]).unwrap();
    e.commit().unwrap();
    assert_clean(&*dev);
}

#[test]
fn dirty_memory_limit_forces_commits() {
    let dev = Arc::new(arbor_engine::storage::MemStorage::new(32 << 20));
    let cfg = Config {
        max_dirty_bytes: 64 * 4096,
        ..Config::default()
    };
    let mut e = Engine::create(dev.clone(), &small_opts(4096), cfg).unwrap();
    e.create_tree(5).unwrap();
    let g0 = e.committed_generation();
    for i in 0..20_000u64 {
        e.insert(5, key(i), &[9; 20]).unwrap();
    }
    assert!(
        e.committed_generation() > g0 + 3,
        "no forced commits happened"
    );
    assert_clean(&*dev);
}

#[test]
fn a_large_drop_proceeds_in_bounded_steps_across_commits() {
    let dev = Arc::new(arbor_engine::storage::MemStorage::new(64 << 20));
    let cfg = Config {
        drop_nodes_per_commit: 10,
        ..Config::default()
    };
    let mut e = Engine::create(dev.clone(), &small_opts(4096), cfg.clone()).unwrap();
    e.create_tree(5).unwrap();
    for i in 0..30_000u64 {
        e.insert(5, key(i), &[1; 40]).unwrap();
    }
    e.commit().unwrap();
    let empty_used = {
        let (_d, fresh) = mem_engine(64 << 20, 4096);
        fresh.space().used_bytes
    };
    e.drop_tree(5).unwrap();
    let mut commits = 0;
    let mut last_pending = usize::MAX;
    while e.pending_drops() > 0 {
        e.commit().unwrap();
        commits += 1;
        assert_clean(&*dev);
        // Reopening mid-drop resumes from the persisted queue.
        if commits == 5 {
            let pending = e.pending_drops();
            e = Engine::open(dev.clone(), cfg.clone()).unwrap();
            assert_eq!(e.pending_drops(), pending);
        }
        assert!(commits < 10_000);
        last_pending = last_pending.min(e.pending_drops());
    }
    assert!(
        commits > 20,
        "the drop finished in {commits} commits: steps are not bounded"
    );
    e.commit().unwrap();
    assert!(
        e.space().used_bytes <= empty_used + 4096 * 4,
        "space was not returned"
    );
}

/// Large enough that the extent tree spans many leaves, so that the commit's batched
/// reference updates cross leaf boundaries in every round.
#[test]
fn clone_modify_drop_rounds_on_a_large_tree_stay_consistent() {
    let (dev, mut e) = mem_engine(256 << 20, 4096);
    e.create_tree(5).unwrap();
    for i in 0..60_000u64 {
        e.insert(5, key(i * 13 % 60_000), &[1; 48]).unwrap();
    }
    e.commit().unwrap();
    let base = snapshot(&e);
    let mut x = 17u64;
    for round in 0..8u64 {
        e.clone_tree(5, 6).unwrap();
        let mut want = base[&5].clone();
        for _ in 0..400 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = key((x >> 33) % 60_000);
            if x.is_multiple_of(5) {
                e.delete(6, k).unwrap();
                want.remove(&k);
            } else {
                e.insert(6, k, &[round as u8; 20]).unwrap();
                want.insert(k, vec![round as u8; 20]);
            }
        }
        e.commit().unwrap();
        assert_clean(&*dev);
        let got = snapshot(&e);
        assert_same(
            &got,
            &[(5, base[&5].clone()), (6, want)].into(),
            "after the round",
        );
        e.drop_tree(6).unwrap();
        e.finish_drops().unwrap();
        assert_clean(&*dev);
    }
}
