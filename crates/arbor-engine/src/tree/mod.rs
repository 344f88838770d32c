//! The copy-on-write B+tree algorithms: lookup and range scans, insert with splits,
//! delete with merges. Leaves are not chained (Rodeh): scans walk back up through
//! their parents, so a change shadows only one root-to-leaf path.

mod delete;
mod insert;
mod range;
mod touch;

pub use range::Range;

use crate::engine::ChildRef;
use crate::format::{Key, Ptr, partition_point};

/// The index of the child of a branch whose subtree would hold `key`.
pub(crate) fn child_index(ptrs: &[Ptr], key: &Key) -> usize {
    partition_point(ptrs, |p| p.key <= *key).saturating_sub(1)
}

/// The reference to child `i` of a branch whose own upper bound is `hi`.
pub(crate) fn child_ref(level: u8, ptrs: &[Ptr], i: usize, hi: Option<Key>) -> ChildRef {
    let p = ptrs[i];
    ChildRef {
        bytenr: p.bytenr,
        generation: p.generation,
        level: level.saturating_sub(1),
        lo: Some(p.key),
        hi: ptrs.get(i + 1).map(|n| n.key).or(hi),
    }
}

/// Splits entries of the given sizes at a point that leaves both halves non-empty and
/// as close to equal in bytes as possible. Returns the index of the first right entry.
pub(crate) fn split_point(sizes: &[usize]) -> usize {
    let total: usize = sizes.iter().sum();
    let mut acc = 0;
    for (i, s) in sizes.iter().enumerate() {
        if acc + s > total / 2 && i > 0 {
            return i;
        }
        acc += s;
    }
    sizes.len().saturating_sub(1).max(1)
}
