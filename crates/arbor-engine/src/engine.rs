//! The engine handle and its public operations. Opening and mkfs live in `open.rs`,
//! node reads and reference counts in `nodes.rs`, space reservation in `space.rs`, the
//! B-tree algorithms in `tree/`, the commit in `commit.rs` and tree drops in `drop.rs`.

use crate::alloc::Allocator;
use crate::cache::NodeCache;
use crate::error::{Error, Result};
use crate::format::{
    Body, DropItem, Key, Leaf, Node, RootPtr, Superblock, objectid, reserved_ranges,
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
    /// Which data extents the items of user trees reference. Without it, leaves are
    /// opaque and no data extent may be shared between trees.
    pub data_refs: Option<Arc<dyn DataRefs>>,
    /// Keep blocks freed by a commit unusable until [`Engine::release_freed`] is
    /// called, so that readers that looked up a block before the commit may still
    /// read it after the engine's lock is released.
    pub hold_freed: bool,
}

/// Tells the engine which data extent a leaf item references. The layer that defines
/// the items (the filesystem) implements it. When a shared leaf is copied every data
/// extent it names gains a reference, and when a leaf is freed they each lose one;
/// the checker counts them the same way.
pub trait DataRefs: Send + Sync + std::fmt::Debug {
    /// The data extent `(bytenr, len)` that the item references, if any, or why the
    /// item is malformed.
    fn data_ref(
        &self,
        tree: u64,
        key: &Key,
        value: &[u8],
    ) -> std::result::Result<Option<(u64, u64)>, String>;

    /// Where the run of items that this item belongs to starts: every item naming the
    /// same extent through the same run has a key in `[anchor, anchor + len)` (same
    /// objectid and type, offsets up to the extent's length above). Only asked of
    /// items that name an extent. By default every item is its own run.
    fn anchor(&self, key: &Key, _value: &[u8]) -> Key {
        *key
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cache_bytes: 256 << 20,
            max_dirty_bytes: 256 << 20,
            drop_nodes_per_commit: 4096,
            read_only: false,
            data_refs: None,
            hold_freed: false,
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
    pub(crate) cache: Arc<Mutex<NodeCache>>,
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
    /// Changes made through the public API so far (see [`Engine::changes_made`]).
    pub(crate) changes_made: u64,
    /// Between `commit_begin` and `commit_end`: nothing may change.
    pub(crate) committing: bool,
    /// Exclusive bytes per user tree, kept at every commit.
    pub(crate) acct: crate::accounting::Accounting,
    /// Committed nodes freed in this transaction: dropped from the cache at its commit.
    pub(crate) evict_at_commit: Vec<u64>,
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

impl Engine {
    // ---- accessors ---------------------------------------------------------------

    /// The generation of the last commit.
    pub fn committed_generation(&self) -> u64 {
        self.sb.generation
    }

    /// The generation of the running transaction: what nodes and items written now
    /// carry.
    pub fn transaction_generation(&self) -> u64 {
        self.generation
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

    /// The root pointer of a user tree in the running transaction: its address,
    /// generation and level. Two trees share every subtree under equal pointers.
    pub fn tree_root(&self, tree: u64) -> Result<RootPtr> {
        self.user_root(tree)
    }

    /// True if the user tree exists.
    pub fn tree_exists(&self, tree: u64) -> bool {
        tree >= objectid::FIRST_USER_TREE && self.roots.contains_key(&tree)
    }

    /// Nodes of dropped trees whose references are still to be released.
    pub fn pending_drops(&self) -> usize {
        self.drops.len()
    }

    /// How many changes (inserts, deletes, allocations, reference changes, tree
    /// creations, clones and drops) this handle has made. A layer that builds one
    /// operation from several changes compares it before and after a failure: equal
    /// means the failure changed nothing.
    pub fn changes_made(&self) -> u64 {
        self.changes_made
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
        if self.committing {
            return Err(Error::InvalidArgument(
                "a commit is being written: call commit_end first".into(),
            ));
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
        self.changes_made += 1;
        self.acct.trees_changed = true;
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
        self.changes_made += 1;
        self.acct.trees_changed = true;
        self.node_ref(root.bytenr, 1);
        self.set_root(dst, root);
        Ok(())
    }

    /// Removes a user tree. Its nodes are released in steps by later commits, so that a
    /// huge tree never stalls one; the queue of pending drops survives crashes.
    pub fn drop_tree(&mut self, tree: u64) -> Result<()> {
        self.check_writable()?;
        let root = self.user_root(tree)?;
        self.changes_made += 1;
        self.acct.trees_changed = true;
        self.enqueue_drop(root.bytenr, root.generation, root.level, 1)?;
        self.roots.remove(&tree);
        self.dirty_roots.insert(tree);
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
        self.changes_made += 1;
        let r = self.tree_insert(tree, key, value);
        self.poison_on_err(r)?;
        let noted = self.acct_note_item(&key, value);
        self.poison_on_err(noted)?;
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
        self.changes_made += 1;
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
