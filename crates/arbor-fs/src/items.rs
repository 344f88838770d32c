//! The filesystem's items in a subvolume tree: keys and value encodings, defined once.
//! `docs/format.md` ("The filesystem tree") describes the same bytes.

use crate::error::{Result, corrupt};
use arbor_engine::Key;

/// Item types, numbered as in btrfs.
pub mod ty {
    pub const INODE_ITEM: u8 = 1;
    pub const INODE_REF: u8 = 12;
    pub const XATTR_ITEM: u8 = 24;
    pub const ORPHAN_ITEM: u8 = 48;
    pub const DIR_ITEM: u8 = 84;
    pub const DIR_INDEX: u8 = 96;
    pub const EXTENT_DATA: u8 = 108;
    pub const FS_INFO: u8 = 250;
}

/// The root directory's inode number (as in btrfs).
pub const ROOT_INO: u64 = 256;
/// Objectid of the orphan items: inodes with no links whose data is freed at next mount.
pub const ORPHAN_OBJECTID: u64 = 6;
/// Objectid of the subvolume's bookkeeping item (next inode number).
pub const INFO_OBJECTID: u64 = 7;
/// A subvolume's bookkeeping: `FS_INFO (7, 250, 0)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsInfo {
    /// The next inode number to hand out.
    pub next_ino: u64,
    /// The sum of the inodes' `nbytes`: the file data the subvolume references.
    pub data_bytes: u64,
}

impl FsInfo {
    pub const SIZE: usize = 16;

    pub fn key() -> Key {
        key(INFO_OBJECTID, ty::FS_INFO, 0)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::SIZE);
        v.extend_from_slice(&self.next_ino.to_le_bytes());
        v.extend_from_slice(&self.data_bytes.to_le_bytes());
        v
    }

    pub fn decode(v: &[u8]) -> Result<Self> {
        let mut r = Reader::new(v, INFO_OBJECTID, Self::key());
        let info = Self {
            next_ino: r.u64()?,
            data_bytes: r.u64()?,
        };
        if !r.done() {
            return Err(r.fail("trailing bytes after the subvolume info"));
        }
        Ok(info)
    }
}

/// The first directory index handed out; 1 and 2 are "." and "..".
pub const FIRST_DIR_INDEX: u64 = 3;
/// Bytes per data block: the unit of checksums and of copy-on-write.
pub const BLOCK: u64 = 4096;
/// Longest name in a directory.
pub const NAME_MAX: usize = 255;

pub fn key(ino: u64, t: u8, offset: u64) -> Key {
    Key::new(ino, t, offset)
}

/// The hash that files a name in `DIR_ITEM` and `XATTR_ITEM` keys.
pub fn name_hash(name: &[u8]) -> u64 {
    u64::from(crc32c::crc32c(name))
}

/// A small cursor over a value, failing cleanly when it runs out.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    ino: u64,
    key: Key,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], ino: u64, key: Key) -> Self {
        Self {
            buf,
            pos: 0,
            ino,
            key,
        }
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(corrupt(
                self.ino,
                self.key,
                format!(
                    "value of {} bytes ends before a {n}-byte field at {}",
                    self.buf.len(),
                    self.pos
                ),
            ));
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let b = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    pub(crate) fn done(&self) -> bool {
        self.pos == self.buf.len()
    }
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
    pub(crate) fn fail(&self, reason: impl Into<String>) -> crate::error::FsError {
        corrupt(self.ino, self.key, reason)
    }
}

/// A timestamp with nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

impl Time {
    /// Now, from the kernel's coarse wall clock (`CLOCK_REALTIME_COARSE`, which moves
    /// once per tick: 1 to 10 ms). It is the clock the kernel stamps files with itself
    /// (`current_time`), as btrfs and ext4 did before multigrain timestamps and as it
    /// still does for a FUSE file it caches writes of. With the same clock on both sides
    /// a file's times never go backwards when the kernel takes over, and a file written
    /// within the tick of its create keeps the times it was created with, so its close
    /// sends no SETATTR to write them back.
    pub fn now() -> Self {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        Time {
            sec: t.tv_sec,
            nsec: t.tv_nsec as u32,
        }
    }

