//! A full send: every inode of a read-only snapshot, as `btrfs send` without `-p`
//! sends it. Directories are walked breadth first, so that each inode is made at its
//! first path once its directory exists; further names of an inode become `link`s. A
//! file's data goes in `write`s (or `update_extent`s with `no_data`) that skip holes;
//! `truncate` sets a size that ends in a hole. Each inode then gets its xattrs (before
//! the data, as the kernel sends them), owner, mode and times; directories get their
//! times last, deepest first, once nothing more is made inside them.

use crate::clones::{Clones, Source};
use crate::error::SendError;
use crate::resume::ResumeToken;
use arbor_fs::ino::Loc;
use arbor_fs::{Fs, Inode, ROOT_INO, SubvolInfo, Time};
use arbor_send::wire::{WRITE_CHUNK_V1, WRITE_CHUNK_V2};
use arbor_send::{Command, CommandKind, StreamWriter, Timespec};
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::rc::Rc;

/// How to send.
#[derive(Clone, Debug)]
pub struct SendOptions {
    /// Stream version: 1, or 2 (larger writes, creation times).
    pub version: u32,
    /// Send `update_extent` instead of the data (`btrfs send --no-data`).
    pub no_data: bool,
    /// Read-only snapshots (global root inode numbers) the receiver has, whose data
    /// the stream may clone instead of sending (`btrfs send -c`).
    pub clone_sources: Vec<u64>,
    /// Resume the receive this token describes: send only what it has not applied.
    pub resume: Option<ResumeToken>,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self {
            version: 1,
            no_data: false,
            clone_sources: Vec::new(),
            resume: None,
        }
    }
}

/// What a send sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendStats {
    pub commands: u64,
    pub inodes: u64,
    pub data_bytes: u64,
    /// Bytes sent as clones instead of data.
    pub cloned_bytes: u64,
}

pub(crate) struct Sender<'a, W: Write> {
    pub(crate) fs: &'a Fs,
    pub(crate) out: StreamWriter<W>,
    pub(crate) opts: SendOptions,
    pub(crate) stats: SendStats,
    pub(crate) clones: Clones,
    /// Resuming: commands still to leave out, the digest of those left out so far,
    /// and the digest the receiver noted for them.
    pub(crate) skip: u64,
    pub(crate) skipped_digest: u32,
    pub(crate) want_digest: u32,
}

pub(crate) fn ts(t: Time) -> Timespec {
    Timespec {
        sec: t.sec,
        nsec: t.nsec,
    }
}

pub(crate) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFIFO: u32 = 0o010000;
const S_IFSOCK: u32 = 0o140000;

impl<'a, W: Write> Sender<'a, W> {
    pub(crate) fn new(
        fs: &'a Fs,
        out: W,
        opts: SendOptions,
        clones: Clones,
    ) -> Result<Self, SendError> {
        let out = if opts.resume.is_some() {
            StreamWriter::new_resumed(out, opts.version)?
        } else {
            StreamWriter::new(out, opts.version)?
        };
        Ok(Self {
            fs,
            out,
            opts,
            stats: SendStats::default(),
            clones,
            skip: 0,
            skipped_digest: 0,
            want_digest: 0,
        })
    }

    /// After the subvol or snapshot command: when resuming, checks that the token is
    /// of this stream and says so in an `arbor_resume` command; the commands the
    /// receiver applied are then left out.
    pub(crate) fn start_resume(
        &mut self,
        uuid: [u8; 16],
        ctransid: u64,
        parent: Option<([u8; 16], u64)>,
    ) -> Result<(), SendError> {
        let Some(t) = self.opts.resume else {
            return Ok(());
        };
        if (t.uuid, t.ctransid) != (uuid, ctransid) {
            return Err(SendError::Refused(format!(
                "the resume token is of another snapshot (uuid {}, transaction {})",
                crate::receive::paths::hex(&t.uuid),
                t.ctransid
            )));
        }
        if t.parent() != parent {
            return Err(SendError::Refused(
                "the resume token is of a send with another parent (-p)".into(),
            ));
        }
        if t.version != self.opts.version || self.opts.no_data {
            return Err(SendError::Refused(format!(
                "the resume token is of a version {} stream with data: send with --proto {}",
                t.version, t.version
            )));
        }
        self.emit(Command::ArborResume {
            uuid,
            ctransid,
            skip: t.applied,
        })?;
        self.skip = t.applied;
        self.want_digest = t.digest;
        Ok(())
    }

