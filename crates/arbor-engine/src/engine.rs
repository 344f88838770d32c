//! The engine handle: opening and creating images, reading nodes, reference counts,
//! allocation and the public tree operations. The B-tree algorithms live in `tree/`,
//! the commit in `commit.rs` and incremental tree drops in `drop.rs`.

use crate::alloc::Allocator;
use crate::error::{Error, Result};
use crate::format::{
    Body, DropItem, EXTENT_FLAG_TREE_BLOCK, Expect, ExtentItem, Key, Leaf, MAX_NODESIZE,
    MIN_NODESIZE, NODE_HEADER_SIZE, Node, RESERVED_HEAD, RootItem, RootPtr, SECTOR_SIZE,
    SUPERBLOCK_SIZE, Superblock, decode_node, item_type, objectid, reserved_ranges,
    superblock_offsets, validate_extent,
};
use crate::storage::Storage;
use rustc_hash::FxHashMap as HashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Tuning knobs of an open engine.
#[derive(Clone, Debug)]
pub struct Config {
    /// Clean nodes kept in memory.
    pub cache_bytes: u64,
    /// A commit is forced before dirty nodes exceed this many bytes.
    pub max_dirty_bytes: u64,
    /// How many nodes of dropped trees one commit releases at most.
    pub drop_nodes_per_commit: usize,
    /// Refuse every change.
    pub read_only: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cache_bytes: 256 << 20,
            max_dirty_bytes: 256 << 20,
            drop_nodes_per_commit: 4096,
            read_only: false,
        }
    }
}

/// What `mkfs` is asked for.
#[derive(Clone, Debug, Default)]
pub struct MkfsOptions {
    /// Bytes per node; a power of two from 4 KiB to 64 KiB. Default 16 KiB.
    pub nodesize: Option<u32>,
    /// Use only this many bytes of the device. Default: all of it.
    pub total_bytes: Option<u64>,
    /// A label of at most 256 bytes.
    pub label: String,
}

/// Space as the allocator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceInfo {
    /// Size of the filesystem.
    pub total_bytes: u64,
    /// Bytes in allocated extents (committed and in the running transaction).
    pub used_bytes: u64,
    /// Bytes that can be allocated now.
    pub free_bytes: u64,
    /// Bytes freed in the running transaction, reusable after its commit.
    pub pinned_bytes: u64,
    /// Bytes never allocated (superblock areas).
    pub reserved_bytes: u64,
}

/// A reference to a child node as its parent (or a root pointer) describes it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChildRef {
    pub bytenr: u64,
    pub generation: u64,
    pub level: u8,
    pub lo: Option<Key>,
    pub hi: Option<Key>,
}

impl ChildRef {
    pub(crate) fn root(r: RootPtr) -> Self {
        Self {
            bytenr: r.bytenr,
            generation: r.generation,
            level: r.level,
            lo: None,
            hi: None,
        }
    }
}

/// A pending change to an extent's reference count.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RefDelta {
    pub delta: i64,
    pub len: u64,
    pub flags: u64,
}

#[derive(Debug, Default)]
pub(crate) struct NodeCache {
    map: HashMap<u64, Arc<Node>>,
    cap: usize,
}

