//! A crash recorder: every state a power cut could leave behind, in process.
//!
//! [`CrashRecorder`] is a device in memory (in the spirit of dm-log-writes and
//! CrashMonkey) that serves reads from a live image with every write applied, and
//! also logs each write and each flush barrier. Afterwards a test can rebuild the
//! device as it could look after a crash at any point of the workload:
//!
//! * every write before the k-th completed flush is durable (the *prefix* state);
//! * the writes of the *open epoch* (after flush k, before flush k+1) may each have
//!   landed or not, in any combination;
//! * one write of the open epoch may be *torn*: only some of its 4 KiB sectors landed.
//!
//! [`CrashRecorder::crash_states`] walks these states epoch by epoch, keeping one
//! running prefix image and cloning it per state, so memory stays bounded by a few
//! images however long the log is.

use super::Storage;
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The piece size a torn write is split into, counted from the write's own start.
pub const SECTOR_SIZE: usize = 4096;

/// Epochs with at most this many writes have their subsets enumerated, not sampled.
const ENUMERATE_MAX_WRITES: usize = 8;

/// A device in memory that logs every write and flush so crash states can be rebuilt.
pub struct CrashRecorder {
    base: Vec<u8>,
    inner: Mutex<Inner>,
}

/// The live image and the log, under one lock so the log order is the applied order.
struct Inner {
    live: Vec<u8>,
    log: Vec<Entry>,
    writes: usize,
    flushes: usize,
}

/// One logged operation.
enum Entry {
    Write { offset: usize, data: Vec<u8> },
    Flush,
    Mark(String),
}

/// The writes between two flush barriers, as reported by [`CrashRecorder::epochs`].
///
/// Epoch `k` holds the writes issued after `k` flushes had completed; it is closed by
/// flush number `k + 1` when one was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    /// The position of the epoch: the number of flushes completed before it began.
    pub index: usize,
    /// How many writes the epoch holds.
    pub writes: usize,
    /// How many bytes those writes carry in total.
    pub bytes: u64,
    /// Whether a flush closed the epoch (false only for the last one).
    pub flushed: bool,
}

/// One image a power cut could leave, produced by [`CrashRecorder::crash_states`].
#[derive(Clone, PartialEq, Eq)]
pub struct CrashState {
    /// How many flushes had completed: every write before them is in the image.
    pub flushes_done: usize,
    /// Which writes of the open epoch landed, e.g. `flush 3 + subset {0,2,5} of 7 writes`.
    pub description: String,
    /// The full device image.
    pub image: Vec<u8>,
}

impl fmt::Debug for CrashState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrashState")
            .field("flushes_done", &self.flushes_done)
            .field("description", &self.description)
            .field("image_len", &self.image.len())
            .finish()
    }
}

impl CrashRecorder {
    /// A recorder whose device starts as `base`; its size never changes.
    pub fn new(base: Vec<u8>) -> Self {
        let live = base.clone();
        let inner = Inner {
            live,
            log: Vec::new(),
            writes: 0,
            flushes: 0,
        };
        Self {
            base,
            inner: Mutex::new(inner),
        }
    }