    /// A new inode's birth time (`crtime`): [`Time::now`], moved on by a nanosecond
    /// past the last one handed out when that is not later. Within a tick the coarse
    /// clock stands still, but no two inodes made by one process share a birth time,
    /// so two inodes with the same number made in one transaction (in two snapshots of
    /// one subvolume) still differ by `generation, crtime`, the identity diff and
    /// send compare.
    pub fn birth() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static LAST: AtomicU64 = AtomicU64::new(0);
        let now = Self::now();
        // Nanoseconds since 1970 fit a u64 until 2554; a clock set before 1970 gets
        // its plain time.
        let Ok(sec) = u64::try_from(now.sec) else {
            return now;
        };
        let ns = sec
            .saturating_mul(NANOS)
            .saturating_add(u64::from(now.nsec));
        let next = |last: u64| ns.max(last.saturating_add(1));
        let (Ok(last) | Err(last)) =
            LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| Some(next(l)));
        let t = next(last);
        Time {
            sec: (t / NANOS) as i64,
            nsec: (t % NANOS) as u32,
        }
    }
}

const NANOS: u64 = 1_000_000_000;

/// An inode's attributes: `INODE_ITEM` `(ino, 1, 0)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inode {
    pub ino: u64,
    /// File type and permission bits, as in `st_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    /// Bytes of data extents and inline data this inode names (for `st_blocks`).
    pub nbytes: u64,
    pub rdev: u64,
    pub flags: u64,
    /// Generation of the transaction that created the inode.
    pub generation: u64,
    /// Next directory index (directories only).
    pub seq: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub crtime: Time,
}

pub const S_IFMT: u32 = 0o170000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_ISUID: u32 = 0o4000;
pub const S_ISGID: u32 = 0o2000;
pub const S_IXGRP: u32 = 0o010;

impl Inode {
    pub const SIZE: usize = 4 * 4 + 6 * 8 + 4 * 12 + 16;

    /// The inode as the world sees it: `ino` made global for subvolume `subvol`.
    pub fn in_subvol(mut self, subvol: u64) -> Self {
        self.ino = crate::ino::Loc::new(subvol, self.ino).global();
        self
    }

    pub fn kind(&self) -> u32 {
        self.mode & S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        self.kind() == S_IFDIR
    }
    pub fn is_reg(&self) -> bool {
        self.kind() == S_IFREG
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::SIZE);
        for x in [self.mode, self.uid, self.gid, self.nlink] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        for x in [
            self.size,
            self.nbytes,
            self.rdev,
            self.flags,
            self.generation,
            self.seq,
        ] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        for t in [self.atime, self.mtime, self.ctime, self.crtime] {
            v.extend_from_slice(&t.sec.to_le_bytes());
            v.extend_from_slice(&t.nsec.to_le_bytes());
        }
        v.resize(Self::SIZE, 0);
        v
    }

    pub fn decode(ino: u64, value: &[u8]) -> Result<Self> {
        let k = key(ino, ty::INODE_ITEM, 0);
        let mut r = Reader::new(value, ino, k);
        if value.len() != Self::SIZE {
            return Err(r.fail(format!(
                "inode item is {} bytes, expected {}",
                value.len(),
                Self::SIZE
            )));
        }
        let mode = r.u32()?;
        let uid = r.u32()?;
        let gid = r.u32()?;
        let nlink = r.u32()?;
        let size = r.u64()?;
        let nbytes = r.u64()?;
        let rdev = r.u64()?;
        let flags = r.u64()?;
        let generation = r.u64()?;
        let seq = r.u64()?;
        let mut times = [Time::default(); 4];
        for t in &mut times {
            let sec = r.i64()?;
            let nsec = r.u32()?;
            if nsec >= 1_000_000_000 {
                return Err(r.fail(format!("timestamp has {nsec} nanoseconds")));
            }
            *t = Time { sec, nsec };
        }
        if r.rest().iter().any(|&b| b != 0) {
            return Err(r.fail("reserved bytes are not zero"));
        }
        let [atime, mtime, ctime, crtime] = times;
        Ok(Inode {
            ino,
            mode,
            uid,
            gid,
            nlink,
            size,
            nbytes,
            rdev,
            flags,
            generation,
            seq,
            atime,
            mtime,
            ctime,
            crtime,
        })
    }
}

