//! The system calls the plain target is built from, wrapped so that no name a stream
//! gives can lead outside the tree it is received into.
//!
//! Every path is resolved by `openat2` below a directory descriptor with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`:
//! the kernel refuses `..` above that directory, any symlink met on the way (the last
//! name included, unless `O_PATH | O_NOFOLLOW` asks for the link itself), magic links
//! and mount crossings, and does it atomically, so a rename racing with the walk
//! cannot lead it out either. The calls that then act on a last name (`mkdirat`,
//! `renameat`, `linkat`, `unlinkat`...) never follow it.

use rustix::fd::{AsRawFd, BorrowedFd, OwnedFd};
use rustix::fs::{self, FileType, Mode, OFlags, ResolveFlags, Stat, XattrFlags};
use rustix::io::Errno;

/// How every path in the tree is resolved.
fn resolve_flags() -> ResolveFlags {
    ResolveFlags::BENEATH
        | ResolveFlags::NO_SYMLINKS
        | ResolveFlags::NO_MAGICLINKS
        | ResolveFlags::NO_XDEV
}

/// Shows a path of the stream in a message.
pub(super) fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// An error of a system call on `what`, in words.
pub(super) fn fail(what: &str, op: &str, e: Errno) -> String {
    if e == Errno::NOSYS {
        return format!("{what}: {op}: the kernel lacks it (openat2 needs Linux 5.6 or later)");
    }
    format!("{what}: {op}: {e}")
}

/// Opens `path` ("" is `dir` itself) below `dir`, never leaving it and never following a
/// symlink. `EAGAIN` (a rename elsewhere raced with the walk) is retried.
pub(super) fn open_beneath(
    dir: BorrowedFd<'_>,
    path: &[u8],
    flags: OFlags,
) -> Result<OwnedFd, Errno> {
    let path: &[u8] = if path.is_empty() { b"." } else { path };
    // openat2 refuses O_PATH with anything but O_DIRECTORY, O_NOFOLLOW and O_CLOEXEC.
    let flags = if flags.contains(OFlags::PATH) {
        flags | OFlags::CLOEXEC
    } else {
        flags | OFlags::CLOEXEC | OFlags::NOCTTY
    };
    let mut tries = 0;
    loop {
        match fs::openat2(dir, path, flags, Mode::empty(), resolve_flags()) {
            Err(Errno::AGAIN) if tries < 32 => tries += 1,
            r => return r,
        }
    }
}

/// A directory below `dir`, as a handle for the `*at` calls (`O_PATH`: no permission to
/// read it is needed).
pub(super) fn open_dir(dir: BorrowedFd<'_>, path: &[u8]) -> Result<OwnedFd, Errno> {
    open_beneath(dir, path, OFlags::PATH | OFlags::DIRECTORY)
}

/// A directory below `dir`, readable (for its entries and for `f*xattr`, `fchmod`).
pub(super) fn read_dir(dir: BorrowedFd<'_>, path: &[u8]) -> Result<OwnedFd, Errno> {
    open_beneath(
        dir,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
    )
}

/// The inode `path` names, itself, whatever it is (a symlink is not followed: the
/// descriptor is the link), and what it is.
pub(super) struct Node {
    pub fd: OwnedFd,
    pub stat: Stat,
}

impl Node {
    pub(super) fn kind(&self) -> FileType {
        FileType::from_raw_mode(self.stat.st_mode)
    }
}

pub(super) fn node(dir: BorrowedFd<'_>, path: &[u8]) -> Result<Node, Errno> {
    let fd = open_beneath(dir, path, OFlags::PATH | OFlags::NOFOLLOW)?;
    let stat = fs::fstat(&fd)?;
    Ok(Node { fd, stat })
}

