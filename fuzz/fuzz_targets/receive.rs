//! Fuzz target `receive`: send streams built from arbitrary bytes, applied by
//! `arbor_sendrecv::receive` to an in-memory filesystem that already holds a file.
//!
//! Contract: errors are fine, panics are bugs; and whatever the stream says, the file
//! outside the received subvolume is untouched and the filesystem checks clean
//! afterwards (`fsck` and the image checker).
//!
//! The input is read as a list of commands over a small alphabet of paths (with `..`,
//! absolute paths, empty components, long chains and names that collide), so that the
//! receiver's path handling, renames, links, writes, clones and truncations meet each
//! other often; one byte comes first: the stream version, and whether the header says
//! the stream resumes an interrupted receive (then `arbor_resume` commands matter).
#![no_main]

use arbor_engine::MkfsOptions;
use arbor_engine::storage::MemStorage;
use arbor_fs::{Caller, Fs, FsOptions, ROOT_INO};
use arbor_send::{Command, StreamWriter, Timespec};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

const PATHS: &[&[u8]] = &[
    b"a", b"b", b"a/b", b"a/c", b"b/a", b"a/b/c", b"..", b"../victim", b"/victim", b"a//b",
    b".", b"a/.", b"l", b"l/x", b"", b"o257-1-0", b"a/b/c/d",
];

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u64(&mut self) -> Option<u64> {
        let v = u64::from(self.u8()?) << 12 | u64::from(self.u8()?);
        Some(v)
    }
    fn path(&mut self) -> Option<Vec<u8>> {
        Some(PATHS[usize::from(self.u8()?) % PATHS.len()].to_vec())
    }
}

fn command(b: &mut Bytes<'_>) -> Option<Command> {
    let ts = Timespec { sec: 1, nsec: 2 };
    Some(match b.u8()? % 18 {
        0 => Command::Subvol { path: b.path()?, uuid: [b.u8()?; 16], ctransid: 1 },
        1 => Command::Mkfile { path: b.path()?, ino: 257 },
        2 => Command::Mkdir { path: b.path()?, ino: 258 },
        3 => Command::Symlink { path: b.path()?, ino: 259, path_link: b.path()? },
        4 => Command::Rename { path: b.path()?, path_to: b.path()? },
        5 => Command::Link { path: b.path()?, path_link: b.path()? },
        6 => Command::Unlink { path: b.path()? },
        7 => Command::Rmdir { path: b.path()? },
        8 => Command::Write { path: b.path()?, offset: b.u64()?, data: vec![b.u8()?; usize::from(b.u8()?) * 64] },
        9 => Command::Truncate { path: b.path()?, size: b.u64()? },
        10 => Command::Chmod { path: b.path()?, mode: u64::from(b.u8()?) << 3 },
        11 => Command::Chown { path: b.path()?, uid: u64::from(b.u8()?), gid: 0 },
        12 => Command::Utimes { path: b.path()?, atime: ts, mtime: ts, ctime: ts, otime: None },
        13 => Command::SetXattr { path: b.path()?, name: b"user.x".to_vec(), data: vec![b.u8()?] },
        14 => Command::Clone {
            path: b.path()?,
            offset: b.u64()? & !4095,
            len: b.u64()?,
            clone_uuid: [b.u8()?; 16],
            clone_ctransid: 1,
            clone_path: b.path()?,
            clone_offset: b.u64()? & !4095,
        },
        15 => Command::Mkfifo { path: b.path()?, ino: 260, rdev: 0, mode: 0o10644 },
        16 => Command::ArborResume { uuid: [b.u8()?; 16], ctransid: 1, skip: u64::from(b.u8()?) },
        _ => Command::End,
    })
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let Some(version) = b.u8() else { return };
    // Bit 1: a stream that says it resumes an interrupted receive.
    let resumed = version & 2 != 0;
    let version = 1 + u32::from(version % 2);
    let w = if resumed {
        StreamWriter::new_resumed(Vec::new(), version)
    } else {
        StreamWriter::new(Vec::new(), version)
    };
    let Ok(mut w) = w else { return };
    while let Some(cmd) = command(&mut b) {
        if w.write_command(&cmd).is_err() {
            return;
        }
    }
    let stream = w.into_inner();

    let dev = Arc::new(MemStorage::new(32 << 20));
    if Fs::mkfs(dev.clone(), &MkfsOptions::default()).is_err() {
        return;
    }
    let Ok(fs) = Fs::open(dev.clone(), &FsOptions::default()) else { return };
    let root = Caller { uid: 0, gid: 0, umask: 0o022 };
    let victim = fs.create(ROOT_INO, b"victim", 0o100644, 0, root, None).expect("victim");
    fs.write_file(victim.ino, 0, b"keep", false).expect("victim data");

    let _ = arbor_sendrecv::receive(&fs, ROOT_INO, &stream[..]);

    let after = fs.lookup(ROOT_INO, b"victim").expect("the victim is still there");
    assert_eq!(after.ino, victim.ino);
    assert_eq!(fs.read_file(victim.ino, 0, 100).expect("read"), b"keep");
    let problems = fs.fsck().expect("fsck");
    assert!(problems.is_empty(), "{problems:?}");
    fs.sync().expect("commit");
    let report = Fs::check_image(dev);
    assert!(report.is_clean(), "{report}");
});
