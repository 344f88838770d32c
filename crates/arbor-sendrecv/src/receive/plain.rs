//! Receiving into a directory on any other filesystem (ext4, xfs, tmpfs, btrfs...): the
//! tree is re-created with ordinary system calls, which `btrfs receive` cannot do.
//!
//! Each subvolume becomes a directory `DEST/<name>`. Every path of the stream is
//! resolved below that directory's descriptor by `openat2` with `RESOLVE_BENEATH`,
//! `RESOLVE_NO_SYMLINKS`, `RESOLVE_NO_MAGICLINKS` and `RESOLVE_NO_XDEV`, and every
//! call that then acts on a last name does not follow it (`sys.rs`). So whatever the
//! stream says, and even as root, nothing outside `DEST/<name>` is created, changed,
//! opened or followed: a stream that makes `l -> /etc` and then writes `l/passwd`
//! fails. Device nodes the stream makes are never opened (writes and clones open only
//! what is checked to be a regular file).
//!
//! Mode and xattr changes of symlinks, fifos, sockets and devices, which cannot be
//! opened safely, go through `/proc/self/fd/N` of an `O_PATH` descriptor of the inode
//! (`sys::Access`): the kernel jumps from that name straight to the inode held, so it
//! reaches nothing else (a symlink's own xattrs change, not its target's). Without a
//! procfs at `/proc` such changes are refused with an error that says so; symlinks
//! have no mode of their own on Linux, so a chmod of one is skipped.
//!
//! A plain filesystem has no received UUID and no read-only subvolumes: the result
//! stays writable (make it read-only with permissions or a read-only bind mount if
//! needed). At END the directory is marked finished (`marker.rs`); a stream cut before
//! it leaves a directory without the marker, never taken for a finished snapshot.
//!
//! An incremental stream's parent is found among `DEST`'s directories by its marker,
//! copied faithfully to `DEST/<name>` (`copy.rs`; reflinked where the filesystem can),
//! and the stream applied onto the copy. A clone reads from the tree being made, the
//! parent, or another finished snapshot in `DEST` found by its marker (a `-c` source
//! of the sender), resolved there by the same rules; `copy_file_range` shares the
//! blocks where the filesystem can (xfs, btrfs).
//!
//! A receive that stops before END on an error it sees (the input ended or broke, a
//! command failed) leaves, next to the partial directory, a progress note
//! `DEST/.<name>.arbor-partial` (`progress.rs`) saying how many commands were fully
//! applied: its resume token. A resumed stream (`arbor send --resume`) continues the
//! directory after checking that it is the same stream, stopped at that command and
//! unchanged since. A crash or a kill leaves no note, and cannot be resumed: on a
//! plain filesystem nothing ties a note to the state on disk, which may be ahead of
//! it.

mod copy;
mod marker;
mod progress;
mod sys;
mod tree;