    /// Whether the next command, of `kind` at `path`, is one the receiver applied
    /// already (resuming); checks the digest once the last such is left out.
    fn skipped(&mut self, kind: CommandKind, path: &[u8]) -> Result<bool, SendError> {
        if self.skip == 0
            || matches!(
                kind,
                CommandKind::Subvol | CommandKind::Snapshot | CommandKind::ArborResume
            )
        {
            return Ok(false);
        }
        self.skipped_digest = crate::resume::digest(self.skipped_digest, kind, path);
        self.skip -= 1;
        if self.skip == 0 && self.skipped_digest != self.want_digest {
            return Err(SendError::Refused(
                "the commands the receiver applied are not those this send makes: resume with the same snapshot, parent (-p) and clone sources (-c) as the interrupted send".into(),
            ));
        }
        Ok(true)
    }

    /// The END command, and what was sent.
    pub(crate) fn finish(mut self) -> Result<SendStats, SendError> {
        if self.skip > 0 {
            return Err(SendError::Refused(format!(
                "the resume token says the receiver applied more commands than this send has ({} too many)",
                self.skip
            )));
        }
        self.emit(Command::End)?;
        self.stats.cloned_bytes = self.clones.cloned_bytes;
        Ok(self.stats)
    }

    pub(crate) fn emit(&mut self, cmd: Command) -> Result<(), SendError> {
        if self.skipped(cmd.kind(), cmd.path().unwrap_or_default())? {
            return Ok(());
        }
        self.out.write_command(&cmd)?;
        self.stats.commands += 1;
        Ok(())
    }

    /// Makes inode `inode` at `path` (not a directory's contents).
    pub(crate) fn make(&mut self, path: &[u8], inode: &Inode, local: u64) -> Result<(), SendError> {
        let path = path.to_vec();
        let mode = u64::from(inode.mode);
        let cmd = match inode.mode & S_IFMT {
            S_IFDIR => Command::Mkdir { path, ino: local },
            S_IFREG => Command::Mkfile { path, ino: local },
            S_IFLNK => {
                let target = self.fs.readlink(inode.ino).map_err(SendError::fs(&path))?;
                Command::Symlink {
                    path,
                    ino: local,
                    path_link: target,
                }
            }
            S_IFIFO => Command::Mkfifo {
                path,
                ino: local,
                rdev: inode.rdev,
                mode,
            },
            S_IFSOCK => Command::Mksock {
                path,
                ino: local,
                rdev: inode.rdev,
                mode,
            },
            _ => Command::Mknod {
                path,
                ino: local,
                rdev: inode.rdev,
                mode,
            },
        };
        self.stats.inodes += 1;
        self.emit(cmd)
    }

    /// Xattrs, data, owner, mode and (except for directories) times of `inode`.
    pub(crate) fn fill(&mut self, path: &[u8], inode: &Inode) -> Result<(), SendError> {
        let mut names = self.fs.listxattr(inode.ino).map_err(SendError::fs(path))?;
        names.sort();
        for name in names {
            let data = self
                .fs
                .getxattr(inode.ino, &name)
                .map_err(SendError::fs(path))?;
            self.emit(Command::SetXattr {
                path: path.to_vec(),
                name,
                data,
            })?;
        }
        if inode.mode & S_IFMT == S_IFREG {
            self.data(path, inode)?;
        }
        self.emit(Command::Chown {
            path: path.to_vec(),
            uid: u64::from(inode.uid),
            gid: u64::from(inode.gid),
        })?;
        if inode.mode & S_IFMT != S_IFLNK {
            self.emit(Command::Chmod {
                path: path.to_vec(),
                mode: u64::from(inode.mode & 0o7777),
            })?;
        }
        if inode.mode & S_IFMT != S_IFDIR {
            self.times(path, inode)?;
        }
        Ok(())
    }

    pub(crate) fn times(&mut self, path: &[u8], inode: &Inode) -> Result<(), SendError> {
        self.emit(Command::Utimes {
            path: path.to_vec(),
            atime: ts(inode.atime),
            mtime: ts(inode.mtime),
            ctime: ts(inode.ctime),
            otime: (self.opts.version >= 2).then(|| ts(inode.crtime)),
        })
    }

    /// The file's data ranges, holes skipped.
    pub(crate) fn data(&mut self, path: &[u8], inode: &Inode) -> Result<(), SendError> {
        let end_written = self.range(path, inode, 0, inode.size, false)?;
        if end_written < inode.size {
            self.emit(Command::Truncate {
                path: path.to_vec(),
                size: inode.size,
            })?;
        }
        Ok(())
    }

