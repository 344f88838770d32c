//! The filesystem handle: opening and creating, transactions, inode attributes and
//! open-file bookkeeping. Directories live in `dir.rs`, file data in `file.rs`,
//! extended attributes and ACLs in `xattr.rs` and `acl.rs`.
//!
//! Concurrency: the engine sits behind a read-write lock. Lookups and attribute reads
//! share it; changes take it exclusively. Reads of file data look up their extents
//! under the shared lock, then read and verify the blocks after letting it go. Blocks
//! freed by a commit stay unused until every read that looked its blocks up before
//! that commit is done (`readers`, by the generation each read saw).

use crate::error::{FsError, Result};
use crate::ino::{Loc, TOP_SUBVOL};
use crate::items::{
    FsDataRefs, FsInfo, INFO_OBJECTID, Inode, NAME_MAX, ORPHAN_OBJECTID, ROOT_INO, S_IFDIR, S_IFMT,
    Time, key, ty,
};
use crate::subvol_items::SUBVOL_TREE;
use arbor_engine::storage::Storage;
use arbor_engine::{Config, Engine, Key, MkfsOptions};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The top-level subvolume's tree (btrfs's FS_TREE).
pub const FS_TREE: u64 = TOP_SUBVOL;
/// Largest file size.
pub const MAX_FILE_SIZE: u64 = 1 << 60;
/// Nodes one read-only operation may load with the lock released before it reads
/// under the lock instead.
const MAX_NODE_MISSES: usize = 32;
/// Most links to one inode.
pub const MAX_LINKS: u32 = 65_000;

/// How to open a filesystem.
#[derive(Clone, Debug, Default)]
pub struct FsOptions {
    pub read_only: bool,
}

/// Who is asking: the caller's credentials, for new inodes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// The umask to apply when the parent directory has no default ACL.
    pub umask: u32,
}

/// A time to set with `setattr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    Now,
    At(Time),
}

/// The attributes `setattr` changes; `None` leaves one alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    pub ctime: Option<Time>,
    pub crtime: Option<Time>,
    /// Clear set-user-ID, and set-group-ID if group-executable (a truncation by
    /// someone other than root, or a chown). `security.capability` goes on any
    /// truncation or change of owner.
    pub kill_suid: bool,
}

/// What `statfs` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub block_size: u32,
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_avail: u64,
    pub files: u64,
    pub files_free: u64,
    pub name_max: u32,
}

/// Per-transaction state.
pub(crate) struct Txn<'a> {
    pub e: &'a mut Engine,
    pub tree: u64,
    pub now: Time,
}

/// A mounted filesystem, independent of FUSE.
#[derive(Debug)]
pub struct Fs {
    pub(crate) engine: RwLock<Engine>,
    /// The subvolumes that refuse changes (their `ROOT_ITEM`s say so; kept here so
    /// that a change need not look).
    pub(crate) read_only_subvols: Mutex<HashSet<u64>>,
    /// Data reads in flight, counted by the committed generation they looked their
    /// blocks up in.
    pub(crate) readers: Mutex<BTreeMap<u64, usize>>,
    /// Open handles per inode; an unlinked inode lives until its count drops to zero.
    open: Mutex<HashMap<u64, u32>>,
    pub(crate) read_only: bool,
    /// Set when a change failed half done: the running transaction must never be
    /// committed, so every later change and commit fails; the image keeps the last
    /// commit (like btrfs forcing itself read-only after an error).
    poisoned: Mutex<Option<String>>,
    /// Held by every change and every commit, so that a commit can write its blocks
    /// with the engine lock only shared: readers go on, writers wait.
    writer: Mutex<()>,
    /// Taken shared by a receiver around each command and its progress note, and
    /// exclusively by a commit, so that a commit never splits the two.
    pub(crate) commit_gate: RwLock<()>,
    /// Progress of unfinished receives, by subvolume, for the next commit to write
    /// (none: remove it).
    pub(crate) receive_notes: Mutex<BTreeMap<u64, Option<crate::subvol_items::ReceiveProgress>>>,
}

/// Exclusive access to the engine for a change (see [`Fs::write`]).
pub(crate) struct Writing<'a> {
    _writer: MutexGuard<'a, ()>,
    engine: RwLockWriteGuard<'a, Engine>,
}

impl std::ops::Deref for Writing<'_> {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        &self.engine
    }
}

impl std::ops::DerefMut for Writing<'_> {
    fn deref_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }
}

