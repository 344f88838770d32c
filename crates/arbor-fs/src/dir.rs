//! Directories: lookup through the name-hash index (`DIR_ITEM`), listing through the
//! sequence index (`DIR_INDEX`, stable offsets), and the operations that add, remove
//! and move names.

use crate::error::{FsError, Result};
use crate::fs::{Caller, Fs, MAX_LINKS, Txn};
use crate::ino::{Loc, TOP_SUBVOL};
use crate::items::{
    DT_SUBVOL, DirEntry, FIRST_DIR_INDEX, Inode, NAME_MAX, ROOT_INO, S_IFDIR, S_IFLNK, S_IFMT,
    S_ISGID, Time, decode_refs, dtype, encode_refs, key, name_hash, ty,
};
use crate::subvol_items::{SUBVOL_TREE, SubvolRef, sty};
use arbor_engine::Engine;

/// How `rename` treats an existing target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenameFlags {
    /// Fail with EEXIST if the target exists.
    pub noreplace: bool,
    /// Swap source and target, which must both exist.
    pub exchange: bool,
}

/// One entry of a directory listing. `next` is the offset to continue from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadDirEntry {
    pub ino: u64,
    pub next: u64,
    pub dtype: u8,
    pub name: Vec<u8>,
}

pub(crate) fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong(name.len()));
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(FsError::Invalid(format!(
            "bad name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

pub(crate) fn find_in_dir(
    e: &Engine,
    tree: u64,
    dir: u64,
    name: &[u8],
) -> Result<Option<DirEntry>> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong(name.len()));
    }
    let k = key(dir, ty::DIR_ITEM, name_hash(name));
    let Some(v) = e.get(tree, k)? else {
        return Ok(None);
    };
    Ok(DirEntry::decode_list(dir, k, &v)?
        .into_iter()
        .find(|d| d.name == name))
}

/// What a directory entry in subvolume `subvol` names: an inode of the same subvolume,
/// or the root directory of another.
pub(crate) fn entry_target(subvol: u64, d: &DirEntry) -> Loc {
    if d.is_subvol() {
        Loc::root_of(d.ino)
    } else {
        Loc::new(subvol, d.ino)
    }
}