    /// Sends the data of `[from, to)` of a file (clipped to its size). Holes are
    /// skipped, or with `clear_holes` cleared on the receiver (a punched hole in v2,
    /// zeros in v1, which has no command for holes). Returns where the last data ended.
    pub(crate) fn range(
        &mut self,
        path: &[u8],
        inode: &Inode,
        from: u64,
        to: u64,
        clear_holes: bool,
    ) -> Result<u64, SendError> {
        let to = to.min(inode.size);
        let mut pos = from;
        let mut end_written = from;
        while pos < to {
            let start = match self.fs.seek(inode.ino, pos, true) {
                Ok(s) => s.min(to),
                Err(arbor_fs::FsError::NoData(_)) => to,
                Err(e) => return Err(SendError::fs(path)(e)),
            };
            if clear_holes && start > pos {
                // A hole that runs to the end of the file takes the whole last block:
                // past the end nothing matters, and a punch of part of a block would
                // leave that block allocated.
                let end = if start >= inode.size && self.opts.version >= 2 && !self.opts.no_data {
                    inode.size.div_ceil(4096) * 4096
                } else {
                    start
                };
                self.hole(path, pos, end.max(start))?;
            }
            if start >= to {
                break;
            }
            let stop = self
                .fs
                .seek(inode.ino, start, false)
                .map_err(SendError::fs(path))?
                .min(to);
            self.segment(path, inode, start, stop)?;
            end_written = stop;
            pos = stop;
        }
        Ok(end_written)
    }

    /// Sends `[start, stop)` of a file, all data: a clone where the receiver already
    /// has the bytes (see [`crate::clones`]), writes for the rest.
    fn segment(
        &mut self,
        path: &[u8],
        inode: &Inode,
        start: u64,
        stop: u64,
    ) -> Result<(), SendError> {
        if self.opts.no_data {
            return self.write(path, inode, start, stop);
        }
        let pieces = self
            .fs
            .data_pieces(inode.ino, start, stop)
            .map_err(SendError::fs(path))?;
        let shared_path: Rc<[u8]> = Rc::from(path);
        let mut at = start;
        for p in &pieces {
            let (a, b) = (p.file_offset.max(start), (p.file_offset + p.len).min(stop));
            let mut pos = a.max(at);
            while pos < b {
                let Some(found) = self.clones.find(self.fs, p, pos, b.min(inode.size))? else {
                    break;
                };
                self.write(path, inode, at, found.dst)?;
                self.emit(Command::Clone {
                    path: path.to_vec(),
                    offset: found.dst,
                    len: found.len,
                    clone_uuid: found.src.uuid,
                    clone_ctransid: found.src.ctransid,
                    clone_path: found.src.path,
                    clone_offset: found.src.offset,
                })?;
                self.clones.cloned_bytes += found.len;
                at = found.dst + found.len;
                pos = at;
            }
            self.write(path, inode, at, b)?;
            at = at.max(b);
            self.clones.sent(&shared_path, inode.size, p, a, b);
        }
        self.write(path, inode, at, stop)
    }

    /// Writes `[from, to)` of a file (`update_extent`s with `no_data`).
    fn write(&mut self, path: &[u8], inode: &Inode, from: u64, to: u64) -> Result<(), SendError> {
        let chunk = if self.opts.version >= 2 {
            WRITE_CHUNK_V2
        } else {
            WRITE_CHUNK_V1
        } as u64;
        let mut at = from;
        while at < to {
            let n = (to - at).min(chunk);
            if self.skipped(CommandKind::Write, path)? {
                // Applied already: not even read.
            } else if self.opts.no_data {
                self.emit(Command::UpdateExtent {
                    path: path.to_vec(),
                    offset: at,
                    len: n,
                })?;
            } else {
                let data = self
                    .fs
                    .read_file(inode.ino, at, n as u32)
                    .map_err(SendError::fs(path))?;
                self.stats.data_bytes += data.len() as u64;
                self.emit(Command::Write {
                    path: path.to_vec(),
                    offset: at,
                    data,
                })?;
            }
            at += n;
        }
        Ok(())
    }

