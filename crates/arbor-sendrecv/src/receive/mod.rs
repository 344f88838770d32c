//! Receiving a stream: [`apply`] checks each command and hands it to a [`Target`],
//! the place the stream is re-created in.
//!
//! * `native.rs`: into arbor, through the filesystem model, with no FUSE round trips.
//!
//! Whatever the stream says, nothing outside the subvolume being received is touched:
//! every path is checked here (no `..`, `.`, empty or absolute parts) and resolved by
//! the target one name at a time without following symlinks; a command before the
//! first subvol or snapshot command is refused; a clone may read only the subvolume
//! being received, the declared parent, or a finished read-only snapshot in the
//! destination directory (a `-c` source of the sender). The result is marked received
//! (and made read-only where the target can) only at the stream's END.

mod native;
pub(crate) mod paths;
mod target;

pub use native::receive;
pub use target::{CloneFrom, Falloc, NewInode, StreamSubvol, Target};

use crate::error::ReceiveError;
use arbor_send::{Command, StreamReader};
use paths::{components, names, single_name, split};
use std::io::Read;

/// What a receive made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiveStats {
    /// What each finished subvolume is (for arbor, its root's global inode number),
    /// in stream order.
    pub subvolumes: Vec<u64>,
    pub commands: u64,
    pub data_bytes: u64,
}

const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;
const S_IFMT: u32 = 0o170000;

/// Applies every stream in `input` to `target`. Stops at the first bad command, which
/// the error names by index and byte offset; the subvolume being made then stays
/// unfinished (never marked received).
pub fn apply<T: Target, R: Read>(target: &mut T, input: R) -> Result<ReceiveStats, ReceiveError> {
    let reader = StreamReader::new(input)?;
    let mut d = Dispatch {
        target,
        current: None,
        stats: ReceiveStats::default(),
    };
    for item in reader {
        let (info, cmd) = item?;
        let name = cmd.kind().name();
        d.apply(cmd).map_err(|reason| ReceiveError::Command {
            index: info.index,
            offset: info.offset,
            command: name,
            reason,
        })?;
        d.stats.commands += 1;
    }
    if d.current.is_some() {
        return Err(ReceiveError::Truncated);
    }
    Ok(d.stats)
}

struct Dispatch<'t, T> {
    target: &'t mut T,
    /// The subvolume being received.
    current: Option<StreamSubvol>,
    stats: ReceiveStats,
}

/// Checks a path that names something inside the subvolume ("" is its root).
fn path(p: &[u8]) -> Result<&[u8], String> {
    names(p)?;
    Ok(p)
}

/// Checks a path that names an entry (not the root).
fn entry(p: &[u8]) -> Result<&[u8], String> {
    split(p)?;
    Ok(p)
}

