//! What marks a directory as a finished received snapshot on a plain filesystem, where
//! there is no received UUID and no read-only flag: the xattr `user.arbor.received` =
//! `"<uuid hex> <ctransid>"` on its root, or, where the filesystem has no user xattrs,
//! the same text in the sidecar file `DEST/.<name>.arbor-received`. It is written only
//! at the stream's END, after the data is on disk (syncfs), so a stream cut short
//! leaves a directory that is never taken for a finished snapshot, nor for a parent.

use super::sys::{self, fail, open_beneath, read_dir, show};
use crate::receive::paths::hex;
use rustix::fd::{BorrowedFd, OwnedFd};
use rustix::fs::{self, AtFlags, Dir, FileType, OFlags};
use rustix::io::Errno;

/// The xattr that holds the marker.
pub(super) const XATTR: &[u8] = b"user.arbor.received";

const SUFFIX: &[u8] = b".arbor-received";
const TMP: &[u8] = b".tmp";

fn sidecar(name: &[u8]) -> Vec<u8> {
    [b".", name, SUFFIX].concat()
}

fn sidecar_tmp(name: &[u8]) -> Vec<u8> {
    [b".", name, SUFFIX, TMP].concat()
}

/// Whether `name` is one the markers or the progress notes (`progress.rs`) use, so no
/// subvolume may have it.
pub(super) fn is_reserved(name: &[u8]) -> bool {
    let marker = name.starts_with(b".")
        && (name.ends_with(SUFFIX) || name.ends_with(&[SUFFIX, TMP].concat()));
    marker || super::progress::is_reserved(name)
}

/// What a marker says: the sender's UUID and transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Mark {
    pub uuid: [u8; 16],
    pub ctransid: u64,
}

impl Mark {
    fn text(&self) -> String {
        format!("{} {}", hex(&self.uuid), self.ctransid)
    }

    fn parse(b: &[u8]) -> Option<Mark> {
        let s = std::str::from_utf8(b).ok()?.trim();
        let (u, t) = s.split_once(' ')?;
        if u.len() != 32 {
            return None;
        }
        let mut uuid = [0u8; 16];
        for (i, byte) in uuid.iter_mut().enumerate() {
            *byte = u8::from_str_radix(u.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Mark {
            uuid,
            ctransid: t.parse().ok()?,
        })
    }
}

/// Removes a sidecar left by an earlier `name` (deleted since), so that it cannot mark
/// the new, unfinished directory.
pub(super) fn forget(dest: BorrowedFd<'_>, name: &[u8]) -> Result<(), String> {
    for n in [sidecar(name), sidecar_tmp(name)] {
        match fs::unlinkat(dest, &n, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(fail(&show(&n), "remove the stale marker", e)),
        }
    }
    Ok(())
}

/// Marks `root` (the directory `name` in `dest`) finished.
pub(super) fn record(
    dest: BorrowedFd<'_>,
    name: &[u8],
    root: BorrowedFd<'_>,
    mark: Mark,
) -> Result<(), String> {
    let what = show(name);
    // The marker must not reach the disk before what it vouches for.
    fs::syncfs(root).map_err(|e| fail(&what, "syncfs", e))?;
    let text = mark.text();
    match fs::fsetxattr(root, XATTR, text.as_bytes(), fs::XattrFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::OPNOTSUPP) => write_sidecar(dest, name, &text),
        Err(e) => Err(fail(&what, "set the received marker", e)),
    }
}

fn write_sidecar(dest: BorrowedFd<'_>, name: &[u8], text: &str) -> Result<(), String> {
    sys::replace_file(
        dest,
        &sidecar_tmp(name),
        &sidecar(name),
        format!("{text}\n").as_bytes(),
    )
}

/// The marker of directory `dir` (named `name` in `dest`), if it has one.
pub(super) fn read(dest: BorrowedFd<'_>, name: &[u8], dir: BorrowedFd<'_>) -> Option<Mark> {
    let mut buf = [0u8; 128];
    match fs::fgetxattr(dir, XATTR, &mut buf[..]) {
        Ok(n) => Mark::parse(&buf[..n]),
        Err(Errno::OPNOTSUPP) => {
            let fd = open_beneath(dest, &sidecar(name), OFlags::RDONLY | OFlags::NOFOLLOW).ok()?;
            let st = fs::fstat(&fd).ok()?;
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                return None;
            }
            let n = rustix::io::read(&fd, &mut buf[..]).ok()?;
            Mark::parse(&buf[..n])
        }
        Err(_) => None,
    }
}

/// The directory in `dest` that is the finished received snapshot `want`, opened
/// (readable), with its name; `what` says what it is to the stream, for the error.
pub(super) fn find(
    dest: BorrowedFd<'_>,
    want: Mark,
    what: &str,
) -> Result<(Vec<u8>, OwnedFd), String> {
    let mut dir = Dir::read_from(dest).map_err(|e| fail(".", "read the destination", e))?;
    let mut near: Option<(Vec<u8>, u64)> = None;
    while let Some(entry) = dir.read() {
        let entry = entry.map_err(|e| fail(".", "read the destination", e))?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." || is_reserved(name) {
            continue;
        }
        if !matches!(entry.file_type(), FileType::Directory | FileType::Unknown) {
            continue;
        }
        // Not a directory, a symlink, a mount point: not a snapshot received here.
        let Ok(fd) = read_dir(dest, name) else {
            continue;
        };
        match read(dest, name, rustix::fd::AsFd::as_fd(&fd)) {
            Some(m) if m == want => return Ok((name.to_vec(), fd)),
            Some(m) if m.uuid == want.uuid => near = Some((name.to_vec(), m.ctransid)),
            _ => {}
        }
    }
    Err(match near {
        Some((name, have)) => format!(
            "the {what} {} (uuid {}) is at transaction {have}, the stream expects {}",
            show(&name),
            hex(&want.uuid),
            want.ctransid
        ),
        None => format!(
            "the {what} (uuid {}, transaction {}) is not here: receive it first",
            hex(&want.uuid),
            want.ctransid
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_read_back_and_garbage_is_no_mark() {
        let m = Mark {
            uuid: [0xab; 16],
            ctransid: 42,
        };
        assert_eq!(Mark::parse(m.text().as_bytes()), Some(m));
        assert_eq!(Mark::parse(format!("{}\n", m.text()).as_bytes()), Some(m));
        for bad in ["", "abc 1", "zz 1", &format!("{} x", hex(&[1; 16]))] {
            assert!(Mark::parse(bad.as_bytes()).is_none(), "{bad}");
        }
        assert!(is_reserved(b".snap.arbor-received"));
        assert!(is_reserved(b".snap.arbor-received.tmp"));
        assert!(!is_reserved(b"snap.arbor-received"));
        assert!(!is_reserved(b".snap"));
    }
}
