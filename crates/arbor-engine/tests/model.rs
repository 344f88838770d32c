//! Property tests: random sequences of inserts, updates, deletes, range scans, clones,
//! drops, commits and reopens, checked against a `BTreeMap` model. After every commit
//! the model and every tree (clones included) are compared, and the checker must pass.

mod common;
use arbor_engine::{Config, Engine, Error, Key};
use common::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Clone, Debug)]
enum Op {
    Insert {
        tree: u64,
        k: u16,
        len: u8,
    },
    Bulk {
        tree: u64,
        start: u16,
        n: u16,
        len: u8,
    },
    Delete {
        tree: u64,
        k: u16,
    },
    DeleteRange {
        tree: u64,
        start: u16,
        n: u16,
    },
    Scan {
        tree: u64,
        start: u16,
        n: u16,
    },
    Clone {
        src: u64,
        dst: u64,
    },
    Drop {
        tree: u64,
    },
    Commit,
    Reopen,
}

fn tree() -> impl Strategy<Value = u64> {
    5u64..9
}

/// Keys are drawn from a small space so that updates and deletes hit existing items.
fn kn() -> impl Strategy<Value = u16> {
    0u16..3000
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (tree(), kn(), any::<u8>()).prop_map(|(tree, k, len)| Op::Insert { tree, k, len }),
        2 => (tree(), any::<u16>(), 1u16..2500, any::<u8>())
            .prop_map(|(tree, start, n, len)| Op::Bulk { tree, start, n, len }),
        3 => (tree(), kn()).prop_map(|(tree, k)| Op::Delete { tree, k }),
        1 => (tree(), kn(), 1u16..800)
            .prop_map(|(tree, start, n)| Op::DeleteRange { tree, start, n }),
        2 => (tree(), kn(), 1u16..300).prop_map(|(tree, start, n)| Op::Scan { tree, start, n }),
        1 => (tree(), tree()).prop_map(|(src, dst)| Op::Clone { src, dst }),
        1 => tree().prop_map(|tree| Op::Drop { tree }),
        2 => Just(Op::Commit),
        1 => Just(Op::Reopen),
    ]
}

fn k(n: u16) -> Key {
    key(u64::from(n))
}

fn value(n: u16, len: u8, stamp: u64) -> Vec<u8> {
    let mut v = vec![(n as u8) ^ (stamp as u8); usize::from(len)];
    if let Some(first) = v.first_mut() {
        *first = stamp as u8;
    }
    v
}

struct Harness {
    dev: Arc<arbor_engine::storage::MemStorage>,
    engine: Engine,
    model: Model,
    stamp: u64,
    cfg: Config,
}

impl Harness {
    fn new(cfg: Config) -> Self {
        let dev = Arc::new(arbor_engine::storage::MemStorage::new(64 << 20));
        let mut engine = Engine::create(dev.clone(), &small_opts(4096), cfg.clone()).unwrap();
        engine.create_tree(5).unwrap();
        let mut model = Model::new();
        model.insert(5, BTreeMap::new());
        Self {
            dev,
            engine,
            model,
            stamp: 0,
            cfg,
        }
    }

    fn verify(&self) {
        assert_same(
            &snapshot(&self.engine),
            &self.model,
            "engine and model diverged",
        );
        assert_clean(&*self.dev);
    }

