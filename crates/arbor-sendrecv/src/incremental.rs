//! An incremental send: what turns the parent snapshot into the new one, found by the
//! engine's tree comparison (shared subtrees are skipped, so the cost follows the
//! change). The receiver starts from its copy of the parent; the stream then
//!
//! 1. detaches every name that goes: a directory, and a file losing its last name, is
//!    renamed to an orphan name `o<ino>-<gen>-0` at the top, other names are unlinked;
//! 2. removes the deleted directories, now empty orphans;
//! 3. makes the new inodes at orphan names;
//! 4. attaches every name that comes: directories first, shallowest first, then
//!    files (an orphan is renamed into place, a further name becomes a link);
//! 5. sends what changed in each inode (xattrs, the file ranges whose extents
//!    differ, holes included, size, owner, mode, times), directory times last.
//!
//! Because every moved directory is detached to the top before any is attached, and
//! directories are attached in the order of their depth in the new snapshot, no rename
//! ever moves a directory into its own subtree: swapped names, a directory moved into
//! what was its own descendant, and a file that became a directory all come out right.

use crate::clones::{Clones, Source};
use crate::error::SendError;
use crate::full::{SendOptions, SendStats, Sender, join, snapshot};
use arbor_fs::ino::Loc;
use arbor_fs::{Changes, Fs, Inode, ROOT_INO};
use arbor_send::Command;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;

/// Where each inode's names are on the receiver as the stream goes on.
struct Places<'a> {
    fs: &'a Fs,
    /// The parent snapshot's root (global): names not yet touched are as there.
    parent_root: u64,
    names: HashMap<u64, Vec<(u64, Vec<u8>)>>,
}

impl Places<'_> {
    fn names(&mut self, ino: u64) -> Result<&mut Vec<(u64, Vec<u8>)>, SendError> {
        if !self.names.contains_key(&ino) {
            let n = if ino == ROOT_INO {
                Vec::new()
            } else {
                self.fs
                    .names_of(self.parent_root, ino)
                    .map_err(SendError::fs(b""))?
            };
            self.names.insert(ino, n);
        }
        Ok(self.names.entry(ino).or_default())
    }

    /// The receiver's current path of `ino` ("" for the root).
    fn path(&mut self, ino: u64) -> Result<Vec<u8>, SendError> {
        let mut parts = Vec::new();
        let mut at = ino;
        for _ in 0..100_000 {
            if at == ROOT_INO {
                parts.reverse();
                return Ok(parts.join(&b'/'));
            }
            let (dir, name) = self.names(at)?.first().cloned().ok_or_else(|| {
                SendError::Refused(format!("inode {at} has no name on the receiver"))
            })?;
            parts.push(name);
            at = dir;
        }
        Err(SendError::Refused(
            "directory tree too deep or looped".into(),
        ))
    }

    fn entry_path(&mut self, dir: u64, name: &[u8]) -> Result<Vec<u8>, SendError> {
        Ok(join(&self.path(dir)?, name))
    }
}

fn orphan(ino: u64, generation: u64) -> Vec<u8> {
    format!("o{ino}-{generation}-0").into_bytes()
}

/// The depth of directory `ino` in the snapshot whose root is `root`.
fn depth(fs: &Fs, root: u64, mut ino: u64) -> Result<usize, SendError> {
    let mut d = 0;
    while ino != ROOT_INO && d < 100_000 {
        let names = fs.names_of(root, ino).map_err(SendError::fs(b""))?;
        let Some((dir, _)) = names.first() else { break };
        ino = *dir;
        d += 1;
    }
    Ok(d)
}

