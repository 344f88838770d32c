//! Receiving a stream into arbor natively: each command is applied through the
//! filesystem model, with no FUSE round trips. A path in a stream is resolved one name at
//! a time inside the subvolume being received, never following symlinks and refusing
//! `.`, `..`, empty components and absolute paths, so nothing outside it is touched
//! whatever the stream says. The subvolume is marked received and made read-only only
//! after the stream's END; until then it is a plain writable subvolume, never mistaken
//! for a finished snapshot.

use crate::error::ReceiveError;
use arbor_fs::ino::Loc;
use arbor_fs::{Caller, Fs, FsError, RenameFlags, SetAttr, SetTime, Time, XattrFlags};
use arbor_send::{Command, CommandInfo, StreamReader, Timespec};
use std::collections::HashMap;
use std::io::Read;

/// What a receive made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiveStats {
    /// The subvolumes made (their global root inode numbers), in stream order.
    pub subvolumes: Vec<u64>,
    pub commands: u64,
    pub data_bytes: u64,
}

const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;
const S_IFMT: u32 = 0o170000;

fn root_caller() -> Caller {
    Caller {
        uid: 0,
        gid: 0,
        umask: 0,
    }
}

fn time(t: Timespec) -> Time {
    Time {
        sec: t.sec,
        nsec: t.nsec,
    }
}

/// The subvolume a stream is being received into.
struct Target {
    /// Global inode number of its root.
    root: u64,
    id: u64,
    /// The sender's UUID and transaction (stored at END).
    uuid: [u8; 16],
    ctransid: u64,
    /// For an incremental stream: the declared parent's UUID (as the stream names it)
    /// and its root here, the only other subvolume clones may read from.
    parent: Option<([u8; 16], u64)>,
}

struct Receiver<'a> {
    fs: &'a Fs,
    /// The directory the subvolumes are made in.
    dest: u64,
    target: Option<Target>,
    /// Paths resolved since the last rename or removal.
    cache: HashMap<Vec<u8>, u64>,
    stats: ReceiveStats,
}

