//! Subvolumes and snapshots, as btrfs has them. Each subvolume is its own engine tree
//! (id 5 for the top level, 256 and up for the others); a snapshot is an O(1) clone of
//! its source's tree. The subvolume tree (`subvol_items.rs`) says what each one is and
//! where it sits: a directory entry of its parent subvolume names it.

use crate::dir::{check_name, find_in_dir};
use crate::error::{FsError, Result};
use crate::fs::{Caller, Fs, MAX_LINKS, Txn};
use crate::ino::{FIRST_SUBVOL, Loc, SUBVOL_LIMIT, TOP_SUBVOL};
use crate::items::{
    DirEntry, FIRST_DIR_INDEX, FsInfo, Inode, ROOT_INO, S_IFDIR, Time, decode_refs, key, ty,
};
use crate::subvol_items::{
    SUBVOL_RDONLY, SUBVOL_TREE, SubvolItem, SubvolRef, backref_key, next_id_key, ref_key,
    root_item_key, sty, uuid_key,
};
use arbor_engine::{Engine, Key};

/// One subvolume, as `subvolume list` and `subvolume show` report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubvolInfo {
    pub id: u64,
    /// The subvolume whose directory holds this one (none for the top level).
    pub parent: Option<u64>,
    /// The local inode number of that directory.
    pub dirid: u64,
    /// The path from the top level (empty for the top level itself).
    pub path: Vec<u8>,
    pub item: SubvolItem,
    /// The transaction that last changed the subvolume's tree.
    pub generation: u64,
    /// The global inode number of the subvolume's root directory.
    pub root: u64,
    /// The file data its files hold (the sum of their `st_blocks` bytes), kept
    /// current with every change.
    pub referenced_bytes: u64,
}

/// Every `ROOT_ITEM`, by subvolume id.
pub(crate) fn list_items(e: &Engine) -> Result<Vec<(u64, SubvolItem)>> {
    let mut out = Vec::new();
    for item in e.range(SUBVOL_TREE, ..)? {
        let (k, v) = item?;
        if k.ty == sty::ROOT_ITEM {
            out.push((k.objectid, SubvolItem::decode(k.objectid, k, &v)?));
        }
    }
    Ok(out)
}

fn get_item(e: &Engine, id: u64) -> Result<SubvolItem> {
    let k = root_item_key(id);
    match e.get(SUBVOL_TREE, k)? {
        Some(v) => SubvolItem::decode(id, k, &v),
        None => Err(FsError::NotFound),
    }
}

/// Where a subvolume sits: its parent subvolume and the reference (none for the top).
fn placement(e: &Engine, id: u64) -> Result<Option<(u64, SubvolRef)>> {
    let lo = key(id, sty::ROOT_BACKREF, 0);
    let hi = key(id, sty::ROOT_BACKREF, u64::MAX);
    match e.range(SUBVOL_TREE, lo..=hi)?.next() {
        Some(item) => {
            let (k, v) = item?;
            Ok(Some((k.offset, SubvolRef::decode(id, k, &v)?)))
        }
        None => Ok(None),
    }
}

/// The path of directory `dir` inside subvolume `subvol`, from that subvolume's root.
/// The path of directory `dir` inside subvolume `subvol`, from its root: names joined by
/// `/`, empty for the root itself.
pub(crate) fn dir_path(e: &Engine, subvol: u64, mut dir: u64) -> Result<Vec<u8>> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for _ in 0..100_000 {
        if dir == ROOT_INO {
            parts.reverse();
            return Ok(parts.join(&b'/'));
        }
        let lo = key(dir, ty::INODE_REF, 0);
        let hi = key(dir, ty::INODE_REF, u64::MAX);
        let Some(item) = e.range(subvol, lo..=hi)?.next() else {
            return Err(FsError::NotFound);
        };
        let (k, v) = item?;
        let name = decode_refs(dir, k, &v)?
            .into_iter()
            .next()
            .map(|(_, n)| n)
            .ok_or(FsError::NotFound)?;
        parts.push(name);
        dir = k.offset;
    }
    Err(FsError::Invalid("directory tree too deep or looped".into()))
}

/// The transaction that last changed subvolume `id`'s tree.
pub(crate) fn generation_of(e: &Engine, id: u64) -> Result<u64> {
    generation(e, id, &get_item(e, id)?)
}

fn generation(e: &Engine, id: u64, item: &SubvolItem) -> Result<u64> {
    // A fresh snapshot's root pointer still carries its source's generation.
    Ok(e.tree_root(id)?.generation.max(item.otransid))
}

