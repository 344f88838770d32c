//! Incremental send: random operations between two snapshots, then `send -p`, received
//! onto a copy of the parent, must give the new snapshot exactly (contents, holes,
//! modes, owners, times, xattrs, hard links); and each hard case on its own. Every
//! stream is also read by the real `btrfs receive --dump` (when btrfs-progs is here).

mod common;

use arbor_fs::{Caller, Fs, ROOT_INO, RenameFlags, SetAttr, SetTime, Time};
use arbor_sendrecv::{SendOptions, receive, send_full, send_incremental};
use common::{describe, fresh};
use proptest::prelude::*;

fn root() -> Caller {
    Caller {
        uid: 0,
        gid: 0,
        umask: 0o022,
    }
}

/// Sends `parent` in full and `snap` incrementally (both stream versions), receives
/// both into a fresh filesystem, and compares with the source.
fn round_trip(fs: &Fs, parent: u64, snap: u64) {
    for version in [1, 2] {
        let opts = SendOptions {
            version,
            ..Default::default()
        };
        let dst = fresh();
        let mut full = Vec::new();
        send_full(fs, parent, b"p", &mut full, opts.clone()).unwrap();
        receive(&dst, ROOT_INO, &full[..]).unwrap();
        let mut inc = Vec::new();
        send_incremental(fs, parent, snap, b"s", &mut inc, opts.clone()).unwrap();
        let got = receive(&dst, ROOT_INO, &inc[..]).unwrap_or_else(|e| {
            let mut text = Vec::new();
            let _ = arbor_send::dump_stream(&inc[..], &mut text);
            panic!("v{version}: {e}\n{}", String::from_utf8_lossy(&text))
        });
        // Version 1 has no command for holes: they arrive as zeros.
        let want = describe(fs, snap, version >= 2);
        let have = describe(&dst, got.subvolumes[0], version >= 2);
        if want != have {
            let mut text = Vec::new();
            let _ = arbor_send::dump_stream(&inc[..], &mut text);
            panic!(
                "v{version}: received tree differs\nwant {want:#?}\nhave {have:#?}\nstream:\n{}",
                String::from_utf8_lossy(&text)
            );
        }
        assert!(dst.fsck().unwrap().is_empty());
        progs_dump_accepts(&full);
        progs_dump_accepts(&inc);
    }
}