impl Receiver<'_> {
    fn target(&self) -> Result<&Target, String> {
        self.target
            .as_ref()
            .ok_or_else(|| "a command before the first subvol or snapshot command".to_string())
    }

    /// The inode `path` names inside the subvolume being received ("" is its root).
    fn resolve(&mut self, path: &[u8]) -> Result<u64, String> {
        if let Some(&ino) = self.cache.get(path) {
            return Ok(ino);
        }
        let mut ino = self.target()?.root;
        if !path.is_empty() {
            for part in components(path)? {
                ino = self
                    .fs
                    .lookup(ino, part)
                    .map_err(|e| format!("{}: {e}", String::from_utf8_lossy(path)))?
                    .ino;
            }
        }
        self.cache.insert(path.to_vec(), ino);
        Ok(ino)
    }

    /// The directory that holds `path`, and its last name.
    fn parent<'p>(&mut self, path: &'p [u8]) -> Result<(u64, &'p [u8]), String> {
        let parts = components(path)?;
        let Some((name, dirs)) = parts.split_last() else {
            return Err("an empty path where a name is needed".into());
        };
        let dir_len = path.len() - name.len();
        let dir_path = path[..dir_len].strip_suffix(b"/").unwrap_or(&[]);
        let _ = dirs;
        let dir = self.resolve(dir_path)?;
        Ok((dir, name))
    }

    fn make(
        &mut self,
        path: &[u8],
        mode: u32,
        rdev: u64,
        link: Option<&[u8]>,
    ) -> Result<(), String> {
        let (dir, name) = self.parent(path)?;
        let inode = self
            .fs
            .create(dir, name, mode, rdev, root_caller(), link)
            .map_err(|e| fs_err(path, e))?;
        self.cache.insert(path.to_vec(), inode.ino);
        Ok(())
    }

    fn setattr(&mut self, path: &[u8], set: &SetAttr) -> Result<(), String> {
        let ino = self.resolve(path)?;
        self.fs.setattr(ino, set).map_err(|e| fs_err(path, e))?;
        Ok(())
    }

    fn apply(&mut self, cmd: Command) -> Result<(), String> {
        match cmd {
            Command::Subvol {
                path,
                uuid,
                ctransid,
            } => {
                if self.target.is_some() {
                    return Err("a second subvolume in one stream before END".into());
                }
                let name = single_name(&path)?;
                let info = self
                    .fs
                    .subvol_create(self.dest, name, root_caller())
                    .map_err(|e| fs_err(&path, e))?;
                self.cache.clear();
                self.target = Some(Target {
                    root: info.root,
                    id: info.id,
                    uuid,
                    ctransid,
                    parent: None,
                });
            }
            Command::Snapshot {
                path,
                uuid,
                ctransid,
                clone_uuid,
                clone_ctransid,
            } => {
                if self.target.is_some() {
                    return Err("a second subvolume in one stream before END".into());
                }
                let name = single_name(&path)?;
                let id = self
                    .fs
                    .subvol_by_uuid(&clone_uuid)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| {
                        format!(
                            "the parent subvolume (uuid {}) is not here: receive it first",
                            hex(&clone_uuid)
                        )
                    })?;
                let parent = self.fs.subvol_info(id).map_err(|e| e.to_string())?;
                let have = if parent.item.received_uuid == clone_uuid {
                    parent.item.stransid
                } else {
                    parent.generation
                };
                if have != clone_ctransid {
                    return Err(format!(
                        "the parent subvolume {} is at transaction {have}, the stream expects {clone_ctransid}",
                        String::from_utf8_lossy(&parent.path)
                    ));
                }
                let info = self
                    .fs
                    .subvol_snapshot(parent.root, self.dest, name, false)
                    .map_err(|e| fs_err(&path, e))?;
                self.cache.clear();
                self.target = Some(Target {
                    root: info.root,
                    id: info.id,
                    uuid,
                    ctransid,
                    parent: Some((clone_uuid, parent.root)),
                });
            }
            Command::Mkfile { path, .. } => self.make(&path, S_IFREG | 0o600, 0, None)?,
            Command::Mkdir { path, .. } => self.make(&path, S_IFDIR | 0o700, 0, None)?,
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
                if mode & S_IFMT == S_IFREG || mode & S_IFMT == S_IFDIR || mode & S_IFMT == S_IFLNK
                {
                    return Err(format!("mknod with file type {:#o}", mode & S_IFMT));
                }
                self.make(&path, mode, rdev, None)?;
            }
            Command::Symlink {
                path, path_link, ..
            } => self.make(&path, S_IFLNK | 0o777, 0, Some(&path_link))?,
            Command::Rename { path, path_to } => {
                let (from_dir, from) = self.parent(&path)?;
                let (to_dir, to) = self.parent(&path_to)?;
                self.fs
                    .rename(from_dir, from, to_dir, to, RenameFlags::default())
                    .map_err(|e| fs_err(&path, e))?;
                self.cache.clear();
            }
            Command::Link { path, path_link } => {
                let target = self.resolve(&path_link)?;
                let (dir, name) = self.parent(&path)?;
                self.fs
                    .link(target, dir, name)
                    .map_err(|e| fs_err(&path, e))?;
            }
            Command::Unlink { path } => {
                let (dir, name) = self.parent(&path)?;
                self.fs.unlink(dir, name).map_err(|e| fs_err(&path, e))?;
                self.cache.clear();
            }
            Command::Rmdir { path } => {
                let (dir, name) = self.parent(&path)?;
                self.fs.rmdir(dir, name).map_err(|e| fs_err(&path, e))?;
                self.cache.clear();
            }
            Command::SetXattr { path, name, data } => {
                let ino = self.resolve(&path)?;
                self.fs
                    .setxattr(ino, &name, &data, XattrFlags::default())
                    .map_err(|e| fs_err(&path, e))?;
            }
            Command::RemoveXattr { path, name } => {
                let ino = self.resolve(&path)?;
                self.fs
                    .removexattr(ino, &name)
                    .map_err(|e| fs_err(&path, e))?;
            }
            Command::Write { path, offset, data } => {
                let ino = self.resolve(&path)?;
                self.fs
                    .write_file(ino, offset, &data, false)
                    .map_err(|e| fs_err(&path, e))?;
                self.stats.data_bytes += data.len() as u64;
            }
            Command::Clone {
                path,
                offset,
                len,
                clone_uuid,
                clone_ctransid: _,
                clone_path,
                clone_offset,
            } => {
                let source_root = self.clone_source(clone_uuid)?;
                let src = if source_root == self.target()?.root {
                    self.resolve(&clone_path)?
                } else {
                    let mut ino = source_root;
                    for part in components(&clone_path)? {
                        ino = self
                            .fs
                            .lookup(ino, part)
                            .map_err(|e| fs_err(&clone_path, e))?
                            .ino;
                    }
                    ino
                };
                let dst = self.resolve(&path)?;
                let n = self
                    .fs
                    .copy_range(src, clone_offset, dst, offset, len)
                    .map_err(|e| fs_err(&path, e))?;
                if n != len {
                    return Err(format!("clone of {len} bytes found only {n}"));
                }
            }
            Command::Truncate { path, size } => self.setattr(
                &path,
                &SetAttr {
                    size: Some(size),
                    ..Default::default()
                },
            )?,
            Command::Chmod { path, mode } => {
                let mode = u32::try_from(mode & 0o7777).unwrap_or(0);
                self.setattr(
                    &path,
                    &SetAttr {
                        mode: Some(mode),
                        ..Default::default()
                    },
                )?;
            }
            Command::Chown { path, uid, gid } => {
                let id = |n: u64| u32::try_from(n).map_err(|_| format!("id {n} out of range"));
                let set = SetAttr {
                    uid: Some(id(uid)?),
                    gid: Some(id(gid)?),
                    ..Default::default()
                };
                self.setattr(&path, &set)?;
            }
            Command::Utimes {
                path,
                atime,
                mtime,
                ctime,
                otime,
            } => self.setattr(
                &path,
                &SetAttr {
                    atime: Some(SetTime::At(time(atime))),
                    mtime: Some(SetTime::At(time(mtime))),
                    ctime: Some(time(ctime)),
                    crtime: otime.map(time),
                    ..Default::default()
                },
            )?,
            Command::End => {
                let t = self
                    .target
                    .take()
                    .ok_or_else(|| "END without a subvolume".to_string())?;
                self.fs
                    .subvol_set_received(t.id, t.uuid, t.ctransid)
                    .map_err(|e| e.to_string())?;
                self.fs
                    .subvol_set_read_only(t.id, true)
                    .map_err(|e| e.to_string())?;
                self.stats.subvolumes.push(t.root);
            }
            Command::UpdateExtent { .. } => {
                return Err("a --no-data stream cannot be received (it holds no data)".into());
            }
            Command::Fallocate {
                path,
                mode,
                offset,
                len,
            } => {
                let ino = self.resolve(&path)?;
                const KEEP_SIZE: u32 = 1;
                const PUNCH_HOLE: u32 = 2;
                const ZERO_RANGE: u32 = 0x10;
                if mode & !(KEEP_SIZE | PUNCH_HOLE | ZERO_RANGE) != 0 {
                    return Err(format!("fallocate mode {mode:#x}"));
                }
                let m = arbor_fs::FallocMode {
                    keep_size: mode & KEEP_SIZE != 0,
                    punch_hole: mode & PUNCH_HOLE != 0,
                    zero_range: mode & ZERO_RANGE != 0,
                };
                self.fs
                    .fallocate(ino, offset, len, m)
                    .map_err(|e| fs_err(&path, e))?;
            }
            Command::Fileattr { .. } => {
                // btrfs inode flags (nodatacow, compression...) have no arbor meaning.
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

    /// The root of the subvolume a clone reads from: the one being received, or the
    /// parent an incremental stream declared. Nothing else on this filesystem is
    /// readable by a stream.
    fn clone_source(&self, uuid: [u8; 16]) -> Result<u64, String> {
        let t = self.target()?;
        if uuid == t.uuid {
            return Ok(t.root);
        }
        match t.parent {
            Some((p, root)) if p == uuid => Ok(root),
            _ => Err(format!(
                "clone source {} is neither this subvolume nor the declared parent",
                hex(&uuid)
            )),
        }
    }
}

