//! The cache of clean nodes, shared by readers.

use crate::format::Node;
use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

/// Clean nodes by address, bounded by a node count.
#[derive(Debug, Default)]
pub(crate) struct NodeCache {
    map: HashMap<u64, Arc<Node>>,
    cap: usize,
}

impl NodeCache {
    pub(crate) fn get(&self, bytenr: u64) -> Option<Arc<Node>> {
        self.map.get(&bytenr).cloned()
    }

    pub(crate) fn insert(&mut self, node: Arc<Node>) {
        if self.map.len() >= self.cap {
            // Evict an arbitrary eighth: cheap, and the hash order is effectively random.
            let victims: Vec<u64> = self.map.keys().take(self.cap / 8 + 1).copied().collect();
            for v in victims {
                self.map.remove(&v);
            }
        }
        self.map.insert(node.bytenr, node);
    }

    pub(crate) fn remove(&mut self, bytenr: u64) {
        self.map.remove(&bytenr);
    }
}

impl NodeCache {
    /// An empty cache holding at most `cap` nodes.
    pub(crate) fn with_capacity(cap: usize) -> Self {
        Self {
            map: HashMap::default(),
            cap,
        }
    }
}