fn info(e: &Engine, id: u64, item: SubvolItem) -> Result<SubvolInfo> {
    let generation = generation(e, id, &item)?;
    let root = Loc::root_of(id).global();
    let referenced_bytes = match e.get(id, FsInfo::key())? {
        Some(v) => FsInfo::decode(&v)?.data_bytes,
        None => 0,
    };
    let Some((parent, r)) = placement(e, id)? else {
        return Ok(SubvolInfo {
            id,
            parent: None,
            dirid: 0,
            path: Vec::new(),
            item,
            generation,
            root,
            referenced_bytes,
        });
    };
    let mut path = Vec::new();
    // The parent's own path, then the directory's inside it, then the name.
    let mut up = Vec::new();
    let mut p = Some((parent, r.dirid));
    for _ in 0..SUBVOL_LIMIT.min(100_000) {
        let Some((sv, dir)) = p else { break };
        up.push(dir_path(e, sv, dir)?);
        p = placement(e, sv)?.map(|(pp, rr)| {
            up.push(rr.name.clone());
            (pp, rr.dirid)
        });
    }
    up.reverse();
    for part in up.into_iter().filter(|p| !p.is_empty()) {
        path.extend_from_slice(&part);
        path.push(b'/');
    }
    path.extend_from_slice(&r.name);
    Ok(SubvolInfo {
        id,
        parent: Some(parent),
        dirid: r.dirid,
        path,
        item,
        generation,
        root,
        referenced_bytes,
    })
}

impl Fs {
    /// Every subvolume, by id.
    pub fn subvol_list(&self) -> Result<Vec<SubvolInfo>> {
        self.with_engine(|e| {
            list_items(e)?
                .into_iter()
                .map(|(id, item)| info(e, id, item))
                .collect()
        })
    }

    /// One subvolume.
    pub fn subvol_info(&self, id: u64) -> Result<SubvolInfo> {
        self.with_engine(|e| info(e, id, get_item(e, id)?))
    }

    /// The data and metadata bytes only subvolume `id` holds: what deleting it frees,
    /// as of the last commit. Every commit keeps it, so asking costs nothing; a
    /// subvolume made since the last commit holds nothing alone yet.
    pub fn subvol_exclusive_bytes(&self, id: u64) -> Result<u64> {
        self.with_engine(|e| {
            get_item(e, id)?;
            Ok(e.exclusive_bytes(id).unwrap_or(0))
        })
    }

    /// The subvolume with received UUID `uuid`, else the one with that UUID, from the
    /// UUID index (what an incremental stream names as its parent).
    pub fn subvol_by_uuid(&self, uuid: &[u8; 16]) -> Result<Option<u64>> {
        self.with_engine(|e| {
            for kind in [sty::UUID_RECEIVED, sty::UUID_SUBVOL] {
                let k = uuid_key(uuid, kind);
                if let Some(v) = e.get(SUBVOL_TREE, k)? {
                    let first = v.get(..8).and_then(|b| b.try_into().ok());
                    let id = first.map(u64::from_le_bytes).ok_or_else(|| {
                        crate::error::corrupt(0, k, "UUID item not a list of ids")
                    })?;
                    return Ok(Some(id));
                }
            }
            Ok(None)
        })
    }

    /// The subvolume that holds inode `ino` (global).
    pub fn subvol_of(&self, ino: u64) -> Result<u64> {
        Ok(Loc::of(ino)?.subvol)
    }

    /// Creates an empty subvolume named `name` in directory `parent`.
    pub fn subvol_create(&self, parent: u64, name: &[u8], who: Caller) -> Result<SubvolInfo> {
        check_name(name)?;
        let at = Loc::of(parent)?;
        let id = self.change(at.subvol, |t| {
            t.e.reserve(t.tree, 16, 0)?;
            let mut dir = t.dir_for_new_entry(at.ino, name)?;
            let id = t.next_subvol_id()?;
            t.e.create_tree(id)?;
            let root = Inode {
                ino: ROOT_INO,
                mode: S_IFDIR | 0o755,
                uid: who.uid,
                gid: who.gid,
                nlink: 2,
                generation: t.e.transaction_generation(),
                seq: FIRST_DIR_INDEX,
                atime: t.now,
                mtime: t.now,
                ctime: t.now,
                crtime: Time::birth(),
                ..Default::default()
            };
            t.e.insert(id, key(ROOT_INO, ty::INODE_ITEM, 0), &root.encode())?;
            let info = crate::items::FsInfo {
                next_ino: ROOT_INO + 1,
                data_bytes: 0,
            };
            t.e.insert(id, crate::items::FsInfo::key(), &info.encode())?;
            let item = SubvolItem {
                uuid: *uuid::Uuid::new_v4().as_bytes(),
                otransid: t.e.transaction_generation(),
                otime: t.now,
                ..Default::default()
            };
            t.place_subvol(&mut dir, name, id, &item)?;
            Ok(id)
        })?;
        self.subvol_info(id)
    }

