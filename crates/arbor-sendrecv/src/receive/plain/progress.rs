//! The progress note of a plain receive that stopped before END: the file
//! `DEST/.<name>.arbor-partial`, holding what the arbor target keeps in its commits
//! (a [`ReceiveProgress`]: the stream's subvolume, parent and version, how many
//! commands after the subvol or snapshot command were fully applied, and their
//! digest). It is what `arbor receive --resume-token` prints as a token and what a
//! resumed stream is checked against.
//!
//! A plain filesystem has no commits that could carry the note with the state, so it
//! is written only when the receive stops on an error it sees (the input ended or
//! broke, a command failed): after a `syncfs`, so that the note never reaches the disk
//! before what it describes, and atomically. A crash or a kill in the middle of a
//! receive leaves no note (the state on disk may be ahead of any note written before),
//! and a resumed receive removes the note before it applies anything: such a directory
//! cannot be resumed, only deleted and received again.
//!
//! The note's generation is the partial directory's ctime when the note was written
//! (see [`stamp`]): an entry added, removed or renamed at its top, a change of its own
//! attributes, or the directory replaced, all show as another ctime, and the resume is
//! refused. Changes deeper in the tree do not reach the root's ctime; nothing cheap on
//! a plain filesystem sees them.

use super::sys::{self, fail, open_beneath, show};
use arbor_fs::subvol_items::ReceiveProgress;
use rustix::fd::BorrowedFd;
use rustix::fs::{self, AtFlags, FileType, OFlags};
use rustix::io::Errno;

const SUFFIX: &[u8] = b".arbor-partial";
const TMP: &[u8] = b".tmp";
/// The first bytes of a note: its format. The note's encoding and a crc32c of both
/// follow.
const MAGIC: &[u8; 8] = b"arborpn1";
const LEN: usize = MAGIC.len() + ReceiveProgress::SIZE + 4;

/// The name of the note of subvolume `name`.
pub(super) fn file_name(name: &[u8]) -> Vec<u8> {
    [b".", name, SUFFIX].concat()
}

fn tmp_name(name: &[u8]) -> Vec<u8> {
    [b".", name, SUFFIX, TMP].concat()
}

/// The subvolume a note's file name is of, if it is one.
pub(super) fn subvol_of(file: &[u8]) -> Option<&[u8]> {
    file.strip_prefix(b".")?
        .strip_suffix(SUFFIX)
        .filter(|n| !n.is_empty())
}

/// Whether `name` is one the notes use, so no subvolume may have it.
pub(super) fn is_reserved(name: &[u8]) -> bool {
    name.starts_with(b".") && (name.ends_with(SUFFIX) || name.ends_with(&[SUFFIX, TMP].concat()))
}

/// What the note's generation holds: the ctime of `root` (the partial directory),
/// seconds and nanoseconds packed as `sec << 30 | nsec`.
pub(super) fn stamp(root: BorrowedFd<'_>) -> Result<u64, Errno> {
    let st = fs::fstat(root)?;
    #[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
    let (sec, nsec) = (
        u64::try_from(st.st_ctime).unwrap_or(0),
        u64::try_from(st.st_ctime_nsec).unwrap_or(0),
    );
    Ok(sec << 30 | nsec)
}

