//! `arbor receive DEST` where DEST is not on an arbor mount (ext4, xfs, tmpfs,
//! btrfs...): the stream is applied in process with ordinary system calls
//! ([`arbor_sendrecv::receive_plain`]), each subvolume becoming the directory
//! `DEST/<name>`. Nothing outside it is touched, whatever the stream says. A plain
//! filesystem has no read-only subvolumes: the result stays writable, and is marked
//! finished (xattr `user.arbor.received`, or the file `DEST/.<name>.arbor-received`)
//! only at the stream's END. An incremental stream's parent must have been received
//! into DEST before; it is copied (reflinked where the filesystem can) and changed.

use crate::progress;
use anyhow::{Context, Result};
use std::fs::File;
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
/// counting the bytes read, and prints the summary.
pub fn run(dest: &Path, input: File, bar: Option<progress::Bar>) -> Result<ExitCode> {
    let input = progress::Counting::new(input, bar.as_deref());
    let r = arbor_sendrecv::receive_plain(dest, std::io::BufReader::with_capacity(1 << 20, input));
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let s = r.with_context(|| format!("receiving into {}", dest.display()))?;
    eprintln!(
        "received {} subvolume(s), {} commands",
        s.subvolumes.len(),
        s.commands
    );
    Ok(ExitCode::SUCCESS)
}