    /// Snapshots subvolume `source` (the global inode number of its root directory)
    /// as `name` in directory `parent`, in O(1): the snapshot shares every block with
    /// its source. It holds everything written to the source so far, synced or not.
    pub fn subvol_snapshot(
        &self,
        source: u64,
        parent: u64,
        name: &[u8],
        read_only: bool,
    ) -> Result<SubvolInfo> {
        check_name(name)?;
        let src = Loc::of(source)?;
        if src.ino != ROOT_INO {
            return Err(FsError::Invalid(format!(
                "inode {source} is not the root of a subvolume"
            )));
        }
        let at = Loc::of(parent)?;
        let id = self.change(at.subvol, |t| {
            t.e.reserve(t.tree, 24, 0)?;
            let src_item = get_item(t.e, src.subvol)?;
            let mut dir = t.dir_for_new_entry(at.ino, name)?;
            let id = t.next_subvol_id()?;
            t.e.clone_tree(src.subvol, id)?;
            let now = t.now;
            let mut snap = Txn {
                e: &mut *t.e,
                tree: id,
                now,
            };
            snap.reap_orphans()?;
            snap.replace_nested_subvols(src.subvol)?;
            let item = SubvolItem {
                flags: if read_only { SUBVOL_RDONLY } else { 0 },
                uuid: *uuid::Uuid::new_v4().as_bytes(),
                parent_uuid: src_item.uuid,
                otransid: t.e.transaction_generation(),
                otime: t.now,
                ..Default::default()
            };
            t.place_subvol(&mut dir, name, id, &item)?;
            Ok(id)
        })?;
        if read_only && let Ok(mut ro) = self.read_only_subvols.lock() {
            ro.insert(id);
        }
        self.subvol_info(id)
    }

    /// Deletes the subvolume named `name` in directory `parent`; returns its id. The
    /// name goes at once; the engine frees the tree's blocks over the next commits.
    pub fn subvol_delete(&self, parent: u64, name: &[u8]) -> Result<u64> {
        let at = Loc::of(parent)?;
        let id = self.change(at.subvol, |t| {
            t.e.reserve(t.tree, 16, 0)?;
            let mut dir = t.inode(at.ino)?;
            if !dir.is_dir() {
                return Err(FsError::NotDir);
            }
            let entry = find_in_dir(t.e, t.tree, at.ino, name)?.ok_or(FsError::NotFound)?;
            if !entry.is_subvol() {
                return Err(FsError::Invalid(format!(
                    "{} is not a subvolume",
                    String::from_utf8_lossy(name)
                )));
            }
            let id = entry.ino;
            let lo = key(id, sty::ROOT_REF, 0);
            let hi = key(id, sty::ROOT_REF, u64::MAX);
            if t.e.range(SUBVOL_TREE, lo..=hi)?.next().is_some() {
                return Err(FsError::NotEmpty);
            }
            if self.has_open_files_in(id) {
                return Err(FsError::Busy(format!("subvolume {id} has open files")));
            }
            let item = get_item(t.e, id)?;
            t.remove_entry(&mut dir, &entry)?;
            dir.nlink = dir.nlink.saturating_sub(1);
            t.put_inode(&dir)?;
            t.e.delete(SUBVOL_TREE, root_item_key(id))?;
            t.e.delete(SUBVOL_TREE, backref_key(id, at.subvol))?;
            t.e.delete(SUBVOL_TREE, ref_key(at.subvol, id))?;
            let progress = crate::subvol_items::ReceiveProgress::key(id);
            if t.e.get(SUBVOL_TREE, progress)?.is_some() {
                t.e.delete(SUBVOL_TREE, progress)?;
            }
            for (uuid, kind) in [
                (item.uuid, sty::UUID_SUBVOL),
                (item.received_uuid, sty::UUID_RECEIVED),
            ] {
                if uuid != [0; 16] {
                    t.unindex_uuid(&uuid, kind, id)?;
                }
            }
            t.e.drop_tree(id)?;
            Ok(id)
        })?;
        if let Ok(mut ro) = self.read_only_subvols.lock() {
            ro.remove(&id);
        }
        if let Ok(mut notes) = self.receive_notes.lock() {
            notes.remove(&id);
        }
        Ok(id)
    }