/// Sends what turns read-only snapshot `parent` into read-only snapshot `root` (both
/// global inode numbers of subvolume roots, of one lineage), named `name`.
pub fn send_incremental<W: Write>(
    fs: &Fs,
    parent: u64,
    root: u64,
    name: &[u8],
    out: W,
    opts: SendOptions,
) -> Result<SendStats, SendError> {
    let (pat, at) = (
        Loc::of(parent).map_err(SendError::fs(b""))?,
        Loc::of(root).map_err(SendError::fs(b""))?,
    );
    let (pinfo, parent_uuid) = snapshot(fs, parent)?;
    let (info, uuid) = snapshot(fs, root)?;
    let mut sources = vec![Source::new(parent, parent_uuid, pinfo.generation)];
    sources.extend(crate::full::sources(fs, &opts.clone_sources)?);
    let changes: Changes = fs
        .changes_between(parent, root)
        .map_err(SendError::fs(b""))?;
    let mut s = Sender::new(fs, out, opts, Clones::new(uuid, info.generation, sources))?;
    s.emit(Command::Snapshot {
        path: name.to_vec(),
        uuid,
        ctransid: info.generation,
        clone_uuid: parent_uuid,
        clone_ctransid: pinfo.generation,
    })?;
    s.start_resume(uuid, info.generation, Some((parent_uuid, pinfo.generation)))?;
    let mut places = Places {
        fs,
        parent_root: parent,
        names: HashMap::new(),
    };
    let global = |ino: u64| Loc::new(at.subvol, ino).global();
    let pglobal = |ino: u64| Loc::new(pat.subvol, ino).global();
    let survives = |ino: u64| changes.inodes.get(&ino).is_none_or(|c| c.same);
    // An entry in both lists, naming the same surviving inode, did not change.
    let key = |e: &(u64, Vec<u8>, u64)| e.clone();
    let added_set: std::collections::HashSet<_> = changes.added.iter().map(key).collect();
    let removed_set: std::collections::HashSet<_> = changes.removed.iter().map(key).collect();
    let removed: Vec<_> = changes
        .removed
        .iter()
        .filter(|e| !(added_set.contains(*e) && survives(e.2)))
        .cloned()
        .collect();
    let added: Vec<_> = changes
        .added
        .iter()
        .filter(|e| !(removed_set.contains(*e) && survives(e.2)))
        .cloned()
        .collect();
    let old_inode = |ino: u64| -> Result<Inode, SendError> {
        match changes.inodes.get(&ino).and_then(|c| c.old.clone()) {
            Some(i) => Ok(i),
            None => fs.getattr(pglobal(ino)).map_err(SendError::fs(b"")),
        }
    };

    // 1. Detach every name that goes.
    let mut orphans: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut doomed_dirs = Vec::new();
    for (dir, name, ino) in &removed {
        let from = places.entry_path(*dir, name)?;
        let old = old_inode(*ino)?;
        let last_name = places.names(*ino)?.len() <= 1;
        if old.is_dir() || (survives(*ino) && last_name) {
            let to = orphan(*ino, old.generation);
            s.emit(Command::Rename {
                path: from,
                path_to: to.clone(),
            })?;
            *places.names(*ino)? = vec![(ROOT_INO, to.clone())];
            if survives(*ino) {
                orphans.insert(*ino, to);
            } else {
                doomed_dirs.push(to);
            }
        } else {
            s.emit(Command::Unlink { path: from })?;
            places
                .names(*ino)?
                .retain(|(d, n)| !(d == dir && n == name));
        }
    }
    let mut used_orphans = !doomed_dirs.is_empty();
    // 2. The deleted directories are empty orphans now.
    for path in doomed_dirs {
        s.emit(Command::Rmdir { path })?;
    }
    // 3. New inodes, at orphan names.
    for (&ino, c) in &changes.inodes {
        let Some(new) = &c.new else { continue };
        if c.same {
            continue;
        }
        let path = orphan(ino, new.generation);
        let mut inode = new.clone();
        inode.ino = global(ino);
        s.make(&path, &inode, ino)?;
        places.names.insert(ino, vec![(ROOT_INO, path.clone())]);
        orphans.insert(ino, path);
    }
    used_orphans |= !orphans.is_empty();
    // 4. Attach every name that comes: directories by depth, then the rest.
    let mut dir_adds = Vec::new();
    let mut other_adds = Vec::new();
    for (dir, name, ino) in added {
        let is_dir = match changes.inodes.get(&ino).and_then(|c| c.new.as_ref()) {
            Some(i) => i.is_dir(),
            None => fs
                .getattr(global(ino))
                .map_err(SendError::fs(&name))?
                .is_dir(),
        };
        if is_dir {
            dir_adds.push((depth(fs, root, dir)?, dir, name, ino));
        } else {
            other_adds.push((0, dir, name, ino));
        }
    }
    dir_adds.sort_by_key(|a| a.0);
    for (_, dir, name, ino) in dir_adds.into_iter().chain(other_adds) {
        let to = places.entry_path(dir, &name)?;
        if let Some(from) = orphans.remove(&ino) {
            s.emit(Command::Rename {
                path: from,
                path_to: to,
            })?;
            *places.names(ino)? = vec![(dir, name)];
        } else {
            let existing = places.path(ino)?;
            s.emit(Command::Link {
                path: to,
                path_link: existing,
            })?;
            places.names(ino)?.push((dir, name));
        }
    }
    if let Some((ino, path)) = orphans.into_iter().next() {
        return Err(SendError::Refused(format!(
            "inode {ino} was left at {} with no name in the new snapshot",
            String::from_utf8_lossy(&path)
        )));
    }
    // 5. Contents, owners, modes and times.
    let mut dirs = Vec::new();
    for (&ino, c) in &changes.inodes {
        let Some(new) = &c.new else { continue };
        let mut inode = new.clone();
        inode.ino = global(ino);
        let path = places.path(ino)?;
        if !c.same {
            s.fill(&path, &inode)?;
        } else {
            let old = c.old.clone().unwrap_or_default();
            if c.xattrs {
                xattrs(&mut s, &path, pglobal(ino), &inode)?;
            }
            if inode.is_reg() {
                // The size the receiver's copy has after the writes: they extend it.
                let mut size = old.size;
                for &(from, to) in &c.data_ranges {
                    let to = to.min(inode.size);
                    for (a, b) in differing(fs, pglobal(ino), inode.ino, from, to, old.size)? {
                        size = size.max(s.range(&path, &inode, a, b, true)?);
                    }
                }
                if inode.size != size {
                    s.emit(Command::Truncate {
                        path: path.clone(),
                        size: inode.size,
                    })?;
                }
            }
            if (old.uid, old.gid) != (inode.uid, inode.gid) {
                s.emit(Command::Chown {
                    path: path.clone(),
                    uid: u64::from(inode.uid),
                    gid: u64::from(inode.gid),
                })?;
            }
            if old.mode != inode.mode && inode.mode & 0o170000 != 0o120000 {
                s.emit(Command::Chmod {
                    path: path.clone(),
                    mode: u64::from(inode.mode & 0o7777),
                })?;
            }
            if !inode.is_dir() {
                s.times(&path, &inode)?;
            }
        }
        if inode.is_dir() {
            dirs.push((depth(fs, root, ino)?, path, inode));
        }
    }
    // Orphan names come and go in the root: on the receiver that changes its times,
    // which must end as the new snapshot has them even if nothing else changed it.
    if used_orphans && !dirs.iter().any(|d| d.1.is_empty()) {
        let top = fs.getattr(root).map_err(SendError::fs(b""))?;
        dirs.push((0, Vec::new(), top));
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    for (_, path, inode) in dirs {
        s.times(&path, &inode)?;
    }
    s.finish()
}

/// The parts of `[from, to)` of a file whose bytes may differ between its old version
/// `old` (of `old_size` bytes) and its new one `new`: all of it but where both map the
/// same bytes of the same data extent below the old size. An extent item that only got
/// shorter or was split (an append rewrites the last block; a punch splits an extent)
/// differs as an item, but most of its bytes are the parent's, which the receiver has.
fn differing(
    fs: &Fs,
    old: u64,
    new: u64,
    from: u64,
    to: u64,
    old_size: u64,
) -> Result<Vec<(u64, u64)>, SendError> {
    if from >= to {
        return Ok(Vec::new());
    }
    let pieces = |ino| fs.data_pieces(ino, from, to).map_err(SendError::fs(b""));
    let (olds, news) = (pieces(old)?, pieces(new)?);
    let mut same: Vec<(u64, u64)> = Vec::new();
    for n in &news {
        for o in olds.iter().filter(|o| o.disk_bytenr == n.disk_bytenr) {
            // Both map file offset x to extent offset x - base.
            let base = |p: &arbor_fs::DataPiece| p.file_offset.wrapping_sub(p.extent_offset);
            if base(n) != base(o) {
                continue;
            }
            let a = n.file_offset.max(o.file_offset).max(from);
            let b = (n.file_offset + n.len)
                .min(o.file_offset + o.len)
                .min(to)
                .min(old_size);
            if a < b {
                same.push((a, b));
            }
        }
    }
    same.sort_unstable();
    let mut out = Vec::new();
    let mut at = from;
    for (a, b) in same {
        if a > at {
            out.push((at, a));
        }
        at = at.max(b);
    }
    if at < to {
        out.push((at, to));
    }
    Ok(out)
}

/// Makes the receiver's xattrs of a file what the new snapshot has.
fn xattrs<W: Write>(
    s: &mut Sender<'_, W>,
    path: &[u8],
    old: u64,
    new: &Inode,
) -> Result<(), SendError> {
    let fs = s.fs;
    let read = |ino: u64| -> Result<BTreeMap<Vec<u8>, Vec<u8>>, SendError> {
        let mut m = BTreeMap::new();
        for n in fs.listxattr(ino).map_err(SendError::fs(path))? {
            let v = fs.getxattr(ino, &n).map_err(SendError::fs(path))?;
            m.insert(n, v);
        }
        Ok(m)
    };
    let (a, b) = (read(old)?, read(new.ino)?);
    for name in a.keys().filter(|n| !b.contains_key(*n)) {
        s.emit(Command::RemoveXattr {
            path: path.to_vec(),
            name: name.clone(),
        })?;
    }
    for (name, data) in b {
        if a.get(&name) != Some(&data) {
            s.emit(Command::SetXattr {
                path: path.to_vec(),
                name,
                data,
            })?;
        }
    }
    Ok(())
}
