//! File data. Small files live inline in their extent item; larger ones in data
//! extents of whole 4 KiB blocks, each block with a crc32c kept in the extent item and
//! checked on every read. Writes never overwrite a block in place: changed blocks go
//! to new extents and the old extents lose a reference (copy-on-write), so a commit
//! switches atomically from the old data to the new.

use crate::error::{FsError, Result};
use crate::fs::{Fs, MAX_FILE_SIZE, Txn};
use crate::ino::Loc;
use crate::items::{BLOCK, EXTENT_HEADER, ExtentKind, FileExtent, Inode, key, ty};
use arbor_engine::Engine;

/// Longest span of file one extent item covers (1 MiB, fewer blocks with small nodes).
pub const MAX_EXTENT: u64 = 1 << 20;

/// What `fallocate` is asked to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FallocMode {
    pub keep_size: bool,
    pub punch_hole: bool,
    pub zero_range: bool,
}

pub(crate) fn round_up(x: u64) -> u64 {
    x.div_ceil(BLOCK) * BLOCK
}

pub(crate) fn round_down(x: u64) -> u64 {
    x / BLOCK * BLOCK
}

/// Bytes a file may keep inline.
fn inline_max(e: &Engine) -> u64 {
    (e.max_value_size().saturating_sub(9) as u64).min(2048)
}

/// Blocks one regular extent item may hold checksums for.
pub(crate) fn max_extent(e: &Engine) -> u64 {
    let by_csums = (e.max_value_size().saturating_sub(EXTENT_HEADER) / 4) as u64 * BLOCK;
    by_csums.min(MAX_EXTENT)
}

/// The extent items of `ino` that overlap `[start, end)`, in file order.
pub(crate) fn extents_in(
    e: &Engine,
    tree: u64,
    ino: u64,
    start: u64,
    end: u64,
) -> Result<Vec<(u64, FileExtent)>> {
    if end <= start {
        return Ok(Vec::new());
    }
    let lo = key(ino, ty::EXTENT_DATA, start.saturating_sub(MAX_EXTENT - 1));
    let hi = key(ino, ty::EXTENT_DATA, end - 1);
    let mut out = Vec::new();
    for item in e.range(tree, lo..=hi)? {
        let (k, v) = item?;
        let fe = FileExtent::decode(ino, k, &v)?;
        if fe.file_len() > MAX_EXTENT && !matches!(fe.kind, ExtentKind::Inline(_)) {
            return Err(crate::error::corrupt(ino, k, "extent longer than 1 MiB"));
        }
        if k.offset + fe.file_len() > start {
            out.push((k.offset, fe));
        }
    }
    Ok(out)
}

/// Reads `[start, end)` of a file from its extents into `buf` (zeros elsewhere),
/// verifying each block read.
pub(crate) fn fill(
    storage: &dyn arbor_engine::storage::Storage,
    ino: u64,
    exts: &[(u64, FileExtent)],
    start: u64,
    buf: &mut [u8],
) -> Result<()> {
    let end = start + buf.len() as u64;
    for (fo, fe) in exts {
        let (s, t) = ((*fo).max(start), (fo + fe.file_len()).min(end));
        if s >= t {
            continue;
        }
        match &fe.kind {
            ExtentKind::Inline(d) => {
                let src = &d[(s - fo) as usize..(t - fo) as usize];
                buf[(s - start) as usize..(t - start) as usize].copy_from_slice(src);
            }
            ExtentKind::Prealloc => {}
            ExtentKind::Regular { csums } => {
                let b0 = (s - fo) / BLOCK;
                let b1 = (t - fo).div_ceil(BLOCK);
                let at = fe.disk_bytenr + fe.offset + b0 * BLOCK;
                let verify = |raw: &[u8]| -> Result<()> {
                    for (i, block) in raw.chunks(BLOCK as usize).enumerate() {
                        let b = b0 as usize + i;
                        if csums.get(b) != Some(&crc32c::crc32c(block)) {
                            return Err(FsError::Checksum {
                                ino,
                                offset: fo + b as u64 * BLOCK,
                                bytenr: fe.disk_bytenr + fe.offset + b as u64 * BLOCK,
                            });
                        }
                    }
                    Ok(())
                };
                let dst = &mut buf[(s - start) as usize..(t - start) as usize];
                if (s - fo).is_multiple_of(BLOCK) && (t - fo).is_multiple_of(BLOCK) {
                    // Whole blocks: read straight into the caller's buffer. On a bad
                    // checksum the buffer is discarded with the error.
                    storage
                        .read_at(at, dst)
                        .map_err(|source| FsError::Io { offset: at, source })?;
                    verify(dst)?;
                } else {
                    let mut raw = vec![0u8; ((b1 - b0) * BLOCK) as usize];
                    storage
                        .read_at(at, &mut raw)
                        .map_err(|source| FsError::Io { offset: at, source })?;
                    verify(&raw)?;
                    let from = (s - fo - b0 * BLOCK) as usize;
                    dst.copy_from_slice(&raw[from..from + (t - s) as usize]);
                }
            }
        }
    }
    Ok(())
}