impl NodeCache {
    fn get(&self, bytenr: u64) -> Option<Arc<Node>> {
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

/// An open image: the last committed state plus one running transaction.
///
/// Changes accumulate in memory and become durable, all together, at [`Engine::commit`].
/// Dropping the handle without committing discards them. After an I/O error or a
/// failure inside a commit the handle is poisoned: the image still holds the last
/// committed state, and it must be reopened.
#[derive(Debug)]
pub struct Engine {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) cfg: Config,
    /// The last committed superblock.
    pub(crate) sb: Superblock,
    /// The generation of the running transaction.
    pub(crate) generation: u64,
    pub(crate) cache: Mutex<NodeCache>,
    /// Nodes written in this transaction. Every one has reference count 1 unless a
    /// clone taken in this transaction shares it.
    pub(crate) dirty: HashMap<u64, Arc<Node>>,
    /// Current root of every tree, the root and extent trees included.
    pub(crate) roots: BTreeMap<u64, RootPtr>,
    /// User trees whose root item must be rewritten (or deleted) at commit.
    pub(crate) dirty_roots: BTreeSet<u64>,
    /// Reference count changes not yet applied to the extent tree.
    pub(crate) refs: HashMap<u64, RefDelta>,
    pub(crate) alloc: Allocator,
    /// The queue of pending reference drops, mirrored into the root tree at commit.
    pub(crate) drops: BTreeMap<u64, DropItem>,
    pub(crate) drops_dirty: BTreeSet<u64>,
    /// Sum of the lengths of the extent items (as applied so far).
    pub(crate) bytes_used: u64,
    /// Number of items in the extent tree (as applied so far).
    pub(crate) extent_items: u64,
    pub(crate) poisoned: Option<String>,
    /// The last commit's mirror superblocks were written but not yet flushed.
    pub(crate) mirrors_unflushed: bool,
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.mirrors_unflushed
            && let Err(e) = self.storage.flush()
        {
            tracing::warn!("flushing the superblock mirrors at close failed: {e}");
        }
    }
}

fn node_ptr_shareable(tree: u64) -> bool {
    tree >= objectid::FIRST_USER_TREE
}

impl Engine {
    /// Formats `storage` and returns the open, empty engine.
    pub fn create(storage: Arc<dyn Storage>, opts: &MkfsOptions, cfg: Config) -> Result<Self> {
        let nodesize = opts.nodesize.unwrap_or(crate::format::DEFAULT_NODESIZE);
        if !nodesize.is_power_of_two() || !(MIN_NODESIZE..=MAX_NODESIZE).contains(&nodesize) {
            return Err(Error::InvalidArgument(format!(
                "nodesize {nodesize} must be a power of two from {MIN_NODESIZE} to {MAX_NODESIZE}"
            )));
        }
        if opts.label.len() > crate::format::LABEL_MAX {
            return Err(Error::InvalidArgument(format!(
                "label is {} bytes, at most {} allowed",
                opts.label.len(),
                crate::format::LABEL_MAX
            )));
        }
        let dev_len = storage.len().map_err(Error::io(0))?;
        let total = opts.total_bytes.unwrap_or(dev_len);
        if total > dev_len {
            return Err(Error::InvalidArgument(format!(
                "size {total} is larger than the device ({dev_len} bytes)"
            )));
        }
        let total = total - total % u64::from(nodesize);
        let min = RESERVED_HEAD + 64 * u64::from(nodesize);
        if total < min {
            return Err(Error::InvalidArgument(format!(
                "device of {total} bytes is too small, at least {min} are needed"
            )));
        }
        // Wipe every superblock slot the device has, so no stale copy can win at open.
        let zero = vec![0u8; SUPERBLOCK_SIZE];
        for off in superblock_offsets(dev_len) {
            storage.write_at(off, &zero).map_err(Error::io(off))?;
        }
        let sb = Superblock {
            fsid: *uuid::Uuid::new_v4().as_bytes(),
            generation: 0,
            total_bytes: total,
            bytes_used: 0,
            nodesize,
            sectorsize: SECTOR_SIZE,
            root_tree: RootPtr::default(),
            extent_tree: RootPtr::default(),
            label: opts.label.clone(),
        };
        let mut engine = Self::empty(storage, sb, cfg);
        for tree in [objectid::ROOT_TREE, objectid::EXTENT_TREE] {
            let bytenr = engine.alloc_node()?;
            let node = Node {
                bytenr,
                generation: 1,
                owner: tree,
                level: 0,
                body: Body::Leaf(Leaf::default()),
            };
            engine.dirty.insert(bytenr, Arc::new(node));
            engine.roots.insert(
                tree,
                RootPtr {
                    bytenr,
                    generation: 1,
                    level: 0,
                },
            );
        }
        engine.commit()?;
        Ok(engine)
    }