fn engine_config(read_only: bool) -> Config {
    Config {
        read_only,
        data_refs: Some(Arc::new(FsDataRefs)),
        hold_freed: true,
        ..Config::default()
    }
}

impl Fs {
    /// Makes a new, empty filesystem on `storage`; returns the engine, committed.
    pub fn mkfs(storage: Arc<dyn Storage>, opts: &MkfsOptions) -> Result<Engine> {
        let mut e = Engine::create(storage, opts, engine_config(false))?;
        e.create_tree(FS_TREE)?;
        e.create_tree(SUBVOL_TREE)?;
        let now = Time::now();
        for (k, v) in crate::subvol::top_level_items(e.transaction_generation(), now) {
            e.insert(SUBVOL_TREE, k, &v)?;
        }
        let root = Inode {
            ino: ROOT_INO,
            mode: S_IFDIR | 0o755,
            nlink: 2,
            generation: e.transaction_generation(),
            seq: crate::items::FIRST_DIR_INDEX,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: Time::birth(),
            ..Default::default()
        };
        e.insert(FS_TREE, key(ROOT_INO, ty::INODE_ITEM, 0), &root.encode())?;
        let info = FsInfo {
            next_ino: ROOT_INO + 1,
            data_bytes: 0,
        };
        e.insert(FS_TREE, FsInfo::key(), &info.encode())?;
        e.commit()?;
        Ok(e)
    }

    /// Opens the filesystem on `storage`. A writable open first frees the inodes that
    /// were unlinked while open when the last session ended.
    pub fn open(storage: Arc<dyn Storage>, opts: &FsOptions) -> Result<Self> {
        let e = Engine::open(storage, engine_config(opts.read_only))?;
        if !e.tree_exists(FS_TREE) || !e.tree_exists(SUBVOL_TREE) {
            return Err(FsError::Invalid(
                "the image holds no filesystem or subvolume tree (made by an older `arbor mkfs`?)"
                    .into(),
            ));
        }
        let read_only_subvols = crate::subvol::list_items(&e)?
            .into_iter()
            .filter(|(_, item)| item.read_only())
            .map(|(id, _)| id)
            .collect();
        let fs = Fs {
            engine: RwLock::new(e),
            read_only_subvols: Mutex::new(read_only_subvols),
            readers: Mutex::new(BTreeMap::new()),
            open: Mutex::new(HashMap::default()),
            read_only: opts.read_only,
            poisoned: Mutex::new(None),
            writer: Mutex::new(()),
            commit_gate: RwLock::new(()),
            receive_notes: Mutex::new(BTreeMap::new()),
        };
        if !opts.read_only {
            fs.reap_orphans()?;
        }
        Ok(fs)
    }

    // ---- locks -------------------------------------------------------------------