    fn apply(&mut self, op: &Op) {
        self.stamp += 1;
        let e = &mut self.engine;
        match *op {
            Op::Insert { tree, k: n, len } => {
                let v = value(n, len, self.stamp);
                match self.model.get_mut(&tree) {
                    Some(m) => {
                        e.insert(tree, k(n), &v).unwrap();
                        m.insert(k(n), v);
                    }
                    None => assert!(matches!(
                        e.insert(tree, k(n), &v),
                        Err(Error::NoSuchTree(_))
                    )),
                }
            }
            Op::Bulk {
                tree,
                start,
                n,
                len,
            } => {
                let Some(m) = self.model.get_mut(&tree) else {
                    return;
                };
                for i in 0..n {
                    let key_n = start.wrapping_add(i);
                    let v = value(key_n, len, self.stamp);
                    e.insert(tree, k(key_n), &v).unwrap();
                    m.insert(k(key_n), v);
                }
            }
            Op::Delete { tree, k: n } => match self.model.get_mut(&tree) {
                Some(m) => assert_eq!(e.delete(tree, k(n)).unwrap(), m.remove(&k(n)).is_some()),
                None => assert!(e.delete(tree, k(n)).is_err()),
            },
            Op::DeleteRange { tree, start, n } => {
                let Some(m) = self.model.get_mut(&tree) else {
                    return;
                };
                for i in 0..n {
                    let key_n = start.wrapping_add(i);
                    assert_eq!(
                        e.delete(tree, k(key_n)).unwrap(),
                        m.remove(&k(key_n)).is_some()
                    );
                }
            }
            Op::Scan { tree, start, n } => {
                let Some(m) = self.model.get(&tree) else {
                    return;
                };
                let (lo, hi) = (k(start), k(start.saturating_add(n)));
                let got: Vec<_> = e.range(tree, lo..hi).unwrap().map(|r| r.unwrap()).collect();
                let want: Vec<_> = m.range(lo..hi).map(|(a, b)| (*a, b.clone())).collect();
                assert!(
                    got == want,
                    "scan of tree {tree} from {lo} to {hi} returned {} items, expected {}",
                    got.len(),
                    want.len()
                );
            }
            Op::Clone { src, dst } => {
                let r = e.clone_tree(src, dst);
                match (self.model.get(&src).cloned(), self.model.contains_key(&dst)) {
                    (Some(m), false) => {
                        r.unwrap();
                        self.model.insert(dst, m);
                    }
                    _ => assert!(r.is_err()),
                }
            }
            Op::Drop { tree } => {
                let r = e.drop_tree(tree);
                assert_eq!(r.is_ok(), self.model.remove(&tree).is_some());
            }
            Op::Commit => {
                e.commit().unwrap();
                self.verify();
            }
            Op::Reopen => {
                e.commit().unwrap();
                self.engine = Engine::open(self.dev.clone(), self.cfg.clone()).unwrap();
                self.verify();
            }
        }
    }
}

fn run(ops: &[Op], cfg: Config) {
    run_from(Harness::new(cfg), ops);
}

/// Trees 5 and 7 start with 30,000 items between them, so that the extent tree spans
/// many leaves and reference changes cross leaf boundaries.
fn prepopulated(cfg: Config) -> Harness {
    let mut h = Harness::new(cfg);
    h.apply(&Op::Bulk {
        tree: 5,
        start: 0,
        n: 20_000,
        len: 60,
    });
    h.engine.create_tree(7).unwrap();
    h.model.insert(7, BTreeMap::new());
    h.apply(&Op::Bulk {
        tree: 7,
        start: 30_000,
        n: 10_000,
        len: 30,
    });
    h.apply(&Op::Commit);
    h
}

fn run_from(mut h: Harness, ops: &[Op]) {
    for op in ops {
        h.apply(op);
    }
    h.apply(&Op::Reopen);
    h.engine.finish_drops().unwrap();
    h.verify();
}

fn cases() -> u32 {
    if long_campaign() { 5000 } else { 256 }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_operations_match_a_btreemap_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(&ops, Config::default());
    }

    #[test]
    fn small_dirty_limit_and_slow_drops_still_match_the_model(
        ops in proptest::collection::vec(op(), 1..120)
    ) {
        let cfg = Config { max_dirty_bytes: 16 * 4096, drop_nodes_per_commit: 3, ..Config::default() };
        run(&ops, cfg);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases() / 8, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_on_large_trees_match_the_model(
        ops in proptest::collection::vec(op(), 1..120)
    ) {
        run_from(prepopulated(Config::default()), &ops);
    }
}