    /// The lock for inspection: a panic elsewhere cannot leave the log half written,
    /// so a poisoned lock is still safe to read.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock for device operations, which report poisoning like [`super::MemStorage`].
    fn lock_io(&self) -> io::Result<MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| io::Error::other("crash recorder lock poisoned by a panicking thread"))
    }

    /// How many writes have been logged.
    pub fn write_count(&self) -> usize {
        self.lock().writes
    }

    /// How many flush barriers have been logged.
    pub fn flush_count(&self) -> usize {
        self.lock().flushes
    }

    /// A copy of the live image: the base with every logged write applied.
    pub fn live_bytes(&self) -> Vec<u8> {
        self.lock().live.clone()
    }

    /// Adds a named marker to the log, e.g. `"commit 7 returned"`. Bytes are unchanged.
    pub fn mark(&self, label: &str) {
        self.lock().log.push(Entry::Mark(label.to_owned()));
    }

    /// Every marker in log order, with the number of flushes completed before it.
    pub fn marks(&self) -> Vec<(String, usize)> {
        let inner = self.lock();
        let mut flushes = 0;
        let mut marks = Vec::new();
        for entry in &inner.log {
            match entry {
                Entry::Flush => flushes += 1,
                Entry::Mark(label) => marks.push((label.clone(), flushes)),
                Entry::Write { .. } => {}
            }
        }
        marks
    }

    /// The log split at flush barriers: `flush_count() + 1` epochs, the last one open
    /// (not closed by a flush, and possibly empty).
    pub fn epochs(&self) -> Vec<Epoch> {
        let inner = self.lock();
        let mut epochs = Vec::with_capacity(inner.flushes + 1);
        let mut current = Epoch {
            index: 0,
            writes: 0,
            bytes: 0,
            flushed: false,
        };
        for entry in &inner.log {
            match entry {
                Entry::Write { data, .. } => {
                    current.writes += 1;
                    current.bytes += data.len() as u64;
                }
                Entry::Flush => {
                    epochs.push(Epoch {
                        flushed: true,
                        ..current
                    });
                    current = Epoch {
                        index: current.index + 1,
                        writes: 0,
                        bytes: 0,
                        flushed: false,
                    };
                }
                Entry::Mark(_) => {}
            }
        }
        epochs.push(current);
        epochs
    }

    /// The durable image once `flushes` flushes had completed: the base with every write
    /// logged before the `flushes`-th flush applied. `0` gives the base; a number past
    /// [`CrashRecorder::flush_count`] gives the state after the last flush.
    pub fn state_at_flush(&self, flushes: usize) -> Vec<u8> {
        let inner = self.lock();
        let flushes = flushes.min(inner.flushes);
        let mut image = self.base.clone();
        let mut done = 0;
        for entry in &inner.log {
            if done == flushes {
                break;
            }
            match entry {
                Entry::Write { offset, data } => apply(&mut image, *offset, data),
                Entry::Flush => done += 1,
                Entry::Mark(_) => {}
            }
        }
        image
    }

    /// Every crash state worth checking, lazily, one image at a time.
    ///
    /// For each `k` from 0 to [`CrashRecorder::flush_count`], in order: the prefix state
    /// after `k` flushes; then, if epoch `k` has writes, the state with all of them
    /// applied; its proper non-empty subsets (all of them when the epoch has at most 8
    /// writes and there are no more than `samples_per_epoch * 4`, otherwise a random
    /// selection of that many, or `samples_per_epoch` random ones for larger epochs);
    /// and up to `samples_per_epoch` torn variants, where one write of at least two
    /// sectors lands only a proper non-empty subset of its 4 KiB sectors, together with
    /// a random subset of the other writes. Applied writes land in log order, so a
    /// later write to the same bytes wins. States within an epoch are never repeated.
    ///
    /// Write numbers in descriptions count from 0 within the epoch. The same log and
    /// `seed` always give the same states; writes logged after this call are ignored.
    pub fn crash_states(
        &self,
        seed: u64,
        samples_per_epoch: usize,
    ) -> impl Iterator<Item = CrashState> + '_ {
        CrashStates {
            recorder: self,
            end: self.lock().log.len(),
            seed,
            samples: samples_per_epoch,
            flushes_done: 0,
            image: self.base.clone(),
            epoch: Vec::new(),
            next_pos: 0,
            closed: false,
            started: false,
            cases: VecDeque::new(),
        }
    }
}

impl fmt::Debug for CrashRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("CrashRecorder")
            .field("len", &self.base.len())
            .field("writes", &inner.writes)
            .field("flushes", &inner.flushes)
            .field("log_entries", &inner.log.len())
            .finish()
    }
}

impl Storage for CrashRecorder {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let inner = self.lock_io()?;
        let (start, end) = range(offset, buf.len(), inner.live.len())?;
        let src = inner
            .live
            .get(start..end)
            .ok_or_else(|| super::out_of_range(offset, buf.len(), inner.live.len() as u64))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut inner = self.lock_io()?;
        let (start, end) = range(offset, buf.len(), inner.live.len())?;
        let size = inner.live.len() as u64;
        let dst = inner
            .live
            .get_mut(start..end)
            .ok_or_else(|| super::out_of_range(offset, buf.len(), size))?;
        dst.copy_from_slice(buf);
        inner.log.push(Entry::Write {
            offset: start,
            data: buf.to_vec(),
        });
        inner.writes += 1;
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        let mut inner = self.lock_io()?;
        inner.log.push(Entry::Flush);
        inner.flushes += 1;
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.base.len() as u64)
    }
}