    /// Makes `[from, to)` a hole on the receiver.
    fn hole(&mut self, path: &[u8], from: u64, to: u64) -> Result<(), SendError> {
        if self.opts.no_data {
            return self.emit(Command::UpdateExtent {
                path: path.to_vec(),
                offset: from,
                len: to - from,
            });
        }
        if self.opts.version >= 2 {
            const PUNCH_HOLE_KEEP_SIZE: u32 = 3;
            return self.emit(Command::Fallocate {
                path: path.to_vec(),
                mode: PUNCH_HOLE_KEEP_SIZE,
                offset: from,
                len: to - from,
            });
        }
        let mut at = from;
        while at < to {
            let n = (to - at).min(WRITE_CHUNK_V1 as u64);
            self.emit(Command::Write {
                path: path.to_vec(),
                offset: at,
                data: vec![0; n as usize],
            })?;
            at += n;
        }
        Ok(())
    }
}

/// Sends the read-only subvolume whose root directory is `root` (a global inode
/// number) as `name`, in full, to `out`.
pub fn send_full<W: Write>(
    fs: &Fs,
    root: u64,
    name: &[u8],
    out: W,
    opts: SendOptions,
) -> Result<SendStats, SendError> {
    let at = Loc::of(root).map_err(SendError::fs(b""))?;
    let (info, uuid) = snapshot(fs, root)?;
    let sources = sources(fs, &opts.clone_sources)?;
    let mut s = Sender::new(fs, out, opts, Clones::new(uuid, info.generation, sources))?;
    s.emit(Command::Subvol {
        path: name.to_vec(),
        uuid,
        ctransid: info.generation,
    })?;
    s.start_resume(uuid, info.generation, None)?;
    let top = fs.getattr(root).map_err(SendError::fs(b""))?;
    s.fill(b"", &top)?;
    // First path of every inode sent so far, for hard links.
    let mut made: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut dirs: Vec<(Vec<u8>, Inode)> = vec![(Vec::new(), top)];
    let mut queue: VecDeque<(u64, Vec<u8>)> = VecDeque::from([(root, Vec::new())]);
    while let Some((dir, dir_path)) = queue.pop_front() {
        let mut from = 2;
        loop {
            let batch = fs
                .readdir(dir, from, 1024)
                .map_err(SendError::fs(&dir_path))?;
            let Some(last) = batch.last() else { break };
            from = last.next;
            for entry in batch {
                // A nested subvolume is not part of this one (as in btrfs).
                if Loc::of(entry.ino).map(|l| l.subvol).ok() != Some(at.subvol) {
                    continue;
                }
                let path = join(&dir_path, &entry.name);
                if let Some(first) = made.get(&entry.ino) {
                    s.emit(Command::Link {
                        path: path.clone(),
                        path_link: first.clone(),
                    })?;
                    continue;
                }
                let inode = fs.getattr(entry.ino).map_err(SendError::fs(&path))?;
                let local = Loc::of(entry.ino).map_err(SendError::fs(&path))?.ino;
                s.make(&path, &inode, local)?;
                s.fill(&path, &inode)?;
                if inode.is_dir() {
                    queue.push_back((entry.ino, path.clone()));
                    dirs.push((path.clone(), inode));
                } else if inode.nlink > 1 {
                    made.insert(entry.ino, path);
                }
            }
        }
    }
    // Directory times last, deepest first: nothing is made inside them after this.
    for (path, inode) in dirs.iter().rev() {
        s.times(path, inode)?;
    }
    s.finish()
}

/// A read-only snapshot to send, and the UUID a stream names it by: the one it was
/// received as, if it was received (so that the receiver of a chain of sends finds
/// it), else its own.
pub(crate) fn snapshot(fs: &Fs, root: u64) -> Result<(SubvolInfo, [u8; 16]), SendError> {
    let at = Loc::of(root).map_err(SendError::fs(b""))?;
    if at.ino != ROOT_INO {
        return Err(SendError::Refused(format!(
            "inode {root} is not the root of a subvolume"
        )));
    }
    let info = fs.subvol_info(at.subvol).map_err(SendError::fs(b""))?;
    if !info.item.read_only() {
        return Err(SendError::Refused(format!(
            "subvolume {} is not read-only; send a read-only snapshot of it",
            String::from_utf8_lossy(&info.path)
        )));
    }
    let uuid = if info.item.received_uuid != [0; 16] {
        info.item.received_uuid
    } else {
        info.item.uuid
    };
    Ok((info, uuid))
}

/// The clone sources, each a read-only snapshot.
pub(crate) fn sources(fs: &Fs, roots: &[u64]) -> Result<Vec<Source>, SendError> {
    roots
        .iter()
        .map(|&root| {
            let (info, uuid) = snapshot(fs, root)?;
            Ok(Source::new(root, uuid, info.generation))
        })
        .collect()
}
