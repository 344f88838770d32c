//! The filesystem checker: the engine's checker verifies blocks and reference counts;
//! this one verifies what the items say about each other. Every name has its hash
//! entry, its index entry and its back reference; link counts match the names (and
//! subdirectories); byte counts match the extents; extents do not overlap; orphan
//! items name unlinked inodes, and every inode is reachable or an orphan.

use crate::error::Result;
use crate::ino::TOP_SUBVOL;
use crate::items::{
    DT_SUBVOL, DirEntry, ExtentKind, FileExtent, INFO_OBJECTID, Inode, ORPHAN_OBJECTID, ROOT_INO,
    decode_refs, decode_xattrs, dtype, name_hash, ty,
};
use crate::subvol_items::{SUBVOL_TREE, SubvolItem, SubvolRef, ref_key, sty};
use arbor_engine::Engine;
use std::collections::{BTreeMap, BTreeSet};

/// A directory entry that names a subvolume: (parent subvolume, directory, index,
/// name, child subvolume).
type Placement = (u64, u64, u64, Vec<u8>, u64);

#[derive(Default)]
struct Seen {
    inode: Option<Inode>,
    /// (parent, index, name) from INODE_REF items.
    refs: BTreeSet<(u64, u64, Vec<u8>)>,
    /// (parent, index, name) from DIR_INDEX items naming this inode.
    indexed: BTreeSet<(u64, u64, Vec<u8>)>,
    /// Names in this directory: (index, name) from DIR_ITEM items.
    hashed: BTreeSet<(u64, Vec<u8>)>,
    /// Names in this directory: (index, name) from DIR_INDEX items.
    listed: BTreeSet<(u64, Vec<u8>)>,
    subdirs: u32,
    names_len: u64,
    extent_bytes: u64,
    extent_end: u64,
    max_index: u64,
    orphan: bool,
}

/// Checks every subvolume of an open engine and the subvolume tree that ties them
/// together; returns the problems found.
pub fn fsck(e: &Engine) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut items: BTreeMap<u64, SubvolItem> = BTreeMap::new();
    let mut placed: BTreeSet<Placement> = BTreeSet::new();
    let mut refs: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
    let mut uuids = Vec::new();
    let mut progress = Vec::new();
    for item in e.range(SUBVOL_TREE, ..)? {
        let (k, v) = item?;
        let mut bad = |why: String| problems.push(format!("subvolume tree: item {k}: {why}"));
        match k.ty {
            sty::ROOT_ITEM => match SubvolItem::decode(k.objectid, k, &v) {
                Ok(i) => {
                    items.insert(k.objectid, i);
                }
                Err(err) => bad(err.to_string()),
            },
            sty::ROOT_BACKREF => match SubvolRef::decode(k.objectid, k, &v) {
                Ok(r) => {
                    placed.insert((k.offset, r.dirid, r.index, r.name, k.objectid));
                }
                Err(err) => bad(err.to_string()),
            },
            sty::ROOT_REF => {
                refs.insert((k.objectid, k.offset), v);
            }
            sty::UUID_SUBVOL | sty::UUID_RECEIVED => uuids.push((k, v)),
            sty::FS_INFO if k.objectid == crate::subvol_items::SUBVOL_INFO_OBJECTID => {}
            sty::RECEIVE_PROGRESS => {
                if let Err(err) = crate::subvol_items::ReceiveProgress::decode(k.objectid, k, &v) {
                    bad(err.to_string());
                }
                progress.push(k.objectid);
            }
            other => bad(format!("unknown item type {other}")),
        }
    }
    for id in progress {
        if !items.contains_key(&id) {
            problems.push(format!(
                "receive progress of subvolume {id}, which does not exist"
            ));
        }
    }
    for tree in e.trees() {
        if tree != SUBVOL_TREE && !items.contains_key(&tree) {
            problems.push(format!("tree {tree} has no subvolume item"));
        }
    }
    let mut entries: BTreeSet<Placement> = BTreeSet::new();
    for &id in items.keys() {
        if !e.tree_exists(id) {
            problems.push(format!("subvolume {id} has no tree"));
            continue;
        }
        for p in fsck_tree(e, id, &mut entries)? {
            problems.push(format!("subvolume {id}: {p}"));
        }
    }
    for (parent, dirid, index, name, child) in &placed {
        let r = SubvolRef {
            dirid: *dirid,
            index: *index,
            name: name.clone(),
        };
        if refs.remove(&(*parent, *child)) != Some(r.encode()) {
            problems.push(format!(
                "subvolume {child}: back reference from {parent} has no equal {}",
                ref_key(*parent, *child)
            ));
        }
        if !items.contains_key(child) || !items.contains_key(parent) {
            problems.push(format!(
                "subvolume {child}: placed in {parent}, one of them unknown"
            ));
        }
    }
    for (parent, child) in refs.keys() {
        problems.push(format!(
            "subvolume {child}: reference from {parent} without back reference"
        ));
    }
    if placed != entries {
        for p in placed.difference(&entries) {
            problems.push(format!(
                "subvolume {}: no directory entry names it as {p:?}",
                p.4
            ));
        }
        for p in entries.difference(&placed) {
            problems.push(format!(
                "subvolume {}: entry {p:?} without back reference",
                p.4
            ));
        }
    }
    for &id in items.keys() {
        let n = placed.iter().filter(|p| p.4 == id).count();
        let want = usize::from(id != TOP_SUBVOL);
        if n != want {
            problems.push(format!("subvolume {id} is placed {n} times"));
        }
    }
    for (k, v) in uuids {
        let ids: Vec<u64> = v
            .chunks_exact(8)
            .filter_map(|c| c.try_into().ok().map(u64::from_le_bytes))
            .collect();
        let ok = v.len() % 8 == 0
            && !ids.is_empty()
            && ids.iter().all(|id| {
                items.get(id).is_some_and(|i| {
                    let u = if k.ty == sty::UUID_SUBVOL {
                        i.uuid
                    } else {
                        i.received_uuid
                    };
                    crate::subvol_items::uuid_key(&u, k.ty) == k
                })
            });
        if !ok {
            problems.push(format!("subvolume tree: UUID item {k} names {ids:?}"));
        }
    }
    Ok(problems)
}

