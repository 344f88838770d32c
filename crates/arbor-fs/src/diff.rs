//! What changed between two subvolumes of one lineage (a snapshot and a later
//! snapshot, or a snapshot and its live source), as `zfs diff` reports it: paths
//! added, removed, modified and renamed. It walks the engine's tree comparison, which
//! skips every subtree the two share, so its cost follows the size of the change.

use crate::error::{FsError, Result};
use crate::fs::Fs;
use crate::ino::Loc;
use crate::items::{INFO_OBJECTID, Inode, ORPHAN_OBJECTID, ROOT_INO, decode_refs, key, ty};
use arbor_engine::{DiffStats, Engine};
use std::collections::{BTreeMap, BTreeSet};

/// One line of a diff.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DiffEntry {
    /// A path that only the new subvolume has.
    Added { path: Vec<u8>, dir: bool },
    /// A path that only the old subvolume has.
    Removed { path: Vec<u8>, dir: bool },
    /// The same inode at the same path, with other contents or attributes.
    Modified { path: Vec<u8>, dir: bool },
    /// The same inode under another name.
    Renamed {
        from: Vec<u8>,
        to: Vec<u8>,
        dir: bool,
    },
}

impl DiffEntry {
    /// The path the entry is about (a rename's old path).
    pub fn path(&self) -> &[u8] {
        match self {
            DiffEntry::Added { path, .. }
            | DiffEntry::Removed { path, .. }
            | DiffEntry::Modified { path, .. } => path,
            DiffEntry::Renamed { from, .. } => from,
        }
    }
}

/// A diff and what computing it cost.
#[derive(Clone, Debug, Default)]
pub struct Diff {
    pub entries: Vec<DiffEntry>,
    pub stats: DiffStats,
}

/// The names of inode `ino` in `tree`, as paths from the subvolume's root (none if
/// it has no inode there).
fn paths_of(e: &Engine, tree: u64, ino: u64) -> Result<Vec<Vec<u8>>> {
    if ino == ROOT_INO {
        return Ok(vec![b"/".to_vec()]);
    }
    let lo = key(ino, ty::INODE_REF, 0);
    let hi = key(ino, ty::INODE_REF, u64::MAX);
    let mut out = Vec::new();
    for item in e.range(tree, lo..=hi)? {
        let (k, v) = item?;
        let parent = dir_path(e, tree, k.offset)?;
        for (_, name) in decode_refs(ino, k, &v)? {
            let mut p = parent.clone();
            if p != b"/" {
                p.push(b'/');
            }
            p.extend_from_slice(&name);
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// The path of directory `dir` in `tree`, from the subvolume's root ("/" for it).
fn dir_path(e: &Engine, tree: u64, dir: u64) -> Result<Vec<u8>> {
    let mut p = b"/".to_vec();
    p.extend_from_slice(&crate::subvol::dir_path(e, tree, dir)?);
    Ok(p)
}

fn inode_in(e: &Engine, tree: u64, ino: u64) -> Result<Option<Inode>> {
    match e.get(tree, key(ino, ty::INODE_ITEM, 0))? {
        Some(v) => Ok(Some(Inode::decode(ino, &v)?)),
        None => Ok(None),
    }
}

/// Computes the diff of two trees (see [`Fs::diff_subvols`]).
fn diff_trees(e: &Engine, old: u64, new: u64) -> Result<Diff> {
    // What changed, per inode: its data or xattrs (true), or only its inode item or
    // names (false; whether the inode item changed in more than its times is decided
    // below).
    let mut touched: BTreeMap<u64, bool> = BTreeMap::new();
    let stats = e.diff_trees(old, new, |c| {
        let ino = c.key.objectid;
        if ino == ORPHAN_OBJECTID || ino == INFO_OBJECTID || ino < ROOT_INO {
            return Ok(());
        }
        let content = !matches!(
            c.key.ty,
            ty::INODE_ITEM | ty::INODE_REF | ty::DIR_ITEM | ty::DIR_INDEX
        );
        let t = touched.entry(ino).or_insert(false);
        *t |= content;
        Ok(())
    })?;
    let mut entries = BTreeSet::new();
    for (&ino, &data_changed) in &touched {
        let (a, b) = (inode_in(e, old, ino)?, inode_in(e, new, ino)?);
        // An inode number is the same file only if it was created at the same moment
        // (two snapshots can each have made their own file with it).
        let same = match (&a, &b) {
            (Some(a), Some(b)) => a.generation == b.generation && a.crtime == b.crtime,
            _ => false,
        };
        // A rename or a new link changes only the ctime (and link count, for a
        // link): not what `diff` calls modified.
        let content = data_changed
            || match (&a, &b) {
                (Some(a), Some(b)) => {
                    let plain = |i: &Inode| Inode {
                        ctime: Default::default(),
                        atime: Default::default(),
                        ..i.clone()
                    };
                    plain(a) != plain(b)
                }
                _ => false,
            };
        let (from, to) = (
            if a.is_some() {
                paths_of(e, old, ino)?
            } else {
                Vec::new()
            },
            if b.is_some() {
                paths_of(e, new, ino)?
            } else {
                Vec::new()
            },
        );
        if !same {
            if let Some(a) = &a {
                for path in from {
                    entries.insert(DiffEntry::Removed {
                        path,
                        dir: a.is_dir(),
                    });
                }
            }
            if let Some(b) = &b {
                for path in to {
                    entries.insert(DiffEntry::Added {
                        path,
                        dir: b.is_dir(),
                    });
                }
            }
            continue;
        }
        let dir = b.as_ref().is_some_and(Inode::is_dir);
        let gone: Vec<&Vec<u8>> = from.iter().filter(|p| !to.contains(p)).collect();
        let new_names: Vec<&Vec<u8>> = to.iter().filter(|p| !from.contains(p)).collect();
        if gone.len() == 1 && new_names.len() == 1 {
            entries.insert(DiffEntry::Renamed {
                from: gone[0].clone(),
                to: new_names[0].clone(),
                dir,
            });
        } else {
            for path in gone {
                entries.insert(DiffEntry::Removed {
                    path: path.clone(),
                    dir,
                });
            }
            for path in new_names {
                entries.insert(DiffEntry::Added {
                    path: path.clone(),
                    dir,
                });
            }
        }
        if content {
            for path in to.iter().filter(|p| from.contains(p)) {
                entries.insert(DiffEntry::Modified {
                    path: path.clone(),
                    dir,
                });
            }
            if from.iter().all(|p| !to.contains(p))
                && let Some(path) = to.first()
            {
                entries.insert(DiffEntry::Modified {
                    path: path.clone(),
                    dir,
                });
            }
        }
    }
    let mut entries: Vec<DiffEntry> = entries.into_iter().collect();
    entries.sort_by(|a, b| a.path().cmp(b.path()).then(a.cmp(b)));
    Ok(Diff { entries, stats })
}

impl Fs {
    /// What changed from subvolume `old` to subvolume `new`: both the global inode
    /// numbers of subvolume roots, of one lineage (a snapshot and a later snapshot or
    /// its source), as inode numbers carry over only along snapshots.
    pub fn diff_subvols(&self, old: u64, new: u64) -> Result<Diff> {
        let (a, b) = (Loc::of(old)?, Loc::of(new)?);
        for (l, g) in [(a, old), (b, new)] {
            if l.ino != ROOT_INO {
                return Err(FsError::Invalid(format!(
                    "inode {g} is not the root of a subvolume"
                )));
            }
        }
        self.with_engine(|e| diff_trees(e, a.subvol, b.subvol))
    }
}
