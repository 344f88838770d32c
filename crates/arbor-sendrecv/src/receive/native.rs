//! Receiving into arbor natively: each command is applied through the filesystem
//! model, with no FUSE round trips. Paths are resolved one name at a time inside the
//! subvolume being received ([`Fs::lookup`] never follows a symlink). The subvolume is
//! a plain writable one until END, when it is marked received and made read-only.

use super::paths::{hex, names, split};
use super::target::{CloneFrom, Falloc, NewInode, StreamSubvol, Target};
use super::{ReceiveStats, apply};
use crate::error::ReceiveError;
use arbor_fs::ino::Loc;
use arbor_fs::subvol_items::ReceiveProgress;
use arbor_fs::{
    Caller, CommitHold, Fs, FsError, RenameFlags, SetAttr, SetTime, SubvolInfo, Time, XattrFlags,
};
use arbor_send::Timespec;
use std::collections::HashMap;
use std::io::Read;

const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;

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

fn fs_err(path: &[u8], e: FsError) -> String {
    format!("{}: {e}", String::from_utf8_lossy(path))
}

/// The subvolume being received.
struct Current {
    /// Global inode number of its root, and its id.
    root: u64,
    id: u64,
    /// The declared parent's root here, for clones.
    parent_root: Option<u64>,
    /// The progress note: the stream (UUID and transaction recorded at END) and how
    /// far it got.
    note: ReceiveProgress,
}

/// Receives into a directory of an arbor filesystem.
pub(crate) struct Native<'a> {
    fs: &'a Fs,
    /// The directory the subvolumes are made in.
    dest: u64,
    current: Option<Current>,
    /// Paths resolved since the last rename or removal.
    cache: HashMap<Vec<u8>, u64>,
    /// Commits wait while a command applies (see [`Target::hold`]).
    hold: Option<CommitHold<'a>>,
}

impl<'a> Native<'a> {
    pub(crate) fn new(fs: &'a Fs, dest: u64) -> Result<Self, ReceiveError> {
        let dest_inode = fs
            .getattr(dest)
            .map_err(|e| ReceiveError::Dest(e.to_string()))?;
        if !dest_inode.is_dir() {
            return Err(ReceiveError::Dest("not a directory".into()));
        }
        Ok(Self {
            fs,
            dest,
            current: None,
            cache: HashMap::new(),
            hold: None,
        })
    }

    fn current(&self) -> Result<&Current, String> {
        self.current
            .as_ref()
            .ok_or_else(|| "no subvolume is being received".to_string())
    }

    /// The inode `path` names below `root` ("" is `root` itself).
    fn walk(&self, root: u64, path: &[u8]) -> Result<u64, String> {
        let mut ino = root;
        for part in names(path)? {
            ino = self.fs.lookup(ino, part).map_err(|e| fs_err(path, e))?.ino;
        }
        Ok(ino)
    }

    /// The inode `path` names inside the subvolume being received.
    fn resolve(&mut self, path: &[u8]) -> Result<u64, String> {
        if let Some(&ino) = self.cache.get(path) {
            return Ok(ino);
        }
        let ino = self.walk(self.current()?.root, path)?;
        self.cache.insert(path.to_vec(), ino);
        Ok(ino)
    }

    /// The directory that holds `path`, and its last name.
    fn parent<'p>(&mut self, path: &'p [u8]) -> Result<(u64, &'p [u8]), String> {
        let (dir, name) = split(path)?;
        Ok((self.resolve(dir)?, name))
    }

    fn setattr(&mut self, path: &[u8], set: &SetAttr) -> Result<(), String> {
        let ino = self.resolve(path)?;
        self.fs.setattr(ino, set).map_err(|e| fs_err(path, e))?;
        Ok(())
    }

    /// The subvolume a stream names by `uuid` (the UUID it was received as, or its
    /// own) at transaction `ctransid`; `what` says what it is to the stream.
    fn find(&self, uuid: [u8; 16], ctransid: u64, what: &str) -> Result<SubvolInfo, String> {
        let id = self
            .fs
            .subvol_by_uuid(&uuid)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "the {what} (uuid {}) is not here: receive it first",
                    hex(&uuid)
                )
            })?;
        let info = self.fs.subvol_info(id).map_err(|e| e.to_string())?;
        let have = if info.item.received_uuid == uuid {
            info.item.stransid
        } else {
            info.generation
        };
        if have != ctransid {
            return Err(format!(
                "the {what} {} is at transaction {have}, the stream expects {ctransid}",
                String::from_utf8_lossy(&info.path)
            ));
        }
        Ok(info)
    }

    /// Receives into subvolume `id` (root `root`) from now on, whose progress is `note`.
    fn start(&mut self, root: u64, id: u64, parent_root: Option<u64>, note: ReceiveProgress) {
        self.cache.clear();
        self.fs.set_receive_progress(id, Some(note));
        self.current = Some(Current {
            root,
            id,
            parent_root,
            note,
        });
    }

    /// Receives into the new subvolume `id` (root `root`) the stream `s` makes.
    fn start_new(&mut self, s: &StreamSubvol, root: u64, id: u64, parent_root: Option<u64>) {
        self.start(root, id, parent_root, s.fresh_progress());
    }
}

