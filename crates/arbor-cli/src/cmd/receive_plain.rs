//! `arbor receive DEST` where DEST is not on an arbor mount (ext4, xfs, tmpfs,
//! btrfs...): the stream is applied in process with ordinary system calls
//! ([`arbor_sendrecv::receive_plain`]), each subvolume becoming the directory
//! `DEST/<name>`. Nothing outside it is touched, whatever the stream says. A plain
//! filesystem has no read-only subvolumes: the result stays writable, and is marked
//! finished (xattr `user.arbor.received`, or the file `DEST/.<name>.arbor-received`)
//! only at the stream's END. An incremental stream's parent must have been received
//! into DEST before; it is copied (reflinked where the filesystem can) and changed.
//!
//! A receive cut short (the input ended or broke, a command failed) leaves the note
//! `DEST/.<name>.arbor-partial`: `arbor receive --resume-token` prints it as a token
//! for `arbor send --resume`, as on arbor. A receive killed or crashed leaves none and
//! cannot be resumed.

use crate::progress;
use anyhow::{Context, Result};
use arbor_sendrecv::PlainTarget;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;

/// Whether `dest` is on a mounted arbor filesystem. The mount whose device is
/// `dest`'s says: `fuse.arbor` is arbor; but the daemon mounts with type plain `fuse`
/// (the subtype does not show in /proc/self/mountinfo), so a `fuse` mount is arbor when
/// arbor's control socket for that device exists. Without a readable mountinfo, the
/// socket alone decides. Every other type (ext4, xfs, tmpfs, btrfs, other FUSE
/// filesystems) is received into with ordinary system calls.
pub fn on_arbor(dest: &Path) -> Result<bool> {
    let dev = std::fs::metadata(dest)
        .with_context(|| format!("cannot stat {}", dest.display()))?
        .dev();
    let daemon = || arbor_ctl::socket_for_dev(dev).exists();
    // The last mount of a device is the one on top.
    let fstype = crate::mountinfo::mounts()
        .ok()
        .and_then(|m| m.into_iter().rev().find(|m| m.dev == dev))
        .map(|m| m.fstype);
    Ok(match fstype.as_deref() {
        Some("fuse.arbor") => true,
        Some("fuse") | None => daemon(),
        Some(_) => false,
    })
}

/// Receives the streams in `input` into the directory `dest`, with `bar` (when shown)
/// counting the bytes read, and prints the summary; after a failure, how to resume.
pub fn run(dest: &Path, input: File, bar: Option<progress::Bar>) -> Result<ExitCode> {
    let context = || format!("receiving into {}", dest.display());
    let mut target = PlainTarget::new(dest).with_context(context)?;
    let input = progress::Counting::new(input, bar.as_deref());
    let r = arbor_sendrecv::apply(
        &mut target,
        std::io::BufReader::with_capacity(1 << 20, input),
    );
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let s = r
        .map_err(|e| anyhow::anyhow!("{e}{}", resume_hint(dest, &target)))
        .with_context(context)?;
    eprintln!(
        "received {} subvolume(s), {} commands",
        s.subvolumes.len(),
        s.commands
    );
    Ok(ExitCode::SUCCESS)
}

/// After a failed receive: how to resume it, if it left a progress note.
fn resume_hint(dest: &Path, target: &PlainTarget) -> String {
    let Some((name, _)) = target.partial() else {
        return String::new();
    };
    let dir = dest.join(OsStr::from_bytes(name)).display().to_string();
    super::receive::hint_text("directory", &dir, &dir, dest)
}

/// `--resume-token` on a plain filesystem: the unfinished receives `path` is or holds,
/// as (name, resume token). `path` itself is one when its parent holds its progress
/// note (`.<name>.arbor-partial`); else those whose notes `path` holds are.
pub fn unfinished(path: &Path) -> Result<Vec<(String, String)>> {
    let full = path
        .canonicalize()
        .with_context(|| format!("cannot find {}", path.display()))?;
    if let (Some(parent), Some(name)) = (full.parent(), full.file_name()) {
        let mine = PlainTarget::new(parent)
            .and_then(|t| t.unfinished())
            .ok()
            .and_then(|found| found.into_iter().find(|(n, _)| n == name.as_bytes()));
        if let Some((_, token)) = mine {
            return Ok(vec![(path.display().to_string(), token.to_string())]);
        }
    }
    let found = PlainTarget::new(path)
        .and_then(|t| t.unfinished())
        .with_context(|| format!("looking for unfinished receives in {}", path.display()))?;
    Ok(found
        .into_iter()
        .map(|(name, token)| {
            (
                String::from_utf8_lossy(&name).into_owned(),
                token.to_string(),
            )
        })
        .collect())
}
