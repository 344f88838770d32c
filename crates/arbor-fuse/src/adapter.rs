//! fuser's `Filesystem` trait, mapped onto [`arbor_fs::Fs`]. Every request is served
//! on the worker thread that received it; the filesystem does its own locking.

use crate::attr::{dtype_to_file_type, file_attr, from_system_time, to_ino, to_node};
use crate::errno::errno;
use arbor_fs::{Caller, FallocMode, Fs, FsError, RenameFlags, SetAttr, SetTime, XattrFlags};
use fuser::{
    Errno, FileHandle, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

/// The FUSE face of a filesystem.
#[derive(Debug)]
pub struct Adapter {
    pub(crate) fs: Arc<Fs>,
    /// How long the kernel may cache attributes and entries. The daemon is the only
    /// writer, and the kernel invalidates what its own requests change.
    pub(crate) ttl: Duration,
    pub(crate) read_only: bool,
    pub(crate) writeback_cache: bool,
    /// Tells the kernel about changes it cannot see (the blocks a write allocated).
    pub(crate) notifier: Arc<OnceLock<fuser::Notifier>>,
    pub(crate) stats: crate::stats::Stats,
}

fn caller(req: &Request, umask: u32) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        umask,
    }
}

/// Answers getxattr and listxattr: the size alone when asked with size 0, the bytes
/// when they fit, ERANGE when they do not.
fn xattr_reply(value: Result<Vec<u8>, FsError>, size: u32, reply: ReplyXattr) {
    match value {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() <= size as usize => reply.data(&v),
        Ok(_) => reply.error(Errno::from_i32(libc::ERANGE)),
        Err(e) => reply.error(errno(&e)),
    }
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(s) => SetTime::At(from_system_time(s)),
    })
}