fn hex(u: &[u8; 16]) -> String {
    u.iter().map(|b| format!("{b:02x}")).collect()
}

fn fs_err(path: &[u8], e: FsError) -> String {
    format!("{}: {e}", String::from_utf8_lossy(path))
}

/// A path's names; refuses absolute paths, empty names, `.` and `..`.
fn components(path: &[u8]) -> Result<Vec<&[u8]>, String> {
    if path.first() == Some(&b'/') {
        return Err(format!("absolute path {}", String::from_utf8_lossy(path)));
    }
    path.split(|&b| b == b'/')
        .map(|c| match c {
            b"" | b"." | b".." => Err(format!(
                "path {} has a {:?} component",
                String::from_utf8_lossy(path),
                String::from_utf8_lossy(c)
            )),
            c => Ok(c),
        })
        .collect()
}

fn single_name(path: &[u8]) -> Result<&[u8], String> {
    match components(path)?.as_slice() {
        [one] => Ok(one),
        _ => Err(format!(
            "subvolume name {} is not a single name",
            String::from_utf8_lossy(path)
        )),
    }
}

/// Receives the streams in `input` into directory `dest` (a global inode number) of
/// `fs`, each as a new read-only subvolume. Stops at the first bad command: the
/// subvolume it was making stays writable and unmarked.
pub fn receive<R: Read>(fs: &Fs, dest: u64, input: R) -> Result<ReceiveStats, ReceiveError> {
    let dest_inode = fs
        .getattr(dest)
        .map_err(|e| ReceiveError::Dest(e.to_string()))?;
    if !dest_inode.is_dir() {
        return Err(ReceiveError::Dest("not a directory".into()));
    }
    let _ = Loc::of(dest);
    let reader = StreamReader::new(input)?;
    let mut r = Receiver {
        fs,
        dest,
        target: None,
        cache: HashMap::new(),
        stats: ReceiveStats::default(),
    };
    for item in reader {
        let (info, cmd): (CommandInfo, Command) = item?;
        let name = cmd.kind().name();
        r.apply(cmd).map_err(|reason| ReceiveError::Command {
            index: info.index,
            offset: info.offset,
            command: name,
            reason,
        })?;
        r.stats.commands += 1;
    }
    if r.target.is_some() {
        return Err(ReceiveError::Truncated);
    }
    Ok(r.stats)
}