/// Checks one subvolume's tree; collects the entries that name other subvolumes.
fn fsck_tree(e: &Engine, tree: u64, entries: &mut BTreeSet<Placement>) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut inodes: BTreeMap<u64, Seen> = BTreeMap::new();
    let mut next_ino = None;
    let mut data_bytes = None;
    for item in e.range(tree, ..)? {
        let (k, v) = item?;
        let ino = k.objectid;
        if ino == ORPHAN_OBJECTID && k.ty == ty::ORPHAN_ITEM {
            inodes.entry(k.offset).or_default().orphan = true;
            continue;
        }
        if ino == INFO_OBJECTID && k.ty == ty::FS_INFO {
            match crate::items::FsInfo::decode(&v) {
                Ok(info) => {
                    next_ino = Some(info.next_ino);
                    data_bytes = Some(info.data_bytes);
                }
                Err(err) => problems.push(format!("subvolume info: {err}")),
            }
            continue;
        }
        let mut bad = |why: String| problems.push(format!("inode {ino}: item {k}: {why}"));
        match k.ty {
            ty::INODE_ITEM => match Inode::decode(ino, &v) {
                Ok(i) => inodes.entry(ino).or_default().inode = Some(i),
                Err(err) => bad(err.to_string()),
            },
            ty::INODE_REF => match decode_refs(ino, k, &v) {
                Ok(list) => {
                    let s = inodes.entry(ino).or_default();
                    for (index, name) in list {
                        s.refs.insert((k.offset, index, name));
                    }
                }
                Err(err) => bad(err.to_string()),
            },
            ty::DIR_ITEM => match DirEntry::decode_list(ino, k, &v) {
                Ok(list) => {
                    for d in list {
                        if name_hash(&d.name) != k.offset {
                            bad(format!("name {:?} filed under the wrong hash", d.name));
                        }
                        let s = inodes.entry(ino).or_default();
                        s.hashed.insert((d.index, d.name));
                    }
                }
                Err(err) => bad(err.to_string()),
            },
            ty::DIR_INDEX => match DirEntry::decode_list(ino, k, &v) {
                Ok(list) if list.len() == 1 && list[0].index == k.offset => {
                    let d = &list[0];
                    let s = inodes.entry(ino).or_default();
                    s.names_len += 2 * d.name.len() as u64;
                    s.max_index = s.max_index.max(d.index);
                    s.listed.insert((d.index, d.name.clone()));
                    if d.dtype & !DT_SUBVOL == dtype(crate::items::S_IFDIR) {
                        s.subdirs += 1;
                    }
                    if d.is_subvol() {
                        if d.dtype != dtype(crate::items::S_IFDIR) | DT_SUBVOL {
                            bad(format!("subvolume entry of type {:#x}", d.dtype));
                        }
                        entries.insert((tree, ino, d.index, d.name.clone(), d.ino));
                    } else {
                        inodes.entry(d.ino).or_default().indexed.insert((
                            ino,
                            d.index,
                            d.name.clone(),
                        ));
                    }
                }
                Ok(_) => bad("index item must hold one entry with its own index".into()),
                Err(err) => bad(err.to_string()),
            },
            ty::EXTENT_DATA => match FileExtent::decode(ino, k, &v) {
                Ok(fe) => {
                    let s = inodes.entry(ino).or_default();
                    if k.offset < s.extent_end {
                        bad(format!(
                            "overlaps the previous extent ending at {}",
                            s.extent_end
                        ));
                    }
                    s.extent_end = k.offset + fe.file_len();
                    s.extent_bytes += fe.file_len();
                    if let ExtentKind::Inline(_) = fe.kind
                        && k.offset != 0
                    {
                        bad("inline extent not at offset 0".into());
                    }
                }
                Err(err) => bad(err.to_string()),
            },
            ty::XATTR_ITEM => {
                if let Err(err) = decode_xattrs(ino, k, &v) {
                    bad(err.to_string());
                }
            }
            other => bad(format!("unknown item type {other}")),
        }
    }
    let kinds: BTreeMap<u64, u32> = inodes
        .iter()
        .filter_map(|(ino, s)| s.inode.as_ref().map(|i| (*ino, i.kind())))
        .collect();
    for (ino, s) in &inodes {
        let mut bad = |why: String| problems.push(format!("inode {ino}: {why}"));
        let Some(i) = &s.inode else {
            if !s.refs.is_empty() || !s.indexed.is_empty() || s.extent_bytes > 0 {
                bad("has items or names but no inode item".into());
            }
            continue;
        };
        if next_ino.is_some_and(|n| *ino >= n) {
            bad(format!(
                "number not below the next inode number {next_ino:?}"
            ));
        }
        if s.refs != s.indexed {
            bad(format!(
                "back references {:?} differ from the directory entries naming it {:?}",
                s.refs, s.indexed
            ));
        }
        for (parent, _, _) in &s.indexed {
            if kinds.get(parent) != Some(&crate::items::S_IFDIR) {
                bad(format!("named in {parent}, which is not a directory"));
            }
        }
        let links = s.indexed.len() as u32;
        if i.is_dir() {
            if *ino != ROOT_INO && links != 1 {
                bad(format!("directory has {links} names"));
            }
            if i.nlink != 2 + s.subdirs && !(i.nlink == 0 && s.orphan) {
                bad(format!(
                    "directory nlink {} but {} subdirectories",
                    i.nlink, s.subdirs
                ));
            }
            if i.size != s.names_len {
                bad(format!(
                    "directory size {} but names add up to {}",
                    i.size, s.names_len
                ));
            }
            if s.hashed != s.listed {
                bad("name hash index and sequence index disagree".into());
            }
            if s.max_index >= i.seq && s.max_index > 0 {
                bad(format!(
                    "index {} not below the next index {}",
                    s.max_index, i.seq
                ));
            }
        } else if i.nlink != links {
            bad(format!("nlink {} but {links} names", i.nlink));
        }
        if i.nlink == 0 && !s.orphan {
            bad("no links and no orphan item (leaked)".into());
        }
        if s.orphan && i.nlink != 0 {
            bad(format!("orphan item but nlink {}", i.nlink));
        }
        if i.nbytes != s.extent_bytes {
            bad(format!(
                "nbytes {} but extents hold {}",
                i.nbytes, s.extent_bytes
            ));
        }
        if *ino != ROOT_INO && links == 0 && !s.orphan {
            bad("unreachable".into());
        }
    }
    if !inodes
        .get(&ROOT_INO)
        .is_some_and(|s| s.inode.as_ref().is_some_and(Inode::is_dir))
    {
        problems.push("the root directory is missing".into());
    }
    let total: u64 = inodes
        .values()
        .filter_map(|s| s.inode.as_ref().map(|i| i.nbytes))
        .sum();
    match data_bytes {
        Some(n) if n == total => {}
        Some(n) => problems.push(format!(
            "subvolume info counts {n} data bytes, the inodes hold {total}"
        )),
        None => problems.push("the subvolume info item is missing".into()),
    }
    Ok(problems)
}