/// `btrfs receive --dump` reads `stream` to its end without complaint.
fn progs_dump_accepts(stream: &[u8]) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let Ok(mut child) = Command::new("btrfs")
        .args(["receive", "--dump"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    else {
        return;
    };
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stream).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "btrfs receive --dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A subvolume "vol" set up by `before`, snapshot p, changed by `after`, snapshot s.
fn case(before: impl Fn(&Fs, u64), after: impl Fn(&Fs, u64)) {
    let fs = fresh();
    let vol = fs.subvol_create(ROOT_INO, b"vol", root()).unwrap().root;
    before(&fs, vol);
    let p = fs.subvol_snapshot(vol, ROOT_INO, b"p", true).unwrap().root;
    after(&fs, vol);
    let s = fs.subvol_snapshot(vol, ROOT_INO, b"s", true).unwrap().root;
    round_trip(&fs, p, s);
}

fn mk(fs: &Fs, dir: u64, name: &str, mode: u32) -> u64 {
    fs.create(dir, name.as_bytes(), mode, 0, root(), None)
        .unwrap()
        .ino
}

fn at(fs: &Fs, dir: u64, path: &str) -> u64 {
    path.split('/')
        .fold(dir, |d, n| fs.lookup(d, n.as_bytes()).unwrap().ino)
}

fn mv(fs: &Fs, top: u64, from: &str, to: &str) {
    let (fd, fname) = from.rsplit_once('/').map_or(("", from), |x| x);
    let (td, tname) = to.rsplit_once('/').map_or(("", to), |x| x);
    let fdir = if fd.is_empty() { top } else { at(fs, top, fd) };
    let tdir = if td.is_empty() { top } else { at(fs, top, td) };
    fs.rename(
        fdir,
        fname.as_bytes(),
        tdir,
        tname.as_bytes(),
        RenameFlags::default(),
    )
    .unwrap();
}

#[test]
fn a_directory_moved_into_what_was_its_own_descendant() {
    case(
        |fs, v| {
            let a = mk(fs, v, "a", 0o040755);
            let b = mk(fs, a, "b", 0o040755);
            mk(fs, b, "f", 0o100644);
        },
        |fs, v| {
            mv(fs, v, "a/b", "b");
            mv(fs, v, "a", "b/a");
        },
    );
}

#[test]
fn swapped_names_and_a_new_file_in_a_deleted_files_place() {
    case(
        |fs, v| {
            let x = mk(fs, v, "x", 0o100644);
            fs.write_file(x, 0, b"xxx", false).unwrap();
            let y = mk(fs, v, "y", 0o100644);
            fs.write_file(y, 0, b"yyyy", false).unwrap();
            mk(fs, v, "gone", 0o100644);
        },
        |fs, v| {
            mv(fs, v, "x", "t");
            mv(fs, v, "y", "x");
            mv(fs, v, "t", "y");
            fs.unlink(v, b"gone").unwrap();
            let n = mk(fs, v, "gone", 0o100600);
            fs.write_file(n, 0, b"new one", false).unwrap();
        },
    );
}

#[test]
fn hard_links_come_and_go_and_a_file_becomes_a_directory_and_back() {
    case(
        |fs, v| {
            let f = mk(fs, v, "f", 0o100644);
            fs.write_file(f, 0, b"linked", false).unwrap();
            fs.link(f, v, b"l1").unwrap();
            mk(fs, v, "fd", 0o100644);
            mk(fs, v, "df", 0o040755);
        },
        |fs, v| {
            let f = at(fs, v, "f");
            fs.unlink(v, b"l1").unwrap();
            let d = mk(fs, v, "sub", 0o040755);
            fs.link(f, d, b"l2").unwrap();
            fs.link(f, v, b"l3").unwrap();
            fs.unlink(v, b"fd").unwrap();
            mk(fs, v, "fd", 0o040700);
            fs.rmdir(v, b"df").unwrap();
            mk(fs, v, "df", 0o100644);
        },
    );
}

#[test]
fn xattrs_holes_times_and_owners_change() {
    case(
        |fs, v| {
            let f = mk(fs, v, "sparse", 0o100644);
            fs.write_file(f, 0, &vec![7u8; 300_000], false).unwrap();
            fs.setxattr(f, b"user.a", b"1", Default::default()).unwrap();
            fs.setxattr(f, b"user.b", b"2", Default::default()).unwrap();
        },
        |fs, v| {
            let f = at(fs, v, "sparse");
            fs.fallocate(
                f,
                4096,
                65536,
                arbor_fs::FallocMode {
                    keep_size: true,
                    punch_hole: true,
                    zero_range: false,
                },
            )
            .unwrap();
            fs.write_file(f, 5 << 20, b"far away", false).unwrap();
            fs.removexattr(f, b"user.a").unwrap();
            fs.setxattr(f, b"user.b", b"changed", Default::default())
                .unwrap();
            fs.setxattr(f, b"user.c", b"new", Default::default())
                .unwrap();
            fs.setattr(
                f,
                &SetAttr {
                    uid: Some(1000),
                    gid: Some(100),
                    mode: Some(0o640),
                    mtime: Some(SetTime::At(Time {
                        sec: 1_000_000,
                        nsec: 5,
                    })),
                    ..Default::default()
                },
            )
            .unwrap();
        },
    );
}

#[derive(Clone, Debug)]
enum Op {
    Create(u8, u8),
    Mkdir(u8, u8),
    Write(u8, u32, u16, u8),
    Truncate(u8, u32),
    Unlink(u8, u8),
    Rmdir(u8, u8),
    Rename(u8, u8, u8, u8),
    Link(u8, u8, u8),
    Xattr(u8, u8),
    Chmod(u8, u16),
    /// copy_file_range: source file, block, destination file, block, blocks (shares
    /// the blocks, so that the send has clones to find).
    Reflink(u8, u8, u8, u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..4, 0u8..6).prop_map(|(d, n)| Op::Create(d, n)),
        2 => (0u8..4, 0u8..6).prop_map(|(d, n)| Op::Mkdir(d, n)),
        4 => (any::<u8>(), 0u32..400_000, 1u16..20_000, any::<u8>()).prop_map(|(f, o, l, s)| Op::Write(f, o, l, s)),
        1 => (any::<u8>(), 0u32..400_000).prop_map(|(f, s)| Op::Truncate(f, s)),
        2 => (0u8..4, 0u8..6).prop_map(|(d, n)| Op::Unlink(d, n)),
        1 => (0u8..4, 0u8..6).prop_map(|(d, n)| Op::Rmdir(d, n)),
        3 => (0u8..4, 0u8..6, 0u8..4, 0u8..6).prop_map(|(a, b, c, d)| Op::Rename(a, b, c, d)),
        1 => (any::<u8>(), 0u8..4, 0u8..6).prop_map(|(f, d, n)| Op::Link(f, d, n)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(f, v)| Op::Xattr(f, v)),
        1 => (any::<u8>(), 0u16..0o777).prop_map(|(f, m)| Op::Chmod(f, m)),
        2 => (any::<u8>(), 0u8..100, any::<u8>(), 0u8..100, 1u8..64).prop_map(|(a, b, c, d, e)| Op::Reflink(a, b, c, d, e)),
    ]
}