/// The file type as stored in directory entries (the `DT_*` numbers).
pub fn dtype(mode: u32) -> u8 {
    ((mode & S_IFMT) >> 12) as u8
}

/// Set in a directory entry's `dtype` when `ino` is a subvolume id: the entry names
/// that subvolume's root directory (btrfs: a location key of type `ROOT_ITEM`).
pub const DT_SUBVOL: u8 = 0x80;

/// One name in a directory: what `DIR_ITEM` lists and `DIR_INDEX` holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub dtype: u8,
    pub index: u64,
    pub name: Vec<u8>,
}

impl DirEntry {
    /// True if the entry names another subvolume's root.
    pub fn is_subvol(&self) -> bool {
        self.dtype & DT_SUBVOL != 0
    }

    pub fn encode_into(&self, v: &mut Vec<u8>) {
        v.extend_from_slice(&self.ino.to_le_bytes());
        v.push(self.dtype);
        v.extend_from_slice(&self.index.to_le_bytes());
        v.extend_from_slice(&(self.name.len() as u16).to_le_bytes());
        v.extend_from_slice(&self.name);
    }

    /// Decodes the entries of a `DIR_ITEM` (several on a hash collision) or a
    /// `DIR_INDEX` (exactly one).
    pub fn decode_list(dir: u64, k: Key, value: &[u8]) -> Result<Vec<DirEntry>> {
        let mut r = Reader::new(value, dir, k);
        let mut out = Vec::new();
        while !r.done() {
            let ino = r.u64()?;
            let dtype = r.u8()?;
            let index = r.u64()?;
            let len = r.u16()? as usize;
            if len == 0 || len > NAME_MAX {
                return Err(r.fail(format!("entry name of {len} bytes")));
            }
            let name = r.bytes(len)?.to_vec();
            out.push(DirEntry {
                ino,
                dtype,
                index,
                name,
            });
        }
        if out.is_empty() {
            return Err(r.fail("empty directory item"));
        }
        Ok(out)
    }
}

/// A back reference from an inode to one of its names: `INODE_REF (ino, 12, parent)`
/// lists `(index, name)` pairs, one per link from that parent.
pub fn encode_refs(refs: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (index, name) in refs {
        v.extend_from_slice(&index.to_le_bytes());
        v.extend_from_slice(&(name.len() as u16).to_le_bytes());
        v.extend_from_slice(name);
    }
    v
}

pub fn decode_refs(ino: u64, k: Key, value: &[u8]) -> Result<Vec<(u64, Vec<u8>)>> {
    let mut r = Reader::new(value, ino, k);
    let mut out = Vec::new();
    while !r.done() {
        let index = r.u64()?;
        let len = r.u16()? as usize;
        if len == 0 || len > NAME_MAX {
            return Err(r.fail(format!("inode ref name of {len} bytes")));
        }
        out.push((index, r.bytes(len)?.to_vec()));
    }
    Ok(out)
}

/// `XATTR_ITEM (ino, 24, hash(name))`: `(name, value)` pairs, several on a collision.
pub fn encode_xattrs(list: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (name, value) in list {
        v.extend_from_slice(&(name.len() as u16).to_le_bytes());
        v.extend_from_slice(&(value.len() as u32).to_le_bytes());
        v.extend_from_slice(name);
        v.extend_from_slice(value);
    }
    v
}

pub fn decode_xattrs(ino: u64, k: Key, value: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut r = Reader::new(value, ino, k);
    let mut out = Vec::new();
    while !r.done() {
        let nlen = r.u16()? as usize;
        let vlen = r.u32()? as usize;
        let name = r.bytes(nlen)?.to_vec();
        let val = r.bytes(vlen)?.to_vec();
        out.push((name, val));
    }
    Ok(out)
}