/// Opens the regular file `path` below `dir` for I/O. What the path names is checked
/// first through an `O_PATH` handle, so that a device node is never opened (opening
/// one has effects outside the tree, and writing one would change a disk), and after
/// opening it must still be the same inode. A fifo is opened non-blocking, so that it
/// can never hang the receive.
pub(super) fn open_regular(
    dir: BorrowedFd<'_>,
    path: &[u8],
    flags: OFlags,
) -> Result<OwnedFd, String> {
    let what = show(path);
    let n = node(dir, path).map_err(|e| fail(&what, "open", e))?;
    if n.kind() != FileType::RegularFile {
        return Err(format!("{what}: not a regular file"));
    }
    let fd = open_beneath(dir, path, flags | OFlags::NOFOLLOW | OFlags::NONBLOCK)
        .map_err(|e| fail(&what, "open", e))?;
    let st = fs::fstat(&fd).map_err(|e| fail(&what, "stat", e))?;
    if (st.st_dev, st.st_ino) != (n.stat.st_dev, n.stat.st_ino) {
        return Err(format!("{what}: replaced while being opened"));
    }
    Ok(fd)
}

/// Whether `/proc/self/fd` is a real procfs: then `/proc/self/fd/N` names exactly the
/// inode descriptor N holds, whatever it is.
pub(super) fn have_procfs() -> bool {
    fs::statfs("/proc/self/fd").is_ok_and(|s| s.f_type == fs::PROC_SUPER_MAGIC)
}

/// Something whose mode and xattrs can be changed: an open descriptor (a directory or
/// regular file), or, for what cannot be opened safely (symlinks, fifos, sockets,
/// devices), the `/proc/self/fd/N` name of an `O_PATH` descriptor of it. The kernel
/// resolves that name by jumping straight to the inode N holds (a symlink is not
/// followed any further: the link itself is changed), so it leads nowhere else.
pub(super) enum Access<'a> {
    Fd(BorrowedFd<'a>),
    Proc(String),
}

impl Access<'_> {
    pub(super) fn proc(fd: &OwnedFd) -> Access<'static> {
        Access::Proc(format!("/proc/self/fd/{}", fd.as_raw_fd()))
    }

    pub(super) fn chmod(&self, mode: u32) -> Result<(), Errno> {
        let mode = Mode::from_raw_mode(mode);
        match self {
            Access::Fd(fd) => fs::fchmod(fd, mode),
            Access::Proc(p) => fs::chmod(p, mode),
        }
    }

    pub(super) fn set_xattr(&self, name: &[u8], value: &[u8]) -> Result<(), Errno> {
        match self {
            Access::Fd(fd) => fs::fsetxattr(fd, name, value, XattrFlags::empty()),
            Access::Proc(p) => fs::setxattr(p, name, value, XattrFlags::empty()),
        }
    }

    pub(super) fn remove_xattr(&self, name: &[u8]) -> Result<(), Errno> {
        match self {
            Access::Fd(fd) => fs::fremovexattr(fd, name),
            Access::Proc(p) => fs::removexattr(p, name),
        }
    }

    /// The names of its xattrs.
    pub(super) fn xattr_names(&self) -> Result<Vec<Vec<u8>>, Errno> {
        let list = grow(|buf| match self {
            Access::Fd(fd) => fs::flistxattr(fd, buf),
            Access::Proc(p) => fs::listxattr(p, buf),
        })?;
        Ok(list
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(<[u8]>::to_vec)
            .collect())
    }

    pub(super) fn xattr(&self, name: &[u8]) -> Result<Vec<u8>, Errno> {
        grow(|buf| match self {
            Access::Fd(fd) => fs::fgetxattr(fd, name, buf),
            Access::Proc(p) => fs::getxattr(p, name, buf),
        })
    }
}

