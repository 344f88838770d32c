//! Creating (mkfs) and opening images: choosing the superblock, loading the root tree
//! and rebuilding the allocator from the extent tree.

use crate::alloc::Allocator;
use crate::cache::NodeCache;
use crate::engine::{Config, Engine, MkfsOptions};
use crate::error::{Error, Result};
use crate::format::{
    AnchorItem, Body, DropItem, EXTENT_FLAG_DATA, ExtentItem, Key, Leaf, MAX_NODESIZE,
    MIN_NODESIZE, Node, RESERVED_HEAD, RootItem, RootPtr, SECTOR_SIZE, SUPERBLOCK_SIZE, Superblock,
    anchor_hash, item_type, objectid, reserved_ranges, superblock_offsets, validate_extent,
};
use crate::storage::Storage;
use rustc_hash::FxHashMap as HashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

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
        engine.acct_start();
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
            cache: Arc::new(Mutex::new(NodeCache::with_capacity(cap))),
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
            changes_made: 0,
            committing: false,
            acct: Default::default(),
            evict_at_commit: Vec::new(),
            sb,
        }
    }

    /// Reads the newest valid superblock copy and the trees it names. Opening for writing
    /// commits one empty generation first (see `burn_generation`).
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
        if !engine.cfg.read_only {
            engine.burn_generation()?;
        }
        engine.acct_start();
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
                    item.root.validate(sb_gen, ns, total).map_err(bad)?;
                    self.roots.insert(key.objectid, item.root);
                    self.acct.excl.insert(key.objectid, item.exclusive);
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
        // The data extent whose anchor items may follow.
        let mut last_data: Option<u64> = None;
        for item in items {
            let (key, value) = item?;
            let bad = |reason: String| Error::CorruptItem {
                tree: objectid::EXTENT_TREE,
                key: key.to_string(),
                reason,
            };
            if key.ty == item_type::ANCHOR_ITEM {
                if last_data != Some(key.objectid) {
                    return Err(bad(
                        "anchor item of something that is not a data extent".into()
                    ));
                }
                let anchors = AnchorItem::decode(&value).map_err(bad)?;
                if anchors.0.iter().any(|a| anchor_hash(a) != key.offset) {
                    return Err(bad("anchor stored under another hash".into()));
                }
                continue;
            }
            if key.ty != item_type::EXTENT_ITEM {
                return Err(bad("not an extent item".into()));
            }
            let item = ExtentItem::decode(&value).map_err(bad)?;
            last_data = (item.flags == EXTENT_FLAG_DATA).then_some(key.objectid);
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