/// What a file extent item describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtentKind {
    /// The file's bytes, stored in the item (small files only, at offset 0).
    Inline(Vec<u8>),
    /// Blocks of a data extent, each with its crc32c.
    Regular { csums: Vec<u32> },
    /// Allocated by fallocate, never written: reads as zeros.
    Prealloc,
}

/// `EXTENT_DATA (ino, 108, file offset)`. A regular or preallocated extent covers
/// `num_bytes` (whole blocks) of the data extent `[disk_bytenr, disk_bytenr + disk_len)`
/// starting `offset` bytes into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileExtent {
    pub generation: u64,
    pub disk_bytenr: u64,
    pub disk_len: u64,
    pub offset: u64,
    pub num_bytes: u64,
    pub kind: ExtentKind,
}

const EXTENT_INLINE: u8 = 0;
const EXTENT_REGULAR: u8 = 1;
const EXTENT_PREALLOC: u8 = 2;
/// Bytes before the checksums of a regular extent.
pub const EXTENT_HEADER: usize = 8 + 1 + 4 * 8;

impl FileExtent {
    /// File bytes this item covers.
    pub fn file_len(&self) -> u64 {
        match &self.kind {
            ExtentKind::Inline(d) => d.len() as u64,
            _ => self.num_bytes,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(EXTENT_HEADER + 16);
        v.extend_from_slice(&self.generation.to_le_bytes());
        match &self.kind {
            ExtentKind::Inline(d) => {
                v.push(EXTENT_INLINE);
                v.extend_from_slice(d);
            }
            ExtentKind::Regular { csums } => {
                v.push(EXTENT_REGULAR);
                self.encode_placement(&mut v);
                for c in csums {
                    v.extend_from_slice(&c.to_le_bytes());
                }
            }
            ExtentKind::Prealloc => {
                v.push(EXTENT_PREALLOC);
                self.encode_placement(&mut v);
            }
        }
        v
    }

    fn encode_placement(&self, v: &mut Vec<u8>) {
        for x in [self.disk_bytenr, self.disk_len, self.offset, self.num_bytes] {
            v.extend_from_slice(&x.to_le_bytes());
        }
    }

    pub fn decode(ino: u64, k: Key, value: &[u8]) -> Result<Self> {
        let mut r = Reader::new(value, ino, k);
        let generation = r.u64()?;
        let t = r.u8()?;
        if t == EXTENT_INLINE {
            if k.offset != 0 {
                return Err(r.fail("inline extent not at offset 0"));
            }
            return Ok(FileExtent {
                generation,
                disk_bytenr: 0,
                disk_len: 0,
                offset: 0,
                num_bytes: 0,
                kind: ExtentKind::Inline(r.rest().to_vec()),
            });
        }
        let disk_bytenr = r.u64()?;
        let disk_len = r.u64()?;
        let offset = r.u64()?;
        let num_bytes = r.u64()?;
        let aligned = [disk_bytenr, disk_len, offset, num_bytes, k.offset]
            .iter()
            .all(|x| x.is_multiple_of(BLOCK));
        if !aligned
            || num_bytes == 0
            || disk_len == 0
            || offset.checked_add(num_bytes).is_none_or(|e| e > disk_len)
            || k.offset.checked_add(num_bytes).is_none()
        {
            return Err(r.fail(format!(
                "extent placement disk {disk_bytenr}+{disk_len} offset {offset} length {num_bytes} is not block-aligned or out of range"
            )));
        }
        let kind = match t {
            EXTENT_REGULAR => {
                let blocks = (num_bytes / BLOCK) as usize;
                let mut csums = Vec::with_capacity(blocks);
                for _ in 0..blocks {
                    csums.push(r.u32()?);
                }
                ExtentKind::Regular { csums }
            }
            EXTENT_PREALLOC => ExtentKind::Prealloc,
            other => return Err(r.fail(format!("unknown extent type {other}"))),
        };
        if !r.done() {
            return Err(r.fail("trailing bytes after the extent"));
        }
        Ok(FileExtent {
            generation,
            disk_bytenr,
            disk_len,
            offset,
            num_bytes,
            kind,
        })
    }

    /// The piece of this extent that covers file bytes `[from, to)` (relative to the
    /// extent's start, both block-aligned, inside it).
    pub fn slice(&self, from: u64, to: u64) -> FileExtent {
        let kind = match &self.kind {
            ExtentKind::Regular { csums } => ExtentKind::Regular {
                csums: csums[(from / BLOCK) as usize..(to / BLOCK) as usize].to_vec(),
            },
            other => other.clone(),
        };
        FileExtent {
            generation: self.generation,
            disk_bytenr: self.disk_bytenr,
            disk_len: self.disk_len,
            offset: self.offset + from,
            num_bytes: to - from,
            kind,
        }
    }
}

/// The engine's view of our items: which data extent an item names.
#[derive(Debug, Default)]
pub struct FsDataRefs;

impl arbor_engine::DataRefs for FsDataRefs {
    fn data_ref(
        &self,
        _tree: u64,
        key: &Key,
        value: &[u8],
    ) -> std::result::Result<Option<(u64, u64)>, String> {
        if key.ty != ty::EXTENT_DATA {
            return Ok(None);
        }
        match FileExtent::decode(key.objectid, *key, value) {
            Ok(FileExtent {
                kind: ExtentKind::Inline(_),
                ..
            }) => Ok(None),
            Ok(e) => Ok(Some((e.disk_bytenr, e.disk_len))),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Where the file offset of the extent's first byte would be: the pieces a write or
    /// a punch leaves of one extent item all share it, so only reflinks add anchors.
    fn anchor(&self, key: &Key, value: &[u8]) -> Key {
        match FileExtent::decode(key.objectid, *key, value) {
            Ok(e) => Key::new(key.objectid, key.ty, key.offset.saturating_sub(e.offset)),
            Err(_) => *key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_round_trips() {
        let i = Inode {
            ino: 300,
            mode: S_IFREG | 0o644,
            nlink: 2,
            size: 12345,
            mtime: Time { sec: -5, nsec: 7 },
            ..Default::default()
        };
        assert_eq!(Inode::decode(300, &i.encode()).unwrap(), i);
        let mut bad = i.encode();
        bad[Inode::SIZE - 1] = 1;
        assert!(Inode::decode(300, &bad).is_err());
    }

    #[test]
    fn extents_round_trip_and_reject_bad_placement() {
        let e = FileExtent {
            generation: 3,
            disk_bytenr: 1 << 20,
            disk_len: 3 * BLOCK,
            offset: BLOCK,
            num_bytes: 2 * BLOCK,
            kind: ExtentKind::Regular { csums: vec![1, 2] },
        };
        let k = key(300, ty::EXTENT_DATA, 8192);
        assert_eq!(FileExtent::decode(300, k, &e.encode()).unwrap(), e);
        let mut past = e.clone();
        past.num_bytes = 3 * BLOCK;
        past.kind = ExtentKind::Regular {
            csums: vec![1, 2, 3],
        };
        assert!(FileExtent::decode(300, k, &past.encode()).is_err());
        let enc = e.encode();
        for n in 0..enc.len() {
            assert!(FileExtent::decode(300, k, &enc[..n]).is_err());
        }
    }

    #[test]
    fn dir_entries_decode_only_valid_names() {
        let mut v = Vec::new();
        DirEntry {
            ino: 257,
            dtype: 8,
            index: 3,
            name: b"a".to_vec(),
        }
        .encode_into(&mut v);
        let k = key(256, ty::DIR_ITEM, 1);
        assert_eq!(DirEntry::decode_list(256, k, &v).unwrap().len(), 1);
        assert!(DirEntry::decode_list(256, k, &v[..v.len() - 1]).is_err());
        assert!(DirEntry::decode_list(256, k, &[]).is_err());
    }

    #[test]
    fn birth_times_are_unique_increasing_and_never_behind_the_clock() {
        let mut last = Time::birth();
        for _ in 0..10_000 {
            let before = Time::now();
            let t = Time::birth();
            assert!(t > last && t >= before && t.nsec < 1_000_000_000, "{t:?}");
            last = t;
        }
    }
}