impl Fs {
    /// Reads up to `size` bytes at `offset` (fewer at the end of the file). Blocks are
    /// read without holding the engine lock.
    pub fn read_file(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let at = Loc::of(ino)?;
        let plan = self.with_engine(|e| {
            let inode = Self::get_inode(e, at.subvol, at.ino)?;
            if inode.is_dir() {
                return Err(FsError::IsDir);
            }
            if offset >= inode.size {
                return Ok(None);
            }
            let end = offset.saturating_add(u64::from(size)).min(inode.size);
            let exts = extents_in(e, at.subvol, at.ino, offset, end)?;
            // Registered under the engine lock: no commit can free these blocks for
            // reuse until the read below is done.
            let reading = self.reading(e.committed_generation());
            Ok(Some((end, exts, e.storage(), reading)))
        })?;
        let Some((end, exts, storage, _reading)) = plan else {
            return Ok(Vec::new());
        };
        let mut buf = vec![0u8; (end - offset) as usize];
        fill(&*storage, ino, &exts, offset, &mut buf)?;
        Ok(buf)
    }

    /// Writes `data` at `offset`; returns the inode after the write.
    pub fn write_file(&self, ino: u64, offset: u64, data: &[u8], kill_suid: bool) -> Result<Inode> {
        let Loc { subvol, ino } = Loc::of(ino)?;
        self.change(subvol, |t| {
            let n = data.len() as u64;
            t.e.reserve(t.tree, 7 + 2 * n.div_ceil(max_extent(t.e)), n + 2 * BLOCK)?;
            let mut inode = t.inode(ino)?;
            if inode.is_dir() {
                return Err(FsError::IsDir);
            }
            t.write_data(&mut inode, offset, data)?;
            inode.mtime = t.now;
            inode.ctime = t.now;
            t.kill_privs(&mut inode, kill_suid)?;
            t.put_inode(&inode)?;
            Ok(inode.clone().in_subvol(subvol))
        })
    }

