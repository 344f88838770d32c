//! Finding data the receiver already has, so that a send clones it instead of
//! sending the bytes, as `btrfs send` does: data extents sent earlier in the same
//! stream, and those of the clone sources (the parent of an incremental send and
//! every `-c` snapshot).
//!
//! Two files share bytes when their extent items point into the same data extent at
//! overlapping places. The stream's own extents are remembered as they are sent. A
//! clone source is searched through an index of all its extents, built the first
//! time the send meets a data extent that more than one item refers to (only such an
//! extent can be in another file) and that was written before the source was made; a
//! send of new data, or of data nobody shares, never builds one.
//!
//! Clones are of whole blocks only, as the btrfs clone ioctl requires; a partial last
//! block is written.

use crate::error::SendError;
use arbor_fs::ino::Loc;
use arbor_fs::{DataPiece, Fs, ROOT_INO};
use std::collections::HashMap;

const BLOCK: u64 = 4096;

/// Where a clone reads from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CloneSrc {
    pub(crate) uuid: [u8; 16],
    pub(crate) ctransid: u64,
    pub(crate) path: Vec<u8>,
    pub(crate) offset: u64,
}

/// A clone found for `[dst, dst + len)` of the file being sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) dst: u64,
    pub(crate) len: u64,
    pub(crate) src: CloneSrc,
}

/// Bytes of a data extent a file holds: `[extent_offset, extent_offset + len)` of the
/// extent is `[file_offset, file_offset + len)` of the file.
#[derive(Clone, Copy, Debug)]
struct Span {
    file_offset: u64,
    extent_offset: u64,
    len: u64,
}

impl Span {
    fn of(p: &DataPiece) -> Self {
        Self {
            file_offset: p.file_offset,
            extent_offset: p.extent_offset,
            len: p.len,
        }
    }
}

/// A snapshot the receiver has.
pub(crate) struct Source {
    pub(crate) root: u64,
    pub(crate) uuid: [u8; 16],
    pub(crate) ctransid: u64,
    /// Data extent → (local inode, what of it the inode holds); built when first needed.
    index: Option<HashMap<u64, Vec<(u64, Span)>>>,
}

impl Source {
    pub(crate) fn new(root: u64, uuid: [u8; 16], ctransid: u64) -> Self {
        Self {
            root,
            uuid,
            ctransid,
            index: None,
        }
    }
}

/// Sent so far in this stream: the file's path on the receiver, its size, and a span.
struct Sent {
    path: std::rc::Rc<[u8]>,
    size: u64,
    span: Span,
}

pub(crate) struct Clones {
    /// The stream's own subvolume, as the stream names it.
    pub(crate) uuid: [u8; 16],
    pub(crate) ctransid: u64,
    sent: HashMap<u64, Vec<Sent>>,
    sources: Vec<Source>,
    /// Clone commands found, and the bytes they saved.
    pub(crate) cloned_bytes: u64,
}

/// The part of `want` (extent offsets `[a, b)`) that `have` holds, clipped so that
/// the source stays inside `[0, src_end)` of its file: the file range it maps to in
/// the destination and in the source, both block-aligned, or none.
fn overlap(want_a: u64, want_b: u64, have: &Span, src_end: u64) -> Option<(u64, u64, u64)> {
    let s = want_a.max(have.extent_offset);
    let mut e = want_b.min(have.extent_offset + have.len);
    // The source bytes of extent offset x are at file offset have.file_offset + x -
    // have.extent_offset; keep them below src_end.
    let src_of = |x: u64| have.file_offset + (x - have.extent_offset);
    if s >= e {
        return None;
    }
    if src_of(e) > src_end {
        e = s + src_end.saturating_sub(src_of(s));
    }
    // Whole blocks only.
    let len = (e.saturating_sub(s)) / BLOCK * BLOCK;
    if len == 0 || !src_of(s).is_multiple_of(BLOCK) {
        return None;
    }
    Some((s, len, src_of(s)))
}

impl Clones {
    pub(crate) fn new(uuid: [u8; 16], ctransid: u64, sources: Vec<Source>) -> Self {
        Self {
            uuid,
            ctransid,
            sent: HashMap::new(),
            sources,
            cloned_bytes: 0,
        }
    }