impl Fs {
    /// The inode that `name` in directory `parent` names.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Inode> {
        let at = Loc::of(parent)?;
        self.with_engine(|e| self.lookup_in(e, at, name))
    }

    fn lookup_in(&self, e: &Engine, at: Loc, name: &[u8]) -> Result<Inode> {
        let dir = Self::get_inode(e, at.subvol, at.ino)?;
        if !dir.is_dir() {
            return Err(FsError::NotDir);
        }
        let target = match name {
            b"." => at,
            b".." => Self::parent_loc(e, at)?,
            _ => match find_in_dir(e, at.subvol, at.ino, name)? {
                Some(d) => entry_target(at.subvol, &d),
                None => return Err(FsError::NotFound),
            },
        };
        Ok(Self::get_inode(e, target.subvol, target.ino)?.in_subvol(target.subvol))
    }

    /// A directory's parent, across subvolume boundaries: the root of a subvolume
    /// has the directory that holds it as parent; the top-level root is its own.
    pub(crate) fn parent_loc(e: &Engine, at: Loc) -> Result<Loc> {
        if at.ino != ROOT_INO {
            return Ok(Loc::new(at.subvol, Self::parent_of(e, at.subvol, at.ino)?));
        }
        if at.subvol == TOP_SUBVOL {
            return Ok(at);
        }
        let lo = key(at.subvol, sty::ROOT_BACKREF, 0);
        let hi = key(at.subvol, sty::ROOT_BACKREF, u64::MAX);
        match e.range(SUBVOL_TREE, lo..=hi)?.next() {
            Some(item) => {
                let (k, v) = item?;
                let r = SubvolRef::decode(at.subvol, k, &v)?;
                Ok(Loc::new(k.offset, r.dirid))
            }
            None => Err(FsError::NotFound),
        }
    }

    /// A directory's parent (the root is its own parent).
    pub(crate) fn parent_of(e: &Engine, tree: u64, dir: u64) -> Result<u64> {
        if dir == ROOT_INO {
            return Ok(ROOT_INO);
        }
        let lo = key(dir, ty::INODE_REF, 0);
        let hi = key(dir, ty::INODE_REF, u64::MAX);
        match e.range(tree, lo..=hi)?.next() {
            Some(item) => Ok(item?.0.offset),
            None => Err(FsError::NotFound),
        }
    }

    /// Lists a directory from offset `from` (0 = start). Returns at most `limit`
    /// entries; "." and ".." come first.
    pub fn readdir(&self, dir: u64, from: u64, limit: usize) -> Result<Vec<ReadDirEntry>> {
        let at = Loc::of(dir)?;
        self.with_engine(|e| self.readdir_in(e, at, from, limit))
    }

    fn readdir_in(
        &self,
        e: &Engine,
        at: Loc,
        from: u64,
        limit: usize,
    ) -> Result<Vec<ReadDirEntry>> {
        let dir = at.ino;
        let inode = Self::get_inode(e, at.subvol, dir)?;
        if !inode.is_dir() {
            return Err(FsError::NotDir);
        }
        let mut out = Vec::new();
        if from < 1 {
            out.push(ReadDirEntry {
                ino: at.global(),
                next: 1,
                dtype: 4,
                name: b".".to_vec(),
            });
        }
        if from < 2 {
            out.push(ReadDirEntry {
                ino: Self::parent_loc(e, at)?.global(),
                next: 2,
                dtype: 4,
                name: b"..".to_vec(),
            });
        }
        let lo = key(dir, ty::DIR_INDEX, from.max(FIRST_DIR_INDEX));
        let hi = key(dir, ty::DIR_INDEX, u64::MAX);
        for item in e.range(at.subvol, lo..=hi)? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            for d in DirEntry::decode_list(dir, k, &v)? {
                out.push(ReadDirEntry {
                    ino: entry_target(at.subvol, &d).global(),
                    next: k.offset + 1,
                    dtype: d.dtype & !DT_SUBVOL,
                    name: d.name,
                });
            }
        }
        Ok(out)
    }

    /// Creates a file, fifo, socket or device node (`mode` says which), a directory
    /// (`S_IFDIR`) or a symlink (`S_IFLNK`, with `target`).
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u64,
        who: Caller,
        target: Option<&[u8]>,
    ) -> Result<Inode> {
        check_name(name)?;
        if let Some(t) = target
            && (t.is_empty() || t.len() >= 4096)
        {
            return Err(if t.is_empty() {
                FsError::NotFound
            } else {
                FsError::NameTooLong(t.len())
            });
        }
        let Loc {
            subvol,
            ino: parent,
        } = Loc::of(parent)?;
        self.change(subvol, |t| {
            let data = target.map_or(0, |x| x.len() as u64);
            t.e.reserve(t.tree, 10, data)?;
            let mut dir = t.inode(parent)?;
            if !dir.is_dir() {
                return Err(FsError::NotDir);
            }
            if dir.nlink == 0 {
                return Err(FsError::NotFound);
            }
            if mode & S_IFMT == S_IFDIR && dir.nlink >= MAX_LINKS {
                return Err(FsError::TooManyLinks);
            }
            if find_in_dir(t.e, t.tree, parent, name)?.is_some() {
                return Err(FsError::Exists);
            }
            let ino = t.next_ino()?;
            let kind = mode & S_IFMT;
            let mut inode = Inode {
                ino,
                mode,
                uid: who.uid,
                gid: who.gid,
                nlink: if kind == S_IFDIR { 2 } else { 1 },
                rdev,
                generation: t.e.transaction_generation(),
                seq: FIRST_DIR_INDEX,
                atime: t.now,
                mtime: t.now,
                ctime: t.now,
                crtime: Time::birth(),
                ..Default::default()
            };
            if dir.mode & S_ISGID != 0 {
                inode.gid = dir.gid;
                if kind == S_IFDIR {
                    inode.mode |= S_ISGID;
                }
            }
            if kind == S_IFLNK {
                inode.mode = S_IFLNK | 0o777;
            } else {
                t.inherit_acl(&dir, &mut inode, who.umask)?;
            }
            t.put_inode(&inode)?;
            if let Some(target) = target {
                t.write_data(&mut inode, 0, target)?;
                t.put_inode(&inode)?;
            }
            t.add_entry(&mut dir, name, &inode)?;
            if kind == S_IFDIR {
                dir.nlink += 1;
            }
            t.put_inode(&dir)?;
            Ok(inode.clone().in_subvol(subvol))
        })
    }

    /// A symlink's target.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let inode = self.getattr(ino)?;
        if inode.mode & S_IFMT != S_IFLNK {
            return Err(FsError::Invalid("not a symlink".into()));
        }
        self.read_file(ino, 0, inode.size as u32)
    }

    /// Adds a hard link to `ino` as `name` in `parent`.
    pub fn link(&self, ino: u64, parent: u64, name: &[u8]) -> Result<Inode> {
        check_name(name)?;
        let (at, dir_at) = (Loc::of(ino)?, Loc::of(parent)?);
        if at.subvol != dir_at.subvol {
            return Err(FsError::CrossSubvolume);
        }
        let (subvol, ino, parent) = (at.subvol, at.ino, dir_at.ino);
        self.change(subvol, |t| {
            t.e.reserve(t.tree, 6, 0)?;
            let mut inode = t.inode(ino)?;
            if inode.is_dir() {
                return Err(FsError::NotPermitted("hard link to a directory".into()));
            }
            if inode.nlink >= MAX_LINKS {
                return Err(FsError::TooManyLinks);
            }
            let mut dir = t.inode(parent)?;
            if !dir.is_dir() {
                return Err(FsError::NotDir);
            }
            if dir.nlink == 0 || inode.nlink == 0 {
                return Err(FsError::NotFound);
            }
            if find_in_dir(t.e, t.tree, parent, name)?.is_some() {
                return Err(FsError::Exists);
            }
            inode.nlink += 1;
            inode.ctime = t.now;
            t.add_entry(&mut dir, name, &inode)?;
            t.put_inode(&inode)?;
            t.put_inode(&dir)?;
            Ok(inode.clone().in_subvol(subvol))
        })
    }

    /// Removes a non-directory name.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<()> {
        self.remove(parent, name, false)
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<()> {
        self.remove(parent, name, true)
    }

    fn remove(&self, parent: u64, name: &[u8], want_dir: bool) -> Result<()> {
        let Loc {
            subvol,
            ino: parent,
        } = Loc::of(parent)?;
        self.change(subvol, |t| {
            t.e.reserve(t.tree, 8, 0)?;
            let mut dir = t.inode(parent)?;
            if !dir.is_dir() {
                return Err(FsError::NotDir);
            }
            let entry = find_in_dir(t.e, t.tree, parent, name)?.ok_or(FsError::NotFound)?;
            if entry.is_subvol() {
                return Err(if want_dir {
                    FsError::NotPermitted(format!(
                        "{} is a subvolume: use `arbor subvolume delete`",
                        String::from_utf8_lossy(name)
                    ))
                } else {
                    FsError::IsDir
                });
            }
            let mut inode = t.inode(entry.ino)?;
            match (want_dir, inode.is_dir()) {
                (false, true) => return Err(FsError::IsDir),
                (true, false) => return Err(FsError::NotDir),
                (true, true) if !t.dir_is_empty(inode.ino)? => return Err(FsError::NotEmpty),
                _ => {}
            }
            t.remove_entry(&mut dir, &entry)?;
            if inode.is_dir() {
                dir.nlink = dir.nlink.saturating_sub(1);
                inode.nlink = 1;
            }
            t.put_inode(&dir)?;
            t.drop_link(self, &mut inode)
        })
    }

    /// Moves `name` in `parent` to `new_name` in `new_parent`.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: RenameFlags,
    ) -> Result<()> {
        check_name(new_name)?;
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong(name.len()));
        }
        if flags.noreplace && flags.exchange {
            return Err(FsError::Invalid(
                "RENAME_NOREPLACE with RENAME_EXCHANGE".into(),
            ));
        }
        let (from, to) = (Loc::of(parent)?, Loc::of(new_parent)?);
        if from.subvol != to.subvol {
            return Err(FsError::CrossSubvolume);
        }
        let (subvol, parent, new_parent) = (from.subvol, from.ino, to.ino);
        self.change(subvol, |t| {
            t.e.reserve(t.tree, 16, 0)?;
            let mut src_dir = t.inode(parent)?;
            let mut dst_dir = t.inode(new_parent)?;
            if !src_dir.is_dir() || !dst_dir.is_dir() {
                return Err(FsError::NotDir);
            }
            let src = find_in_dir(t.e, t.tree, parent, name)?.ok_or(FsError::NotFound)?;
            let dst = find_in_dir(t.e, t.tree, new_parent, new_name)?;
            if dst.as_ref().is_some_and(DirEntry::is_subvol) {
                return Err(FsError::NotPermitted(
                    "the target is a subvolume: delete it first".into(),
                ));
            }
            if src.is_subvol() {
                if flags.exchange {
                    return Err(FsError::NotPermitted(
                        "RENAME_EXCHANGE of a subvolume".into(),
                    ));
                }
                if dst.is_some() {
                    return Err(FsError::Exists);
                }
                return t.move_subvol_entry(&mut src_dir, &src, &mut dst_dir, new_name);
            }
            let mut src_inode = t.inode(src.ino)?;
            if src_inode.is_dir() && t.is_ancestor(src.ino, new_parent)? {
                return Err(FsError::Invalid(
                    "cannot move a directory into itself".into(),
                ));
            }
            if flags.exchange {
                let dst = dst.ok_or(FsError::NotFound)?;
                let mut dst_inode = t.inode(dst.ino)?;
                if dst_inode.is_dir() && t.is_ancestor(dst.ino, parent)? {
                    return Err(FsError::Invalid(
                        "cannot move a directory into itself".into(),
                    ));
                }
                return t.exchange(
                    (&mut src_dir, &src, &mut src_inode),
                    (&mut dst_dir, &dst, &mut dst_inode),
                );
            }
            if let Some(dst) = &dst {
                if flags.noreplace {
                    return Err(FsError::Exists);
                }
                if dst.ino == src.ino {
                    return Ok(());
                }
                let mut victim = t.inode(dst.ino)?;
                match (src_inode.is_dir(), victim.is_dir()) {
                    (true, false) => return Err(FsError::NotDir),
                    (false, true) => return Err(FsError::IsDir),
                    (true, true) if !t.dir_is_empty(victim.ino)? => {
                        return Err(FsError::NotEmpty);
                    }
                    _ => {}
                }
                t.remove_entry(&mut dst_dir, dst)?;
                if victim.is_dir() {
                    dst_dir.nlink = dst_dir.nlink.saturating_sub(1);
                    victim.nlink = 1;
                }
                t.drop_link(self, &mut victim)?;
                if parent == new_parent {
                    src_dir = dst_dir.clone();
                }
            }
            t.remove_entry(&mut src_dir, &src)?;
            if parent == new_parent {
                dst_dir = src_dir.clone();
            }
            t.add_entry(&mut dst_dir, new_name, &src_inode)?;
            if src_inode.is_dir() && parent != new_parent {
                src_dir.nlink = src_dir.nlink.saturating_sub(1);
                dst_dir.nlink = dst_dir.nlink.saturating_add(1);
            }
            src_inode.ctime = t.now;
            t.put_inode(&src_inode)?;
            if parent != new_parent {
                t.put_inode(&src_dir)?;
            }
            t.put_inode(&dst_dir)?;
            Ok(())
        })
    }
}

