//! Receiving a stream: [`apply`] checks each command and hands it to a [`Target`],
//! the place the stream is re-created in.
//!
//! * `native.rs`: into arbor, through the filesystem model, with no FUSE round trips.
//! * `plain.rs`: into a directory on any other filesystem, with ordinary system calls.
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
mod plain;
mod target;

pub use native::receive;
pub use plain::{Plain, receive_plain};
pub use target::{CloneFrom, Falloc, NewInode, StreamSubvol, Target};

use crate::error::ReceiveError;
use crate::resume;
use arbor_send::{Command, CommandInfo, StreamReader};
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
/// unfinished (never marked received), and the target is told
/// ([`Target::interrupted`]) so that it can note how far it got.
pub fn apply<T: Target, R: Read>(target: &mut T, input: R) -> Result<ReceiveStats, ReceiveError> {
    let mut reader = StreamReader::new(input)?;
    let mut d = Dispatch {
        target,
        pending: None,
        pending_at: None,
        failed_start: None,
        current: None,
        count: 0,
        digest: 0,
        stats: ReceiveStats::default(),
    };
    let r = d.read_all(&mut reader);
    if r.is_err() {
        d.target.interrupted();
    }
    r.map(|()| d.stats)
}

impl<T: Target> Dispatch<'_, T> {
    /// Applies every command `reader` yields.
    fn read_all<R: Read>(&mut self, reader: &mut StreamReader<R>) -> Result<(), ReceiveError> {
        // Not a `for` loop: the reader's version is read as it goes.
        #[allow(clippy::while_let_on_iterator)]
        while let Some(item) = reader.next() {
            let (info, cmd) = item?;
            let name = cmd.kind().name();
            let announcing = matches!(cmd, Command::Subvol { .. } | Command::Snapshot { .. });
            self.step(cmd, reader.version(), reader.is_resumed())
                .map_err(|reason| {
                    // A subvol or snapshot command that could not be acted on is named
                    // as the failing command, not the one after it.
                    let (info, command) = match self.failed_start.take() {
                        Some(at) => at,
                        None => (info, name),
                    };
                    ReceiveError::Command {
                        index: info.index,
                        offset: info.offset,
                        command,
                        reason,
                    }
                })?;
            if announcing {
                self.pending_at = Some((info, name));
            }
            self.stats.commands += 1;
        }
        if self.current.is_some() || self.pending.is_some() {
            return Err(ReceiveError::Truncated);
        }
        Ok(())
    }
}

struct Dispatch<'t, T> {
    target: &'t mut T,
    /// A subvol or snapshot command not acted on yet: the next command says whether
    /// it starts the subvolume or resumes an unfinished receive of it.
    pending: Option<StreamSubvol>,
    /// Where that command is in the stream, and its name; and the same once acting on
    /// it failed (for the error).
    pending_at: Option<(CommandInfo, &'static str)>,
    failed_start: Option<(CommandInfo, &'static str)>,
    /// The subvolume being received.
    current: Option<StreamSubvol>,
    /// Commands applied after its subvol command, and their digest.
    count: u64,
    digest: u32,
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

    /// A subvol or snapshot command: acted on with the next command.
    fn announce(&mut self, s: StreamSubvol) -> Result<(), String> {
        if self.current.is_some() || self.pending.is_some() {
            return Err("a second subvolume in one stream before END".into());
        }
        single_name(&s.name)?;
        self.pending = Some(s);
        Ok(())
    }

    /// Applies one command, holding the target's commits off around it and noting
    /// the progress after it.
    fn step(&mut self, cmd: Command, version: u32, resumed: bool) -> Result<(), String> {
        let resuming = matches!(cmd, Command::ArborResume { .. });
        if resuming && !resumed {
            return Err("arbor_resume in a stream whose header does not say it resumes".into());
        }
        if resumed && self.pending.is_some() && !resuming {
            return Err(
                "a resumed stream without arbor_resume after its subvol or snapshot command".into(),
            );
        }
        self.step_checked(cmd, version)
    }

    fn step_checked(&mut self, cmd: Command, version: u32) -> Result<(), String> {
        match cmd {
            Command::Subvol {
                path,
                uuid,
                ctransid,
            } => {
                return self.announce(StreamSubvol {
                    name: path,
                    uuid,
                    ctransid,
                    parent: None,
                    version,
                });
            }
            Command::Snapshot {
                path,
                uuid,
                ctransid,
                clone_uuid,
                clone_ctransid,
            } => {
                return self.announce(StreamSubvol {
                    name: path,
                    uuid,
                    ctransid,
                    parent: Some((clone_uuid, clone_ctransid)),
                    version,
                });
            }
            Command::ArborResume {
                uuid,
                ctransid,
                skip,
            } => {
                let s = self.pending.take().ok_or_else(|| {
                    "arbor_resume does not directly follow a subvol or snapshot command".to_string()
                })?;
                if (uuid, ctransid) != (s.uuid, s.ctransid) {
                    return Err("arbor_resume names another subvolume than the stream".into());
                }
                self.pending_at = None;
                self.digest = self.target.resume(&s, skip)?;
                self.count = skip;
                self.current = Some(s);
                return Ok(());
            }
            _ => {}
        }
        self.target.hold()?;
        let r = self.start_pending().and_then(|()| {
            let d = resume::digest_of(self.digest, &cmd);
            let end = cmd == Command::End;
            self.apply(cmd)?;
            Ok((d, end))
        });
        match r {
            Ok((d, end)) => {
                if end {
                    self.count = 0;
                    self.digest = 0;
                } else {
                    self.count += 1;
                    self.digest = d;
                }
                self.target.done(Some((self.count, self.digest)));
                Ok(())
            }
            Err(e) => {
                self.target.done(None);
                Err(e)
            }
        }
    }

    /// Starts the subvolume a subvol or snapshot command announced.
    fn start_pending(&mut self) -> Result<(), String> {
        if let Some(s) = self.pending.take() {
            if let Err(e) = self.target.begin(&s) {
                self.failed_start = self.pending_at.take();
                return Err(e);
            }
            self.current = Some(s);
            self.count = 0;
            self.digest = 0;
        }
        Ok(())
    }

    fn apply(&mut self, cmd: Command) -> Result<(), String> {
        self.current()?;
        let t = &mut *self.target;
        match cmd {
            Command::Subvol { .. } | Command::Snapshot { .. } | Command::ArborResume { .. } => {
                return Err("handled before".into());
            }
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
