//! The tree a stream is being received into: its root, and the descriptors kept
//! between commands (directories resolved, the file being written), dropped whenever a
//! rename or removal may have made them name something else.

use super::sys::{self, Access, fail, open_regular, show};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{FileType, OFlags};
use rustix::io::Errno;
use std::collections::HashMap;

/// How many directory descriptors are kept at most.
const DIR_CACHE: usize = 128;

/// The directory being filled, with what speeds up the next commands.
pub(super) struct Tree {
    /// Its root, readable.
    pub(super) root: OwnedFd,
    /// Its name, for messages.
    pub(super) label: String,
    pub(super) procfs: bool,
    /// Directories resolved since the last rename or removal, by path.
    pub(super) dirs: HashMap<Vec<u8>, OwnedFd>,
    /// The file last written, still open for writing: a stream writes a file in many
    /// consecutive commands. Closed by anything that could move or remove it.
    pub(super) open: Option<(Vec<u8>, OwnedFd)>,
}

impl Tree {
    /// `path` for messages: the subvolume's name, then the path in it.
    pub(super) fn at(&self, path: &[u8]) -> String {
        if path.is_empty() {
            self.label.clone()
        } else {
            format!("{}/{}", self.label, show(path))
        }
    }

    pub(super) fn err<'a>(&'a self, path: &'a [u8], op: &'a str) -> impl Fn(Errno) -> String + 'a {
        move |e| fail(&self.at(path), op, e)
    }

    /// The directory `dir` ("" is the root), from the cache or resolved now.
    pub(super) fn dir(&mut self, dir: &[u8]) -> Result<BorrowedFd<'_>, String> {
        if dir.is_empty() {
            return Ok(self.root.as_fd());
        }
        if !self.dirs.contains_key(dir) {
            let fd = sys::open_dir(self.root.as_fd(), dir).map_err(self.err(dir, "open"))?;
            if self.dirs.len() >= DIR_CACHE {
                self.dirs.clear();
            }
            self.dirs.insert(dir.to_vec(), fd);
        }
        self.dirs
            .get(dir)
            .map(AsFd::as_fd)
            .ok_or_else(|| format!("{}: lost from the cache", self.at(dir)))
    }

    /// Forgets what a rename or removal may have made wrong.
    pub(super) fn moved(&mut self) {
        self.dirs.clear();
        self.open = None;
    }

    /// The regular file `path`, open for writing.
    pub(super) fn writable(&mut self, path: &[u8]) -> Result<BorrowedFd<'_>, String> {
        if !matches!(&self.open, Some((p, _)) if p == path) {
            self.open = None;
            let fd = open_regular(self.root.as_fd(), path, OFlags::WRONLY)
                .map_err(|e| format!("{}/{e}", self.label))?;
            self.open = Some((path.to_vec(), fd));
        }
        match &self.open {
            Some((_, fd)) => Ok(fd.as_fd()),
            None => Err(format!("{}: not open", self.at(path))),
        }
    }

    /// Runs `f` on the inode at `path` through something its mode and xattrs can be
    /// changed with (see [`Access`]), with what kind of file it is.
    pub(super) fn with_access(
        &mut self,
        path: &[u8],
        op: &str,
        f: impl FnOnce(&Access<'_>, FileType) -> Result<(), Errno>,
    ) -> Result<(), String> {
        if let Some((p, fd)) = &self.open
            && p == path
        {
            return f(&Access::Fd(fd.as_fd()), FileType::RegularFile).map_err(self.err(path, op));
        }
        let root = self.root.as_fd();
        let node = sys::node(root, path).map_err(self.err(path, "open"))?;
        let kind = node.kind();
        let r = match kind {
            _ if self.procfs => f(&Access::proc(&node.fd), kind),
            FileType::Directory => {
                let fd = sys::read_dir(root, path).map_err(self.err(path, "open"))?;
                f(&Access::Fd(fd.as_fd()), kind)
            }
            FileType::RegularFile => {
                let fd = open_regular(root, path, OFlags::RDONLY)
                    .map_err(|e| format!("{}/{e}", self.label))?;
                f(&Access::Fd(fd.as_fd()), kind)
            }
            _ => {
                return Err(format!(
                    "{}: {op}: a {kind:?} can be changed safely only through /proc/self/fd, and no procfs is mounted on /proc",
                    self.at(path)
                ));
            }
        };
        r.map_err(self.err(path, op))
    }

    /// Runs `f` on a descriptor of the inode at `path` itself (`O_PATH`, a symlink not
    /// followed, unless the file is open already), for the calls that take one with
    /// `AT_EMPTY_PATH`.
    pub(super) fn with_inode(
        &self,
        path: &[u8],
        op: &str,
        f: impl FnOnce(BorrowedFd<'_>) -> Result<(), Errno>,
    ) -> Result<(), String> {
        if let Some((p, fd)) = &self.open
            && p == path
        {
            return f(fd.as_fd()).map_err(self.err(path, op));
        }
        let fd = sys::open_beneath(self.root.as_fd(), path, OFlags::PATH | OFlags::NOFOLLOW)
            .map_err(self.err(path, "open"))?;
        f(fd.as_fd()).map_err(self.err(path, op))
    }
}
