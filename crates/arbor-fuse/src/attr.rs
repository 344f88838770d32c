//! Inode numbers and attributes as FUSE sees them.

use arbor_fs::{Inode, ROOT_INO, Time};
use fuser::{FileAttr, FileType, INodeNo};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// FUSE's root is node 1; ours is inode 256, as in btrfs.
pub fn to_ino(n: INodeNo) -> u64 {
    if n.0 == 1 { ROOT_INO } else { n.0 }
}

pub fn to_node(ino: u64) -> INodeNo {
    INodeNo(if ino == ROOT_INO { 1 } else { ino })
}

pub fn system_time(t: Time) -> SystemTime {
    let nanos = Duration::new(t.sec.unsigned_abs(), 0);
    if t.sec >= 0 {
        UNIX_EPOCH + nanos + Duration::from_nanos(u64::from(t.nsec))
    } else {
        UNIX_EPOCH - nanos + Duration::from_nanos(u64::from(t.nsec))
    }
}

pub fn from_system_time(t: SystemTime) -> Time {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Time {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            if d.subsec_nanos() == 0 {
                Time {
                    sec: -(d.as_secs() as i64),
                    nsec: 0,
                }
            } else {
                Time {
                    sec: -(d.as_secs() as i64) - 1,
                    nsec: 1_000_000_000 - d.subsec_nanos(),
                }
            }
        }
    }
}

pub fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

pub fn dtype_to_file_type(dtype: u8) -> FileType {
    file_type(u32::from(dtype) << 12)
}

pub fn file_attr(i: &Inode) -> FileAttr {
    FileAttr {
        ino: INodeNo(i.ino),
        size: i.size,
        blocks: i.nbytes.div_ceil(512),
        atime: system_time(i.atime),
        mtime: system_time(i.mtime),
        ctime: system_time(i.ctime),
        crtime: system_time(i.crtime),
        kind: file_type(i.mode),
        perm: (i.mode & 0o7777) as u16,
        nlink: i.nlink,
        uid: i.uid,
        gid: i.gid,
        rdev: i.rdev as u32,
        blksize: 4096,
        flags: 0,
    }
}