/// Calls `f` with ever larger buffers until what it reads fits (`ERANGE` otherwise).
fn grow(mut f: impl FnMut(&mut [u8]) -> Result<usize, Errno>) -> Result<Vec<u8>, Errno> {
    let mut size = 4096;
    loop {
        let mut buf = vec![0u8; size];
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            // The largest xattr value and list Linux allows are 64 KiB.
            Err(Errno::RANGE) if size < 1 << 20 => size *= 4,
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `data` at `offset`.
pub(super) fn pwrite_all(
    fd: BorrowedFd<'_>,
    mut offset: u64,
    mut data: &[u8],
) -> Result<(), Errno> {
    while !data.is_empty() {
        match rustix::io::pwrite(fd, data, offset) {
            Ok(0) => return Err(Errno::IO),
            Ok(n) => {
                data = &data[n..];
                offset += n as u64;
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Puts a file `name` holding `data` into directory `dir`, whole or not at all, and
/// durably: written as `tmp`, fsynced, renamed over `name`, the directory fsynced. `tmp`
/// is made fresh (`O_EXCL`): whatever had that name, even a hard link to some file
/// elsewhere, is replaced, never written through.
pub(super) fn replace_file(
    dir: BorrowedFd<'_>,
    tmp: &[u8],
    name: &[u8],
    data: &[u8],
) -> Result<(), String> {
    let what = show(tmp);
    match fs::unlinkat(dir, tmp, fs::AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(fail(&what, "remove", e)),
    }
    let fd =
        create_new(dir, tmp, Mode::from_raw_mode(0o644)).map_err(|e| fail(&what, "create", e))?;
    pwrite_all(rustix::fd::AsFd::as_fd(&fd), 0, data).map_err(|e| fail(&what, "write", e))?;
    fs::fsync(&fd).map_err(|e| fail(&what, "fsync", e))?;
    fs::renameat(dir, tmp, dir, name).map_err(|e| fail(&show(name), "rename", e))?;
    fs::fsync(dir).map_err(|e| fail(".", "fsync", e))
}

/// Copies up to `len` bytes at `src_off` of `src` to `dst_off` of `dst`; fewer only at
/// the end of `src`. `copy_file_range` lets the kernel share the blocks where the
/// filesystem can (xfs, btrfs) and copy them in the kernel elsewhere; where it is
/// refused (across filesystems, overlapping ranges of one file, old kernels) the bytes
/// are read and written.
/// Creates the regular file `name` in `dir` for writing: never an existing name, never
/// through a symlink.
pub(super) fn create_new(dir: BorrowedFd<'_>, name: &[u8], mode: Mode) -> Result<OwnedFd, Errno> {
    fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        mode,
    )
}

pub(super) fn copy_range(
    src: BorrowedFd<'_>,
    mut src_off: u64,
    dst: BorrowedFd<'_>,
    mut dst_off: u64,
    len: u64,
) -> Result<u64, Errno> {
    let mut done = 0;
    while done < len {
        let want = usize::try_from(len - done)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match fs::copy_file_range(src, Some(&mut src_off), dst, Some(&mut dst_off), want) {
            Ok(0) => break,
            Ok(n) => done += n as u64,
            Err(Errno::INTR) => {}
            Err(Errno::XDEV | Errno::INVAL | Errno::OPNOTSUPP | Errno::NOSYS) => {
                return Ok(done + copy_by_hand(src, src_off, dst, dst_off, len - done)?);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn copy_by_hand(
    src: BorrowedFd<'_>,
    mut src_off: u64,
    dst: BorrowedFd<'_>,
    mut dst_off: u64,
    len: u64,
) -> Result<u64, Errno> {
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let want = usize::try_from(len - done)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = match rustix::io::pread(src, &mut buf[..want], src_off) {
            Ok(0) => break,
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        };
        pwrite_all(dst, dst_off, &buf[..n])?;
        src_off += n as u64;
        dst_off += n as u64;
        done += n as u64;
    }
    Ok(done)
}

/// Copies the data of regular file `src` (`size` bytes) into the empty `dst`, leaving
/// holes where `src` has them (found with `SEEK_DATA`/`SEEK_HOLE`; where those are not
/// supported the whole file counts as data).
pub(super) fn copy_data(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, size: u64) -> Result<(), Errno> {
    let mut at = 0;
    while at < size {
        let data = match fs::seek(src, fs::SeekFrom::Data(at)) {
            Ok(d) => d,
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL | Errno::OPNOTSUPP) if at == 0 => 0,
            Err(e) => return Err(e),
        };
        if data >= size {
            break;
        }
        let hole = match fs::seek(src, fs::SeekFrom::Hole(data)) {
            Ok(h) => h.min(size),
            Err(Errno::INVAL | Errno::OPNOTSUPP | Errno::NXIO) => size,
            Err(e) => return Err(e),
        };
        let n = copy_range(src, data, dst, data, hole - data)?;
        if n < hole - data {
            break; // src shrank meanwhile
        }
        at = hole;
    }
    fs::ftruncate(dst, size)
}

/// A stream's fallocate. Where the filesystem lacks a mode (tmpfs has no zero range,
/// ramfs no fallocate at all) the same bytes are made another way: a punched hole, or
/// zeros written below the size, and the size extended; only the block layout differs.
pub(super) fn fallocate(
    fd: BorrowedFd<'_>,
    mode: crate::Falloc,
    offset: u64,
    len: u64,
) -> Result<(), Errno> {
    let mut flags = fs::FallocateFlags::empty();
    if mode.keep_size {
        flags |= fs::FallocateFlags::KEEP_SIZE;
    }
    if mode.punch_hole {
        flags |= fs::FallocateFlags::PUNCH_HOLE;
    }
    if mode.zero_range {
        flags |= fs::FallocateFlags::ZERO_RANGE;
    }
    match fs::fallocate(fd, flags, offset, len) {
        Err(Errno::OPNOTSUPP) => {}
        r => return r,
    }
    let size = file_size(&fs::fstat(fd)?);
    let end = offset.saturating_add(len);
    // Past the size a file reads as zeros already: only the part below it needs
    // clearing, so a forged length never turns into that many bytes written.
    let clear_end = end.min(size);
    if (mode.punch_hole || mode.zero_range) && offset < clear_end {
        let punch = fs::FallocateFlags::PUNCH_HOLE | fs::FallocateFlags::KEEP_SIZE;
        match fs::fallocate(fd, punch, offset, clear_end - offset) {
            Err(Errno::OPNOTSUPP) => write_zeros(fd, offset, clear_end)?,
            r => r?,
        }
    }
    if !mode.keep_size && end > size {
        fs::ftruncate(fd, end)?;
    }
    Ok(())
}

fn write_zeros(fd: BorrowedFd<'_>, mut from: u64, to: u64) -> Result<(), Errno> {
    let zeros = vec![0u8; 1 << 20];
    while from < to {
        let n = usize::try_from(to - from)
            .unwrap_or(usize::MAX)
            .min(zeros.len());
        pwrite_all(fd, from, &zeros[..n])?;
        from += n as u64;
    }
    Ok(())
}

// `struct stat` field types differ between architectures; these read them as one type.

#[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
pub(super) fn file_size(st: &Stat) -> u64 {
    u64::try_from(st.st_size).unwrap_or(0)
}

/// (device, inode): what identifies an inode.
#[allow(clippy::useless_conversion)]
pub(super) fn identity(st: &Stat) -> (u64, u64) {
    (u64::from(st.st_dev), u64::from(st.st_ino))
}

#[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
pub(super) fn times(st: &Stat) -> fs::Timestamps {
    let ts = |sec: i64, nsec: i64| fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec.try_into().unwrap_or(0),
    };
    let nsec = |n| i64::try_from(n).unwrap_or(0);
    fs::Timestamps {
        last_access: ts(st.st_atime.into(), nsec(st.st_atime_nsec)),
        last_modification: ts(st.st_mtime.into(), nsec(st.st_mtime_nsec)),
    }
}

pub(super) fn stream_time(t: arbor_send::Timespec) -> fs::Timespec {
    fs::Timespec {
        tv_sec: t.sec,
        tv_nsec: t.nsec.into(),
    }
}