    fn empty(storage: Arc<dyn Storage>, sb: Superblock, cfg: Config) -> Self {
        let mut alloc = Allocator::new(sb.total_bytes, u64::from(SECTOR_SIZE));
        for (start, end) in reserved_ranges(sb.total_bytes) {
            alloc.mark_used(start, end - start);
        }
        let cap = (cfg.cache_bytes / u64::from(sb.nodesize)).max(64) as usize;
        Self {
            storage,
            cfg,
            generation: sb.generation + 1,
            cache: Mutex::new(NodeCache {
                map: HashMap::default(),
                cap,
            }),
            dirty: HashMap::default(),
            roots: BTreeMap::new(),
            dirty_roots: BTreeSet::new(),
            refs: HashMap::default(),
            alloc,
            drops: BTreeMap::new(),
            drops_dirty: BTreeSet::new(),
            bytes_used: 0,
            extent_items: 0,
            poisoned: None,
            mirrors_unflushed: false,
            sb,
        }
    }

    /// Reads the newest valid superblock copy and the trees it names.
    pub fn open(storage: Arc<dyn Storage>, cfg: Config) -> Result<Self> {
        let sb = read_superblock(&*storage)?.0;
        let mut engine = Self::empty(storage, sb, cfg);
        engine
            .roots
            .insert(objectid::ROOT_TREE, engine.sb.root_tree);
        engine
            .roots
            .insert(objectid::EXTENT_TREE, engine.sb.extent_tree);
        engine.load_root_tree()?;
        engine.load_extent_tree()?;
        Ok(engine)
    }

    fn load_root_tree(&mut self) -> Result<()> {
        let items: Vec<(Key, Vec<u8>)> = self
            .range(objectid::ROOT_TREE, ..)?
            .collect::<Result<_>>()?;
        for (key, value) in items {
            let bad = |reason: String| Error::CorruptItem {
                tree: objectid::ROOT_TREE,
                key: key.to_string(),
                reason,
            };
            let (sb_gen, ns, total) = (self.sb.generation, self.sb.nodesize, self.sb.total_bytes);
            match key.ty {
                item_type::ROOT_ITEM
                    if key.objectid >= objectid::FIRST_USER_TREE && key.offset == 0 =>
                {
                    let item = RootItem::decode(&value).map_err(bad)?;
                    item.0.validate(sb_gen, ns, total).map_err(bad)?;
                    self.roots.insert(key.objectid, item.0);
                }
                item_type::DROP_ITEM if key.objectid == objectid::DROP_QUEUE => {
                    let item = DropItem::decode(&value).map_err(bad)?;
                    let ptr = RootPtr {
                        bytenr: key.offset,
                        generation: item.generation,
                        level: item.level,
                    };
                    ptr.validate(sb_gen, ns, total).map_err(bad)?;
                    self.drops.insert(key.offset, item);
                }
                _ => return Err(bad("unexpected item in the root tree".into())),
            }
        }
        Ok(())
    }

    fn load_extent_tree(&mut self) -> Result<()> {
        let mut used = 0u64;
        let mut count = 0u64;
        let items = self.range(objectid::EXTENT_TREE, ..)?;
        let mut extents = Vec::new();
        for item in items {
            let (key, value) = item?;
            let item = ExtentItem::decode(&value).map_err(|reason| Error::CorruptItem {
                tree: objectid::EXTENT_TREE,
                key: key.to_string(),
                reason,
            })?;
            let bad = |reason: String| Error::CorruptItem {
                tree: objectid::EXTENT_TREE,
                key: key.to_string(),
                reason,
            };
            if key.ty != item_type::EXTENT_ITEM {
                return Err(bad("not an extent item".into()));
            }
            let (ns, total) = (self.sb.nodesize, self.sb.total_bytes);
            validate_extent(key.objectid, key.offset, item.flags, ns, total).map_err(bad)?;
            extents.push((key.objectid, key.offset));
            used = used.saturating_add(key.offset);
            count += 1;
        }
        for (bytenr, len) in extents {
            if !self.alloc.mark_used(bytenr, len) {
                return Err(Error::CorruptItem {
                    tree: objectid::EXTENT_TREE,
                    key: Key::new(bytenr, item_type::EXTENT_ITEM, len).to_string(),
                    reason: "extent overlaps another extent, a reserved area or the device end"
                        .into(),
                });
            }
        }
        if used != self.sb.bytes_used {
            tracing::warn!(
                superblock = self.sb.bytes_used,
                extents = used,
                "bytes_used in the superblock disagrees with the extent tree; using the extent tree"
            );
        }
        self.bytes_used = used;
        self.extent_items = count;
        Ok(())
    }