/// Directories and files of a subvolume, in a stable order.
fn inventory(fs: &Fs, top: u64) -> (Vec<u64>, Vec<u64>) {
    let (mut dirs, mut files) = (vec![top], Vec::new());
    let mut i = 0;
    while i < dirs.len() {
        for e in fs.readdir(dirs[i], 2, usize::MAX).unwrap() {
            if fs.getattr(e.ino).unwrap().is_dir() {
                dirs.push(e.ino);
            } else {
                files.push(e.ino);
            }
        }
        i += 1;
    }
    (dirs, files)
}

/// Applies an operation where it makes sense; errors (names taken, missing, not
/// empty, loops) are simply part of the random walk.
fn apply(fs: &Fs, top: u64, op: &Op) {
    let (dirs, files) = inventory(fs, top);
    let dir = |i: u8| dirs[usize::from(i) % dirs.len()];
    let file = |i: u8| (!files.is_empty()).then(|| files[usize::from(i) % files.len()]);
    let name = |n: u8| format!("n{n}").into_bytes();
    match *op {
        Op::Create(d, n) => {
            let _ = fs.create(dir(d), &name(n), 0o100644, 0, root(), None);
        }
        Op::Mkdir(d, n) => {
            let _ = fs.create(dir(d), &name(n), 0o040755, 0, root(), None);
        }
        Op::Write(f, off, len, seed) => {
            if let Some(f) = file(f) {
                let data: Vec<u8> = (0..u32::from(len)).map(|i| (i as u8) ^ seed | 1).collect();
                let _ = fs.write_file(f, u64::from(off), &data, false);
            }
        }
        Op::Truncate(f, size) => {
            if let Some(f) = file(f) {
                let _ = fs.setattr(
                    f,
                    &SetAttr {
                        size: Some(u64::from(size)),
                        ..Default::default()
                    },
                );
            }
        }
        Op::Unlink(d, n) => {
            let _ = fs.unlink(dir(d), &name(n));
        }
        Op::Rmdir(d, n) => {
            let _ = fs.rmdir(dir(d), &name(n));
        }
        Op::Rename(a, b, c, d) => {
            let _ = fs.rename(dir(a), &name(b), dir(c), &name(d), RenameFlags::default());
        }
        Op::Link(f, d, n) => {
            if let Some(f) = file(f) {
                let _ = fs.link(f, dir(d), &name(n));
            }
        }
        Op::Xattr(f, v) => {
            if let Some(f) = file(f) {
                if v % 3 == 0 {
                    let _ = fs.removexattr(f, b"user.x");
                } else {
                    let _ = fs.setxattr(f, b"user.x", &[v], Default::default());
                }
            }
        }
        Op::Reflink(a, ab, b, bb, n) => {
            if let (Some(a), Some(b)) = (file(a), file(b)) {
                let block = |x: u8| u64::from(x) * 4096;
                let _ = fs.copy_range(a, block(ab), b, block(bb), block(n));
            }
        }
        Op::Chmod(f, m) => {
            if let Some(f) = file(f) {
                let _ = fs.setattr(
                    f,
                    &SetAttr {
                        mode: Some(u32::from(m)),
                        ..Default::default()
                    },
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if std::env::var_os("ARBOR_LONG").is_some() { 1000 } else { 48 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_changes_between_two_snapshots_arrive_exactly(
        before in proptest::collection::vec(op(), 0..40),
        after in proptest::collection::vec(op(), 0..40),
    ) {
        case(
            |fs, v| before.iter().for_each(|o| apply(fs, v, o)),
            |fs, v| after.iter().for_each(|o| apply(fs, v, o)),
        );
    }
}