/// Checks an access against a device of `size` bytes and returns its byte range.
fn range(offset: u64, len: usize, size: usize) -> io::Result<(usize, usize)> {
    usize::try_from(offset)
        .ok()
        .and_then(|start| Some((start, start.checked_add(len)?)))
        .filter(|&(_, end)| end <= size)
        .ok_or_else(|| super::out_of_range(offset, len, size as u64))
}

/// Copies a logged write into an image. Logged writes were range checked when issued
/// and images never change size, so the range always fits.
fn apply(image: &mut [u8], offset: usize, data: &[u8]) {
    if let Some(dst) = offset
        .checked_add(data.len())
        .and_then(|end| image.get_mut(offset..end))
    {
        dst.copy_from_slice(data);
    }
}

/// Applies only the chosen sectors of a logged write.
fn apply_sectors(image: &mut [u8], offset: usize, data: &[u8], sectors: &[bool]) {
    for (i, (piece, &keep)) in data.chunks(SECTOR_SIZE).zip(sectors).enumerate() {
        if keep {
            apply(image, offset + i * SECTOR_SIZE, piece);
        }
    }
}

/// A write of the open epoch: where it sits in the log and how many sectors it spans.
struct EpochWrite {
    log_index: usize,
    sectors: usize,
}

/// Which writes of the open epoch land in one crash state.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Case {
    /// `applied[i]`: write `i` of the epoch landed whole (always false for a torn write).
    applied: Vec<bool>,
    /// The write that landed only partly, if any.
    torn: Option<Torn>,
}

/// A write of which only some sectors landed.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Torn {
    write: usize,
    sectors: Vec<bool>,
}

/// The lazy walk behind [`CrashRecorder::crash_states`].
struct CrashStates<'a> {
    recorder: &'a CrashRecorder,
    /// The log length when the walk began; later entries are ignored.
    end: usize,
    seed: u64,
    samples: usize,
    /// The epoch being walked, which is also the number of flushes in `image`.
    flushes_done: usize,
    /// The prefix state: the base with every write of earlier epochs applied.
    image: Vec<u8>,
    /// The writes of the epoch being walked.
    epoch: Vec<EpochWrite>,
    /// The log position where the next epoch starts.
    next_pos: usize,
    /// Whether a flush closed the epoch being walked (so another one follows).
    closed: bool,
    started: bool,
    /// The states of this epoch not yet produced.
    cases: VecDeque<Case>,
}

impl Iterator for CrashStates<'_> {
    type Item = CrashState;

    fn next(&mut self) -> Option<CrashState> {
        loop {
            if let Some(case) = self.cases.pop_front() {
                return Some(self.materialise(&case));
            }
            if !self.advance() {
                return None;
            }
        }
    }
}