    pub(crate) fn read(&self) -> Result<RwLockReadGuard<'_, Engine>> {
        self.engine
            .read()
            .map_err(|_| FsError::Invalid("engine lock poisoned by a panic".into()))
    }

    /// The writer lock, then the engine exclusively.
    pub(crate) fn write(&self) -> Result<Writing<'_>> {
        let writer = self.writer_lock()?;
        Ok(Writing {
            _writer: writer,
            engine: self.engine_exclusive()?,
        })
    }

    fn writer_lock(&self) -> Result<MutexGuard<'_, ()>> {
        if self.read_only {
            return Err(FsError::Engine(arbor_engine::Error::ReadOnly));
        }
        if let Some(why) = self.poisoned.lock().ok().and_then(|p| p.clone()) {
            return Err(FsError::Engine(arbor_engine::Error::Poisoned(why)));
        }
        self.writer
            .lock()
            .map_err(|_| FsError::Invalid("writer lock poisoned by a panic".into()))
    }

    fn engine_exclusive(&self) -> Result<RwLockWriteGuard<'_, Engine>> {
        self.engine
            .write()
            .map_err(|_| FsError::Invalid("engine lock poisoned by a panic".into()))
    }

    fn open_counts(&self) -> MutexGuard<'_, HashMap<u64, u32>> {
        match self.open.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Runs `f` as one change. A failure that changed nothing leaves the filesystem
    /// as it was; if it was for lack of space while freed space waits for a commit,
    /// commits and tries once more. A failure half way through poisons the handle.
    pub(crate) fn change<T>(
        &self,
        subvol: u64,
        f: impl FnMut(&mut Txn<'_>) -> Result<T>,
    ) -> Result<T> {
        if self.subvol_is_read_only(subvol) {
            return Err(FsError::ReadOnly(subvol));
        }
        self.change_any(subvol, f)
    }

    /// True if the subvolume refuses changes.
    pub(crate) fn subvol_is_read_only(&self, subvol: u64) -> bool {
        self.read_only_subvols
            .lock()
            .is_ok_and(|s| s.contains(&subvol))
    }

    /// [`Fs::change`], also in a read-only subvolume (for the subvolume operations).
    pub(crate) fn change_any<T>(
        &self,
        subvol: u64,
        mut f: impl FnMut(&mut Txn<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut e = self.write()?;
        if !e.tree_exists(subvol) {
            return Err(FsError::NotFound);
        }
        let mut t = Txn {
            e: &mut e,
            tree: subvol,
            now: Time::now(),
        };
        let before = t.e.changes_made();
        let mut r = f(&mut t);
        if let Err(FsError::Engine(arbor_engine::Error::NoSpace { .. })) = &r
            && t.e.changes_made() == before
            && t.e.space().pinned_bytes > 0
        {
            self.commit_locked(t.e)?;
            let before = t.e.changes_made();
            r = f(&mut t);
            return self.poison_if_half_done(t.e, before, r);
        }
        self.poison_if_half_done(t.e, before, r)
    }

    fn poison_if_half_done<T>(&self, e: &Engine, before: u64, r: Result<T>) -> Result<T> {
        if let Err(err) = &r
            && e.changes_made() != before
        {
            let why = format!("a change failed half done: {err}");
            tracing::error!("{why}; refusing further changes until remounted");
            if let Ok(mut p) = self.poisoned.lock() {
                p.get_or_insert(why);
            }
        }
        r
    }

    // ---- durability --------------------------------------------------------------

    /// Makes everything durable (fsync, fdatasync, `arbor sync` and the periodic
    /// commit). The commit's writes and flushes happen with the engine lock shared:
    /// lookups and reads go on meanwhile; only changes wait.
    pub fn sync(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let _gate = self
            .commit_gate
            .write()
            .map_err(|_| FsError::Invalid("commit gate poisoned".into()))?;
        let _writer = self.writer_lock()?;
        let prepared = {
            let mut e = self.engine_exclusive()?;
            self.write_receive_notes(&mut e)?;
            e.commit_begin()?
        };
        let written = match &prepared {
            Some(p) => Some(self.read()?.commit_write(p)),
            None => None,
        };
        let mut e = self.engine_exclusive()?;
        if let (Some(prepared), Some(written)) = (prepared, written) {
            e.commit_end(prepared, written)?;
        }
        self.reclaim(&mut e);
        Ok(())
    }

    /// True if there are changes that a commit would make durable.
    pub fn has_changes(&self) -> bool {
        self.engine.read().is_ok_and(|e| e.has_changes())
    }

    fn commit_locked(&self, e: &mut Engine) -> Result<()> {
        self.write_receive_notes(e)?;
        e.commit()?;
        self.reclaim(e);
        Ok(())
    }

    /// Lets blocks freed by commits be reused once no read that may use them is in
    /// flight. A read that saw generation `g` can only name blocks that commits after
    /// `g` freed.
    fn reclaim(&self, e: &mut Engine) {
        let oldest = self
            .readers
            .lock()
            .map(|r| r.keys().next().copied())
            .unwrap_or(Some(0));
        e.release_freed(oldest.unwrap_or(u64::MAX));
    }

    /// The periodic work of a mounted filesystem: commit if anything changed, and
    /// free blocks whose last readers have finished.
    pub fn periodic(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let (changes, held) = {
            let e = self.read()?;
            (e.has_changes(), e.holds_freed())
        };
        if changes {
            self.sync()
        } else if held {
            let mut e = self.write()?;
            self.reclaim(&mut e);
            Ok(())
        } else {
            Ok(())
        }
    }

    /// Runs a read-only operation on the engine. Nodes it needs that are not in memory
    /// are read with the engine lock released (`arbor_engine::without_node_io`), so a
    /// lookup that waits for the device holds up no one else; the operation then runs
    /// again. It must have no effects before its last run (this one's retries).
    pub(crate) fn with_engine<T>(&self, mut op: impl FnMut(&Engine) -> Result<T>) -> Result<T> {
        for _ in 0..MAX_NODE_MISSES {
            let e = self.read()?;
            match arbor_engine::without_node_io(|| op(&e)) {
                Err(FsError::Engine(arbor_engine::Error::NotCached(miss))) => {
                    let loader = e.node_loader();
                    drop(e);
                    if loader.load(&miss).is_err() {
                        // Freed and reused meanwhile, or corrupt: read under the lock.
                        break;
                    }
                }
                r => return r,
            }
        }
        op(&*self.read()?)
    }

    /// Registers a data read that looked its blocks up in generation `generation`;
    /// the guard unregisters it.
    pub(crate) fn reading(&self, generation: u64) -> ReadGuard<'_> {
        if let Ok(mut r) = self.readers.lock() {
            *r.entry(generation).or_insert(0) += 1;
        }
        ReadGuard {
            fs: self,
            generation,
        }
    }

    // ---- inodes ------------------------------------------------------------------

    pub(crate) fn get_inode(e: &Engine, tree: u64, ino: u64) -> Result<Inode> {
        if !e.tree_exists(tree) {
            // A deleted subvolume's inodes are gone, whatever the kernel still caches.
            return Err(FsError::NotFound);
        }
        match e.get(tree, key(ino, ty::INODE_ITEM, 0))? {
            Some(v) => Inode::decode(ino, &v),
            None => Err(FsError::NotFound),
        }
    }

    /// An inode's attributes.
    pub fn getattr(&self, ino: u64) -> Result<Inode> {
        let at = Loc::of(ino)?;
        self.with_engine(|e| Ok(Self::get_inode(e, at.subvol, at.ino)?.in_subvol(at.subvol)))
    }

    /// Changes attributes, truncating or extending the file for `size`.
    pub fn setattr(&self, ino: u64, set: &SetAttr) -> Result<Inode> {
        let Loc { subvol, ino } = Loc::of(ino)?;
        self.change(subvol, |t| {
            t.e.reserve(t.tree, 4, 0)?;
            let mut inode = t.inode(ino)?;
            if let Some(size) = set.size {
                if inode.is_dir() {
                    return Err(FsError::IsDir);
                }
                if size > MAX_FILE_SIZE {
                    return Err(FsError::FileTooBig);
                }
                t.truncate(&mut inode, size)?;
                inode.mtime = t.now;
                inode.ctime = t.now;
            }
            if let Some(mode) = set.mode {
                inode.mode = (inode.mode & S_IFMT) | (mode & !S_IFMT);
                inode.ctime = t.now;
                t.acl_chmod(&inode)?;
            }
            if set.uid.is_some() || set.gid.is_some() {
                inode.uid = set.uid.unwrap_or(inode.uid);
                inode.gid = set.gid.unwrap_or(inode.gid);
                inode.ctime = t.now;
            }
            if set.kill_suid || set.size.is_some() || set.uid.is_some() || set.gid.is_some() {
                t.kill_privs(&mut inode, set.kill_suid)?;
            }
            for (field, value) in [(&mut inode.atime, set.atime), (&mut inode.mtime, set.mtime)] {
                match value {
                    Some(SetTime::Now) => *field = t.now,
                    Some(SetTime::At(at)) => *field = at,
                    None => {}
                }
            }
            if set.atime.is_some() || set.mtime.is_some() {
                inode.ctime = t.now;
            }
            if let Some(c) = set.ctime {
                inode.ctime = c;
            }
            if let Some(c) = set.crtime {
                inode.crtime = c;
            }
            t.put_inode(&inode)?;
            Ok(inode.clone().in_subvol(subvol))
        })
    }

    /// Notes an open handle on `ino`.
    pub fn open_inode(&self, ino: u64) -> Result<Inode> {
        let at = Loc::of(ino)?;
        self.with_engine(|e| {
            let inode = Self::get_inode(e, at.subvol, at.ino)?;
            // Counted under the engine lock, so that an unlink sees it.
            *self.open_counts().entry(ino).or_insert(0) += 1;
            Ok(inode.in_subvol(at.subvol))
        })
    }

    /// Drops an open handle; an unlinked inode whose last handle this was is freed.
    pub fn release_inode(&self, ino: u64) -> Result<()> {
        let global = ino;
        let Loc { subvol, ino } = Loc::of(global)?;
        let mut e = if self.read_only {
            None
        } else {
            Some(self.write()?)
        };
        let last = {
            let mut open = self.open_counts();
            match open.get_mut(&global) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    open.remove(&global);
                    true
                }
                None => false,
            }
        };
        if let (true, Some(e)) = (last, e.as_mut())
            && e.tree_exists(subvol)
        {
            let mut t = Txn {
                e,
                tree: subvol,
                now: Time::now(),
            };
            let before = t.e.changes_made();
            let r = match t.inode(ino) {
                Ok(inode) if inode.nlink == 0 => t.delete_inode(&inode).and_then(|()| {
                    let orphan = key(ORPHAN_OBJECTID, ty::ORPHAN_ITEM, ino);
                    t.e.delete(t.tree, orphan)
                        .map(|_| ())
                        .map_err(FsError::from)
                }),
                Ok(_) | Err(FsError::NotFound) => Ok(()),
                Err(other) => Err(other),
            };
            return self.poison_if_half_done(t.e, before, r);
        }
        Ok(())
    }

    /// The global inode numbers of every open file.
    pub(crate) fn open_files(&self) -> Vec<u64> {
        self.open_counts().keys().copied().collect()
    }

    pub(crate) fn is_open(&self, ino: u64) -> bool {
        self.open_counts().get(&ino).is_some_and(|&n| n > 0)
    }

    /// Frees inodes left unlinked-but-open by an earlier session, in every subvolume.
    fn reap_orphans(&self) -> Result<()> {
        let subvols: Vec<u64> = crate::subvol::list_items(&*self.read()?)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let mut freed = 0;
        for subvol in subvols {
            freed += self.change_any(subvol, |t| t.reap_orphans())?;
        }
        if freed > 0 {
            tracing::info!("freed {freed} orphan inodes");
            self.sync()?;
        }
        Ok(())
    }

    /// The allocator's view of space (`filesystem df`).
    pub fn space(&self) -> Result<arbor_engine::SpaceInfo> {
        Ok(self.read()?.space())
    }

    /// Space and inode counts.
    pub fn statfs(&self) -> Result<StatFs> {
        self.with_engine(|e| self.statfs_in(e))
    }

    fn statfs_in(&self, e: &Engine) -> Result<StatFs> {
        let s = e.space();
        let bs = crate::items::BLOCK;
        let free = s.free_bytes / bs;
        let mut inodes_used = 0u64;
        for tree in e.trees().into_iter().filter(|&t| t != SUBVOL_TREE) {
            if let Some(v) = e.get(tree, FsInfo::key())? {
                inodes_used += FsInfo::decode(&v)?.next_ino.saturating_sub(ROOT_INO);
            }
        }
        // Each new inode takes a fraction of a node; report what fits in free space.
        let files_free = s.free_bytes / 256;
        Ok(StatFs {
            block_size: bs as u32,
            blocks: s.total_bytes / bs,
            blocks_free: free,
            blocks_avail: free,
            files: inodes_used + files_free,
            files_free,
            name_max: NAME_MAX as u32,
        })
    }

    /// Checks the filesystem's items against each other (see [`crate::fsck()`]).
    pub fn fsck(&self) -> Result<Vec<String>> {
        crate::fsck::fsck(&*self.read()?)
    }

    /// Opens `storage` read-only and checks it: the engine's checker (blocks, reference
    /// counts, data extents) and, when that is clean, the filesystem's items.
    pub fn check_image(storage: Arc<dyn Storage>) -> arbor_engine::CheckReport {
        let mut report = arbor_engine::check_with(&*storage, Some(&FsDataRefs));
        if report.is_clean() {
            let found = Engine::open(storage, engine_config(true))
                .map_err(FsError::from)
                .and_then(|e| {
                    // An image made by the engine alone has no filesystem to check.
                    if e.tree_exists(FS_TREE) {
                        crate::fsck::fsck(&e)
                    } else {
                        Ok(Vec::new())
                    }
                });
            match found {
                Ok(problems) => report.problems.extend(problems),
                Err(e) => report
                    .problems
                    .push(format!("filesystem check failed: {e}")),
            }
        }
        report
    }
}