impl Adapter {
    fn entry(&self, r: Result<arbor_fs::Inode, FsError>, reply: ReplyEntry) {
        match r {
            Ok(i) => reply.entry(&self.ttl, &file_attr(&i), Generation(i.generation)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn empty(r: Result<(), FsError>, reply: ReplyEmpty) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Creates a node of any kind in `parent` for the caller.
    #[allow(clippy::too_many_arguments)]
    fn make(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u64,
        target: Option<&[u8]>,
    ) -> Result<arbor_fs::Inode, FsError> {
        self.ro()?;
        self.fs.create(
            to_ino(parent),
            name.as_bytes(),
            mode,
            rdev,
            caller(req, umask),
            target,
        )
    }

    fn ro(&self) -> Result<(), FsError> {
        if self.read_only {
            Err(FsError::Engine(arbor_engine::Error::ReadOnly))
        } else {
            Ok(())
        }
    }
}

impl fuser::Filesystem for Adapter {
    fn init(&mut self, _req: &Request, kc: &mut KernelConfig) -> std::io::Result<()> {
        let einval = |_| std::io::Error::from_raw_os_error(libc::EINVAL);
        kc.set_max_write(1 << 20).map_err(einval)?;
        if let Err(nearest) = kc.set_max_readahead(1 << 20) {
            let _ = kc.set_max_readahead(nearest);
        }
        let _ = kc.set_time_granularity(Duration::from_nanos(1));
        let wanted = InitFlags::FUSE_WRITEBACK_CACHE
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_POSIX_ACL
            | InitFlags::FUSE_DONT_MASK
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_ASYNC_DIO
            // The daemon clears set-user-ID, set-group-ID and security.capability on
            // writes, truncations and chowns, so the kernel need not ask for
            // security.capability before every write (SB_NOSEC).
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        let wanted = if !self.writeback_cache {
            wanted - InitFlags::FUSE_WRITEBACK_CACHE
        } else {
            wanted
        };
        if let Err(missing) = kc.add_capabilities(wanted) {
            tracing::warn!("the kernel lacks FUSE capabilities {missing:?}");
            let _ = kc.add_capabilities(wanted - missing);
        }
        tracing::info!(
            "FUSE ABI {:?}: max_write 1048576, capabilities {:?}",
            kc.kernel_abi(),
            kc.capabilities() & wanted
        );
        Ok(())
    }

    fn destroy(&mut self) {
        tracing::info!("{}", self.stats.summary());
        if let Err(e) = self.fs.sync() {
            tracing::error!("final commit failed: {e}");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.stats.request("lookup");
        self.entry(self.fs.lookup(to_ino(parent), name.as_bytes()), reply);
    }

    fn forget(&self, _req: &Request, _ino: INodeNo, _nlookup: u64) {
        self.stats.request("forget");
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.stats.request("getattr");
        tracing::trace!(?ino, ?_fh, "getattr");
        match self.fs.getattr(to_ino(ino)) {
            Ok(i) => reply.attr(&self.ttl, &file_attr(&i)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.stats.request("setattr");
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
            ctime: ctime.map(from_system_time),
            crtime: crtime.map(from_system_time),
            // With FUSE_HANDLE_KILLPRIV_V2 the daemon clears set-user-ID and
            // set-group-ID on a chown, and on a truncation by a caller without
            // CAP_FSETID (fuser does not pass FATTR_KILL_SUIDGID; root stands for it).
            kill_suid: uid.is_some() || gid.is_some() || (size.is_some() && req.uid() != 0),
        };
        match self.ro().and_then(|()| self.fs.setattr(to_ino(ino), &set)) {
            Ok(i) => reply.attr(&self.ttl, &file_attr(&i)),
            // With the writeback cache the kernel writes an inode's times back when it
            // syncs, even after the inode was unlinked and freed here. Failing that
            // would fail syncfs(2); the times of a deleted inode do not matter.
            Err(FsError::NotFound)
                if mode.is_none() && uid.is_none() && gid.is_none() && size.is_none() =>
            {
                let gone = arbor_fs::Inode {
                    ino: to_ino(ino),
                    mode: libc::S_IFREG,
                    ..Default::default()
                };
                reply.attr(&Duration::ZERO, &file_attr(&gone));
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.stats.request("readlink");
        match self.fs.readlink(to_ino(ino)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.stats.request("mknod");
        self.entry(
            self.make(req, parent, name, mode, umask, rdev.into(), None),
            reply,
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.stats.request("mkdir");
        let mode = libc::S_IFDIR | (mode & 0o7777);
        self.entry(self.make(req, parent, name, mode, umask, 0, None), reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.stats.request("unlink");
        Self::empty(
            self.ro()
                .and_then(|()| self.fs.unlink(to_ino(parent), name.as_bytes())),
            reply,
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.stats.request("rmdir");
        Self::empty(
            self.ro()
                .and_then(|()| self.fs.rmdir(to_ino(parent), name.as_bytes())),
            reply,
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.stats.request("symlink");
        let target = Some(target.as_os_str().as_bytes());
        let r = self.make(req, parent, link_name, libc::S_IFLNK | 0o777, 0, 0, target);
        self.entry(r, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.stats.request("rename");
        if flags.contains(fuser::RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::from_i32(libc::EINVAL));
        }
        let f = RenameFlags {
            noreplace: flags.contains(fuser::RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(fuser::RenameFlags::RENAME_EXCHANGE),
        };
        let r = self.ro().and_then(|()| {
            self.fs.rename(
                to_ino(parent),
                name.as_bytes(),
                to_ino(newparent),
                newname.as_bytes(),
                f,
            )
        });
        Self::empty(r, reply);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.stats.request("link");
        let r = self.ro().and_then(|()| {
            self.fs
                .link(to_ino(ino), to_ino(newparent), newname.as_bytes())
        });
        self.entry(r, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.stats.request("open");
        let writes = flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        if writes && (self.read_only || self.fs.is_read_only_inode(to_ino(ino))) {
            return reply.error(Errno::from_i32(libc::EROFS));
        }
        match self.fs.open_inode(to_ino(ino)) {
            // Every change goes through this mount, so pages cached by an earlier open
            // are still right: keep them.
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.stats.read(size as usize);
        match self.fs.read_file(to_ino(ino), offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.stats.write(data.len());
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match self
            .ro()
            .and_then(|()| self.fs.write_file(to_ino(ino), offset, data, kill))
        {
            Ok(_) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    // No FLUSH handler: writes reach the engine when they arrive, and ENOSYS tells the
    // kernel to stop sending FLUSH on every close (one round trip fewer per file).
    // Close still writes back dirty pages and reports their errors.

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.stats.request("release");
        Self::empty(self.fs.release_inode(to_ino(ino)), reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.stats.request("fsync");
        match self.fs.sync() {
            Ok(()) => {
                // With the writeback cache the kernel keeps size and times itself but
                // not st_blocks, and refreshes it only at close: drop its cached
                // attributes (not its pages) so that fstat after fsync is exact. Before
                // the reply, so that it has happened when fsync returns.
                if let Some(n) = self.notifier.get()
                    && let Err(e) = n.inval_inode(ino, -1, 0)
                {
                    tracing::debug!("attribute invalidation for {ino:?} failed: {e}");
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.stats.request("opendir");
        match self.fs.open_inode(to_ino(ino)) {
            // Likewise for listings: the kernel drops a directory's cached listing
            // whenever it changes the directory itself.
            Ok(i) if i.is_dir() => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Ok(_) => {
                let _ = self.fs.release_inode(to_ino(ino));
                reply.error(Errno::from_i32(libc::ENOTDIR));
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.stats.request("readdir");
        match self.fs.readdir(to_ino(ino), offset, 256) {
            Ok(list) => {
                for d in list {
                    if reply.add(
                        to_node(d.ino),
                        d.next,
                        dtype_to_file_type(d.dtype),
                        OsStr::from_bytes(&d.name),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.stats.request("readdirplus");
        match self.fs.readdir(to_ino(ino), offset, 128) {
            Ok(list) => {
                for d in list {
                    let attr = match self.fs.getattr(d.ino) {
                        Ok(a) => a,
                        Err(e) => return reply.error(errno(&e)),
                    };
                    let full = reply.add(
                        to_node(d.ino),
                        d.next,
                        OsStr::from_bytes(&d.name),
                        &self.ttl,
                        &file_attr(&attr),
                        Generation(attr.generation),
                    );
                    if full {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.stats.request("releasedir");
        Self::empty(self.fs.release_inode(to_ino(ino)), reply);
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.stats.request("fsyncdir");
        Self::empty(self.fs.sync(), reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.stats.request("statfs");
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks,
                s.blocks_free,
                s.blocks_avail,
                s.files,
                s.files_free,
                s.block_size,
                s.name_max,
                s.block_size,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.stats.request("setxattr");
        let f = XattrFlags {
            create: flags & libc::XATTR_CREATE != 0,
            replace: flags & libc::XATTR_REPLACE != 0,
        };
        let r = self
            .ro()
            .and_then(|()| self.fs.setxattr(to_ino(ino), name.as_bytes(), value, f));
        Self::empty(r, reply);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.stats.request("getxattr");
        xattr_reply(self.fs.getxattr(to_ino(ino), name.as_bytes()), size, reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.stats.request("listxattr");
        let list = self.fs.listxattr(to_ino(ino)).map(|names| {
            let mut buf = Vec::new();
            for n in names {
                buf.extend_from_slice(&n);
                buf.push(0);
            }
            buf
        });
        xattr_reply(list, size, reply);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.stats.request("removexattr");
        let r = self
            .ro()
            .and_then(|()| self.fs.removexattr(to_ino(ino), name.as_bytes()));
        Self::empty(r, reply);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        self.stats.request("create");
        let mode = libc::S_IFREG | (mode & 0o7777);
        let r = self
            .make(req, parent, name, mode, umask, 0, None)
            .and_then(|i| self.fs.open_inode(i.ino));
        match r {
            Ok(i) => reply.created(
                &self.ttl,
                &file_attr(&i),
                Generation(i.generation),
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Within one arbor filesystem, block-aligned ranges are shared, not copied
    /// (reflinks): `cp` of a large file is instant and takes no new space.
    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.stats.request("copy_file_range");
        // The kernel asks for at most 4 GiB - 4 KiB at a time (the reply is 32-bit).
        const MAX_COPY: u32 = !4095;
        let len = len.min(u64::from(MAX_COPY));
        match self.ro().and_then(|()| {
            self.fs
                .copy_range(to_ino(ino_in), offset_in, to_ino(ino_out), offset_out, len)
        }) {
            Ok(n) => reply.written(u32::try_from(n).unwrap_or(MAX_COPY)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.stats.request("fallocate");
        let known =
            libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
        if mode & !known != 0 {
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        let m = FallocMode {
            keep_size: mode & libc::FALLOC_FL_KEEP_SIZE != 0,
            punch_hole: mode & libc::FALLOC_FL_PUNCH_HOLE != 0,
            zero_range: mode & libc::FALLOC_FL_ZERO_RANGE != 0,
        };
        let r = self
            .ro()
            .and_then(|()| self.fs.fallocate(to_ino(ino), offset, length, m));
        Self::empty(r.map(|_| ()), reply);
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.stats.request("lseek");
        let data = match whence {
            libc::SEEK_DATA => true,
            libc::SEEK_HOLE => false,
            _ => return reply.error(Errno::from_i32(libc::EINVAL)),
        };
        let Ok(off) = u64::try_from(offset) else {
            return reply.error(Errno::from_i32(libc::ENXIO));
        };
        match self.fs.seek(to_ino(ino), off, data) {
            Ok(o) => reply.offset(o as i64),
            Err(e) => reply.error(errno(&e)),
        }
    }
}
