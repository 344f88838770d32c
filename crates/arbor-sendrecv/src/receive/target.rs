//! What a stream does to the place it is received into, one call per command, after
//! the dispatcher ([`super::apply`]) has checked the command: its paths hold no `..`,
//! `.`, empty or absolute parts, it comes after a subvol or snapshot command, its
//! mode and sizes are sane, and a clone reads only from the subvolume being received
//! or the declared parent. A target resolves paths itself, never following a
//! symlink on the way.

use arbor_fs::subvol_items::ReceiveProgress;
use arbor_send::Timespec;

/// The subvolume a stream makes, as its subvol or snapshot command names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSubvol {
    /// Its name in the destination directory (one name).
    pub name: Vec<u8>,
    /// The sender's UUID and transaction: recorded as received at END.
    pub uuid: [u8; 16],
    pub ctransid: u64,
    /// For an incremental stream: the parent's UUID (as the stream names it) and
    /// transaction, which the receiver must already have.
    pub parent: Option<([u8; 16], u64)>,
    /// The stream's version.
    pub version: u32,
}

impl StreamSubvol {
    /// The progress note of a receive of this stream that has applied nothing yet.
    pub fn fresh_progress(&self) -> ReceiveProgress {
        let (parent_uuid, parent_ctransid) = self.parent.unwrap_or_default();
        ReceiveProgress {
            uuid: self.uuid,
            ctransid: self.ctransid,
            parent_uuid,
            parent_ctransid,
            version: self.version,
            ..Default::default()
        }
    }
}

/// What a make command makes.
#[derive(Clone, Copy, Debug)]
pub enum NewInode<'a> {
    File,
    Dir,
    Symlink(&'a [u8]),
    /// A device, fifo or socket: full mode with its file type, and device number.
    Special {
        mode: u32,
        rdev: u64,
    },
}

/// Where a clone reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloneFrom {
    /// The subvolume being received.
    This,
    /// The incremental stream's parent.
    Parent,
    /// Another snapshot the receiver has (a `-c` clone source of the sender), by the
    /// UUID and transaction the stream names. A target accepts only a finished,
    /// read-only one in the destination directory: a stream reads nothing outside it.
    Other { uuid: [u8; 16], ctransid: u64 },
}

/// A fallocate the stream asks for.
#[derive(Clone, Copy, Debug, Default)]
pub struct Falloc {
    pub keep_size: bool,
    pub punch_hole: bool,
    pub zero_range: bool,
}

/// The place a stream is received into. Errors are reasons, in words; the dispatcher
/// adds the command's index and offset.
pub trait Target {
    /// Starts the subvolume `s` (a subvol or snapshot command).
    fn begin(&mut self, s: &StreamSubvol) -> Result<(), String>;
    /// Continues the unfinished receive of `s`, which applied its first `skip`
    /// commands already (the stream's `arbor_resume` command); returns the digest of
    /// those commands the target noted. A target that keeps no progress refuses.
    fn resume(&mut self, s: &StreamSubvol, skip: u64) -> Result<u32, String> {
        let _ = (s, skip);
        Err("this destination cannot resume a receive".into())
    }
    /// Called before each command: a target that notes its progress holds commits off
    /// until [`Target::done`], so that the note and the state never part.
    fn hold(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Called after each command (`Some`: it applied, and now `count` commands after
    /// the subvol command have, with `digest`; `None`: it failed).
    fn done(&mut self, progress: Option<(u64, u32)>) {
        let _ = progress;
    }
    /// Called once when the receive stops on an error after the stream's header (the
    /// input ended or broke, a command failed): a target whose commits do not carry
    /// its progress notes it now, so that the receive can resume.
    fn interrupted(&mut self) {}
    fn make(&mut self, path: &[u8], what: NewInode<'_>) -> Result<(), String>;
    fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<(), String>;
    /// Gives the inode at `existing` the further name `path`.
    fn link(&mut self, path: &[u8], existing: &[u8]) -> Result<(), String>;
    fn unlink(&mut self, path: &[u8]) -> Result<(), String>;
    fn rmdir(&mut self, path: &[u8]) -> Result<(), String>;
    fn set_xattr(&mut self, path: &[u8], name: &[u8], data: &[u8]) -> Result<(), String>;
    fn remove_xattr(&mut self, path: &[u8], name: &[u8]) -> Result<(), String>;
    fn write(&mut self, path: &[u8], offset: u64, data: &[u8]) -> Result<(), String>;
    /// Copies `len` bytes at `src_offset` of `src` (in `from`) to `offset` of `path`,
    /// sharing the data where the target can.
    #[allow(clippy::too_many_arguments)]
    fn clone_range(
        &mut self,
        path: &[u8],
        offset: u64,
        len: u64,
        from: CloneFrom,
        src: &[u8],
        src_offset: u64,
    ) -> Result<(), String>;
    fn truncate(&mut self, path: &[u8], size: u64) -> Result<(), String>;
    /// Permission bits only (07777).
    fn chmod(&mut self, path: &[u8], mode: u32) -> Result<(), String>;
    fn chown(&mut self, path: &[u8], uid: u32, gid: u32) -> Result<(), String>;
    fn utimes(
        &mut self,
        path: &[u8],
        atime: Timespec,
        mtime: Timespec,
        ctime: Timespec,
        otime: Option<Timespec>,
    ) -> Result<(), String>;
    fn fallocate(&mut self, path: &[u8], mode: Falloc, offset: u64, len: u64)
    -> Result<(), String>;
    /// The stream's END for the current subvolume: record it as received and make it
    /// read-only, where the target can. Returns an identifier of what was made (arbor:
    /// the subvolume root's inode number).
    fn finish(&mut self) -> Result<u64, String>;
}