impl<T: Target> Dispatch<'_, T> {
    fn current(&self) -> Result<&StreamSubvol, String> {
        self.current
            .as_ref()
            .ok_or_else(|| "a command before the first subvol or snapshot command".to_string())
    }

    fn begin(&mut self, s: StreamSubvol) -> Result<(), String> {
        if self.current.is_some() {
            return Err("a second subvolume in one stream before END".into());
        }
        single_name(&s.name)?;
        self.target.begin(&s)?;
        self.current = Some(s);
        Ok(())
    }

    fn apply(&mut self, cmd: Command) -> Result<(), String> {
        if !matches!(cmd, Command::Subvol { .. } | Command::Snapshot { .. }) {
            self.current()?;
        }
        let t = &mut *self.target;
        match cmd {
            Command::Subvol {
                path,
                uuid,
                ctransid,
            } => self.begin(StreamSubvol {
                name: path,
                uuid,
                ctransid,
                parent: None,
            })?,
            Command::Snapshot {
                path,
                uuid,
                ctransid,
                clone_uuid,
                clone_ctransid,
            } => self.begin(StreamSubvol {
                name: path,
                uuid,
                ctransid,
                parent: Some((clone_uuid, clone_ctransid)),
            })?,
            Command::Mkfile { path, .. } => t.make(entry(&path)?, NewInode::File)?,
            Command::Mkdir { path, .. } => t.make(entry(&path)?, NewInode::Dir)?,
            Command::Mknod {
                path, rdev, mode, ..
            }
            | Command::Mkfifo {
                path, rdev, mode, ..
            }
            | Command::Mksock {
                path, rdev, mode, ..
            } => {
                let mode = u32::try_from(mode).map_err(|_| format!("mode {mode:#o}"))?;
                let kind = mode & S_IFMT;
                if kind == 0 || kind == S_IFREG || kind == S_IFDIR || kind == S_IFLNK {
                    return Err(format!("mknod with file type {kind:#o}"));
                }
                t.make(entry(&path)?, NewInode::Special { mode, rdev })?;
            }
            Command::Symlink {
                path, path_link, ..
            } => {
                if path_link.is_empty() {
                    return Err("a symlink with an empty target".into());
                }
                t.make(entry(&path)?, NewInode::Symlink(&path_link))?;
            }
            Command::Rename { path, path_to } => t.rename(entry(&path)?, entry(&path_to)?)?,
            Command::Link { path, path_link } => t.link(entry(&path)?, entry(&path_link)?)?,
            Command::Unlink { path } => t.unlink(entry(&path)?)?,
            Command::Rmdir { path } => t.rmdir(entry(&path)?)?,
            Command::SetXattr {
                path: p,
                name,
                data,
            } => t.set_xattr(path(&p)?, &name, &data)?,
            Command::RemoveXattr { path: p, name } => t.remove_xattr(path(&p)?, &name)?,
            Command::Write {
                path: p,
                offset,
                data,
            } => {
                offset
                    .checked_add(data.len() as u64)
                    .ok_or_else(|| format!("write at {offset} runs past 2^64"))?;
                t.write(path(&p)?, offset, &data)?;
                self.stats.data_bytes += data.len() as u64;
            }
            Command::Clone {
                path: p,
                offset,
                len,
                clone_uuid,
                clone_ctransid,
                clone_path,
                clone_offset,
            } => {
                let cur = self.current()?;
                let from = if clone_uuid == cur.uuid {
                    CloneFrom::This
                } else if cur.parent.is_some_and(|(u, _)| u == clone_uuid) {
                    CloneFrom::Parent
                } else {
                    CloneFrom::Other {
                        uuid: clone_uuid,
                        ctransid: clone_ctransid,
                    }
                };
                for (at, what) in [(offset, "destination"), (clone_offset, "source")] {
                    at.checked_add(len)
                        .ok_or_else(|| format!("clone {what} range runs past 2^64"))?;
                }
                components(&clone_path)?;
                self.target
                    .clone_range(path(&p)?, offset, len, from, &clone_path, clone_offset)?;
            }
            Command::Truncate { path: p, size } => t.truncate(path(&p)?, size)?,
            Command::Chmod { path: p, mode } => t.chmod(path(&p)?, (mode & 0o7777) as u32)?,
            Command::Chown { path: p, uid, gid } => {
                let id = |n: u64| u32::try_from(n).map_err(|_| format!("id {n} out of range"));
                t.chown(path(&p)?, id(uid)?, id(gid)?)?;
            }
            Command::Utimes {
                path: p,
                atime,
                mtime,
                ctime,
                otime,
            } => t.utimes(path(&p)?, atime, mtime, ctime, otime)?,
            Command::End => {
                let made = self.target.finish()?;
                self.current = None;
                self.stats.subvolumes.push(made);
            }
            Command::UpdateExtent { .. } => {
                return Err("a --no-data stream cannot be received (it holds no data)".into());
            }
            Command::Fallocate {
                path: p,
                mode,
                offset,
                len,
            } => {
                const KEEP_SIZE: u32 = 1;
                const PUNCH_HOLE: u32 = 2;
                const ZERO_RANGE: u32 = 0x10;
                if mode & !(KEEP_SIZE | PUNCH_HOLE | ZERO_RANGE) != 0 {
                    return Err(format!("fallocate mode {mode:#x}"));
                }
                offset
                    .checked_add(len)
                    .ok_or_else(|| format!("fallocate at {offset} runs past 2^64"))?;
                let m = Falloc {
                    keep_size: mode & KEEP_SIZE != 0,
                    punch_hole: mode & PUNCH_HOLE != 0,
                    zero_range: mode & ZERO_RANGE != 0,
                };
                t.fallocate(path(&p)?, m, offset, len)?;
            }
            Command::Fileattr { .. } => {
                // btrfs inode flags (nodatacow, compression...) have no meaning here.
            }
            Command::EncodedWrite { .. } => {
                return Err(
                    "compressed data (encoded_write) is not received yet: send without --compressed-data"
                        .into(),
                );
            }
            Command::EnableVerity { .. } => {
                return Err("fs-verity is not supported".into());
            }
        }
        Ok(())
    }
}