use super::paths::{hex, split};
use super::target::{CloneFrom, Falloc, NewInode, StreamSubvol, Target};
use super::{ReceiveStats, apply};
use crate::error::ReceiveError;
use crate::resume::ResumeToken;
use arbor_fs::subvol_items::ReceiveProgress;
use arbor_send::Timespec;
use marker::Mark;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{self, AtFlags, FileType, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::Read;
use std::path::Path;
use sys::{fail, open_regular, show};
use tree::Tree;

/// Receives into a directory on a filesystem other than arbor.
pub struct Plain {
    /// The directory the subvolumes are made in.
    dest: OwnedFd,
    /// Whether `/proc/self/fd` is a procfs (see the module's doc).
    procfs: bool,
    current: Option<Current>,
    /// The subvolume the last interruption left a progress note for, and the note.
    left: Option<(Vec<u8>, ReceiveProgress)>,
}

/// The subvolume being received.
struct Current {
    name: Vec<u8>,
    mark: Mark,
    tree: Tree,
    /// The parent's root, for clones from it.
    parent: Option<OwnedFd>,
    /// The roots of other snapshots in DEST that clones read from, found by marker.
    sources: HashMap<Mark, OwnedFd>,
    /// What the progress note says, should the receive stop (see `progress.rs`).
    note: ReceiveProgress,
}

impl Plain {
    /// Opens `dest`, the directory to receive into.
    pub fn new(dest: &Path) -> Result<Self, ReceiveError> {
        let dest = fs::open(
            dest,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ReceiveError::Dest(format!("{}: {e}", dest.display())))?;
        Ok(Self {
            dest,
            procfs: sys::have_procfs(),
            current: None,
            left: None,
        })
    }

    /// The unfinished receive the last failed [`super::apply`] on this target left a
    /// progress note for: the directory's name, and its resume token.
    pub fn partial(&self) -> Option<(&[u8], ResumeToken)> {
        self.left
            .as_ref()
            .map(|(name, note)| (&name[..], ResumeToken::from_progress(note)))
    }

    /// The unfinished receives in the destination that can be resumed: each directory
    /// with a progress note and without the finished marker, by name (sorted), with
    /// its resume token.
    pub fn unfinished(&self) -> Result<Vec<(Vec<u8>, ResumeToken)>, ReceiveError> {
        let dest = self.dest.as_fd();
        let err = |e| ReceiveError::Dest(fail(".", "read the destination", e));
        let mut dir = fs::Dir::read_from(dest).map_err(err)?;
        let mut found = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(err)?;
            let Some(name) = progress::subvol_of(entry.file_name().to_bytes()) else {
                continue;
            };
            // Gone, not a directory, or finished after all: nothing to resume.
            let Ok(root) = sys::read_dir(dest, name) else {
                continue;
            };
            if marker::read(dest, name, root.as_fd()).is_some() {
                continue;
            }
            if let Some(note) = progress::read(dest, name).map_err(ReceiveError::Dest)? {
                found.push((name.to_vec(), ResumeToken::from_progress(&note)));
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    fn tree(&mut self) -> Result<&mut Tree, String> {
        self.current
            .as_mut()
            .map(|c| &mut c.tree)
            .ok_or_else(|| "no subvolume is being received".to_string())
    }

    /// Makes the directory `name` in DEST (refusing one that exists) and opens it.
    fn make_root(&self, name: &[u8]) -> Result<OwnedFd, String> {
        let what = show(name);
        if marker::is_reserved(name) {
            return Err(format!("{what}: the name is reserved for receive markers"));
        }
        let dest = self.dest.as_fd();
        let exists = || format!("{what} already exists in the destination");
        // What an earlier `name` (deleted since) left, a marker or a progress note,
        // must go before the new directory is there for it to mark; but never those of
        // a directory that is still there.
        match fs::statat(dest, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => return Err(exists()),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(fail(&what, "stat", e)),
        }
        marker::forget(dest, name)?;
        progress::remove(dest, name)?;
        fs::mkdirat(dest, name, Mode::from_raw_mode(0o700)).map_err(|e| match e {
            Errno::EXIST => exists(),
            e => fail(&what, "mkdir", e),
        })?;
        sys::read_dir(dest, name).map_err(|e| fail(&what, "open", e))
    }

    /// The partial directory `name` of an unfinished receive, opened, and its progress
    /// note; refused when there is nothing to resume.
    fn partial_root(&self, name: &[u8]) -> Result<(OwnedFd, ReceiveProgress), String> {
        let what = show(name);
        if marker::is_reserved(name) {
            return Err(format!("{what}: the name is reserved for receive markers"));
        }
        let dest = self.dest.as_fd();
        let root = sys::read_dir(dest, name).map_err(|e| match e {
            Errno::NOENT => format!("{what} is not in the destination: nothing to resume"),
            Errno::LOOP | Errno::NOTDIR => {
                format!("{what} is not a directory: nothing to resume")
            }
            Errno::XDEV => format!("{what} is a mount point: nothing to resume"),
            e => fail(&what, "open", e),
        })?;
        if marker::read(dest, name, root.as_fd()).is_some() {
            return Err(format!("{what} is a finished receive: nothing to resume"));
        }
        let note = progress::read(dest, name)?.ok_or_else(|| {
            format!(
                "{what} has no progress note {}: its receive did not stop resumably (a crash or a kill cannot be resumed); delete it and receive again",
                show(&progress::file_name(name))
            )
        })?;
        Ok((root, note))
    }
}

impl Target for Plain {
    fn resume(&mut self, s: &StreamSubvol, skip: u64) -> Result<u32, String> {
        if self.current.is_some() {
            return Err("a second subvolume before END".into());
        }
        let what = show(&s.name);
        let (root, note) = self.partial_root(&s.name)?;
        crate::resume::check_fit(&note, s, skip, &what)?;
        if progress::stamp(root.as_fd()).map_err(|e| fail(&what, "stat", e))? != note.generation {
            return Err(format!(
                "{what} changed since its receive stopped; delete it and receive again"
            ));
        }
        let parent = match s.parent {
            None => None,
            Some((uuid, ctransid)) => {
                Some(marker::find(self.dest.as_fd(), Mark { uuid, ctransid }, "parent")?.1)
            }
        };
        // From here the directory moves past the note: should this receive end in a
        // crash, the note must not be there to apply commands twice.
        progress::remove(self.dest.as_fd(), &s.name)?;
        self.left = None;
        self.start(s, root, parent);
        if let Some(c) = self.current.as_mut() {
            c.note = note;
        }
        Ok(note.digest)
    }

    fn done(&mut self, progress: Option<(u64, u32)>) {
        if let (Some((applied, digest)), Some(c)) = (progress, self.current.as_mut()) {
            c.note.applied = applied;
            c.note.digest = digest;
        }
    }

    fn interrupted(&mut self) {
        let Some(c) = self.current.take() else {
            return;
        };
        match progress::write(self.dest.as_fd(), &c.name, c.tree.root.as_fd(), &c.note) {
            Ok(note) => self.left = Some((c.name, note)),
            Err(e) => tracing::error!("{}: the receive cannot be resumed: {e}", c.tree.label),
        }
    }

    fn begin(&mut self, s: &StreamSubvol) -> Result<(), String> {
        if self.current.is_some() {
            return Err("a second subvolume before END".into());
        }
        let parent = match s.parent {
            None => None,
            Some((uuid, ctransid)) => Some(marker::find(
                self.dest.as_fd(),
                Mark { uuid, ctransid },
                "parent",
            )?),
        };
        let root = self.make_root(&s.name)?;
        if let Some((name, parent)) = &parent {
            copy::tree(parent.as_fd(), root.as_fd(), self.procfs)
                .map_err(|e| format!("copying the parent {}: {e}", show(name)))?;
        }
        self.start(s, root, parent.map(|(_, fd)| fd));
        Ok(())
    }

    fn make(&mut self, path: &[u8], what: NewInode<'_>) -> Result<(), String> {
        let t = self.tree()?;
        let (dir, name) = split(path)?;
        let label = t.label.clone();
        let d = t.dir(dir)?;
        let err = |op: &'static str| {
            let at = format!("{label}/{}", show(path));
            move |e| fail(&at, op, e)
        };
        match what {
            NewInode::File => {
                let fd =
                    sys::create_new(d, name, Mode::from_raw_mode(0o600)).map_err(err("create"))?;
                t.open = Some((path.to_vec(), fd));
            }
            NewInode::Dir => {
                fs::mkdirat(d, name, Mode::from_raw_mode(0o700)).map_err(err("mkdir"))?;
            }
            NewInode::Symlink(target) => {
                fs::symlinkat(target, d, name).map_err(err("symlink"))?;
            }
            NewInode::Special { mode, rdev } => {
                let kind = FileType::from_raw_mode(mode);
                if !matches!(
                    kind,
                    FileType::Fifo
                        | FileType::Socket
                        | FileType::CharacterDevice
                        | FileType::BlockDevice
                ) {
                    return Err(format!("mknod with file type {mode:#o}"));
                }
                let perm = Mode::from_raw_mode(mode & 0o7777);
                fs::mknodat(d, name, kind, perm, rdev).map_err(err("mknod"))?;
            }
        }
        Ok(())
    }

    fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<(), String> {
        let t = self.tree()?;
        let (from_dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        let src = sys::open_dir(t.root.as_fd(), from_dir).map_err(t.err(from_dir, "open"))?;
        let dst = t.dir(to_dir)?;
        let r = fs::renameat(&src, from_name, dst, to_name);
        t.moved();
        r.map_err(t.err(from, "rename"))
    }

    fn link(&mut self, path: &[u8], existing: &[u8]) -> Result<(), String> {
        let t = self.tree()?;
        let (old_dir, old_name) = split(existing)?;
        let (dir, name) = split(path)?;
        let old = sys::open_dir(t.root.as_fd(), old_dir).map_err(t.err(old_dir, "open"))?;
        let label = t.label.clone();
        let d = t.dir(dir)?;
        // No AT_SYMLINK_FOLLOW: a link to a symlink is a link to the symlink itself.
        fs::linkat(&old, old_name, d, name, AtFlags::empty())
            .map_err(|e| fail(&format!("{label}/{}", show(path)), "link", e))
    }

    fn unlink(&mut self, path: &[u8]) -> Result<(), String> {
        self.remove(path, AtFlags::empty(), "unlink")
    }

    fn rmdir(&mut self, path: &[u8]) -> Result<(), String> {
        self.remove(path, AtFlags::REMOVEDIR, "rmdir")
    }

    fn set_xattr(&mut self, path: &[u8], name: &[u8], data: &[u8]) -> Result<(), String> {
        reserved_xattr(path, name)?;
        let op = format!("set xattr {}", show(name));
        self.tree()?
            .with_access(path, &op, |a, _| a.set_xattr(name, data))
    }

    fn remove_xattr(&mut self, path: &[u8], name: &[u8]) -> Result<(), String> {
        reserved_xattr(path, name)?;
        let op = format!("remove xattr {}", show(name));
        self.tree()?
            .with_access(path, &op, |a, _| a.remove_xattr(name))
    }

    fn write(&mut self, path: &[u8], offset: u64, data: &[u8]) -> Result<(), String> {
        let t = self.tree()?;
        let at = t.at(path);
        let fd = t.writable(path)?;
        sys::pwrite_all(fd, offset, data).map_err(|e| fail(&at, "write", e))
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
        let c = self
            .current
            .as_mut()
            .ok_or_else(|| "no subvolume is being received".to_string())?;
        if let CloneFrom::Other { uuid, ctransid } = from {
            let mark = Mark { uuid, ctransid };
            if let Entry::Vacant(e) = c.sources.entry(mark) {
                e.insert(marker::find(self.dest.as_fd(), mark, "clone source")?.1);
            }
        }
        let (src_root, whose) = match from {
            CloneFrom::This => (c.tree.root.as_fd(), c.tree.label.clone()),
            CloneFrom::Parent => (
                c.parent
                    .as_ref()
                    .ok_or_else(|| "a clone from a parent in a full stream".to_string())?
                    .as_fd(),
                "the parent".to_string(),
            ),
            // Only a finished snapshot received into DEST: the stream reads nothing
            // outside it. (A plain directory cannot be read-only; the marker says it is
            // finished.)
            CloneFrom::Other { uuid, ctransid } => (
                c.sources
                    .get(&Mark { uuid, ctransid })
                    .ok_or_else(|| "the clone source was lost".to_string())?
                    .as_fd(),
                format!("clone source {}", hex(&uuid)),
            ),
        };
        let src_fd =
            open_regular(src_root, src, OFlags::RDONLY).map_err(|e| format!("{whose}/{e}"))?;
        let t = &mut c.tree;
        let at = t.at(path);
        let dst = t.writable(path)?;
        let n = sys::copy_range(src_fd.as_fd(), src_offset, dst, offset, len)
            .map_err(|e| fail(&at, "clone", e))?;
        if n != len {
            return Err(format!("{at}: clone of {len} bytes found only {n}"));
        }
        Ok(())
    }

    fn truncate(&mut self, path: &[u8], size: u64) -> Result<(), String> {
        let t = self.tree()?;
        let at = t.at(path);
        let fd = t.writable(path)?;
        fs::ftruncate(fd, size).map_err(|e| fail(&at, "truncate", e))
    }

    fn chmod(&mut self, path: &[u8], mode: u32) -> Result<(), String> {
        self.tree()?.with_access(path, "chmod", |a, kind| {
            // A symlink's mode means nothing on Linux and cannot be changed.
            if kind == FileType::Symlink {
                return Ok(());
            }
            a.chmod(mode)
        })
    }

    fn chown(&mut self, path: &[u8], uid: u32, gid: u32) -> Result<(), String> {
        let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        self.tree()?.with_inode(path, "chown", |fd| {
            fs::chownat(
                fd,
                "",
                uid,
                gid,
                AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
            )
        })
    }

    fn utimes(
        &mut self,
        path: &[u8],
        atime: Timespec,
        mtime: Timespec,
        _ctime: Timespec,
        _otime: Option<Timespec>,
    ) -> Result<(), String> {
        // ctime is the kernel's to set, and no plain filesystem lets one set a birth time.
        let times = fs::Timestamps {
            last_access: sys::stream_time(atime),
            last_modification: sys::stream_time(mtime),
        };
        self.tree()?.with_inode(path, "utimes", |fd| {
            fs::utimensat(
                fd,
                "",
                &times,
                AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
            )
        })
    }

    fn fallocate(
        &mut self,
        path: &[u8],
        mode: Falloc,
        offset: u64,
        len: u64,
    ) -> Result<(), String> {
        let t = self.tree()?;
        let at = t.at(path);
        let fd = t.writable(path)?;
        sys::fallocate(fd, mode, offset, len).map_err(|e| fail(&at, "fallocate", e))
    }

    fn finish(&mut self) -> Result<u64, String> {
        // Kept as the current subvolume until marked: should marking fail, the
        // interruption notes it as unfinished, END not applied.
        let c = self
            .current
            .as_mut()
            .ok_or_else(|| "END without a subvolume".to_string())?;
        c.tree.moved();
        let root = c.tree.root.as_fd();
        let st = fs::fstat(root).map_err(|e| fail(&c.tree.label, "stat", e))?;
        marker::record(self.dest.as_fd(), &c.name, root, c.mark)?;
        // Marked finished, it is no longer taken for an unfinished receive, note or not.
        if let Err(e) = progress::remove(self.dest.as_fd(), &c.name) {
            tracing::error!(
                "{}: finished, but its progress note stays: {e}",
                c.tree.label
            );
        }
        if self.left.as_ref().is_some_and(|(n, _)| *n == c.name) {
            self.left = None;
        }
        self.current = None;
        Ok(sys::identity(&st).1)
    }
}

impl Plain {
    /// Receives `s` into its directory `root` from now on.
    fn start(&mut self, s: &StreamSubvol, root: OwnedFd, parent: Option<OwnedFd>) {
        self.current = Some(Current {
            name: s.name.clone(),
            mark: Mark {
                uuid: s.uuid,
                ctransid: s.ctransid,
            },
            tree: Tree {
                root,
                label: show(&s.name),
                procfs: self.procfs,
                dirs: HashMap::new(),
                open: None,
            },
            parent,
            sources: HashMap::new(),
            note: s.fresh_progress(),
        });
    }

    fn remove(&mut self, path: &[u8], flags: AtFlags, op: &str) -> Result<(), String> {
        let t = self.tree()?;
        let (dir, name) = split(path)?;
        let label = t.label.clone();
        let d = t.dir(dir)?;
        let r = fs::unlinkat(d, name, flags);
        t.moved();
        r.map_err(|e| fail(&format!("{label}/{}", show(path)), op, e))
    }
}

/// The marker on a subvolume's root is the receiver's, never the stream's: a stream
/// that could set it would look finished even when cut short.
fn reserved_xattr(path: &[u8], name: &[u8]) -> Result<(), String> {
    if path.is_empty() && name == marker::XATTR {
        return Err(format!(
            "xattr {} on the root is reserved for the receiver",
            show(name)
        ));
    }
    Ok(())
}

/// Receives the streams in `input` into the directory `dest` on any filesystem, each
/// subvolume as a directory `dest/<name>` (see [`Plain`]). Stops at the first bad
/// command: the directory it was making stays unmarked, with a progress note to resume
/// it by ([`Plain::unfinished`]). The ids returned are the directories' inode numbers.
/// The parent of an incremental stream must have been received into `dest` before.
pub fn receive_plain<R: Read>(dest: &Path, input: R) -> Result<ReceiveStats, ReceiveError> {
    let mut target = Plain::new(dest)?;
    apply(&mut target, input)
}
