//! The timed phases of a run, in the order they run against one store, and the checks
//! that each produced the expected result.

use crate::workloads::{Subject, VALUE_LEN, Workload};
use anyhow::{Result, ensure};
use std::time::{Duration, Instant};

/// Small transactions per slice of the commit workload. The engines take turns slice
/// by slice, so that both see the same state of the disk (whose fsync latency drifts).
pub const COMMITS_PER_SLICE: usize = 50;

/// One timed workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Bulk insert in random order, one transaction, one commit.
    BulkInsert,
    /// A lookup of every loaded key, in random order.
    PointLookup,
    /// A scan of every item.
    FullScan,
    /// Many short scans from random keys.
    ShortScans,
    /// Many small durable transactions.
    SmallCommits,
    /// A snapshot, then overwrites of a few items, then a durable commit.
    SnapshotModify,
}

impl Phase {
    /// Every phase, in the order they run.
    pub const ALL: [Phase; 6] = [
        Phase::BulkInsert,
        Phase::PointLookup,
        Phase::FullScan,
        Phase::ShortScans,
        Phase::SmallCommits,
        Phase::SnapshotModify,
    ];

    /// What the phase does, for the report.
    pub fn describe(self, w: &Workload) -> String {
        let s = &w.sizes;
        match self {
            Phase::BulkInsert => format!("bulk insert: {} items, random order, 1 txn", s.items),
            Phase::PointLookup => format!("point lookup: {} random gets", s.items),
            Phase::FullScan => format!("range scan: full, {} items", s.items),
            Phase::ShortScans => {
                format!("range scan: {} × {} items", s.short_scans, s.short_scan_len)
            }
            Phase::SmallCommits => format!(
                "commit: {} items + durable commit (per txn, of {})",
                s.items_per_commit, s.commits
            ),
            Phase::SnapshotModify => format!(
                "clone (redb: savepoint), {} updates, commit",
                s.modifications
            ),
        }
    }

    /// How many operations the timing covers; the report shows time per operation
    /// where this is not 1.
    pub fn ops(self, w: &Workload) -> usize {
        match self {
            Phase::SmallCommits => w.batches.len().max(1),
            _ => 1,
        }
    }

    /// Into how many slices the phase is cut; the engines take turns at every slice.
    pub fn slices(self, w: &Workload) -> usize {
        match self {
            Phase::SmallCommits => w.batches.len().div_ceil(COMMITS_PER_SLICE).max(1),
            _ => 1,
        }
    }

    /// Runs slice `slice` of the phase on `subject`, checks its result and returns the
    /// time it took (checks excluded).
    pub fn run(self, subject: &mut dyn Subject, w: &Workload, slice: usize) -> Result<Duration> {
        let batches = w
            .batches
            .chunks(COMMITS_PER_SLICE)
            .nth(slice)
            .unwrap_or_default();
        let start = Instant::now();
        let result = match self {
            Phase::BulkInsert => subject.bulk_insert(w).map(|()| None),
            Phase::PointLookup => subject.point_lookups(w).map(Some),
            Phase::FullScan => subject.full_scan().map(Some),
            Phase::ShortScans => subject.short_scans(w).map(Some),
            Phase::SmallCommits => subject.small_commits(batches).map(|()| None),
            Phase::SnapshotModify => subject.snapshot_then_modify(w).map(|()| None),
        };
        let elapsed = start.elapsed();
        let expected = match self {
            Phase::PointLookup => Some(w.lookups.len() as u64 * VALUE_LEN as u64),
            Phase::FullScan => Some(w.sizes.items),
            Phase::ShortScans => Some((w.scan_starts.len() * w.sizes.short_scan_len) as u64),
            _ => None,
        };
        let got = result?;
        ensure!(
            got == expected,
            "{self:?}: got {got:?}, expected {expected:?}"
        );
        Ok(elapsed)
    }
}
