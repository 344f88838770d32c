//! A faithful copy of a received snapshot: what an incremental stream is applied onto,
//! as btrfs applies it onto a snapshot of the parent. Data keeps its holes
//! (`SEEK_DATA`/`SEEK_HOLE`) and goes through `copy_file_range`, so xfs and btrfs share
//! the blocks instead of copying them; modes, owners, xattrs, times (directories'
//! too, set once their contents are done), symlinks, special files and hard links
//! (as hard links) are kept. The marker on the parent's root is not copied: the copy
//! is unfinished until the stream's END.
//!
//! Nothing is followed in the parent: every name is opened below its directory's
//! descriptor with the same rules as the stream's paths (`sys::open_beneath`). In the
//! copy, every directory stays mode 0700 until its contents are done and the root
//! until the very end, so no one else can enter it meanwhile and the `*at` calls by
//! name there meet only what this copy made.
//!
//! The walk is depth first and holds two descriptors per level of depth.

use super::marker::XATTR;
use super::sys::{self, Access, fail, identity, node, open_dir, open_regular, read_dir, show};
use crate::receive::paths::split;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{self, AtFlags, Dir, FileType, Gid, Mode, OFlags, Stat, Uid};
use std::collections::HashMap;

/// A directory being copied.
struct Frame {
    /// The source directory, being read.
    src: Dir,
    /// Its copy (readable).
    dst: OwnedFd,
    /// Its path below the roots ("" for the roots).
    path: Vec<u8>,
    /// The source directory as it was before it was read.
    stat: Stat,
}

struct Copier<'a> {
    dst_root: BorrowedFd<'a>,
    procfs: bool,
    /// The copy made of each source inode with more than one name, by path.
    links: HashMap<(u64, u64), Vec<u8>>,
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

/// Copies everything in directory `src` into the empty directory `dst` (both opened
/// readable), and `src`'s own attributes onto `dst`.
pub(super) fn tree(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, procfs: bool) -> Result<(), String> {
    let mut c = Copier {
        dst_root: dst,
        procfs,
        links: HashMap::new(),
    };
    let root = Frame {
        src: Dir::read_from(src).map_err(|e| fail("the parent", "read", e))?,
        dst: sys::read_dir(dst, b"").map_err(|e| fail("the copy", "open", e))?,
        path: Vec::new(),
        stat: fs::fstat(src).map_err(|e| fail("the parent", "stat", e))?,
    };
    let mut stack = vec![root];
    while let Some(top) = stack.last_mut() {
        let Some(entry) = top.src.read() else {
            if let Some(done) = stack.pop() {
                c.dir_done(&done)?;
            }
            continue;
        };
        let entry = entry.map_err(|e| fail(&show(&top.path), "read", e))?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        if let Some(sub) = c.entry(top, name)? {
            stack.push(sub);
        }
    }
    Ok(())
}

