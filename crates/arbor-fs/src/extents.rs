//! Where files keep their data, for finding data that two files share: a send turns a
//! range whose data extent the receiver already has (earlier in the same stream, in
//! the parent snapshot or in a clone source) into a clone instead of the bytes.

use crate::error::Result;
use crate::file::extents_in;
use crate::fs::Fs;
use crate::ino::Loc;
use crate::items::{ExtentKind, FileExtent, key, ty};

/// A piece of a file held in a data extent on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataPiece {
    /// Where in the file the piece starts, and its length (whole blocks).
    pub file_offset: u64,
    pub len: u64,
    /// The data extent, and how far into it the piece starts: two pieces with the
    /// same extent and overlapping `[extent_offset, extent_offset + len)` share those
    /// bytes on disk.
    pub disk_bytenr: u64,
    pub extent_offset: u64,
    /// More than one file extent item refers to the data extent (it was reflinked,
    /// or its file is in a snapshot that has since diverged), so another file may
    /// share it.
    pub shared: bool,
    /// The transaction that wrote the data: no snapshot older than that holds it.
    pub generation: u64,
}

fn piece(fo: u64, fe: &FileExtent) -> Option<DataPiece> {
    matches!(fe.kind, ExtentKind::Regular { .. }).then_some(DataPiece {
        file_offset: fo,
        len: fe.num_bytes,
        disk_bytenr: fe.disk_bytenr,
        extent_offset: fe.offset,
        shared: false,
        generation: fe.generation,
    })
}

impl Fs {
    /// The pieces of file `ino` (global) in data extents that overlap `[start, end)`,
    /// in file order, whole (not clipped to the range). Holes, preallocated ranges and
    /// inline data have none.
    pub fn data_pieces(&self, ino: u64, start: u64, end: u64) -> Result<Vec<DataPiece>> {
        let at = Loc::of(ino)?;
        self.with_engine(|e| {
            let mut out = Vec::new();
            for (fo, fe) in extents_in(e, at.subvol, at.ino, start, end)? {
                if let Some(mut p) = piece(fo, &fe) {
                    p.shared = e.data_refcount(fe.disk_bytenr)? > 1;
                    out.push(p);
                }
            }
            Ok(out)
        })
    }

    /// Every piece of every file of the subvolume whose root is `root` (global), with
    /// the local inode number it belongs to. This reads all of the subvolume's
    /// metadata; a send does it only for a clone source it needs to search, and only
    /// once it meets shared data.
    pub fn all_data_pieces(&self, root: u64) -> Result<Vec<(u64, DataPiece)>> {
        let at = Loc::of(root)?;
        self.with_engine(|e| {
            let mut out = Vec::new();
            for item in e.range(at.subvol, key(0, 0, 0)..)? {
                let (k, v) = item?;
                if k.ty != ty::EXTENT_DATA {
                    continue;
                }
                let fe = FileExtent::decode(k.objectid, k, &v)?;
                if let Some(p) = piece(k.offset, &fe) {
                    out.push((k.objectid, p));
                }
            }
            Ok(out)
        })
    }
}
