//! The allocator: an in-memory bitmap of sectors, rebuilt from the extent tree at open.
//!
//! Free space is never stored; it is whatever no extent item and no reserved range
//! covers. A block freed in transaction N is *pinned* until N's superblock is durable:
//! the last durable tree may still point at it.

/// A bitmap allocator over the sectors of one device.
#[derive(Debug, Clone)]
pub(crate) struct Allocator {
    sector: u64,
    /// One bit per sector; set = in use (allocated, pinned or reserved).
    bits: Vec<u64>,
    sectors: u64,
    free: u64,
    /// Where the next search starts.
    cursor: u64,
    /// Freed this transaction, released at commit.
    pinned: Vec<(u64, u64)>,
    /// Freed by a durable transaction (generation, bytenr, len) but held until the
    /// owner says no reader can still be using them.
    held: Vec<(u64, u64, u64)>,
}

impl Allocator {
    /// All sectors free.
    pub(crate) fn new(total_bytes: u64, sector: u64) -> Self {
        let sectors = total_bytes / sector;
        Self {
            sector,
            bits: vec![0; sectors.div_ceil(64) as usize],
            sectors,
            free: sectors,
            cursor: 0,
            pinned: Vec::new(),
            held: Vec::new(),
        }
    }

    fn get(&self, s: u64) -> bool {
        self.bits
            .get((s / 64) as usize)
            .is_some_and(|w| w & (1 << (s % 64)) != 0)
    }

    fn set(&mut self, s: u64, used: bool) {
        if let Some(w) = self.bits.get_mut((s / 64) as usize) {
            let m = 1u64 << (s % 64);
            if used && *w & m == 0 {
                *w |= m;
                self.free -= 1;
            } else if !used && *w & m != 0 {
                *w &= !m;
                self.free += 1;
            }
        }
    }

    /// Marks `[bytenr, bytenr + len)` used. Returns false if any sector was used already
    /// or lies past the end.
    pub(crate) fn mark_used(&mut self, bytenr: u64, len: u64) -> bool {
        let (start, n) = (bytenr / self.sector, len.div_ceil(self.sector));
        let mut clean = start + n <= self.sectors;
        for s in start..(start + n).min(self.sectors) {
            clean &= !self.get(s);
            self.set(s, true);
        }
        clean
    }

    /// Returns `[bytenr, bytenr + len)` to the free pool now.
    pub(crate) fn release(&mut self, bytenr: u64, len: u64) {
        let start = bytenr / self.sector;
        for s in start..start + len.div_ceil(self.sector) {
            self.set(s, false);
        }
    }

    /// Frees `[bytenr, bytenr + len)` once the current transaction is durable.
    pub(crate) fn pin(&mut self, bytenr: u64, len: u64) {
        self.pinned.push((bytenr, len));
    }

    /// The transaction is durable: pinned extents become free.
    pub(crate) fn unpin_all(&mut self) {
        for (b, l) in std::mem::take(&mut self.pinned) {
            self.release(b, l);
        }
    }

    /// Transaction `generation` is durable: its pinned extents wait for
    /// [`Self::release_held`].
    pub(crate) fn hold_pinned(&mut self, generation: u64) {
        let pinned = std::mem::take(&mut self.pinned);
        self.held
            .extend(pinned.into_iter().map(|(b, l)| (generation, b, l)));
    }

    /// Extents held by transactions up to `generation` become free.
    pub(crate) fn release_held(&mut self, generation: u64) {
        let (free, keep) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|&(g, _, _)| g <= generation);
        self.held = keep;
        for (_, b, l) in free {
            self.release(b, l);
        }
    }

    /// True if some freed extents are held.
    pub(crate) fn has_held(&self) -> bool {
        !self.held.is_empty()
    }

    /// Bytes currently free for allocation (pinned bytes are not).
    pub(crate) fn free_bytes(&self) -> u64 {
        self.free * self.sector
    }

    /// Bytes pinned until the next commit.
    pub(crate) fn pinned_bytes(&self) -> u64 {
        let pinned: u64 = self.pinned.iter().map(|(_, l)| l).sum();
        pinned + self.held.iter().map(|(_, _, l)| l).sum::<u64>()
    }

    /// Finds and marks `len` bytes aligned to `align` bytes, searching from the cursor.
    pub(crate) fn alloc(&mut self, len: u64, align: u64) -> Option<u64> {
        let n = len.div_ceil(self.sector);
        let step = (align / self.sector).max(1);
        if n == 0 || n > self.free {
            return None;
        }
        let last_start = self.sectors.checked_sub(n)?;
        let first = (self.cursor / step) * step;
        let mut s = first;
        let mut wrapped = false;
        loop {
            if s > last_start {
                if wrapped {
                    return None;
                }
                wrapped = true;
                s = 0;
            }
            if wrapped && s >= first {
                return None;
            }
            // Skip whole words that are full.
            if s.is_multiple_of(64) && self.bits.get((s / 64) as usize) == Some(&u64::MAX) {
                s += 64;
                continue;
            }
            if (s..s + n).all(|x| !self.get(x)) {
                for x in s..s + n {
                    self.set(x, true);
                }
                self.cursor = s + n;
                return Some(s * self.sector);
            }
            s += step;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_allocations_do_not_overlap_and_wrap_around() {
        let mut a = Allocator::new(64 * 4096, 4096);
        a.mark_used(0, 4 * 4096);
        let mut got = Vec::new();
        while let Some(b) = a.alloc(4 * 4096, 4 * 4096) {
            assert_eq!(b % (4 * 4096), 0);
            got.push(b);
        }
        assert_eq!(got.len(), 15);
        assert_eq!(a.free_bytes(), 0);
        a.release(got[3], 4 * 4096);
        assert_eq!(a.alloc(4 * 4096, 4 * 4096), Some(got[3]));
    }

    #[test]
    fn pinned_blocks_are_not_reused_before_unpin() {
        let mut a = Allocator::new(8 * 4096, 4096);
        let b = a.alloc(4096, 4096).unwrap_or(u64::MAX);
        a.pin(b, 4096);
        let mut others = Vec::new();
        while let Some(x) = a.alloc(4096, 4096) {
            others.push(x);
        }
        assert!(!others.contains(&b));
        a.unpin_all();
        assert_eq!(a.alloc(4096, 4096), Some(b));
    }

    #[test]
    fn double_marking_is_reported() {
        let mut a = Allocator::new(8 * 4096, 4096);
        assert!(a.mark_used(4096, 8192));
        assert!(!a.mark_used(8192, 4096));
        assert!(!a.mark_used(7 * 4096, 8192));
    }
}