impl CrashStates<'_> {
    /// Moves to the next epoch, rolling the prefix image forward over the one just
    /// walked. Returns false once the last epoch is done.
    fn advance(&mut self) -> bool {
        let inner = self.recorder.lock();
        if self.started {
            if !self.closed {
                return false;
            }
            for write in &self.epoch {
                if let Some(Entry::Write { offset, data }) = inner.log.get(write.log_index) {
                    apply(&mut self.image, *offset, data);
                }
            }
            self.flushes_done += 1;
        }
        self.started = true;
        self.epoch.clear();
        self.closed = false;
        let mut pos = self.next_pos;
        while pos < self.end {
            let entry = inner.log.get(pos);
            pos += 1;
            match entry {
                Some(Entry::Write { data, .. }) => {
                    let sectors = data.len().div_ceil(SECTOR_SIZE);
                    self.epoch.push(EpochWrite {
                        log_index: pos - 1,
                        sectors,
                    });
                }
                Some(Entry::Flush) => {
                    self.closed = true;
                    break;
                }
                Some(Entry::Mark(_)) | None => {}
            }
        }
        self.next_pos = pos;
        drop(inner);
        let sectors: Vec<usize> = self.epoch.iter().map(|w| w.sectors).collect();
        let mut rng = SplitMix64::new(self.seed ^ (self.flushes_done as u64).wrapping_mul(GOLDEN));
        self.cases = plan(&sectors, self.samples, &mut rng);
        true
    }

    /// Builds the image of one case from a clone of the prefix image.
    fn materialise(&self, case: &Case) -> CrashState {
        let mut image = self.image.clone();
        let inner = self.recorder.lock();
        for (i, write) in self.epoch.iter().enumerate() {
            let Some(Entry::Write { offset, data }) = inner.log.get(write.log_index) else {
                continue;
            };
            match &case.torn {
                Some(torn) if torn.write == i => {
                    apply_sectors(&mut image, *offset, data, &torn.sectors)
                }
                _ if case.applied.get(i).copied().unwrap_or(false) => {
                    apply(&mut image, *offset, data)
                }
                _ => {}
            }
        }
        CrashState {
            flushes_done: self.flushes_done,
            description: describe(self.flushes_done, case),
            image,
        }
    }
}

/// Chooses the cases of one epoch whose writes span `sectors[i]` sectors each.
fn plan(sectors: &[usize], samples: usize, rng: &mut SplitMix64) -> VecDeque<Case> {
    let n = sectors.len();
    let mut cases = VecDeque::new();
    cases.push_back(Case {
        applied: vec![false; n],
        torn: None,
    });
    if n == 0 {
        return cases;
    }
    cases.push_back(Case {
        applied: vec![true; n],
        torn: None,
    });
    let mut seen: HashSet<Case> = cases.iter().cloned().collect();
    let cap = samples.saturating_mul(4);

    if n <= ENUMERATE_MAX_WRITES {
        // Every proper non-empty subset as a bit mask, or a random selection of them.
        let mut masks: Vec<u32> = (1..(1u32 << n) - 1).collect();
        if masks.len() > cap {
            for i in 0..cap {
                let j = i + rng.below(masks.len() - i);
                masks.swap(i, j);
            }
            masks.truncate(cap);
            masks.sort_unstable();
        }
        for mask in masks {
            let applied = (0..n).map(|i| mask & (1 << i) != 0).collect();
            cases.push_back(Case {
                applied,
                torn: None,
            });
        }
    } else {
        let mut found = 0;
        for _ in 0..cap {
            if found == samples {
                break;
            }
            let case = Case {
                applied: rng.proper_subset(n),
                torn: None,
            };
            if seen.insert(case.clone()) {
                cases.push_back(case);
                found += 1;
            }
        }
    }

    let tearable: Vec<usize> = (0..n).filter(|&i| sectors[i] >= 2).collect();
    if !tearable.is_empty() {
        let mut found = 0;
        for _ in 0..cap {
            if found == samples {
                break;
            }
            let write = tearable[rng.below(tearable.len())];
            let torn_sectors = rng.proper_subset(sectors[write]);
            let mut applied = rng.subset(n);
            applied[write] = false;
            let case = Case {
                applied,
                torn: Some(Torn {
                    write,
                    sectors: torn_sectors,
                }),
            };
            if seen.insert(case.clone()) {
                cases.push_back(case);
                found += 1;
            }
        }
    }
    cases
}

/// Names a case, e.g. `flush 3 + torn write 4 (sectors {0,2} of 4) + subset {1} of 7 writes`.
fn describe(flushes: usize, case: &Case) -> String {
    let n = case.applied.len();
    let mut text = format!("flush {flushes}");
    if let Some(torn) = &case.torn {
        text += &format!(
            " + torn write {} (sectors {} of {})",
            torn.write,
            set(&torn.sectors),
            torn.sectors.len()
        );
        text += &format!(" + subset {} of {n} writes", set(&case.applied));
    } else if n > 0 && case.applied.iter().all(|&a| a) {
        text += &format!(" + all {n} writes");
    } else if case.applied.iter().any(|&a| a) {
        text += &format!(" + subset {} of {n} writes", set(&case.applied));
    }
    text
}