    // ---- accessors ---------------------------------------------------------------

    /// The generation of the last commit.
    pub fn committed_generation(&self) -> u64 {
        self.sb.generation
    }

    /// Bytes per node.
    pub fn nodesize(&self) -> u32 {
        self.sb.nodesize
    }

    /// The filesystem UUID.
    pub fn fsid(&self) -> uuid::Uuid {
        uuid::Uuid::from_bytes(self.sb.fsid)
    }

    /// The label given at mkfs.
    pub fn label(&self) -> &str {
        &self.sb.label
    }

    /// Ids of the user trees that exist in the running transaction.
    pub fn trees(&self) -> Vec<u64> {
        self.roots
            .keys()
            .copied()
            .filter(|&t| t >= objectid::FIRST_USER_TREE)
            .collect()
    }

    /// True if the user tree exists.
    pub fn tree_exists(&self, tree: u64) -> bool {
        tree >= objectid::FIRST_USER_TREE && self.roots.contains_key(&tree)
    }

    /// Nodes of dropped trees whose references are still to be released.
    pub fn pending_drops(&self) -> usize {
        self.drops.len()
    }

    /// The allocator's view of space.
    pub fn space(&self) -> SpaceInfo {
        let reserved: u64 = reserved_ranges(self.sb.total_bytes)
            .iter()
            .map(|(s, e)| e - s)
            .sum();
        let (free, pinned) = (self.alloc.free_bytes(), self.alloc.pinned_bytes());
        SpaceInfo {
            total_bytes: self.sb.total_bytes,
            used_bytes: self.sb.total_bytes.saturating_sub(reserved + free + pinned),
            free_bytes: free,
            pinned_bytes: pinned,
            reserved_bytes: reserved,
        }
    }

    /// The size of the largest value an item may hold.
    pub fn max_value_size(&self) -> usize {
        crate::format::max_item_size(self.sb.nodesize)
    }

    // ---- guards ------------------------------------------------------------------