impl<'a> Target for Native<'a> {
    fn hold(&mut self) -> Result<(), String> {
        self.hold = Some(self.fs.hold_commits().map_err(|e| e.to_string())?);
        Ok(())
    }

    fn done(&mut self, progress: Option<(u64, u32)>) {
        if let (Some((applied, digest)), Some(c)) = (progress, self.current.as_mut()) {
            c.note.applied = applied;
            c.note.digest = digest;
            self.fs.set_receive_progress(c.id, Some(c.note));
        }
        self.hold = None;
    }

    fn resume(&mut self, s: &StreamSubvol, skip: u64) -> Result<u32, String> {
        let name = String::from_utf8_lossy(&s.name).into_owned();
        // Notes still in memory get the subvolume's generation as they are written.
        self.fs.sync().map_err(|e| e.to_string())?;
        let ino = self
            .fs
            .lookup(self.dest, &s.name)
            .map_err(|e| format!("{name}: {e}: nothing to resume"))?
            .ino;
        let at = Loc::of(ino).map_err(|e| e.to_string())?;
        if at.ino != arbor_fs::ROOT_INO || at == Loc::of(self.dest).map_err(|e| e.to_string())? {
            return Err(format!("{name} is not a subvolume: nothing to resume"));
        }
        let info = self.fs.subvol_info(at.subvol).map_err(|e| e.to_string())?;
        let note = self
            .fs
            .receive_progress(at.subvol)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{name} is not an unfinished receive"))?;
        crate::resume::check_fit(&note, s, skip, &name)?;
        if info.generation != note.generation {
            return Err(format!(
                "{name} changed since its receive stopped; delete it and receive again"
            ));
        }
        let parent_root = match s.parent {
            Some((uuid, ctransid)) => Some(self.find(uuid, ctransid, "parent subvolume")?.root),
            None => None,
        };
        self.start(info.root, info.id, parent_root, note);
        Ok(note.digest)
    }

    fn begin(&mut self, s: &StreamSubvol) -> Result<(), String> {
        let Some((parent_uuid, parent_ctransid)) = s.parent else {
            let info = self
                .fs
                .subvol_create(self.dest, &s.name, root_caller())
                .map_err(|e| fs_err(&s.name, e))?;
            self.start_new(s, info.root, info.id, None);
            return Ok(());
        };
        let parent = self.find(parent_uuid, parent_ctransid, "parent subvolume")?;
        let info = self
            .fs
            .subvol_snapshot(parent.root, self.dest, &s.name, false)
            .map_err(|e| fs_err(&s.name, e))?;
        self.start_new(s, info.root, info.id, Some(parent.root));
        Ok(())
    }

    fn make(&mut self, path: &[u8], what: NewInode<'_>) -> Result<(), String> {
        let (mode, rdev, link) = match what {
            NewInode::File => (S_IFREG | 0o600, 0, None),
            NewInode::Dir => (S_IFDIR | 0o700, 0, None),
            NewInode::Symlink(t) => (S_IFLNK | 0o777, 0, Some(t)),
            NewInode::Special { mode, rdev } => (mode, rdev, None),
        };
        let (dir, name) = self.parent(path)?;
        let inode = self
            .fs
            .create(dir, name, mode, rdev, root_caller(), link)
            .map_err(|e| fs_err(path, e))?;
        self.cache.insert(path.to_vec(), inode.ino);
        Ok(())
    }

    fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<(), String> {
        let (from_dir, from_name) = self.parent(from)?;
        let (to_dir, to_name) = self.parent(to)?;
        self.fs
            .rename(from_dir, from_name, to_dir, to_name, RenameFlags::default())
            .map_err(|e| fs_err(from, e))?;
        self.cache.clear();
        Ok(())
    }

    fn link(&mut self, path: &[u8], existing: &[u8]) -> Result<(), String> {
        let target = self.resolve(existing)?;
        let (dir, name) = self.parent(path)?;
        self.fs
            .link(target, dir, name)
            .map_err(|e| fs_err(path, e))?;
        Ok(())
    }

    fn unlink(&mut self, path: &[u8]) -> Result<(), String> {
        let (dir, name) = self.parent(path)?;
        self.fs.unlink(dir, name).map_err(|e| fs_err(path, e))?;
        self.cache.clear();
        Ok(())
    }

    fn rmdir(&mut self, path: &[u8]) -> Result<(), String> {
        let (dir, name) = self.parent(path)?;
        self.fs.rmdir(dir, name).map_err(|e| fs_err(path, e))?;
        self.cache.clear();
        Ok(())
    }