/// Formats the set positions of `bits` as `{0,2,5}`, runs of three or more as `{0-4}`.
fn set(bits: &[bool]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < bits.len() {
        if !bits[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i + 1 < bits.len() && bits[i + 1] {
            i += 1;
        }
        match i - start {
            0 => parts.push(format!("{start}")),
            1 => parts.push(format!("{start},{i}")),
            _ => parts.push(format!("{start}-{i}")),
        }
        i += 1;
    }
    format!("{{{}}}", parts.join(","))
}

/// The 64-bit golden ratio, used to spread seeds.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// A tiny deterministic generator (splitmix64): good enough to pick test cases.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; `n` must not be zero.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Each of `n` positions chosen with probability one half.
    fn subset(&mut self, n: usize) -> Vec<bool> {
        (0..n).map(|_| self.next_u64() >> 63 == 1).collect()
    }

    /// A random subset of `n >= 2` positions that is neither empty nor full.
    fn proper_subset(&mut self, n: usize) -> Vec<bool> {
        let mut bits = self.subset(n);
        if n >= 2 {
            let flip = self.below(n);
            if bits.iter().all(|&b| !b) {
                bits[flip] = true;
            } else if bits.iter().all(|&b| b) {
                bits[flip] = false;
            }
        }
        bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICE: usize = 64 * 1024;

    fn recorder() -> CrashRecorder {
        CrashRecorder::new(vec![0; DEVICE])
    }

    fn write(rec: &CrashRecorder, offset: usize, len: usize, value: u8) {
        assert!(rec.write_at(offset as u64, &vec![value; len]).is_ok());
    }

    fn flush(rec: &CrashRecorder) {
        assert!(rec.flush().is_ok());
    }

    fn all_equal(image: &[u8], offset: usize, len: usize, value: u8) -> bool {
        image[offset..offset + len].iter().all(|&b| b == value)
    }

    #[test]
    fn reads_see_every_write_at_once() {
        let rec = recorder();
        write(&rec, 100, 10, 7);
        let mut buf = [0u8; 12];
        assert!(rec.read_at(99, &mut buf).is_ok());
        assert_eq!(buf, [0, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 0]);
        assert!(all_equal(&rec.live_bytes(), 100, 10, 7));
        assert_eq!(rec.len().ok(), Some(DEVICE as u64));
    }

    #[test]
    fn out_of_range_access_fails_and_is_not_logged() {
        let rec = recorder();
        assert!(rec.write_at(DEVICE as u64 - 4, &[1; 8]).is_err());
        assert!(rec.write_at(u64::MAX, &[1]).is_err());
        assert!(rec.read_at(DEVICE as u64, &mut [0; 1]).is_err());
        assert_eq!(rec.write_count(), 0);
        assert!(rec.live_bytes() == vec![0; DEVICE]);
    }

    #[test]
    fn epochs_split_the_log_at_flush_barriers() {
        let rec = recorder();
        write(&rec, 0, 10, 1);
        write(&rec, 10, 20, 1);
        flush(&rec);
        flush(&rec);
        write(&rec, 0, 5, 2);
        let epochs = rec.epochs();
        let expected = [
            Epoch {
                index: 0,
                writes: 2,
                bytes: 30,
                flushed: true,
            },
            Epoch {
                index: 1,
                writes: 0,
                bytes: 0,
                flushed: true,
            },
            Epoch {
                index: 2,
                writes: 1,
                bytes: 5,
                flushed: false,
            },
        ];
        assert_eq!(epochs, expected);
        assert_eq!(rec.write_count(), 3);
        assert_eq!(rec.flush_count(), 2);
    }

    #[test]
    fn marks_record_the_flushes_completed_before_them() {
        let rec = recorder();
        rec.mark("start");
        write(&rec, 0, 10, 1);
        flush(&rec);
        rec.mark("commit 1 returned");
        let before = rec.live_bytes();
        rec.mark("no-op");
        assert!(rec.live_bytes() == before);
        let marks = rec.marks();
        let expected = [("start", 0), ("commit 1 returned", 1), ("no-op", 1)];
        let expected: Vec<(String, usize)> =
            expected.iter().map(|&(l, f)| (l.to_owned(), f)).collect();
        assert_eq!(marks, expected);
    }

    #[test]
    fn prefix_state_excludes_writes_after_the_flush() {
        let rec = recorder();
        write(&rec, 0, 10, 1);
        flush(&rec);
        write(&rec, 0, 5, 2);
        write(&rec, 100, 5, 3);
        flush(&rec);
        write(&rec, 200, 5, 4);

        assert!(rec.state_at_flush(0) == vec![0; DEVICE]);
        let one = rec.state_at_flush(1);
        assert!(all_equal(&one, 0, 10, 1));
        assert!(all_equal(&one, 100, 5, 0));
        let two = rec.state_at_flush(2);
        assert!(all_equal(&two, 0, 5, 2) && all_equal(&two, 5, 5, 1));
        assert!(all_equal(&two, 100, 5, 3));
        assert!(all_equal(&two, 200, 5, 0));
        assert!(rec.state_at_flush(9) == two);
    }

    #[test]
    fn every_flush_count_gets_its_prefix_state() {
        let rec = recorder();
        for k in 0..4u8 {
            write(&rec, usize::from(k) * 100, 10, k + 1);
            flush(&rec);
        }
        write(&rec, 1000, 10, 9);
        let prefixes: Vec<CrashState> = rec
            .crash_states(1, 4)
            .filter(|s| !s.description.contains('+'))
            .collect();
        assert_eq!(prefixes.len(), 5);
        for (k, state) in prefixes.iter().enumerate() {
            assert_eq!(state.flushes_done, k);
            assert_eq!(state.description, format!("flush {k}"));
            assert!(state.image == rec.state_at_flush(k));
        }
    }

    #[test]
    fn subset_states_only_contain_writes_of_the_open_epoch() {
        // (epoch, offset, len, value): each write owns its own region.
        let plan = [
            (0, 0, 100, 1),
            (0, 4096, 100, 2),
            (1, 8192, 100, 3),
            (1, 12288, 100, 4),
            (1, 16384, 100, 5),
            (2, 20480, 100, 6),
        ];
        let rec = recorder();
        for epoch in 0..3 {
            for &(e, offset, len, value) in &plan {
                if e == epoch {
                    write(&rec, offset, len, value);
                }
            }
            if epoch < 2 {
                flush(&rec);
            }
        }
        let mut count = 0;
        for state in rec.crash_states(7, 8) {
            count += 1;
            for &(e, offset, len, value) in &plan {
                let landed = all_equal(&state.image, offset, len, value);
                let absent = all_equal(&state.image, offset, len, 0);
                match e.cmp(&state.flushes_done) {
                    std::cmp::Ordering::Less => assert!(landed, "{}", state.description),
                    std::cmp::Ordering::Greater => assert!(absent, "{}", state.description),
                    std::cmp::Ordering::Equal => assert!(landed || absent),
                }
            }
        }
        // Epoch 0: prefix, all, 2 subsets; epoch 1: prefix, all, 6; epoch 2: prefix, all.
        assert_eq!(count, 4 + 8 + 2);
    }

    #[test]
    fn small_epochs_enumerate_every_proper_subset() {
        let rec = recorder();
        for i in 0..3 {
            write(&rec, i * 100, 10, 1);
        }
        let states: Vec<CrashState> = rec.crash_states(3, 2).collect();
        assert_eq!(states.len(), 8);
        let images: HashSet<&[u8]> = states.iter().map(|s| s.image.as_slice()).collect();
        assert_eq!(images.len(), 8);
        assert!(
            states
                .iter()
                .any(|s| s.description == "flush 0 + subset {0,2} of 3 writes")
        );
        assert!(
            states
                .iter()
                .any(|s| s.description == "flush 0 + all 3 writes")
        );
    }

    #[test]
    fn enumeration_is_capped_at_four_times_the_samples() {
        let rec = recorder();
        for i in 0..6 {
            write(&rec, i * 100, 10, 1);
        }
        let subsets = rec
            .crash_states(3, 2)
            .filter(|s| s.description.contains("subset"))
            .count();
        assert_eq!(subsets, 8);
    }

    #[test]
    fn large_epochs_are_sampled_without_repeats() {
        let rec = recorder();
        for i in 0..20 {
            write(&rec, i * 100, 10, 1);
        }
        let states: Vec<CrashState> = rec.crash_states(5, 5).collect();
        assert_eq!(states.len(), 2 + 5);
        let names: HashSet<&str> = states.iter().map(|s| s.description.as_str()).collect();
        assert_eq!(names.len(), states.len());
    }

    #[test]
    fn later_write_wins_when_both_are_applied() {
        let rec = recorder();
        write(&rec, 0, 10, 1);
        write(&rec, 5, 10, 2);
        for state in rec.crash_states(0, 4) {
            let image = &state.image;
            match state.description.as_str() {
                "flush 0" => assert!(all_equal(image, 0, 15, 0)),
                "flush 0 + all 2 writes" => {
                    assert!(all_equal(image, 0, 5, 1) && all_equal(image, 5, 10, 2))
                }
                "flush 0 + subset {0} of 2 writes" => {
                    assert!(all_equal(image, 0, 10, 1) && all_equal(image, 10, 5, 0))
                }
                "flush 0 + subset {1} of 2 writes" => {
                    assert!(all_equal(image, 0, 5, 0) && all_equal(image, 5, 10, 2))
                }
                other => panic!("unexpected state {other}"),
            }
        }
    }

    #[test]
    fn torn_write_applies_whole_sectors_only() {
        let rec = recorder();
        let (offset, len) = (1000, 3 * SECTOR_SIZE + 100);
        write(&rec, offset, len, 7);
        write(&rec, 40_000, 10, 9);
        let torn: Vec<CrashState> = rec
            .crash_states(11, 6)
            .filter(|s| s.description.contains("torn"))
            .collect();
        assert_eq!(torn.len(), 6);
        for state in &torn {
            let mut landed = 0;
            for start in (offset..offset + len).step_by(SECTOR_SIZE) {
                let piece = SECTOR_SIZE.min(offset + len - start);
                if all_equal(&state.image, start, piece, 7) {
                    landed += 1;
                } else {
                    assert!(
                        all_equal(&state.image, start, piece, 0),
                        "{}",
                        state.description
                    );
                }
            }
            assert!((1..4).contains(&landed), "{}", state.description);
            assert!(
                state
                    .description
                    .starts_with("flush 0 + torn write 0 (sectors {")
            );
            assert!(state.description.contains(" of 4) + subset "));
        }
    }

    #[test]
    fn small_writes_are_never_torn() {
        let rec = recorder();
        write(&rec, 0, SECTOR_SIZE, 1);
        write(&rec, 2 * SECTOR_SIZE, 10, 2);
        assert!(
            rec.crash_states(1, 16)
                .all(|s| !s.description.contains("torn"))
        );
    }

    #[test]
    fn crash_states_are_deterministic_for_a_seed() {
        let rec = recorder();
        for i in 0..12 {
            write(&rec, i * 5000, 2 * SECTOR_SIZE, i as u8 + 1);
            if i % 5 == 4 {
                flush(&rec);
            }
        }
        let run = |seed| rec.crash_states(seed, 6).collect::<Vec<_>>();
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn crash_states_ignore_writes_logged_after_the_walk_began() {
        let rec = recorder();
        write(&rec, 0, 10, 1);
        let states = rec.crash_states(0, 4);
        write(&rec, 100, 10, 2);
        flush(&rec);
        let states: Vec<CrashState> = states.collect();
        assert_eq!(states.len(), 2);
        assert!(
            states
                .iter()
                .all(|s| s.flushes_done == 0 && all_equal(&s.image, 100, 10, 0))
        );
    }

    #[test]
    fn descriptions_compress_runs_of_writes() {
        let bits = [true, true, true, false, true, false, true, true];
        assert_eq!(set(&bits), "{0-2,4,6,7}");
        assert_eq!(set(&[false, false]), "{}");
    }
}