impl Txn<'_> {
    /// True if directory `dir` has no entries.
    pub(crate) fn dir_is_empty(&self, dir: u64) -> Result<bool> {
        let lo = key(dir, ty::DIR_INDEX, 0);
        let hi = key(dir, ty::DIR_INDEX, u64::MAX);
        Ok(self.e.range(self.tree, lo..=hi)?.next().is_none())
    }

    /// True if `a` is `b` or one of `b`'s ancestors.
    fn is_ancestor(&self, a: u64, mut b: u64) -> Result<bool> {
        for _ in 0..100_000 {
            if a == b {
                return Ok(true);
            }
            if b == ROOT_INO {
                return Ok(false);
            }
            b = Fs::parent_of(self.e, self.tree, b)?;
        }
        Err(FsError::Invalid("directory tree too deep or looped".into()))
    }

    /// Adds `name → inode` to `dir` (in memory; the caller writes `dir`).
    pub(crate) fn add_entry(&mut self, dir: &mut Inode, name: &[u8], inode: &Inode) -> Result<()> {
        let index = self.put_dir_entry(dir, name, inode.ino, dtype(inode.mode))?;
        let rk = key(inode.ino, ty::INODE_REF, dir.ino);
        let mut refs = match self.e.get(self.tree, rk)? {
            Some(v) => decode_refs(inode.ino, rk, &v)?,
            None => Vec::new(),
        };
        refs.push((index, name.to_vec()));
        self.e.insert(self.tree, rk, &encode_refs(&refs))?;
        Ok(())
    }

    /// Adds `name → subvolume` to `dir` (in memory; the caller writes `dir` and the
    /// subvolume's references) and returns the entry's index.
    pub(crate) fn add_subvol_entry(
        &mut self,
        dir: &mut Inode,
        name: &[u8],
        subvol: u64,
    ) -> Result<u64> {
        self.put_dir_entry(dir, name, subvol, dtype(S_IFDIR) | DT_SUBVOL)
    }

    /// Writes the `DIR_ITEM` and `DIR_INDEX` of a new name and returns its index.
    fn put_dir_entry(&mut self, dir: &mut Inode, name: &[u8], ino: u64, dtype: u8) -> Result<u64> {
        let index = dir.seq;
        dir.seq = dir.seq.checked_add(1).ok_or_else(|| {
            FsError::Invalid(format!("directory {} has used every index", dir.ino))
        })?;
        let entry = DirEntry {
            ino,
            dtype,
            index,
            name: name.to_vec(),
        };
        let hk = key(dir.ino, ty::DIR_ITEM, name_hash(name));
        let mut list = match self.e.get(self.tree, hk)? {
            Some(v) => {
                let mut bytes = Vec::new();
                for d in DirEntry::decode_list(dir.ino, hk, &v)? {
                    d.encode_into(&mut bytes);
                }
                bytes
            }
            None => Vec::new(),
        };
        entry.encode_into(&mut list);
        self.e.insert(self.tree, hk, &list)?;
        let mut one = Vec::new();
        entry.encode_into(&mut one);
        self.e
            .insert(self.tree, key(dir.ino, ty::DIR_INDEX, index), &one)?;
        dir.size += 2 * name.len() as u64;
        dir.mtime = self.now;
        dir.ctime = self.now;
        Ok(index)
    }

    /// Renames the entry of a subvolume (within one parent subvolume) and moves its
    /// references along; a subvolume counts as a subdirectory of its directory.
    fn move_subvol_entry(
        &mut self,
        src_dir: &mut Inode,
        src: &DirEntry,
        dst_dir: &mut Inode,
        new_name: &[u8],
    ) -> Result<()> {
        let same = src_dir.ino == dst_dir.ino;
        self.remove_entry(src_dir, src)?;
        if same {
            *dst_dir = src_dir.clone();
        }
        let index = self.add_subvol_entry(dst_dir, new_name, src.ino)?;
        if !same {
            src_dir.nlink = src_dir.nlink.saturating_sub(1);
            dst_dir.nlink = dst_dir.nlink.saturating_add(1);
            self.put_inode(src_dir)?;
        }
        self.put_inode(dst_dir)?;
        self.put_subvol_refs(
            src.ino,
            self.tree,
            &SubvolRef {
                dirid: dst_dir.ino,
                index,
                name: new_name.to_vec(),
            },
        )
    }

    /// Removes `entry` from `dir` (in memory; the caller writes `dir`).
    pub(crate) fn remove_entry(&mut self, dir: &mut Inode, entry: &DirEntry) -> Result<()> {
        let hk = key(dir.ino, ty::DIR_ITEM, name_hash(&entry.name));
        if let Some(v) = self.e.get(self.tree, hk)? {
            let rest: Vec<DirEntry> = DirEntry::decode_list(dir.ino, hk, &v)?
                .into_iter()
                .filter(|d| d.name != entry.name)
                .collect();
            if rest.is_empty() {
                self.e.delete(self.tree, hk)?;
            } else {
                let mut bytes = Vec::new();
                for d in rest {
                    d.encode_into(&mut bytes);
                }
                self.e.insert(self.tree, hk, &bytes)?;
            }
        }
        self.e
            .delete(self.tree, key(dir.ino, ty::DIR_INDEX, entry.index))?;
        let rk = key(entry.ino, ty::INODE_REF, dir.ino);
        if entry.is_subvol() {
            // A subvolume's references live in the subvolume tree; the caller keeps
            // them right.
        } else if let Some(v) = self.e.get(self.tree, rk)? {
            let rest: Vec<(u64, Vec<u8>)> = decode_refs(entry.ino, rk, &v)?
                .into_iter()
                .filter(|(i, _)| *i != entry.index)
                .collect();
            if rest.is_empty() {
                self.e.delete(self.tree, rk)?;
            } else {
                self.e.insert(self.tree, rk, &encode_refs(&rest))?;
            }
        }
        dir.size = dir.size.saturating_sub(2 * entry.name.len() as u64);
        dir.mtime = self.now;
        dir.ctime = self.now;
        Ok(())
    }

    fn exchange(
        &mut self,
        (a_dir, a, a_inode): (&mut Inode, &DirEntry, &mut Inode),
        (b_dir, b, b_inode): (&mut Inode, &DirEntry, &mut Inode),
    ) -> Result<()> {
        if a.ino == b.ino {
            return Ok(());
        }
        let same = a_dir.ino == b_dir.ino;
        self.remove_entry(a_dir, a)?;
        if same {
            *b_dir = a_dir.clone();
        }
        self.remove_entry(b_dir, b)?;
        if same {
            *a_dir = b_dir.clone();
        }
        self.add_entry(a_dir, &a.name, b_inode)?;
        if same {
            *b_dir = a_dir.clone();
        }
        self.add_entry(b_dir, &b.name, a_inode)?;
        if same {
            *a_dir = b_dir.clone();
        } else {
            let (ad, bd) = (a_inode.is_dir(), b_inode.is_dir());
            if ad && !bd {
                a_dir.nlink = a_dir.nlink.saturating_sub(1);
                b_dir.nlink = b_dir.nlink.saturating_add(1);
            } else if bd && !ad {
                b_dir.nlink = b_dir.nlink.saturating_sub(1);
                a_dir.nlink = a_dir.nlink.saturating_add(1);
            }
        }
        a_inode.ctime = self.now;
        b_inode.ctime = self.now;
        self.put_inode(a_inode)?;
        self.put_inode(b_inode)?;
        self.put_inode(a_dir)?;
        if !same {
            self.put_inode(b_dir)?;
        }
        Ok(())
    }
}
