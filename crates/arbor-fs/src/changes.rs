//! The item-level difference between two subvolumes of one lineage, for an
//! incremental send: which inodes changed and how, which directory entries went and
//! came, and which file ranges hold other data. It comes from the engine's tree
//! comparison, which skips every subtree the two share.

use crate::error::{FsError, Result};
use crate::fs::Fs;
use crate::ino::Loc;
use crate::items::{
    DirEntry, FileExtent, INFO_OBJECTID, Inode, ORPHAN_OBJECTID, ROOT_INO, key, ty,
};
use arbor_engine::Engine;
use std::collections::{BTreeMap, BTreeSet};

/// How one inode differs (local inode numbers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InodeChange {
    /// The inode in the old subvolume, if it has one.
    pub old: Option<Inode>,
    /// The inode in the new one.
    pub new: Option<Inode>,
    /// The same file in both (made at the same moment): else the number was reused.
    pub same: bool,
    /// File ranges `[start, end)` whose extent items differ (merged, in order).
    pub data_ranges: Vec<(u64, u64)>,
    /// Some xattr item differs.
    pub xattrs: bool,
}

/// A directory entry: directory, name, the inode it names (local numbers).
pub type Entry = (u64, Vec<u8>, u64);

/// The difference between two subvolumes.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    pub inodes: BTreeMap<u64, InodeChange>,
    /// Entries only the old subvolume has (nested subvolumes left out).
    pub removed: Vec<Entry>,
    /// Entries only the new one has.
    pub added: Vec<Entry>,
    /// Tree nodes the comparison read.
    pub nodes_read: u64,
}

fn inode_in(e: &Engine, tree: u64, ino: u64) -> Result<Option<Inode>> {
    match e.get(tree, key(ino, ty::INODE_ITEM, 0))? {
        Some(v) => Ok(Some(Inode::decode(ino, &v)?)),
        None => Ok(None),
    }
}

fn merge(mut r: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    r.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, t) in r {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(t),
            _ => out.push((s, t)),
        }
    }
    out
}

fn changes_in(e: &Engine, old: u64, new: u64) -> Result<Changes> {
    let mut touched: BTreeSet<u64> = BTreeSet::new();
    let mut ranges: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    let mut xattrs: BTreeSet<u64> = BTreeSet::new();
    let mut removed = Vec::new();
    let mut added = Vec::new();
    let stats = e.diff_trees(old, new, |c| {
        let ino = c.key.objectid;
        if ino == ORPHAN_OBJECTID || ino == INFO_OBJECTID || ino < ROOT_INO {
            return Ok(());
        }
        touched.insert(ino);
        let fail = |err: FsError| arbor_engine::Error::InvalidArgument(err.to_string());
        match c.key.ty {
            ty::EXTENT_DATA => {
                for v in [c.old, c.new].into_iter().flatten() {
                    let fe = FileExtent::decode(ino, c.key, v).map_err(fail)?;
                    let start = c.key.offset;
                    ranges
                        .entry(ino)
                        .or_default()
                        .push((start, start.saturating_add(fe.file_len())));
                }
            }
            ty::XATTR_ITEM => {
                xattrs.insert(ino);
            }
            ty::DIR_INDEX => {
                for (v, list) in [(c.old, &mut removed), (c.new, &mut added)] {
                    let Some(v) = v else { continue };
                    for d in DirEntry::decode_list(ino, c.key, v).map_err(fail)? {
                        if !d.is_subvol() {
                            list.push((ino, d.name, d.ino));
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    let mut inodes = BTreeMap::new();
    for ino in touched {
        let (a, b) = (inode_in(e, old, ino)?, inode_in(e, new, ino)?);
        if a.is_none() && b.is_none() {
            continue;
        }
        let same = match (&a, &b) {
            (Some(a), Some(b)) => a.generation == b.generation && a.crtime == b.crtime,
            _ => false,
        };
        inodes.insert(
            ino,
            InodeChange {
                old: a,
                new: b,
                same,
                data_ranges: merge(ranges.remove(&ino).unwrap_or_default()),
                xattrs: xattrs.contains(&ino),
            },
        );
    }
    Ok(Changes {
        inodes,
        removed,
        added,
        nodes_read: stats.nodes_read(),
    })
}

impl Fs {
    /// The names of local inode `ino` in the subvolume whose root is `root` (global):
    /// (local directory, name) pairs, from its back references.
    pub fn names_of(&self, root: u64, ino: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        let at = Loc::of(root)?;
        self.with_engine(|e| {
            let lo = key(ino, ty::INODE_REF, 0);
            let hi = key(ino, ty::INODE_REF, u64::MAX);
            let mut out = Vec::new();
            for item in e.range(at.subvol, lo..=hi)? {
                let (k, v) = item?;
                for (_, name) in crate::items::decode_refs(ino, k, &v)? {
                    out.push((k.offset, name));
                }
            }
            Ok(out)
        })
    }

    /// What differs from subvolume root `old` to subvolume root `new` (global inode
    /// numbers of the two roots).
    pub fn changes_between(&self, old: u64, new: u64) -> Result<Changes> {
        let (a, b) = (Loc::of(old)?, Loc::of(new)?);
        if a.ino != ROOT_INO || b.ino != ROOT_INO {
            return Err(FsError::Invalid("not the root of a subvolume".into()));
        }
        self.with_engine(|e| changes_in(e, a.subvol, b.subvol))
    }
}