    /// Nodes of deleted subvolumes that later commits still have to free (zero once
    /// their space is back; `btrfs subvolume sync` waits for that).
    pub fn subvol_cleanup_pending(&self) -> Result<usize> {
        Ok(self.read()?.pending_drops())
    }

    /// True if inode `ino` (global) lies in a read-only subvolume.
    pub fn is_read_only_inode(&self, ino: u64) -> bool {
        Loc::of(ino).is_ok_and(|l| self.subvol_is_read_only(l.subvol))
    }

    /// Records that subvolume `id` is what a received stream made: the sender's UUID
    /// and transaction, and the time and transaction of the receive (indexed by
    /// received UUID, so that an incremental stream can find it as its parent).
    pub fn subvol_set_received(
        &self,
        id: u64,
        received_uuid: [u8; 16],
        stransid: u64,
    ) -> Result<()> {
        self.change_any(SUBVOL_TREE, |t| {
            let mut item = get_item(t.e, id)?;
            if item.received_uuid != [0; 16] {
                t.unindex_uuid(&item.received_uuid, sty::UUID_RECEIVED, id)?;
            }
            item.received_uuid = received_uuid;
            item.stransid = stransid;
            item.rtransid = t.e.transaction_generation();
            item.rtime = t.now;
            t.e.insert(SUBVOL_TREE, root_item_key(id), &item.encode())?;
            if received_uuid != [0; 16] {
                t.index_uuid(&received_uuid, sty::UUID_RECEIVED, id)?;
            }
            Ok(())
        })
    }

    /// Makes a subvolume read-only or writable again.
    pub fn subvol_set_read_only(&self, id: u64, read_only: bool) -> Result<()> {
        self.change_any(SUBVOL_TREE, |t| {
            let mut item = get_item(t.e, id)?;
            item.flags = if read_only {
                item.flags | SUBVOL_RDONLY
            } else {
                item.flags & !SUBVOL_RDONLY
            };
            t.e.insert(SUBVOL_TREE, root_item_key(id), &item.encode())?;
            Ok(())
        })?;
        if let Ok(mut ro) = self.read_only_subvols.lock() {
            if read_only {
                ro.insert(id);
            } else {
                ro.remove(&id);
            }
        }
        Ok(())
    }
}

