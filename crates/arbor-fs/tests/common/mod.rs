//! Helpers shared by the filesystem model's tests: a filesystem on memory, a caller,
//! making names, and the two checkers. (Each test binary uses some of them.)
#![allow(dead_code)]

use arbor_engine::MkfsOptions;
use arbor_engine::storage::MemStorage;
use arbor_fs::{Caller, Fs, FsOptions};
use std::sync::Arc;

pub const REG: u32 = 0o100644;
pub const DIR: u32 = 0o040755;

/// A fresh filesystem of `size` bytes on memory, and its device.
pub fn fs_on(size: u64) -> (Arc<MemStorage>, Fs) {
    let dev = Arc::new(MemStorage::new(size));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Fs::open(dev.clone(), &FsOptions::default()).unwrap();
    (dev, fs)
}

/// An ordinary user.
pub fn who() -> Caller {
    Caller {
        uid: 1000,
        gid: 1000,
        umask: 0o022,
    }
}

/// Makes `name` in `parent` with `mode` (a file, directory or special file).
pub fn mk(fs: &Fs, parent: u64, name: &str, mode: u32) -> u64 {
    fs.create(parent, name.as_bytes(), mode, 0, who(), None)
        .unwrap()
        .ino
}

/// fsck finds nothing, and after a commit neither does the image checker.
pub fn assert_consistent(dev: &Arc<MemStorage>, fs: &Fs) {
    let p = fs.fsck().unwrap();
    assert!(p.is_empty(), "fsck: {p:#?}");
    fs.sync().unwrap();
    let r = Fs::check_image(dev.clone());
    assert!(r.is_clean(), "{r}");
}

/// The names in a directory, in listing order, without `.` and `..`.
pub fn names(fs: &Fs, dir: u64) -> Vec<String> {
    fs.readdir(dir, 2, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|d| String::from_utf8(d.name).unwrap())
        .collect()
}

/// The names in a directory, `.` and `..` included.
pub fn entries(fs: &Fs, dir: u64) -> Vec<String> {
    fs.readdir(dir, 0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|d| String::from_utf8(d.name).unwrap())
        .collect()
}