    fn set_xattr(&mut self, path: &[u8], name: &[u8], data: &[u8]) -> Result<(), String> {
        let ino = self.resolve(path)?;
        self.fs
            .setxattr(ino, name, data, XattrFlags::default())
            .map_err(|e| fs_err(path, e))?;
        Ok(())
    }

    fn remove_xattr(&mut self, path: &[u8], name: &[u8]) -> Result<(), String> {
        let ino = self.resolve(path)?;
        self.fs
            .removexattr(ino, name)
            .map_err(|e| fs_err(path, e))?;
        Ok(())
    }

    fn write(&mut self, path: &[u8], offset: u64, data: &[u8]) -> Result<(), String> {
        let ino = self.resolve(path)?;
        self.fs
            .write_file(ino, offset, data, false)
            .map_err(|e| fs_err(path, e))?;
        Ok(())
    }

    fn clone_range(
        &mut self,
        path: &[u8],
        offset: u64,
        len: u64,
        from: CloneFrom,
        src: &[u8],
        src_offset: u64,
    ) -> Result<(), String> {
        let src_ino = match from {
            CloneFrom::This => self.resolve(src)?,
            CloneFrom::Parent => {
                let root = self
                    .current()?
                    .parent_root
                    .ok_or_else(|| "a clone from a parent in a full stream".to_string())?;
                self.walk(root, src)?
            }
            CloneFrom::Other { uuid, ctransid } => {
                let source = self.find(uuid, ctransid, "clone source")?;
                let dir = Loc::new(source.parent.unwrap_or(0), source.dirid).global();
                if source.parent.is_none() || dir != self.dest || !source.item.read_only() {
                    return Err(format!(
                        "clone source {} is not a read-only snapshot in the destination directory",
                        String::from_utf8_lossy(&source.path)
                    ));
                }
                self.walk(source.root, src)?
            }
        };
        let dst = self.resolve(path)?;
        let n = self
            .fs
            .copy_range(src_ino, src_offset, dst, offset, len)
            .map_err(|e| fs_err(path, e))?;
        if n != len {
            return Err(format!("clone of {len} bytes found only {n}"));
        }
        Ok(())
    }

    fn truncate(&mut self, path: &[u8], size: u64) -> Result<(), String> {
        self.setattr(
            path,
            &SetAttr {
                size: Some(size),
                ..Default::default()
            },
        )
    }

    fn chmod(&mut self, path: &[u8], mode: u32) -> Result<(), String> {
        self.setattr(
            path,
            &SetAttr {
                mode: Some(mode),
                ..Default::default()
            },
        )
    }

    fn chown(&mut self, path: &[u8], uid: u32, gid: u32) -> Result<(), String> {
        self.setattr(
            path,
            &SetAttr {
                uid: Some(uid),
                gid: Some(gid),
                ..Default::default()
            },
        )
    }

    fn utimes(
        &mut self,
        path: &[u8],
        atime: Timespec,
        mtime: Timespec,
        ctime: Timespec,
        otime: Option<Timespec>,
    ) -> Result<(), String> {
        self.setattr(
            path,
            &SetAttr {
                atime: Some(SetTime::At(time(atime))),
                mtime: Some(SetTime::At(time(mtime))),
                ctime: Some(time(ctime)),
                crtime: otime.map(time),
                ..Default::default()
            },
        )
    }

    fn fallocate(
        &mut self,
        path: &[u8],
        mode: Falloc,
        offset: u64,
        len: u64,
    ) -> Result<(), String> {
        let ino = self.resolve(path)?;
        let m = arbor_fs::FallocMode {
            keep_size: mode.keep_size,
            punch_hole: mode.punch_hole,
            zero_range: mode.zero_range,
        };
        self.fs
            .fallocate(ino, offset, len, m)
            .map_err(|e| fs_err(path, e))?;
        Ok(())
    }

    fn finish(&mut self) -> Result<u64, String> {
        let c = self
            .current
            .take()
            .ok_or_else(|| "END without a subvolume".to_string())?;
        self.fs
            .subvol_set_received(c.id, c.note.uuid, c.note.ctransid)
            .map_err(|e| e.to_string())?;
        self.fs
            .subvol_set_read_only(c.id, true)
            .map_err(|e| e.to_string())?;
        self.fs.set_receive_progress(c.id, None);
        Ok(c.root)
    }
}

/// Receives the streams in `input` into directory `dest` (a global inode number) of
/// `fs`, each as a new read-only subvolume. Stops at the first bad command: the
/// subvolume it was making stays writable and unmarked.
pub fn receive<R: Read>(fs: &Fs, dest: u64, input: R) -> Result<ReceiveStats, ReceiveError> {
    let mut target = Native::new(fs, dest)?;
    apply(&mut target, input)
}
