//! The inputs of a run: one seeded set of keys and values, given unchanged to every
//! engine, and the interface each engine implements to run them.

use anyhow::Result;
use rand::rngs::StdRng;
use rand::seq::{SliceRandom, index};
use rand::{Rng, SeedableRng};

/// Bytes in every value.
pub const VALUE_LEN: usize = 100;

/// Salt of the values written by the bulk load and the small commits.
pub const SALT_LOAD: u64 = 0;
/// Salt of the values written after the snapshot, so that they differ from the loaded ones.
pub const SALT_MODIFY: u64 = 1;

/// How big each workload is.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Items loaded by the bulk insert; also the number of point lookups.
    pub items: u64,
    /// Number of short range scans.
    pub short_scans: usize,
    /// Items read by each short range scan.
    pub short_scan_len: usize,
    /// Number of small durable transactions.
    pub commits: usize,
    /// Items inserted by each small transaction.
    pub items_per_commit: usize,
    /// Items overwritten after the snapshot.
    pub modifications: usize,
}

/// Everything the engines are asked to do, identical for all of them.
///
/// Loaded keys are `4 * n` for `n` in `0..items`; the small commits insert new keys
/// `4 * n + 1`, which land between loaded ones, at random places in the tree.
#[derive(Clone, Debug)]
pub struct Workload {
    /// The sizes this workload was generated from.
    pub sizes: Sizes,
    /// Keys of the bulk load, in insertion (random) order.
    pub load: Vec<u64>,
    /// Keys of the point lookups: every loaded key once, in another random order.
    pub lookups: Vec<u64>,
    /// First keys of the short range scans, each with enough items after it.
    pub scan_starts: Vec<u64>,
    /// Keys of the small transactions, one vector per transaction.
    pub batches: Vec<Vec<u64>>,
    /// Loaded keys overwritten after the snapshot.
    pub modifications: Vec<u64>,
}

impl Workload {
    /// Generates the workload for `sizes` from `seed`.
    pub fn generate(sizes: Sizes, seed: u64) -> Result<Self> {
        let n = sizes.items;
        let count = usize::try_from(n)?;
        anyhow::ensure!(
            count > sizes.short_scan_len,
            "--n must exceed the short scan length"
        );
        anyhow::ensure!(
            count >= sizes.modifications,
            "--n must be at least --modifications"
        );
        let new_keys = sizes.commits * sizes.items_per_commit;
        anyhow::ensure!(
            count >= new_keys,
            "--n must be at least --commits × items per commit"
        );
        let mut rng = StdRng::seed_from_u64(seed);
        let mut load: Vec<u64> = (0..n).map(|i| 4 * i).collect();
        load.shuffle(&mut rng);
        let mut lookups = load.clone();
        lookups.shuffle(&mut rng);
        let last_start = n - sizes.short_scan_len as u64;
        let scan_starts = (0..sizes.short_scans)
            .map(|_| 4 * rng.gen_range(0..last_start))
            .collect();
        let fresh = index::sample(&mut rng, count, new_keys);
        let fresh: Vec<u64> = fresh.iter().map(|i| 4 * i as u64 + 1).collect();
        let batches = fresh
            .chunks(sizes.items_per_commit.max(1))
            .map(<[u64]>::to_vec)
            .collect();
        let modifications = index::sample(&mut rng, count, sizes.modifications)
            .iter()
            .map(|i| 4 * i as u64)
            .collect();
        Ok(Self {
            sizes,
            load,
            lookups,
            scan_starts,
            batches,
            modifications,
        })
    }

    /// Items in the store after the small commits.
    pub fn items_after_commits(&self) -> u64 {
        self.sizes.items + self.batches.iter().map(|b| b.len() as u64).sum::<u64>()
    }
}

/// The value stored under `key`: pseudo-random bytes (splitmix64), cheap to compute, so
/// that neither engine can benefit from repetitive values.
pub fn value(key: u64, salt: u64) -> [u8; VALUE_LEN] {
    let mut out = [0u8; VALUE_LEN];
    let mut state = key ^ salt.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    for chunk in out.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
    out
}

/// An engine under test. Every method runs one workload to completion, durably where
/// the workload commits, and returns what the caller needs to check the result.
pub trait Subject {
    /// Inserts `w.load` in one transaction and commits it durably.
    fn bulk_insert(&mut self, w: &Workload) -> Result<()>;
    /// Looks up every key of `w.lookups`; returns the total length of the values found.
    fn point_lookups(&mut self, w: &Workload) -> Result<u64>;
    /// Reads every item in key order; returns how many there were.
    fn full_scan(&mut self) -> Result<u64>;
    /// Reads `w.sizes.short_scan_len` items from each of `w.scan_starts`; returns the
    /// number of items read.
    fn short_scans(&mut self, w: &Workload) -> Result<u64>;
    /// Inserts each of `batches` in its own durably committed transaction.
    fn small_commits(&mut self, batches: &[Vec<u64>]) -> Result<()>;
    /// Takes a snapshot of the data (arbor: a tree clone; redb: a persistent savepoint),
    /// overwrites `w.modifications` in the live copy and commits durably, all in one
    /// transaction.
    fn snapshot_then_modify(&mut self, w: &Workload) -> Result<()>;
    /// Bytes the engine has allocated in its file.
    fn used_bytes(&mut self) -> Result<u64>;
    /// Facts observed during the run that help read its times.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}