impl Txn<'_> {
    /// The directory `dir` of this subvolume, checked to take a new subdirectory
    /// `name`.
    fn dir_for_new_entry(&mut self, dir: u64, name: &[u8]) -> Result<Inode> {
        let d = self.inode(dir)?;
        if !d.is_dir() {
            return Err(FsError::NotDir);
        }
        if d.nlink == 0 {
            return Err(FsError::NotFound);
        }
        if d.nlink >= MAX_LINKS {
            return Err(FsError::TooManyLinks);
        }
        if find_in_dir(self.e, self.tree, dir, name)?.is_some() {
            return Err(FsError::Exists);
        }
        Ok(d)
    }

    fn next_subvol_id(&mut self) -> Result<u64> {
        let k = next_id_key();
        let next = self
            .e
            .get(SUBVOL_TREE, k)?
            .and_then(|v| v.get(..8).and_then(|b| b.try_into().ok()))
            .map(u64::from_le_bytes)
            .ok_or_else(|| crate::error::corrupt(0, k, "next subvolume id missing or short"))?;
        if !(FIRST_SUBVOL..SUBVOL_LIMIT).contains(&next) {
            return Err(FsError::Invalid("subvolume ids exhausted".into()));
        }
        self.e.insert(SUBVOL_TREE, k, &(next + 1).to_le_bytes())?;
        Ok(next)
    }

    /// Names subvolume `id` `name` in `dir` of this subvolume, and records its item,
    /// references and UUID.
    fn place_subvol(
        &mut self,
        dir: &mut Inode,
        name: &[u8],
        id: u64,
        item: &SubvolItem,
    ) -> Result<()> {
        let index = self.add_subvol_entry(dir, name, id)?;
        dir.nlink += 1;
        self.put_inode(dir)?;
        self.e
            .insert(SUBVOL_TREE, root_item_key(id), &item.encode())?;
        self.index_uuid(&item.uuid, sty::UUID_SUBVOL, id)?;
        self.put_subvol_refs(
            id,
            self.tree,
            &SubvolRef {
                dirid: dir.ino,
                index,
                name: name.to_vec(),
            },
        )
    }

    /// Writes the `ROOT_BACKREF` and `ROOT_REF` that place subvolume `child` in
    /// `parent`.
    pub(crate) fn put_subvol_refs(&mut self, child: u64, parent: u64, r: &SubvolRef) -> Result<()> {
        let v = r.encode();
        self.e.insert(SUBVOL_TREE, backref_key(child, parent), &v)?;
        self.e.insert(SUBVOL_TREE, ref_key(parent, child), &v)?;
        Ok(())
    }

    fn uuid_ids(&self, k: Key) -> Result<Vec<u64>> {
        let Some(v) = self.e.get(SUBVOL_TREE, k)? else {
            return Ok(Vec::new());
        };
        if v.len() % 8 != 0 {
            return Err(crate::error::corrupt(0, k, "UUID item not a list of ids"));
        }
        Ok(v.chunks_exact(8)
            .filter_map(|c| c.try_into().ok().map(u64::from_le_bytes))
            .collect())
    }

    pub(crate) fn index_uuid(&mut self, uuid: &[u8; 16], kind: u8, id: u64) -> Result<()> {
        let k = uuid_key(uuid, kind);
        let mut ids = self.uuid_ids(k)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
        let v: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
        self.e.insert(SUBVOL_TREE, k, &v)?;
        Ok(())
    }

    fn unindex_uuid(&mut self, uuid: &[u8; 16], kind: u8, id: u64) -> Result<()> {
        let k = uuid_key(uuid, kind);
        let ids: Vec<u64> = self.uuid_ids(k)?.into_iter().filter(|&i| i != id).collect();
        if ids.is_empty() {
            self.e.delete(SUBVOL_TREE, k)?;
        } else {
            let v: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
            self.e.insert(SUBVOL_TREE, k, &v)?;
        }
        Ok(())
    }

    /// In a fresh snapshot of `source`: the subvolumes nested in the source are not
    /// part of it; as in btrfs, an empty directory stands where each one was.
    fn replace_nested_subvols(&mut self, source: u64) -> Result<()> {
        let lo = key(source, sty::ROOT_REF, 0);
        let hi = key(source, sty::ROOT_REF, u64::MAX);
        let nested: Vec<(Key, SubvolRef)> = self
            .e
            .range(SUBVOL_TREE, lo..=hi)?
            .map(|item| {
                let (k, v) = item?;
                Ok((k, SubvolRef::decode(source, k, &v)?))
            })
            .collect::<Result<_>>()?;
        for (k, r) in nested {
            let mut dir = self.inode(r.dirid)?;
            let entry = DirEntry {
                ino: k.offset,
                dtype: crate::items::dtype(S_IFDIR) | crate::items::DT_SUBVOL,
                index: r.index,
                name: r.name.clone(),
            };
            self.remove_entry(&mut dir, &entry)?;
            let ino = self.next_ino()?;
            let placeholder = Inode {
                ino,
                mode: S_IFDIR | 0o755,
                nlink: 2,
                generation: self.e.transaction_generation(),
                seq: FIRST_DIR_INDEX,
                atime: self.now,
                mtime: self.now,
                ctime: self.now,
                crtime: Time::birth(),
                ..Default::default()
            };
            self.put_inode(&placeholder)?;
            self.add_entry(&mut dir, &r.name, &placeholder)?;
            self.put_inode(&dir)?;
        }
        Ok(())
    }
}

impl Fs {
    /// True if a file of subvolume `id` is open.
    fn has_open_files_in(&self, id: u64) -> bool {
        self.open_files()
            .into_iter()
            .any(|g| Loc::of(g).is_ok_and(|l| l.subvol == id))
    }
}

/// The top-level subvolume's item and the next id, for mkfs.
pub(crate) fn top_level_items(generation: u64, now: Time) -> Vec<(Key, Vec<u8>)> {
    let top = SubvolItem {
        uuid: *uuid::Uuid::new_v4().as_bytes(),
        otransid: generation,
        otime: now,
        ..Default::default()
    };
    vec![
        (root_item_key(TOP_SUBVOL), top.encode()),
        (
            uuid_key(&top.uuid, sty::UUID_SUBVOL),
            TOP_SUBVOL.to_le_bytes().to_vec(),
        ),
        (next_id_key(), FIRST_SUBVOL.to_le_bytes().to_vec()),
    ]
}
