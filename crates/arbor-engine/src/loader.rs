//! Reading nodes without holding the caller's lock across the I/O.
//!
//! A caller that guards the engine with a lock can run a read-only operation inside
//! [`without_node_io`]: a node that is neither dirty nor cached then makes the
//! operation fail with [`Error::NotCached`] instead of reading the device. The caller
//! lets go of its lock, loads the node into the cache with a [`NodeLoader`] (which
//! needs no access to the engine), and runs the operation again.
//!
//! A loaded node is validated against the parent pointer that led to it, as every node
//! read is. If the tree changed in between and the block was freed and reused, the
//! validation fails (the generation differs) and the caller runs the operation once
//! more under its lock, reading normally. A node loaded after its block was freed but
//! before reuse is unreachable from the current trees, and the block's next version
//! replaces it in the cache when it is committed.

use crate::cache::NodeCache;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::{Expect, Key, decode_node};
use crate::storage::Storage;
use std::cell::Cell;
use std::sync::{Arc, Mutex};

thread_local! {
    static NO_NODE_IO: Cell<bool> = const { Cell::new(false) };
}

/// A node an operation needed and found neither dirty nor cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeMiss {
    pub(crate) tree: u64,
    pub(crate) bytenr: u64,
    pub(crate) generation: u64,
    pub(crate) level: u8,
    pub(crate) lo: Option<Key>,
    pub(crate) hi: Option<Key>,
}

impl std::fmt::Display for NodeMiss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "block {} of tree {} is not cached",
            self.bytenr, self.tree
        )
    }
}

/// Runs `f` with reads of nodes from the device turned into [`Error::NotCached`].
pub fn without_node_io<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            NO_NODE_IO.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(NO_NODE_IO.with(|c| c.replace(true)));
    f()
}

pub(crate) fn node_io_allowed() -> bool {
    !NO_NODE_IO.with(Cell::get)
}

/// Loads nodes into an engine's cache without access to the engine.
#[derive(Clone, Debug)]
pub struct NodeLoader {
    storage: Arc<dyn Storage>,
    cache: Arc<Mutex<NodeCache>>,
    fsid: [u8; 16],
    nodesize: u32,
    total_bytes: u64,
}

impl Engine {
    /// A loader for the nodes [`without_node_io`] operations miss.
    pub fn node_loader(&self) -> NodeLoader {
        NodeLoader {
            storage: Arc::clone(&self.storage),
            cache: Arc::clone(&self.cache),
            fsid: self.sb.fsid,
            nodesize: self.sb.nodesize,
            total_bytes: self.sb.total_bytes,
        }
    }
}

impl NodeLoader {
    /// Reads, validates and caches the missed node.
    pub fn load(&self, miss: &NodeMiss) -> Result<()> {
        self.fetch(miss).map(|_| ())
    }

    /// Reads, validates and caches a node; the one place nodes come from the device.
    pub(crate) fn fetch(&self, miss: &NodeMiss) -> Result<Arc<crate::format::Node>> {
        let mut buf = vec![0u8; self.nodesize as usize];
        self.storage
            .read_at(miss.bytenr, &mut buf)
            .map_err(Error::io(miss.bytenr))?;
        let expect = Expect {
            bytenr: miss.bytenr,
            generation: miss.generation,
            level: miss.level,
            fsid: &self.fsid,
            nodesize: self.nodesize,
            total_bytes: self.total_bytes,
            lo: miss.lo,
            hi: miss.hi,
        };
        let node = decode_node(&buf, &expect).map_err(|reason| Error::CorruptNode {
            block: miss.bytenr,
            tree: miss.tree,
            reason,
        })?;
        let node = Arc::new(node);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(node.clone());
        }
        Ok(node)
    }
}
