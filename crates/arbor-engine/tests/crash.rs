//! Crash consistency: a workload of many commits, clones and drops runs on the crash
//! recorder; then thousands of states a power cut could leave (every prefix at a flush,
//! subsets of the writes in flight, torn 4 KiB-granular writes) are materialised. Each
//! must open, check clean, and hold exactly the last committed state or the one being
//! committed when the power went.

mod common;
use arbor_engine::storage::{CrashRecorder, MemStorage};
use arbor_engine::{Config, Engine, check};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Runs a seeded workload and returns the recorder and the model after each commit.
fn record_workload(seed: u64, commits: usize) -> (Arc<CrashRecorder>, Vec<Model>) {
    let base = Arc::new(MemStorage::new(6 << 20));
    let mut e = Engine::create(base.clone(), &small_opts(4096), Config::default()).unwrap();
    e.create_tree(5).unwrap();
    e.commit().unwrap();
    let mut models = vec![snapshot(&e)];
    drop(e);
    let rec = Arc::new(CrashRecorder::new(base.to_bytes()));
    rec.mark("commit 0");
    let cfg = Config {
        drop_nodes_per_commit: 4,
        ..Config::default()
    };
    let mut e = Engine::open(rec.clone(), cfg).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model: Model = models[0].clone();
    for c in 1..=commits {
        for _ in 0..rng.gen_range(1..60) {
            let trees: Vec<u64> = model.keys().copied().collect();
            let tree = trees[rng.gen_range(0..trees.len())];
            match rng.gen_range(0..100) {
                0..=59 => {
                    let k = key(rng.gen_range(0..800));
                    let v = vec![rng.r#gen::<u8>(); rng.gen_range(0..300)];
                    e.insert(tree, k, &v).unwrap();
                    model.entry(tree).or_default().insert(k, v);
                }
                60..=84 => {
                    let k = key(rng.gen_range(0..800));
                    let had = model.entry(tree).or_default().remove(&k).is_some();
                    assert_eq!(e.delete(tree, k).unwrap(), had);
                }
                85..=92 if model.len() < 5 => {
                    let dst = (5..20).find(|t| !model.contains_key(t)).unwrap();
                    e.clone_tree(tree, dst).unwrap();
                    let copy = model[&tree].clone();
                    model.insert(dst, copy);
                }
                93..=99 if model.len() > 1 => {
                    e.drop_tree(tree).unwrap();
                    model.remove(&tree);
                }
                _ => {}
            }
        }
        e.commit().unwrap();
        rec.mark(&format!("commit {c}"));
        assert_same(&snapshot(&e), &model, &format!("commit {c}"));
        models.push(model.clone());
    }
    (rec, models)
}

fn verify_crash_states(seed: u64, commits: usize, samples: usize) -> usize {
    let (rec, models) = record_workload(seed, commits);
    // The flush count at which commit i had returned.
    let done_at: Vec<usize> = rec
        .marks()
        .into_iter()
        .map(|(_, flushes)| flushes)
        .collect();
    assert_eq!(done_at.len(), models.len());
    let mut states = 0;
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for state in rec.crash_states(seed, samples) {
        states += 1;
        let last = done_at
            .iter()
            .rposition(|&f| f <= state.flushes_done)
            .unwrap_or(0);
        let dev = Arc::new(MemStorage::from_bytes(state.image));
        let report = check(&*dev);
        assert!(
            report.is_clean(),
            "{}: checker found problems:\n{report}",
            state.description
        );
        let e = open_ro(dev.clone())
            .unwrap_or_else(|err| panic!("{}: open failed: {err}", state.description));
        let got = snapshot(&e);
        if got == models[last] {
            *outcomes.entry("old").or_default() += 1;
        } else if models.get(last + 1) == Some(&got) {
            *outcomes.entry("new").or_default() += 1;
        } else {
            panic!(
                "{}: state is neither commit {last} nor commit {} (generation {})",
                state.description,
                last + 1,
                e.committed_generation()
            );
        }
    }
    assert!(
        outcomes.get("new").copied().unwrap_or(0) > 0,
        "no crash state caught a commit mid-way"
    );
    states
}

#[test]
fn every_crash_state_is_the_last_commit_or_the_next() {
    let mut total = 0;
    let seeds = if long_campaign() { 1..=40 } else { 1..=5 };
    for seed in seeds {
        total += verify_crash_states(seed, 30, 24);
    }
    eprintln!("{total} crash states verified");
    assert!(total >= 4000, "only {total} crash states were tried");
}

#[test]
fn reopening_after_a_crash_and_continuing_keeps_the_image_clean() {
    let (rec, _) = record_workload(9, 10);
    let flushes = rec.flush_count();
    for f in (0..flushes).step_by(3) {
        let dev = Arc::new(MemStorage::from_bytes(rec.state_at_flush(f)));
        let mut e = Engine::open(dev.clone(), Config::default()).unwrap();
        let tree = e.trees()[0];
        for i in 0..300 {
            e.insert(tree, key(i), &[1; 64]).unwrap();
        }
        e.commit().unwrap();
        e.finish_drops().unwrap();
        assert_clean(&*dev);
    }
}

/// Every meaningful superblock byte lies in its first 512-byte sector, so tears are
/// made at byte positions inside it, as on a device with no sector atomicity at all.
#[test]
fn a_torn_primary_superblock_falls_back_to_the_mirror() {
    let (rec, models) = record_workload(5, 12);
    let done_at: Vec<usize> = rec
        .marks()
        .into_iter()
        .map(|(_, flushes)| flushes)
        .collect();
    let primary = 64 * 1024;
    let mut torn_copies = 0;
    for (i, &flushes) in done_at.iter().enumerate().skip(1) {
        // Commit i flushed its nodes at flush `flushes - 1` and its primary superblock
        // at flush `flushes`. Tear the primary between the two.
        let before = rec.state_at_flush(flushes - 1);
        let after = rec.state_at_flush(flushes);
        for cut in [8, 40, 100, 300] {
            for new_first in [true, false] {
                let mut torn = before.clone();
                let range = if new_first {
                    primary..primary + cut
                } else {
                    primary + cut..primary + 4096
                };
                torn[range.clone()].copy_from_slice(&after[range]);
                let sb = primary..primary + 4096;
                // A tear whose differing bytes all fell on one side is no tear.
                let whole = torn[sb.clone()] == after[sb.clone()] || torn[sb.clone()] == before[sb];
                let want = if torn[primary..primary + 4096] == after[primary..primary + 4096] {
                    &models[i]
                } else {
                    &models[i - 1]
                };
                let dev = Arc::new(MemStorage::from_bytes(torn));
                let e = open_ro(dev.clone())
                    .unwrap_or_else(|err| panic!("commit {i}, cut {cut}: open failed: {err}"));
                assert!(
                    snapshot(&e) == *want,
                    "commit {i}, cut {cut}: wrong state after a torn primary"
                );
                let report = check(&*dev);
                if whole {
                    assert!(report.is_clean(), "{report}");
                } else {
                    torn_copies += 1;
                    assert_eq!(
                        report.problems.len(),
                        1,
                        "only the torn copy is a problem:\n{report}"
                    );
                    assert!(report.problems[0].contains("copy 0"), "{report}");
                }
            }
        }
    }
    assert!(
        torn_copies >= 40,
        "only {torn_copies} tears produced an invalid copy"
    );
}

/// A block freed by commit N is reused only once N is durable: no write of commit N + 1
/// before its superblock touches a block that the durable state N reaches.
#[test]
fn a_commit_never_overwrites_a_block_of_the_durable_state() {
    let (rec, _) = record_workload(7, 25);
    let done_at: Vec<usize> = rec
        .marks()
        .into_iter()
        .map(|(_, flushes)| flushes)
        .collect();
    let mut checked = 0;
    for pair in done_at.windows(2) {
        let (durable, next) = (pair[0], pair[1]);
        let before = rec.state_at_flush(durable);
        // Everything the next commit wrote before its primary superblock: its nodes
        // (and the previous commit's mirrors).
        let written = rec.state_at_flush(next - 1);
        let reached = check(&MemStorage::from_bytes(before.clone())).blocks;
        assert!(!reached.is_empty());
        for block in reached {
            let range = block as usize..block as usize + 4096;
            assert!(
                before[range.clone()] == written[range],
                "block {block} of the durable state was overwritten before the next commit was durable"
            );
            checked += 1;
        }
    }
    assert!(checked > 100);
}

/// A transaction that died after writing its nodes used the generation after the
/// durable one. Opening for writing burns that generation, so no later node carries it
/// and a stale node of the dead transaction can never pass a parent's generation check.
#[test]
fn the_generation_of_a_crashed_transaction_is_never_reused() {
    let (rec, models) = record_workload(3, 6);
    let done_at: Vec<usize> = rec
        .marks()
        .into_iter()
        .map(|(_, flushes)| flushes)
        .collect();
    for (i, &flushes) in done_at.iter().enumerate().skip(1) {
        let dev = Arc::new(MemStorage::from_bytes(rec.state_at_flush(flushes - 1)));
        let durable = open_ro(dev.clone()).unwrap().committed_generation();
        let crashed = durable + 1;
        let mut e = Engine::open(dev.clone(), Config::default()).unwrap();
        assert_eq!(
            e.committed_generation(),
            crashed,
            "open burns the crashed generation"
        );
        assert_same(&snapshot(&e), &models[i - 1], "burning changes no data");
        let tree = e.trees()[0];
        e.insert(tree, key(1), b"after the crash").unwrap();
        e.commit().unwrap();
        assert_eq!(e.committed_generation(), crashed + 1);
        drop(e);
        assert_clean(&*dev);
    }
}
