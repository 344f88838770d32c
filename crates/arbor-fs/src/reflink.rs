//! Copies between files that share data instead of copying it (`copy_file_range`,
//! reflinks): whole blocks become new references to the source's data extents, in any
//! subvolume of the filesystem; a later write to either file is copy-on-write as
//! always. Bytes that do not line up with blocks are copied.

use crate::error::{FsError, Result};
use crate::file::{MAX_EXTENT, extents_in, fill, max_extent, round_down, round_up};
use crate::fs::{Fs, MAX_FILE_SIZE};
use crate::ino::Loc;
use crate::items::{BLOCK, ExtentKind, key, ty};

impl Fs {
    /// Copies `len` bytes of file `src` at `src_off` to file `dst` at `dst_off` (both
    /// global inode numbers), fewer if the source ends first; returns the bytes
    /// copied. When both offsets are block-aligned, whole blocks are shared with the
    /// source, taking no new space; the rest is copied. The ranges must not overlap
    /// within one file.
    pub fn copy_range(
        &self,
        src: u64,
        src_off: u64,
        dst: u64,
        dst_off: u64,
        len: u64,
    ) -> Result<u64> {
        let (s, d) = (Loc::of(src)?, Loc::of(dst)?);
        self.change(d.subvol, |t| {
            let src_inode = Fs::get_inode(t.e, s.subvol, s.ino)?;
            let mut dst_inode = t.inode(d.ino)?;
            for i in [&src_inode, &dst_inode] {
                if i.is_dir() {
                    return Err(FsError::IsDir);
                }
                if !i.is_reg() {
                    return Err(FsError::Invalid("copy between non-regular files".into()));
                }
            }
            if src_off >= src_inode.size || len == 0 {
                return Ok(0);
            }
            let len = len.min(src_inode.size - src_off);
            let end = dst_off
                .checked_add(len)
                .filter(|&e| e <= MAX_FILE_SIZE)
                .ok_or(FsError::FileTooBig)?;
            if s == d && src_off < end && dst_off < src_off + len {
                return Err(FsError::Invalid("overlapping ranges in one file".into()));
            }
            let pieces = extents_in(t.e, s.subvol, s.ino, src_off, src_off + len)?.len() as u64;
            let copied_bytes = len.min(2 * BLOCK + MAX_EXTENT);
            t.e.reserve(
                t.tree,
                12 + 3 * pieces + 2 * len.div_ceil(max_extent(t.e)),
                copied_bytes + 2 * BLOCK,
            )?;
            let src_inline = Self::is_inline(t.e, s.subvol, s.ino)?;
            // Whole blocks are shared. The last, partial block too when it is the end
            // of the source and nothing of the destination lies past the copy: the
            // source's block is zero past its end, as the destination's must be.
            let mut shared = 0;
            if src_off.is_multiple_of(BLOCK) && dst_off.is_multiple_of(BLOCK) && !src_inline {
                shared = round_down(len);
                if src_off + len == src_inode.size && dst_inode.size <= end {
                    shared = round_up(len);
                }
            }
            if shared > 0 {
                t.materialize_inline(&mut dst_inode)?;
                t.punch(&mut dst_inode, dst_off, dst_off + shared)?;
                let (from, to) = (src_off, src_off + shared);
                for (fo, fe) in extents_in(t.e, s.subvol, s.ino, from, to)? {
                    if matches!(fe.kind, ExtentKind::Inline(_)) {
                        return Err(crate::error::corrupt(
                            s.ino,
                            key(s.ino, ty::EXTENT_DATA, fo),
                            "inline extent next to block extents",
                        ));
                    }
                    let (a, b) = (fo.max(from), (fo + fe.num_bytes).min(to));
                    let piece = fe.slice(a - fo, b - fo);
                    let at = dst_off + (a - from);
                    t.e.insert(t.tree, key(d.ino, ty::EXTENT_DATA, at), &piece.encode())?;
                    t.e.data_ref(fe.disk_bytenr, fe.disk_len, 1)?;
                    dst_inode.nbytes += piece.num_bytes;
                }
            }
            let shared_bytes = shared.min(len);
            let mut pos = shared_bytes;
            while pos < len {
                let n = (len - pos).min(MAX_EXTENT);
                let mut buf = vec![0u8; n as usize];
                let at = src_off + pos;
                let exts = extents_in(t.e, s.subvol, s.ino, at, at + n)?;
                fill(&*t.e.storage(), src, &exts, at, &mut buf)?;
                t.write_data(&mut dst_inode, dst_off + pos, &buf)?;
                pos += n;
            }
            dst_inode.size = dst_inode.size.max(end);
            dst_inode.mtime = t.now;
            dst_inode.ctime = t.now;
            t.kill_privs(&mut dst_inode, false)?;
            t.put_inode(&dst_inode)?;
            Ok(len)
        })
    }

    fn is_inline(e: &arbor_engine::Engine, tree: u64, ino: u64) -> Result<bool> {
        let k = key(ino, ty::EXTENT_DATA, 0);
        Ok(match e.get(tree, k)? {
            Some(v) => matches!(
                crate::items::FileExtent::decode(ino, k, &v)?.kind,
                ExtentKind::Inline(_)
            ),
            None => false,
        })
    }
}