    pub(crate) fn check_usable(&self) -> Result<()> {
        match &self.poisoned {
            Some(why) => Err(Error::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        self.check_usable()?;
        if self.cfg.read_only {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }

    pub(crate) fn poison_on_err<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r
            && self.poisoned.is_none()
        {
            self.poisoned = Some(e.to_string());
        }
        r
    }

    pub(crate) fn user_root(&self, tree: u64) -> Result<RootPtr> {
        if tree < objectid::FIRST_USER_TREE {
            return Err(Error::InvalidArgument(format!(
                "tree id {tree} is reserved; user trees start at {}",
                objectid::FIRST_USER_TREE
            )));
        }
        self.root(tree)
    }

    pub(crate) fn root(&self, tree: u64) -> Result<RootPtr> {
        self.roots
            .get(&tree)
            .copied()
            .ok_or(Error::NoSuchTree(tree))
    }

    pub(crate) fn set_root(&mut self, tree: u64, root: RootPtr) {
        self.roots.insert(tree, root);
        if tree >= objectid::FIRST_USER_TREE {
            self.dirty_roots.insert(tree);
        }
    }

    // ---- nodes -------------------------------------------------------------------

    /// Reads a node through the dirty set, the cache, or the device and the validator.
    pub(crate) fn read_node(&self, tree: u64, child: &ChildRef) -> Result<Arc<Node>> {
        let corrupt = |reason: String| Error::CorruptNode {
            block: child.bytenr,
            tree,
            reason,
        };
        let found = match self.dirty.get(&child.bytenr) {
            Some(n) => Some(n.clone()),
            None => self
                .cache
                .lock()
                .map_err(|_| Error::Poisoned("cache lock".into()))?
                .get(child.bytenr),
        };
        if let Some(n) = found {
            if n.generation != child.generation || n.level != child.level {
                return Err(corrupt(format!(
                    "cached node has generation {} level {}, the parent expects generation {} level {}",
                    n.generation, n.level, child.generation, child.level
                )));
            }
            return Ok(n);
        }
        let ns = self.sb.nodesize;
        let mut buf = vec![0u8; ns as usize];
        self.storage
            .read_at(child.bytenr, &mut buf)
            .map_err(Error::io(child.bytenr))?;
        let expect = Expect {
            bytenr: child.bytenr,
            generation: child.generation,
            level: child.level,
            fsid: &self.sb.fsid,
            nodesize: ns,
            total_bytes: self.sb.total_bytes,
            lo: child.lo,
            hi: child.hi,
        };
        let node = Arc::new(decode_node(&buf, &expect).map_err(corrupt)?);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(node.clone());
        }
        Ok(node)
    }

    /// A mutable view of a node that is dirty in this transaction.
    pub(crate) fn dirty_mut(&mut self, bytenr: u64) -> Result<&mut Node> {
        match self.dirty.get_mut(&bytenr) {
            Some(n) => Ok(Arc::make_mut(n)),
            None => Err(Error::Poisoned(format!(
                "internal: block {bytenr} is not dirty"
            ))),
        }
    }

    pub(crate) fn add_ref(&mut self, bytenr: u64, len: u64, flags: u64, delta: i64) {
        let e = self.refs.entry(bytenr).or_insert(RefDelta {
            delta: 0,
            len,
            flags,
        });
        e.delta += delta;
        if e.delta == 0 {
            self.refs.remove(&bytenr);
        }
    }

    fn node_ref(&mut self, bytenr: u64, delta: i64) {
        let ns = u64::from(self.sb.nodesize);
        self.add_ref(bytenr, ns, EXTENT_FLAG_TREE_BLOCK, delta);
    }

    /// Allocates a node-sized extent with reference count 1.
    pub(crate) fn alloc_node(&mut self) -> Result<u64> {
        let ns = u64::from(self.sb.nodesize);
        let bytenr = self.alloc.alloc(ns, ns).ok_or(Error::NoSpace {
            needed: ns,
            free: self.alloc.free_bytes(),
        })?;
        self.node_ref(bytenr, 1);
        Ok(bytenr)
    }

    /// Drops the last reference to a node. A node written in this transaction is
    /// reusable at once; an older one only after this transaction is durable.
    pub(crate) fn free_node(&mut self, bytenr: u64) {
        let ns = u64::from(self.sb.nodesize);
        self.node_ref(bytenr, -1);
        if self.dirty.contains_key(&bytenr) {
            // Written in this transaction: never durable, so reusable at once, unless a
            // clone taken in this transaction still holds it.
            if !self.refs.contains_key(&bytenr) {
                self.dirty.remove(&bytenr);
                self.alloc.release(bytenr, ns);
            }
        } else {
            self.alloc.pin(bytenr, ns);
            if let Ok(mut c) = self.cache.lock() {
                c.remove(bytenr);
            }
        }
    }

    /// The reference count of an extent: what the extent tree says plus pending changes.
    pub(crate) fn refcount(&self, bytenr: u64) -> Result<u64> {
        let base = if self.dirty.contains_key(&bytenr) {
            0
        } else {
            self.extent_lookup(bytenr)?.map_or(0, |(_, item)| item.refs)
        };
        let delta = self.refs.get(&bytenr).map_or(0, |d| d.delta);
        let rc = base as i64 + delta;
        if rc < 0 {
            return Err(Error::CorruptItem {
                tree: objectid::EXTENT_TREE,
                key: Key::new(bytenr, item_type::EXTENT_ITEM, 0).to_string(),
                reason: format!("reference count would be {rc}"),
            });
        }
        Ok(rc as u64)
    }

    /// The extent item starting at `bytenr`, if any.
    pub(crate) fn extent_lookup(&self, bytenr: u64) -> Result<Option<(Key, ExtentItem)>> {
        let start = Key::new(bytenr, item_type::EXTENT_ITEM, 0);
        let Some(item) = self.range(objectid::EXTENT_TREE, start..)?.next() else {
            return Ok(None);
        };
        let (key, value) = item?;
        if key.objectid != bytenr || key.ty != item_type::EXTENT_ITEM {
            return Ok(None);
        }
        let item = ExtentItem::decode(&value).map_err(|reason| Error::CorruptItem {
            tree: objectid::EXTENT_TREE,
            key: key.to_string(),
            reason,
        })?;
        Ok(Some((key, item)))
    }

    /// Makes the node behind `child` writable in this transaction and returns its
    /// (possibly new) address. Shared nodes are copied and their references pushed down
    /// to their children (Rodeh's lazy reference counting).
    pub(crate) fn cow(&mut self, tree: u64, child: &ChildRef) -> Result<u64> {
        let shareable = node_ptr_shareable(tree);
        if self.dirty.contains_key(&child.bytenr)
            && (!shareable || self.refs.get(&child.bytenr).is_some_and(|d| d.delta == 1))
        {
            return Ok(child.bytenr);
        }
        let node = self.read_node(tree, child)?;
        let rc = if shareable {
            self.refcount(child.bytenr)?
        } else {
            1
        };
        let new = self.alloc_node()?;
        let mut copy = (*node).clone();
        copy.bytenr = new;
        copy.generation = self.generation;
        copy.owner = tree;
        if rc > 1 {
            if let Body::Branch(ptrs) = &copy.body {
                for p in ptrs {
                    self.node_ref(p.bytenr, 1);
                }
            }
            self.node_ref(child.bytenr, -1);
        } else {
            self.free_node(child.bytenr);
        }
        self.dirty.insert(new, Arc::new(copy));
        Ok(new)
    }

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

    /// Nodes that growing operations leave free, so that deleting (which shadows a
    /// path before it frees anything) still works on a full device.
    fn delete_reserve(&self) -> u64 {
        (self.sb.total_bytes / u64::from(self.sb.nodesize) / 128).max(16)
    }

    pub(crate) fn maybe_commit(&mut self) -> Result<()> {
        let dirty = self.dirty.len() as u64 * u64::from(self.sb.nodesize);
        if dirty > self.cfg.max_dirty_bytes {
            self.commit()?;
        }
        Ok(())
    }

    // ---- public tree operations --------------------------------------------------

    /// Creates an empty user tree.
    pub fn create_tree(&mut self, tree: u64) -> Result<()> {
        self.check_writable()?;
        if tree < objectid::FIRST_USER_TREE {
            return Err(Error::InvalidArgument(format!(
                "tree id {tree} is reserved"
            )));
        }
        if self.roots.contains_key(&tree) {
            return Err(Error::TreeExists(tree));
        }
        self.ensure_space(1 + self.delete_reserve())?;
        let bytenr = self.alloc_node()?;
        let node = Node {
            bytenr,
            generation: self.generation,
            owner: tree,
            level: 0,
            body: Body::Leaf(Leaf::default()),
        };
        self.dirty.insert(bytenr, Arc::new(node));
        self.set_root(
            tree,
            RootPtr {
                bytenr,
                generation: self.generation,
                level: 0,
            },
        );
        Ok(())
    }

    /// Makes `dst` a clone of `src` in O(1): both share every node until one changes.
    pub fn clone_tree(&mut self, src: u64, dst: u64) -> Result<()> {
        self.check_writable()?;
        let root = self.user_root(src)?;
        if dst < objectid::FIRST_USER_TREE {
            return Err(Error::InvalidArgument(format!("tree id {dst} is reserved")));
        }
        if self.roots.contains_key(&dst) {
            return Err(Error::TreeExists(dst));
        }
        self.ensure_space(0)?;
        self.node_ref(root.bytenr, 1);
        self.set_root(dst, root);
        Ok(())
    }

    /// Removes a user tree. Its nodes are released in steps by later commits, so that a
    /// huge tree never stalls one; the queue of pending drops survives crashes.
    pub fn drop_tree(&mut self, tree: u64) -> Result<()> {
        self.check_writable()?;
        let root = self.user_root(tree)?;
        self.roots.remove(&tree);
        self.dirty_roots.insert(tree);
        self.enqueue_drop(root.bytenr, root.generation, root.level, 1);
        Ok(())
    }

    /// Inserts or replaces an item.
    pub fn insert(&mut self, tree: u64, key: Key, value: &[u8]) -> Result<()> {
        self.check_writable()?;
        let max = self.max_value_size();
        if value.len() > max {
            return Err(Error::ItemTooLarge {
                size: value.len(),
                max,
            });
        }
        let root = self.user_root(tree)?;
        self.ensure_space(2 * (u64::from(root.level) + 2) + 2 + self.delete_reserve())?;
        let r = self.tree_insert(tree, key, value);
        self.poison_on_err(r)?;
        self.maybe_commit()
    }

    /// Deletes an item; returns whether it existed.
    pub fn delete(&mut self, tree: u64, key: Key) -> Result<bool> {
        self.check_writable()?;
        let root = self.user_root(tree)?;
        if self.get(tree, key)?.is_none() {
            return Ok(false);
        }
        self.ensure_space(2 * (u64::from(root.level) + 2) + 2)?;
        let r = self.tree_delete(tree, key);
        self.poison_on_err(r)?;
        self.maybe_commit()?;
        Ok(true)
    }

    /// The value stored under `key`.
    pub fn get(&self, tree: u64, key: Key) -> Result<Option<Vec<u8>>> {
        self.check_usable()?;
        let root = self.user_root(tree)?;
        self.tree_get(tree, root, key)
    }
}

/// Reads every superblock copy and returns the newest valid one, with a line for each
/// copy that was not valid.
pub fn read_superblock(storage: &dyn Storage) -> Result<(Superblock, Vec<String>)> {
    let len = storage.len().map_err(Error::io(0))?;
    let mut found = Vec::new();
    for (i, off) in superblock_offsets(len).into_iter().enumerate() {
        let mut buf = vec![0u8; SUPERBLOCK_SIZE];
        let decoded = match storage.read_at(off, &mut buf) {
            Err(e) => Err(format!("read failed: {e}")),
            Ok(()) => Superblock::decode(&buf, i as u32).and_then(|sb| {
                if sb.total_bytes > len {
                    Err(format!(
                        "total_bytes {} exceeds the device ({len} bytes)",
                        sb.total_bytes
                    ))
                } else if off + SUPERBLOCK_SIZE as u64 > sb.total_bytes {
                    Err(format!(
                        "copy lies outside its own filesystem of {} bytes",
                        sb.total_bytes
                    ))
                } else {
                    Ok(sb)
                }
            }),
        };
        found.push((i, off, decoded));
    }
    let best = found
        .iter()
        .filter_map(|(_, _, r)| r.as_ref().ok())
        .max_by_key(|sb| sb.generation)
        .cloned();
    // A filesystem smaller than its device owns only the slots inside it; mkfs wiped
    // the others, so their state is no problem.
    let owned = |off: u64| {
        best.as_ref()
            .is_none_or(|sb| off + SUPERBLOCK_SIZE as u64 <= sb.total_bytes)
    };
    let problems: Vec<String> = found
        .iter()
        .filter(|(_, off, _)| owned(*off))
        .filter_map(|(i, off, r)| {
            r.as_ref()
                .err()
                .map(|why| format!("superblock copy {i} at offset {off}: {why}"))
        })
        .collect();
    for p in &problems {
        tracing::warn!("{p}");
    }
    match best {
        Some(sb) => Ok((sb, problems)),
        None if problems.is_empty() => Err(Error::NoSuperblock(format!(
            "device of {len} bytes is too small to hold one"
        ))),
        None => Err(Error::NoSuperblock(problems.join("; "))),
    }
}
