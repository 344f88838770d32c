//! Helpers shared by the send/receive tests: a fresh filesystem on memory, and a
//! comparable description of a tree.
#![allow(dead_code)]

use arbor_engine::MkfsOptions;
use arbor_engine::storage::MemStorage;
use arbor_fs::{Caller, Fs, FsOptions};
use std::sync::Arc;

pub fn fresh() -> Fs {
    let dev = Arc::new(MemStorage::new(256 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    Fs::open(dev, &FsOptions::default()).unwrap()
}

/// Root, with umask 022: who the tests make files as.
pub fn who() -> Caller {
    Caller {
        uid: 0,
        gid: 0,
        umask: 0o022,
    }
}

/// `n` bytes that differ with `seed` and do not repeat within a block.
pub fn pattern(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

pub fn fnv(d: &[u8]) -> u32 {
    d.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Every path with what it is: kind and mode, owner, links, times, size, contents,
/// hole layout (with `holes_too`), xattrs, symlink target; the root's own mode, owner
/// and times first.
pub fn describe(fs: &Fs, top: u64, holes_too: bool) -> Vec<String> {
    let r = fs.getattr(top).unwrap();
    let mut out = vec![format!(
        "/ mode {:o} {}:{} mtime {}.{}",
        r.mode, r.uid, r.gid, r.mtime.sec, r.mtime.nsec
    )];
    let mut todo = vec![(top, String::new())];
    while let Some((dir, prefix)) = todo.pop() {
        for e in fs.readdir(dir, 2, usize::MAX).unwrap() {
            let path = format!("{prefix}{}", String::from_utf8_lossy(&e.name));
            let i = fs.getattr(e.ino).unwrap();
            let mut d = format!(
                "{path} mode {:o} {}:{} nlink {} mtime {}.{} size {}",
                i.mode, i.uid, i.gid, i.nlink, i.mtime.sec, i.mtime.nsec, i.size
            );
            if i.is_dir() {
                todo.push((e.ino, format!("{path}/")));
            } else if i.mode & 0o170000 == 0o020000 || i.mode & 0o170000 == 0o060000 {
                d += &format!(" rdev {:x}", i.rdev);
            } else if i.is_reg() || i.mode & 0o170000 == 0o120000 {
                let data = fs.read_file(e.ino, 0, u32::MAX).unwrap();
                d += &format!(" data {:x}", fnv(&data));
                if i.is_reg() && holes_too {
                    let mut holes = Vec::new();
                    let mut at = 0;
                    while at < i.size {
                        let h = fs.seek(e.ino, at, false).unwrap();
                        if h >= i.size {
                            break;
                        }
                        let next = fs.seek(e.ino, h, true).unwrap_or(i.size);
                        holes.push((h, next));
                        at = next;
                    }
                    d += &format!(" holes {holes:?}");
                }
            }
            let mut names = fs.listxattr(e.ino).unwrap();
            names.sort();
            for n in names {
                let v = fs.getxattr(e.ino, &n).unwrap();
                d += &format!(" {}={:x}", String::from_utf8_lossy(&n), fnv(&v));
            }
            out.push(d);
        }
    }
    out.sort();
    out
}
