//! The in-memory form of a leaf: keys in one array, values packed in one buffer.
//!
//! Three allocations per leaf, whatever its item count, so that copying a leaf (which
//! copy-on-write does all the time) is three `memcpy`s, and key searches run over one
//! contiguous array.

use super::key::Key;
use super::node::LEAF_ITEM_SIZE;

/// Like `slice::partition_point`, tuned for node-sized arrays in cold memory: it
/// bisects down to a short run, then scans it, because a sequential scan of a few cache
/// lines costs less than the cache misses of the last bisection steps.
pub fn partition_point<T>(items: &[T], pred: impl Fn(&T) -> bool) -> usize {
    const SCAN: usize = 16;
    let (mut lo, mut hi) = (0, items.len());
    while hi - lo > SCAN {
        let mid = lo + (hi - lo) / 2;
        if pred(&items[mid]) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo + items[lo..hi].iter().take_while(|x| pred(x)).count()
}

/// A leaf's items, sorted by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leaf {
    keys: Vec<Key>,
    /// `ends[i]` is where value `i` ends in `data`; value `i` starts at `ends[i - 1]`.
    ends: Vec<u32>,
    data: Vec<u8>,
}

impl Leaf {
    /// A leaf holding these items; they must be sorted by key without duplicates.
    pub fn from_items<V: AsRef<[u8]>>(items: impl IntoIterator<Item = (Key, V)>) -> Self {
        let mut leaf = Leaf::default();
        for (k, v) in items {
            leaf.push(k, v.as_ref());
        }
        leaf
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the leaf holds no items.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys, in order.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 { 0 } else { self.ends[i - 1] as usize }
    }

    /// The value of item `i`. Panics if `i` is out of range, like slice indexing.
    pub fn value(&self, i: usize) -> &[u8] {
        &self.data[self.start(i)..self.ends[i] as usize]
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &Key) -> Option<&[u8]> {
        let i = self.lower_bound(key);
        (self.keys.get(i) == Some(key)).then(|| self.value(i))
    }

    /// The index of the first key not below `key`.
    pub fn lower_bound(&self, key: &Key) -> usize {
        partition_point(&self.keys, |k| k < key)
    }

    fn search(&self, key: &Key) -> Result<usize, usize> {
        let i = self.lower_bound(key);
        if self.keys.get(i) == Some(key) {
            Ok(i)
        } else {
            Err(i)
        }
    }

    /// Items in key order.
    pub fn iter(&self) -> impl Iterator<Item = (Key, &[u8])> + '_ {
        (0..self.len()).map(|i| (self.keys[i], self.value(i)))
    }

    /// Appends an item whose key is larger than every key present.
    pub fn push(&mut self, key: Key, value: &[u8]) {
        self.keys.push(key);
        self.data.extend_from_slice(value);
        self.ends.push(self.data.len() as u32);
    }

    fn shift_ends(&mut self, from: usize, by: i64) {
        for e in &mut self.ends[from..] {
            *e = (i64::from(*e) + by) as u32;
        }
    }

    /// Inserts an item or replaces the value of an existing one.
    pub fn upsert(&mut self, key: Key, value: &[u8]) {
        match self.search(&key) {
            Ok(i) => {
                let (start, end) = (self.start(i), self.ends[i] as usize);
                self.data.splice(start..end, value.iter().copied());
                self.shift_ends(i, value.len() as i64 - (end - start) as i64);
            }
            Err(i) => {
                let start = self.start(i);
                self.data.splice(start..start, value.iter().copied());
                self.keys.insert(i, key);
                self.ends.insert(i, start as u32);
                self.shift_ends(i, value.len() as i64);
            }
        }
    }

    /// Removes the item under `key`; returns whether it was there.
    pub fn remove(&mut self, key: &Key) -> bool {
        let Ok(i) = self.search(key) else {
            return false;
        };
        let (start, end) = (self.start(i), self.ends[i] as usize);
        self.data.drain(start..end);
        self.keys.remove(i);
        self.ends.remove(i);
        self.shift_ends(i, -((end - start) as i64));
        true
    }

    /// Splits off items `at..` into a new leaf.
    pub fn split_off(&mut self, at: usize) -> Leaf {
        let cut = self.start(at);
        let keys = self.keys.split_off(at);
        let data = self.data.split_off(cut);
        let ends = self
            .ends
            .split_off(at)
            .into_iter()
            .map(|e| e - cut as u32)
            .collect();
        Leaf { keys, ends, data }
    }

    /// Appends every item of `other`, whose keys are all larger than this leaf's.
    pub fn append(&mut self, other: &Leaf) {
        let base = self.data.len() as u32;
        self.keys.extend_from_slice(&other.keys);
        self.ends.extend(other.ends.iter().map(|e| e + base));
        self.data.extend_from_slice(&other.data);
    }

    /// Encoded bytes of the items: item headers plus values.
    pub fn used_bytes(&self) -> usize {
        self.keys.len() * LEAF_ITEM_SIZE + self.data.len()
    }

    /// Encoded bytes of each item.
    pub fn item_sizes(&self) -> Vec<usize> {
        (0..self.len())
            .map(|i| LEAF_ITEM_SIZE + self.value(i).len())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn k(n: u64) -> Key {
        Key::new(n, 1, 0)
    }

    #[test]
    fn partition_point_agrees_with_the_standard_one() {
        for len in [0usize, 1, 15, 16, 17, 40, 300] {
            let items: Vec<u64> = (0..len as u64).map(|i| i * 2).collect();
            for probe in 0..(2 * len as u64 + 2) {
                let want = items.partition_point(|x| *x < probe);
                assert_eq!(
                    partition_point(&items, |x| *x < probe),
                    want,
                    "len {len} probe {probe}"
                );
            }
        }
    }

    #[test]
    fn leaf_behaves_like_a_sorted_map() {
        let mut leaf = Leaf::default();
        let mut model = BTreeMap::new();
        let mut x: u64 = 7;
        for step in 0..3000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = (x >> 33) % 97;
            let v = vec![step as u8; (x >> 50) as usize % 40];
            if x.is_multiple_of(3) {
                assert_eq!(leaf.remove(&k(n)), model.remove(&k(n)).is_some());
            } else {
                leaf.upsert(k(n), &v);
                model.insert(k(n), v);
            }
            if step % 500 == 0 {
                let at = leaf.len() / 2;
                let mut right = leaf.split_off(at);
                assert_eq!(leaf.len() + right.len(), model.len());
                std::mem::swap(&mut leaf, &mut right);
                right.append(&leaf);
                leaf = right;
            }
        }
        let got: Vec<(Key, Vec<u8>)> = leaf.iter().map(|(k, v)| (k, v.to_vec())).collect();
        let want: Vec<(Key, Vec<u8>)> = model.into_iter().collect();
        assert_eq!(got, want);
        let total: usize = leaf.item_sizes().iter().sum();
        assert_eq!(total, leaf.used_bytes());
    }
}