impl Copier<'_> {
    /// Copies the entry `name` of `dir`; a directory is made empty and returned, to be
    /// filled next.
    fn entry(&mut self, dir: &Frame, name: &[u8]) -> Result<Option<Frame>, String> {
        let path = join(&dir.path, name);
        let what = show(&path);
        let src_dir = dir.src.fd().map_err(|e| fail(&what, "read", e))?;
        let dst_dir = dir.dst.as_fd();
        let st = fs::statat(src_dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| fail(&what, "stat", e))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        let id = identity(&st);
        if kind != FileType::Directory && st.st_nlink > 1 {
            if let Some(first) = self.links.get(&id) {
                let (fdir, fname) = split(first)?;
                let from = open_dir(self.dst_root, fdir).map_err(|e| fail(&what, "open", e))?;
                return fs::linkat(&from, fname, dst_dir, name, AtFlags::empty())
                    .map(|()| None)
                    .map_err(|e| fail(&what, "link", e));
            }
            self.links.insert(id, path.clone());
        }
        let private = Mode::from_raw_mode(0o600);
        match kind {
            FileType::Directory => {
                fs::mkdirat(dst_dir, name, Mode::from_raw_mode(0o700))
                    .map_err(|e| fail(&what, "mkdir", e))?;
                let src = read_dir(src_dir, name).map_err(|e| fail(&what, "open", e))?;
                let stat = fs::fstat(&src).map_err(|e| fail(&what, "stat", e))?;
                if identity(&stat) != id {
                    return Err(format!("{what}: replaced while being copied"));
                }
                return Ok(Some(Frame {
                    src: Dir::new(src).map_err(|e| fail(&what, "read", e))?,
                    dst: read_dir(dst_dir, name).map_err(|e| fail(&what, "open", e))?,
                    path,
                    stat,
                }));
            }
            FileType::RegularFile => {
                let src = open_regular(src_dir, name, OFlags::RDONLY)?;
                let dst = sys::create_new(dst_dir, name, private)
                    .map_err(|e| fail(&what, "create", e))?;
                sys::copy_data(src.as_fd(), dst.as_fd(), sys::file_size(&st))
                    .map_err(|e| fail(&what, "copy", e))?;
                let (from, to) = (Access::Fd(src.as_fd()), Access::Fd(dst.as_fd()));
                self.attrs(&what, Some((&from, &to)), dst.as_fd(), &st, false)?;
                return Ok(None);
            }
            FileType::Symlink => {
                let target = fs::readlinkat(src_dir, name, Vec::new())
                    .map_err(|e| fail(&what, "readlink", e))?;
                fs::symlinkat(target.as_c_str(), dst_dir, name)
                    .map_err(|e| fail(&what, "symlink", e))?;
            }
            FileType::Fifo
            | FileType::Socket
            | FileType::CharacterDevice
            | FileType::BlockDevice => {
                let perm = Mode::from_raw_mode(st.st_mode & 0o7777);
                fs::mknodat(dst_dir, name, kind, perm, st.st_rdev)
                    .map_err(|e| fail(&what, "mknod", e))?;
            }
            FileType::Unknown => return Err(format!("{what}: a file of unknown type")),
        }
        // A symlink or special file: it cannot be opened, only named.
        let dst = node(dst_dir, name).map_err(|e| fail(&what, "open", e))?;
        if !self.procfs {
            if kind != FileType::Symlink {
                let perm = Mode::from_raw_mode(st.st_mode & 0o7777);
                fs::chmodat(dst_dir, name, perm, AtFlags::empty())
                    .map_err(|e| fail(&what, "chmod", e))?;
            }
            tracing::warn!(
                "{what}: xattrs of symlinks and special files are copied only with /proc"
            );
            self.attrs(&what, None, dst.fd.as_fd(), &st, false)?;
            return Ok(None);
        }
        let src = node(src_dir, name).map_err(|e| fail(&what, "open", e))?;
        if identity(&src.stat) != id {
            return Err(format!("{what}: replaced while being copied"));
        }
        let (from, to) = (Access::proc(&src.fd), Access::proc(&dst.fd));
        self.attrs(&what, Some((&from, &to)), dst.fd.as_fd(), &st, false)?;
        Ok(None)
    }

    /// A directory's contents are all copied: now its own attributes.
    fn dir_done(&self, f: &Frame) -> Result<(), String> {
        let what = if f.path.is_empty() {
            "the parent's root".to_string()
        } else {
            show(&f.path)
        };
        let src = f.src.fd().map_err(|e| fail(&what, "read", e))?;
        let (from, to) = (Access::Fd(src), Access::Fd(f.dst.as_fd()));
        self.attrs(
            &what,
            Some((&from, &to)),
            f.dst.as_fd(),
            &f.stat,
            f.path.is_empty(),
        )
    }

    /// Gives `dst` (any descriptor of it, `O_PATH` too) the owner, xattrs (through
    /// `access`: source and copy), mode and times `st` and the source have. The order
    /// matters: a chown clears set-id bits and file capabilities, so it comes first.
    fn attrs(
        &self,
        what: &str,
        access: Option<(&Access<'_>, &Access<'_>)>,
        dst: BorrowedFd<'_>,
        st: &Stat,
        root: bool,
    ) -> Result<(), String> {
        let here = AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW;
        let owner = (Uid::from_raw(st.st_uid), Gid::from_raw(st.st_gid));
        fs::chownat(dst, "", Some(owner.0), Some(owner.1), here)
            .map_err(|e| fail(what, "chown", e))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if let Some((from, to)) = access {
            for name in from
                .xattr_names()
                .map_err(|e| fail(what, "list xattrs", e))?
            {
                if root && name == XATTR {
                    continue;
                }
                let value = from.xattr(&name).map_err(|e| fail(what, "get xattr", e))?;
                to.set_xattr(&name, &value)
                    .map_err(|e| fail(what, &format!("set xattr {}", show(&name)), e))?;
            }
            if kind != FileType::Symlink {
                to.chmod(st.st_mode & 0o7777)
                    .map_err(|e| fail(what, "chmod", e))?;
            }
        }
        fs::utimensat(dst, "", &sys::times(st), here).map_err(|e| fail(what, "utimes", e))
    }
}