    /// `fallocate(2)`: preallocate, punch a hole, or zero a range.
    pub fn fallocate(&self, ino: u64, offset: u64, len: u64, mode: FallocMode) -> Result<Inode> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= MAX_FILE_SIZE && len > 0)
            .ok_or(FsError::Invalid(format!("range {offset}+{len}")))?;
        if mode.punch_hole && (!mode.keep_size || mode.zero_range) {
            return Err(FsError::NotSupported("punch hole without keep size"));
        }
        let Loc { subvol, ino } = Loc::of(ino)?;
        self.change(subvol, |t| {
            let mut inode = t.inode(ino)?;
            if !inode.is_reg() {
                return Err(if inode.is_dir() {
                    FsError::IsDir
                } else {
                    FsError::NotSupported("fallocate on a special file")
                });
            }
            let blocks = round_up(end) - round_down(offset);
            let items = 8 + 2 * blocks.div_ceil(max_extent(t.e));
            let data = if mode.punch_hole {
                2 * BLOCK
            } else {
                blocks + 2 * BLOCK
            };
            t.e.reserve(t.tree, items, data)?;
            if mode.punch_hole || mode.zero_range {
                t.zero_range(&mut inode, offset, end)?;
            }
            if !mode.punch_hole {
                t.materialize_inline(&mut inode)?;
                t.preallocate(&mut inode, round_down(offset), round_up(end))?;
                if !mode.keep_size && end > inode.size {
                    inode.size = end;
                }
            }
            inode.ctime = t.now;
            if !mode.keep_size || mode.punch_hole || mode.zero_range {
                inode.mtime = t.now;
            }
            t.put_inode(&inode)?;
            Ok(inode.clone().in_subvol(subvol))
        })
    }

    /// `lseek` with SEEK_DATA (`data`) or SEEK_HOLE. Preallocated extents are holes.
    pub fn seek(&self, ino: u64, offset: u64, data: bool) -> Result<u64> {
        let at = Loc::of(ino)?;
        self.with_engine(|e| Self::seek_in(e, at, offset, data))
    }

    fn seek_in(e: &Engine, at: Loc, offset: u64, data: bool) -> Result<u64> {
        let inode = Self::get_inode(e, at.subvol, at.ino)?;
        if offset >= inode.size {
            return Err(FsError::NoData(offset));
        }
        let exts = extents_in(e, at.subvol, at.ino, offset, inode.size)?;
        let mut pos = offset;
        for (fo, fe) in &exts {
            if matches!(fe.kind, ExtentKind::Prealloc) {
                continue;
            }
            let fend = fo + fe.file_len();
            if data {
                if fend > pos {
                    return Ok((*fo).max(pos));
                }
            } else if *fo > pos {
                return Ok(pos);
            } else {
                pos = pos.max(fend);
            }
        }
        if data {
            Err(FsError::NoData(offset))
        } else {
            Ok(pos.min(inode.size))
        }
    }
}