    /// A clone for the start (or some part) of `[from, to)` of piece `p` of the file
    /// being sent (`to` within the piece and the file's size rounded down to a block),
    /// searching this stream's data first, then the sources in order.
    pub(crate) fn find(
        &mut self,
        fs: &Fs,
        p: &DataPiece,
        from: u64,
        to: u64,
    ) -> Result<Option<Found>, SendError> {
        let to = to / BLOCK * BLOCK;
        if from >= to || !from.is_multiple_of(BLOCK) {
            return Ok(None);
        }
        let want_a = p.extent_offset + (from - p.file_offset);
        let want_b = want_a + (to - from);
        let at = |s: u64| from + (s - want_a);
        let mut best: Option<Found> = None;
        for sent in self.sent.get(&p.disk_bytenr).into_iter().flatten() {
            if let Some((s, len, src_off)) =
                overlap(want_a, want_b, &sent.span, sent.size / BLOCK * BLOCK)
            {
                consider(
                    &mut best,
                    Found {
                        dst: at(s),
                        len,
                        src: CloneSrc {
                            uuid: self.uuid,
                            ctransid: self.ctransid,
                            path: sent.path.to_vec(),
                            offset: src_off,
                        },
                    },
                );
            }
        }
        if best.as_ref().is_some_and(|b| b.dst == from) || !p.shared {
            return Ok(best);
        }
        for source in &mut self.sources {
            // Data written after the source was made cannot be in it.
            if p.generation > source.ctransid {
                continue;
            }
            if source.index.is_none() {
                let mut index: HashMap<u64, Vec<(u64, Span)>> = HashMap::new();
                for (ino, piece) in fs
                    .all_data_pieces(source.root)
                    .map_err(SendError::fs(b""))?
                {
                    index
                        .entry(piece.disk_bytenr)
                        .or_default()
                        .push((ino, Span::of(&piece)));
                }
                source.index = Some(index);
            }
            let Some(holders) = source.index.as_ref().and_then(|i| i.get(&p.disk_bytenr)) else {
                continue;
            };
            let sub = Loc::of(source.root).map_err(SendError::fs(b""))?.subvol;
            for &(ino, span) in holders {
                let size = fs
                    .getattr(Loc::new(sub, ino).global())
                    .map_err(SendError::fs(b""))?
                    .size;
                let Some((s, len, src_off)) = overlap(want_a, want_b, &span, size / BLOCK * BLOCK)
                else {
                    continue;
                };
                if best.as_ref().is_some_and(|b| b.dst <= at(s)) {
                    continue;
                }
                let Some(path) = path_in(fs, source.root, ino)? else {
                    continue;
                };
                consider(
                    &mut best,
                    Found {
                        dst: at(s),
                        len,
                        src: CloneSrc {
                            uuid: source.uuid,
                            ctransid: source.ctransid,
                            path,
                            offset: src_off,
                        },
                    },
                );
            }
            if best.as_ref().is_some_and(|b| b.dst == from) {
                break;
            }
        }
        Ok(best)
    }

    /// Remembers that `[from, to)` of piece `p` is now at `path` on the receiver, in a
    /// file that will be `size` bytes long.
    pub(crate) fn sent(
        &mut self,
        path: &std::rc::Rc<[u8]>,
        size: u64,
        p: &DataPiece,
        from: u64,
        to: u64,
    ) {
        if from >= to {
            return;
        }
        self.sent.entry(p.disk_bytenr).or_default().push(Sent {
            path: path.clone(),
            size,
            span: Span {
                file_offset: from,
                extent_offset: p.extent_offset + (from - p.file_offset),
                len: to - from,
            },
        });
    }
}

/// Keeps the better of `best` and `f`: the earlier start, then the longer.
fn consider(best: &mut Option<Found>, f: Found) {
    let rank = |x: &Found| (x.dst, std::cmp::Reverse(x.len));
    if best.as_ref().is_none_or(|b| rank(&f) < rank(b)) {
        *best = Some(f);
    }
}

/// A path of local inode `ino` in the subvolume whose root is `root`, if it has one.
fn path_in(fs: &Fs, root: u64, ino: u64) -> Result<Option<Vec<u8>>, SendError> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut at = ino;
    for _ in 0..4096 {
        if at == ROOT_INO {
            parts.reverse();
            return Ok(Some(parts.join(&b'/')));
        }
        let names = fs.names_of(root, at).map_err(SendError::fs(b""))?;
        let Some((dir, name)) = names.into_iter().next() else {
            return Ok(None);
        };
        parts.push(name);
        at = dir;
    }
    Ok(None)
}