/// A data read in flight (see [`Fs::reading`]).
pub(crate) struct ReadGuard<'a> {
    fs: &'a Fs,
    generation: u64,
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut r) = self.fs.readers.lock()
            && let Some(n) = r.get_mut(&self.generation)
        {
            *n -= 1;
            if *n == 0 {
                r.remove(&self.generation);
            }
        }
    }
}

impl Txn<'_> {
    /// Frees this subvolume's orphans (see [`Fs::open`]); returns how many.
    pub(crate) fn reap_orphans(&mut self) -> Result<usize> {
        let lo = key(ORPHAN_OBJECTID, ty::ORPHAN_ITEM, 0);
        let hi = key(ORPHAN_OBJECTID, ty::ORPHAN_ITEM, u64::MAX);
        let orphans: Vec<u64> = self
            .e
            .range(self.tree, lo..=hi)?
            .map(|r| r.map(|(k, _)| k.offset))
            .collect::<std::result::Result<_, _>>()?;
        for &ino in &orphans {
            match self.inode(ino) {
                Ok(inode) if inode.nlink == 0 => self.delete_inode(&inode)?,
                Ok(_) | Err(FsError::NotFound) => {}
                Err(e) => return Err(e),
            }
            self.e
                .delete(self.tree, key(ORPHAN_OBJECTID, ty::ORPHAN_ITEM, ino))?;
        }
        Ok(orphans.len())
    }

    pub(crate) fn inode(&self, ino: u64) -> Result<Inode> {
        Fs::get_inode(self.e, self.tree, ino)
    }

    /// Stores an inode, and keeps the subvolume's data byte count in step.
    pub(crate) fn put_inode(&mut self, inode: &Inode) -> Result<()> {
        let k = key(inode.ino, ty::INODE_ITEM, 0);
        let before = match self.e.get(self.tree, k)? {
            Some(v) => Inode::decode(inode.ino, &v)?.nbytes,
            None => 0,
        };
        self.e.insert(self.tree, k, &inode.encode())?;
        if before != inode.nbytes {
            self.add_data_bytes(i128::from(inode.nbytes) - i128::from(before))?;
        }
        Ok(())
    }

    /// The subvolume's bookkeeping item.
    pub(crate) fn fs_info(&self) -> Result<FsInfo> {
        match self.e.get(self.tree, FsInfo::key())? {
            Some(v) => FsInfo::decode(&v),
            None => Err(crate::error::corrupt(
                INFO_OBJECTID,
                FsInfo::key(),
                "missing",
            )),
        }
    }

    /// Hands out the next inode number.
    pub(crate) fn next_ino(&mut self) -> Result<u64> {
        let mut info = self.fs_info()?;
        let next = info.next_ino;
        info.next_ino = next
            .checked_add(1)
            .filter(|&n| n < crate::ino::LOCAL_LIMIT)
            .ok_or(FsError::Invalid("inode numbers exhausted".into()))?;
        self.e.insert(self.tree, FsInfo::key(), &info.encode())?;
        Ok(next)
    }

    /// Adds `delta` to the subvolume's count of data bytes.
    fn add_data_bytes(&mut self, delta: i128) -> Result<()> {
        let mut info = self.fs_info()?;
        let n = i128::from(info.data_bytes) + delta;
        info.data_bytes = u64::try_from(n).map_err(|_| {
            crate::error::corrupt(INFO_OBJECTID, FsInfo::key(), format!("data bytes {n}"))
        })?;
        self.e.insert(self.tree, FsInfo::key(), &info.encode())?;
        Ok(())
    }

    /// Removes every item of an inode and drops its data extents.
    pub(crate) fn delete_inode(&mut self, inode: &Inode) -> Result<()> {
        let stored = self.inode(inode.ino)?;
        if stored.nbytes > 0 {
            self.add_data_bytes(-i128::from(stored.nbytes))?;
        }
        let lo = Key::new(inode.ino, 0, 0);
        let hi = Key::new(inode.ino, u8::MAX, u64::MAX);
        let items: Vec<(Key, Vec<u8>)> = self
            .e
            .range(self.tree, lo..=hi)?
            .collect::<std::result::Result<_, _>>()?;
        for (k, v) in items {
            if k.ty == ty::EXTENT_DATA {
                let fe = crate::items::FileExtent::decode(inode.ino, k, &v)?;
                if !matches!(fe.kind, crate::items::ExtentKind::Inline(_)) {
                    self.e.data_ref(fe.disk_bytenr, fe.disk_len, -1)?;
                }
            }
            self.e.delete(self.tree, k)?;
        }
        Ok(())
    }

    /// The inode has lost its last link: free it now, or record it as an orphan to be
    /// freed at the last close (or at the next mount, after a crash).
    pub(crate) fn drop_link(&mut self, fs: &Fs, inode: &mut Inode) -> Result<()> {
        inode.nlink = inode.nlink.saturating_sub(1);
        inode.ctime = self.now;
        if inode.nlink > 0 {
            return self.put_inode(inode);
        }
        if fs.is_open(Loc::new(self.tree, inode.ino).global()) {
            self.put_inode(inode)?;
            self.e.insert(
                self.tree,
                key(ORPHAN_OBJECTID, ty::ORPHAN_ITEM, inode.ino),
                &[],
            )?;
            Ok(())
        } else {
            self.delete_inode(inode)
        }
    }
}