impl Txn<'_> {
    fn storage_write(&self, at: u64, buf: &[u8]) -> Result<()> {
        self.e
            .storage()
            .write_at(at, buf)
            .map_err(|source| FsError::Io { offset: at, source })
    }

    fn read_range(&self, ino: u64, start: u64, buf: &mut [u8]) -> Result<()> {
        let exts = extents_in(self.e, self.tree, ino, start, start + buf.len() as u64)?;
        fill(&*self.e.storage(), ino, &exts, start, buf)
    }

    /// The inline data of a file, if it is stored inline.
    pub(crate) fn inline_data(&self, ino: u64) -> Result<Option<Vec<u8>>> {
        let k = key(ino, ty::EXTENT_DATA, 0);
        match self.e.get(self.tree, k)? {
            Some(v) => match FileExtent::decode(ino, k, &v)?.kind {
                ExtentKind::Inline(d) => Ok(Some(d)),
                _ => Ok(None),
            },
            None => Ok(None),
        }
    }

    fn has_extents(&self, ino: u64) -> Result<bool> {
        let lo = key(ino, ty::EXTENT_DATA, 0);
        let hi = key(ino, ty::EXTENT_DATA, u64::MAX);
        Ok(self.e.range(self.tree, lo..=hi)?.next().is_some())
    }

    fn put_inline(&mut self, inode: &mut Inode, data: Vec<u8>) -> Result<()> {
        let k = key(inode.ino, ty::EXTENT_DATA, 0);
        if let Some(old) = self.inline_data(inode.ino)? {
            inode.nbytes = inode.nbytes.saturating_sub(old.len() as u64);
        }
        if data.is_empty() {
            self.e.delete(self.tree, k)?;
            return Ok(());
        }
        inode.nbytes += data.len() as u64;
        let fe = FileExtent {
            generation: self.e.transaction_generation(),
            disk_bytenr: 0,
            disk_len: 0,
            offset: 0,
            num_bytes: 0,
            kind: ExtentKind::Inline(data),
        };
        self.e.insert(self.tree, k, &fe.encode())?;
        Ok(())
    }

    /// Moves inline data into a block extent.
    pub(crate) fn materialize_inline(&mut self, inode: &mut Inode) -> Result<()> {
        if let Some(d) = self.inline_data(inode.ino)? {
            self.put_inline(inode, Vec::new())?;
            let mut block = d;
            block.resize(BLOCK as usize, 0);
            self.write_blocks(inode, 0, &block)?;
        }
        Ok(())
    }

    /// Writes `data` at `off`, growing the file as needed (not its times).
    pub(crate) fn write_data(&mut self, inode: &mut Inode, off: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = off
            .checked_add(data.len() as u64)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(FsError::FileTooBig)?;
        let new_size = inode.size.max(end);
        let inline = self.inline_data(inode.ino)?;
        if new_size <= inline_max(self.e) && (inline.is_some() || !self.has_extents(inode.ino)?) {
            let mut content = inline.unwrap_or_default();
            content.resize(new_size as usize, 0);
            content[off as usize..end as usize].copy_from_slice(data);
            self.put_inline(inode, content)?;
            inode.size = new_size;
            return Ok(());
        }
        self.materialize_inline(inode)?;
        let (bs, be) = (round_down(off), round_up(end));
        let mut buf = vec![0u8; (be - bs) as usize];
        let b = BLOCK as usize;
        let head_old = off > bs && bs < inode.size;
        if head_old {
            self.read_range(inode.ino, bs, &mut buf[..b])?;
        }
        let tail = be - BLOCK;
        if end < be && tail < inode.size && !(tail == bs && head_old) {
            let n = buf.len();
            self.read_range(inode.ino, tail, &mut buf[n - b..])?;
        }
        buf[(off - bs) as usize..(end - bs) as usize].copy_from_slice(data);
        self.write_blocks(inode, bs, &buf)?;
        inode.size = new_size;
        Ok(())
    }

    /// Replaces whole blocks `[at, at + buf.len())` with new extents holding `buf`.
    fn write_blocks(&mut self, inode: &mut Inode, at: u64, buf: &[u8]) -> Result<()> {
        self.punch(inode, at, at + buf.len() as u64)?;
        let max = max_extent(self.e);
        let mut pos = 0usize;
        while pos < buf.len() {
            let want = (buf.len() - pos).min(max as usize) as u64;
            let (bytenr, got) = self.alloc_run(want)?;
            let chunk = &buf[pos..pos + got as usize];
            self.storage_write(bytenr, chunk)?;
            let csums = chunk.chunks(BLOCK as usize).map(crc32c::crc32c).collect();
            let kind = ExtentKind::Regular { csums };
            self.add_extent(inode, at + pos as u64, bytenr, got, kind)?;
            pos += got as usize;
        }
        Ok(())
    }

    /// Maps file offset `at` to the whole of the new data extent `[bytenr, +len)`.
    fn add_extent(
        &mut self,
        inode: &mut Inode,
        at: u64,
        bytenr: u64,
        len: u64,
        kind: ExtentKind,
    ) -> Result<()> {
        let fe = FileExtent {
            generation: self.e.transaction_generation(),
            disk_bytenr: bytenr,
            disk_len: len,
            offset: 0,
            num_bytes: len,
            kind,
        };
        let k = key(inode.ino, ty::EXTENT_DATA, at);
        self.e.insert(self.tree, k, &fe.encode())?;
        inode.nbytes += len;
        Ok(())
    }

    /// Allocates up to `want` bytes, in a smaller run if free space is fragmented.
    fn alloc_run(&mut self, want: u64) -> Result<(u64, u64)> {
        let mut len = want;
        loop {
            match self.e.alloc_data(len) {
                Ok(b) => return Ok((b, len)),
                Err(arbor_engine::Error::NoSpace { .. }) if len > BLOCK => {
                    len = round_up(len / 2);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Removes the file's data in block-aligned `[from, to)`, leaving a hole.
    pub(crate) fn punch(&mut self, inode: &mut Inode, from: u64, to: u64) -> Result<()> {
        for (fo, fe) in extents_in(self.e, self.tree, inode.ino, from, to)? {
            if let ExtentKind::Inline(mut d) = fe.kind {
                if from < d.len() as u64 {
                    d.truncate(from as usize);
                    self.put_inline(inode, d)?;
                }
                continue;
            }
            self.e
                .delete(self.tree, key(inode.ino, ty::EXTENT_DATA, fo))?;
            inode.nbytes = inode.nbytes.saturating_sub(fe.num_bytes);
            let mut pieces = 0i64;
            // What stays of the extent on either side of the hole: the part before
            // `from` (if it starts before) and the part after `to` (if it ends after).
            let sides = [
                (fo, 0, from.saturating_sub(fo)),
                (to, to.saturating_sub(fo), fe.num_bytes),
            ];
            for (at, from_in, to_in) in sides {
                if from_in < to_in {
                    let piece = fe.slice(from_in, to_in);
                    let k = key(inode.ino, ty::EXTENT_DATA, at);
                    self.e.insert(self.tree, k, &piece.encode())?;
                    inode.nbytes += piece.num_bytes;
                    pieces += 1;
                }
            }
            if pieces != 1 {
                self.e.data_ref(fe.disk_bytenr, fe.disk_len, pieces - 1)?;
            }
        }
        Ok(())
    }

    /// Sets the file size, freeing data past a smaller size. The bytes past the end in
    /// the last block are zeroed, so that growing the file later shows zeros there.
    pub(crate) fn truncate(&mut self, inode: &mut Inode, size: u64) -> Result<()> {
        let n = inode.size.saturating_sub(size) / MAX_EXTENT + 8;
        self.e.reserve(self.tree, n, 2 * BLOCK)?;
        if size < inode.size {
            if let Some(mut d) = self.inline_data(inode.ino)? {
                d.truncate(size as usize);
                self.put_inline(inode, d)?;
            } else {
                self.punch(inode, round_up(size), u64::MAX)?;
                if !size.is_multiple_of(BLOCK) {
                    self.zero_tail(inode, size)?;
                }
            }
        }
        inode.size = size;
        Ok(())
    }

    /// Zeroes the bytes from `size` to the end of its block, if that block holds data.
    fn zero_tail(&mut self, inode: &mut Inode, size: u64) -> Result<()> {
        let bs = round_down(size);
        let exts = extents_in(self.e, self.tree, inode.ino, bs, bs + BLOCK)?;
        if !exts
            .iter()
            .any(|(_, fe)| matches!(fe.kind, ExtentKind::Regular { .. }))
        {
            return Ok(());
        }
        let mut block = vec![0u8; BLOCK as usize];
        fill(&*self.e.storage(), inode.ino, &exts, bs, &mut block)?;
        block[(size - bs) as usize..].fill(0);
        self.write_blocks(inode, bs, &block)
    }

    /// Makes `[from, to)` read as zeros (within the file's size; punch and zero-range).
    fn zero_range(&mut self, inode: &mut Inode, from: u64, to: u64) -> Result<()> {
        if let Some(mut d) = self.inline_data(inode.ino)? {
            let len = d.len() as u64;
            if from < len {
                d[from as usize..to.min(len) as usize].fill(0);
                self.put_inline(inode, d)?;
            }
            return Ok(());
        }
        let (inner_from, inner_to) = (round_up(from), round_down(to));
        for b in [round_down(from), round_down(to)] {
            let (s, e) = (from.max(b), to.min(b + BLOCK));
            if s >= e || (s == b && e == b + BLOCK) || b >= inode.size {
                continue;
            }
            let exts = extents_in(self.e, self.tree, inode.ino, b, b + BLOCK)?;
            if !exts
                .iter()
                .any(|(_, fe)| matches!(fe.kind, ExtentKind::Regular { .. }))
            {
                continue;
            }
            let mut block = vec![0u8; BLOCK as usize];
            fill(&*self.e.storage(), inode.ino, &exts, b, &mut block)?;
            block[(s - b) as usize..(e - b) as usize].fill(0);
            self.write_blocks(inode, b, &block)?;
            if round_down(from) == round_down(to) {
                break;
            }
        }
        if inner_from < inner_to {
            self.punch(inode, inner_from, inner_to)?;
        }
        Ok(())
    }

    /// Allocates preallocated extents in the holes of block-aligned `[from, to)`.
    fn preallocate(&mut self, inode: &mut Inode, from: u64, to: u64) -> Result<()> {
        let exts = extents_in(self.e, self.tree, inode.ino, from, to)?;
        let mut holes = Vec::new();
        let mut pos = from;
        for (fo, fe) in &exts {
            if *fo > pos {
                holes.push((pos, (*fo).min(to)));
            }
            pos = pos.max(fo + fe.file_len());
        }
        if pos < to {
            holes.push((pos, to));
        }
        let max = max_extent(self.e);
        for (mut s, e) in holes {
            while s < e {
                let (bytenr, got) = self.alloc_run((e - s).min(max))?;
                self.add_extent(inode, s, bytenr, got, ExtentKind::Prealloc)?;
                s += got;
            }
        }
        Ok(())
    }
}
