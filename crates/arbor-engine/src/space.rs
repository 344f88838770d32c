//! Space reservation: an operation starts only if the commit after it cannot run out
//! of space.

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::{NODE_HEADER_SIZE, objectid};

impl Engine {
    /// Free nodes after the running transaction commits, approximately.
    fn free_nodes(&self) -> u64 {
        self.alloc.free_bytes() / u64::from(self.sb.nodesize)
    }

    /// Nodes the next commit may need: root tree updates, and the extent tree updates
    /// for every pending reference change, with a factor of two for the changes the
    /// commit itself causes.
    fn commit_reserve(&self) -> u64 {
        let usable = u64::from(self.sb.nodesize) - NODE_HEADER_SIZE as u64;
        let level = |t| self.roots.get(&t).map_or(1, |r| u64::from(r.level) + 1);
        let (he, hr) = (level(objectid::EXTENT_TREE), level(objectid::ROOT_TREE));
        let d = self.refs.len() as u64;
        let extent_nodes = (self.extent_items + d) * 41 * 5 / usable + he + 1;
        let k = (self.dirty_roots.len() + self.drops_dirty.len()) as u64 + 1;
        let grow = d * 82 / usable + 1;
        2 * ((d * (he + 1)).min(extent_nodes) + k * (hr + 2) + grow) + 4 * (he + hr + 4) + 16
    }

    /// Fails with `NoSpace` unless `nodes` more nodes fit besides the commit's reserve.
    pub(crate) fn ensure_space(&self, nodes: u64) -> Result<()> {
        let need = nodes + self.commit_reserve();
        let free = self.free_nodes();
        if free < need {
            let ns = u64::from(self.sb.nodesize);
            return Err(Error::NoSpace {
                needed: need * ns,
                free: free * ns,
            });
        }
        Ok(())
    }

    /// Fails with `NoSpace` unless `items` item changes in `tree` and `data_bytes` of new
    /// data extents fit, together with the commit after them. An operation made of
    /// several changes calls this first, so that it cannot run out of space half done.
    pub fn reserve(&self, tree: u64, items: u64, data_bytes: u64) -> Result<()> {
        self.check_writable()?;
        let root = self.user_root(tree)?;
        let per_item = 2 * (u64::from(root.level) + 3) + 2;
        let ns = u64::from(self.sb.nodesize);
        let data_nodes = data_bytes.div_ceil(ns) + data_bytes.div_ceil(1 << 20);
        self.ensure_space(items * per_item + data_nodes + self.delete_reserve())
    }

    /// Nodes that growing operations leave free, so that deleting (which shadows a
    /// path before it frees anything) still works on a full device.
    pub(crate) fn delete_reserve(&self) -> u64 {
        (self.sb.total_bytes / u64::from(self.sb.nodesize) / 128).max(16)
    }

    pub(crate) fn maybe_commit(&mut self) -> Result<()> {
        let dirty = self.dirty.len() as u64 * u64::from(self.sb.nodesize);
        if dirty > self.cfg.max_dirty_bytes {
            self.commit()?;
        }
        Ok(())
    }
}