fn encode(note: &ReceiveProgress) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&note.encode());
    let crc = crc32c::crc32c(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

fn decode(b: &[u8]) -> Result<ReceiveProgress, String> {
    if b.len() != LEN {
        return Err(format!("{} bytes, a note has {LEN}", b.len()));
    }
    let (body, crc) = b.split_at(LEN - 4);
    let mut want = [0u8; 4];
    want.copy_from_slice(crc);
    if crc32c::crc32c(body) != u32::from_le_bytes(want) {
        return Err("checksum mismatch".into());
    }
    let note = body
        .strip_prefix(&MAGIC[..])
        .ok_or_else(|| "not a progress note".to_string())?;
    ReceiveProgress::decode(0, ReceiveProgress::key(0), note).map_err(|e| e.to_string())
}

/// Makes what was applied to `root` (the directory `name` in `dest`) durable, then
/// notes `note` (its generation set here, see [`stamp`]) for it; returns the note.
pub(super) fn write(
    dest: BorrowedFd<'_>,
    name: &[u8],
    root: BorrowedFd<'_>,
    note: &ReceiveProgress,
) -> Result<ReceiveProgress, String> {
    let what = show(name);
    fs::syncfs(root).map_err(|e| fail(&what, "syncfs", e))?;
    let note = ReceiveProgress {
        generation: stamp(root).map_err(|e| fail(&what, "stat", e))?,
        ..*note
    };
    sys::replace_file(dest, &tmp_name(name), &file_name(name), &encode(&note))?;
    Ok(note)
}

/// The note of subvolume `name` in `dest`, if there is one.
pub(super) fn read(dest: BorrowedFd<'_>, name: &[u8]) -> Result<Option<ReceiveProgress>, String> {
    let file = file_name(name);
    let what = show(&file);
    let fd = match open_beneath(dest, &file, OFlags::RDONLY | OFlags::NOFOLLOW) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(fail(&what, "open", e)),
    };
    let st = fs::fstat(&fd).map_err(|e| fail(&what, "stat", e))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(format!("{what}: not a regular file"));
    }
    let mut buf = [0u8; LEN + 1];
    let mut n = 0;
    while n < buf.len() {
        match rustix::io::read(&fd, &mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(Errno::INTR) => {}
            Err(e) => return Err(fail(&what, "read", e)),
        }
    }
    decode(&buf[..n])
        .map(Some)
        .map_err(|e| format!("{what}: a damaged progress note ({e})"))
}

/// Removes the note of subvolume `name` (and a temporary one), durably: once the
/// directory moves past the note, or the name is taken anew, the note must not come
/// back after a crash.
pub(super) fn remove(dest: BorrowedFd<'_>, name: &[u8]) -> Result<(), String> {
    let mut gone = false;
    for n in [file_name(name), tmp_name(name)] {
        match fs::unlinkat(dest, &n, AtFlags::empty()) {
            Ok(()) => gone = true,
            Err(Errno::NOENT) => {}
            Err(e) => return Err(fail(&show(&n), "remove", e)),
        }
    }
    if gone {
        fs::fsync(dest).map_err(|e| fail(".", "fsync", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_read_back_and_damaged_ones_are_refused() {
        let note = ReceiveProgress {
            uuid: [3; 16],
            ctransid: 7,
            parent_uuid: [4; 16],
            parent_ctransid: 5,
            version: 2,
            applied: 1234,
            digest: 0xfeed,
            generation: 99 << 30 | 5,
        };
        let b = encode(&note);
        assert_eq!(b.len(), LEN);
        assert_eq!(decode(&b), Ok(note));
        let mut bad = b.clone();
        bad[20] ^= 1;
        assert!(decode(&bad).unwrap_err().contains("checksum"));
        assert!(decode(&b[..LEN - 1]).is_err());
        assert!(decode(b"").is_err());
    }

    #[test]
    fn names() {
        assert_eq!(file_name(b"snap"), b".snap.arbor-partial");
        assert_eq!(subvol_of(b".snap.arbor-partial"), Some(&b"snap"[..]));
        assert_eq!(subvol_of(b"..arbor-partial"), None);
        assert_eq!(subvol_of(b".snap.arbor-partial.tmp"), None);
        assert_eq!(subvol_of(b"snap.arbor-partial"), None);
        assert!(is_reserved(b".snap.arbor-partial"));
        assert!(is_reserved(b".snap.arbor-partial.tmp"));
        assert!(super::super::marker::is_reserved(b".snap.arbor-partial"));
        assert!(!is_reserved(b".snap"));
    }
}
