//! `receive_plain`: streams arbor sends and streams the Linux kernel made are
//! re-created in a directory of an ordinary filesystem (tmpfs, ext4 on a loop device;
//! ramfs for a filesystem without user xattrs), full and incremental, exactly:
//! contents, holes, modes, owners, xattrs, times, hard links, symlinks, special files.
//! Hostile streams change nothing outside the destination; a cut stream leaves no
//! marker; an incremental stream without its parent is refused.
//!
//! As root (as CI runs) every case runs; otherwise the tree is owned by the caller, has
//! no device nodes, and only a temporary directory is used.

mod common;
mod plain_support;

use arbor_fs::{Caller, Fs, ROOT_INO, RenameFlags, SetAttr, SetTime, Time};
use arbor_send::{Command, StreamWriter, Timespec};
use arbor_sendrecv::{
    PlainTarget, ReceiveError, ResumeToken, SendOptions, receive_plain, send_full, send_incremental,
};
use common::pattern;
use plain_support::{Place, describe, gid, is_root, marker, normalize, uid};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

fn who() -> Caller {
    Caller {
        uid: uid(),
        gid: gid(),
        umask: 0o022,
    }
}

fn mk(fs: &Fs, dir: u64, name: &str, mode: u32, rdev: u64, target: Option<&[u8]>) -> u64 {
    fs.create(dir, name.as_bytes(), mode, rdev, who(), target)
        .unwrap()
        .ino
}

fn at(fs: &Fs, dir: u64, path: &str) -> u64 {
    path.split('/')
        .fold(dir, |d, n| fs.lookup(d, n.as_bytes()).unwrap().ino)
}

fn set(fs: &Fs, ino: u64, s: SetAttr) {
    fs.setattr(ino, &s).unwrap();
}

fn time(sec: i64) -> Option<SetTime> {
    Some(SetTime::At(Time {
        sec,
        nsec: 123_456_789,
    }))
}

/// One of everything in `vol`.
fn everything(fs: &Fs, vol: u64) {
    let a = mk(fs, vol, "a", 0o040755, 0, None);
    let b = mk(fs, a, "b", 0o040750, 0, None);
    let c = mk(fs, vol, "c", 0o040755, 0, None);
    let f = mk(fs, b, "file1", 0o100644, 0, None);
    fs.write_file(f, 0, b"hello\n", false).unwrap();
    fs.setxattr(f, b"user.color", b"blue", Default::default())
        .unwrap();
    fs.setxattr(c, b"user.dir", b"x", Default::default())
        .unwrap();
    let big = mk(fs, vol, "big", 0o100644, 0, None);
    fs.write_file(big, 0, &pattern(300_000, 1), false).unwrap();
    set(
        fs,
        big,
        SetAttr {
            mode: Some(0o4755),
            ..Default::default()
        },
    );
    let sparse = mk(fs, vol, "sparse", 0o100600, 0, None);
    fs.write_file(sparse, 409_600, &pattern(8192, 2), false)
        .unwrap();
    fs.write_file(sparse, 3 << 20, b"far", false).unwrap();
    set(
        fs,
        sparse,
        SetAttr {
            size: Some(10 << 20),
            ..Default::default()
        },
    );
    mk(fs, vol, "sym", 0o120777, 0, Some(b"a/b/file1"));
    mk(fs, vol, "abs", 0o120777, 0, Some(b"/etc"));
    fs.link(f, vol, b"hl").unwrap();
    fs.link(f, c, b"hl2").unwrap();
    mk(fs, vol, "fifo", 0o010640, 0, None);
    mk(fs, vol, "sock", 0o140755, 0, None);
    mk(fs, vol, "empty", 0o100444, 0, None);
    if is_root() {
        mk(fs, vol, "blk", 0o060644, (7 << 8) | 200, None);
        mk(fs, vol, "chr", 0o020600, (1 << 8) | 3, None);
        set(
            fs,
            c,
            SetAttr {
                uid: Some(1000),
                gid: Some(100),
                ..Default::default()
            },
        );
        let owned = mk(fs, c, "owned", 0o102755, 0, None);
        set(
            fs,
            owned,
            SetAttr {
                uid: Some(1000),
                gid: Some(100),
                mode: Some(0o2755),
                ..Default::default()
            },
        );
    }
    let deep = mk(fs, c, "deep", 0o100600, 0, None);
    fs.write_file(deep, 0, &pattern(70_000, 3), false).unwrap();
    set(
        fs,
        c,
        SetAttr {
            atime: time(1_577_934_245),
            mtime: time(1_577_934_245),
            ..Default::default()
        },
    );
}

/// A filesystem with subvolume "vol" made by `before`, snapshot p, changed by
/// `after`, snapshot s; returns it with the roots of p and s.
fn snapshots(before: impl Fn(&Fs, u64), after: impl Fn(&Fs, u64)) -> (Fs, u64, u64) {
    let fs = common::fresh();
    let vol = fs.subvol_create(ROOT_INO, b"vol", who()).unwrap().root;
    before(&fs, vol);
    let p = fs.subvol_snapshot(vol, ROOT_INO, b"p", true).unwrap().root;
    after(&fs, vol);
    let s = fs.subvol_snapshot(vol, ROOT_INO, b"s", true).unwrap().root;
    (fs, p, s)
}

fn opts(version: u32) -> SendOptions {
    SendOptions {
        version,
        ..Default::default()
    }
}

fn full(fs: &Fs, snap: u64, name: &str, version: u32) -> Vec<u8> {
    let mut out = Vec::new();
    send_full(fs, snap, name.as_bytes(), &mut out, opts(version)).unwrap();
    out
}

fn dump(stream: &[u8]) -> String {
    let mut text = Vec::new();
    let _ = arbor_send::dump_stream(stream, &mut text);
    String::from_utf8_lossy(&text).into_owned()
}

/// `dir` holds what arbor's `snap` holds.
fn same(fs: &Fs, snap: u64, dir: &Path, holes: bool, why: &str, stream: &[u8]) {
    let want = normalize(&common::describe(fs, snap, holes));
    let have = normalize(&describe(dir, holes));
    if want != have {
        panic!(
            "{why}: {} differs\nwant {want:#?}\nhave {have:#?}\nstream:\n{}",
            dir.display(),
            dump(stream)
        );
    }
}

fn mark_of(fs: &Fs, snap: u64) -> String {
    let info = fs
        .subvol_info(arbor_fs::ino::Loc::of(snap).unwrap().subvol)
        .unwrap();
    let hex: String = info.item.uuid.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex} {}", info.generation)
}

#[test]
fn a_full_send_arrives_exactly_on_tmpfs_and_ext4() {
    let (fs, p, _) = snapshots(everything, |_, _| {});
    for place in Place::all() {
        for version in [1, 2] {
            let name = format!("full{version}");
            let stream = full(&fs, p, &name, version);
            let stats = receive_plain(&place.dir, &stream[..]).unwrap();
            let got = place.dir.join(&name);
            let why = format!("{} v{version}", place.what);
            assert_eq!(
                stats.subvolumes,
                [std::fs::metadata(&got).unwrap().ino()],
                "{why}"
            );
            // Version 1 has no command for holes: they arrive as zeros.
            same(&fs, p, &got, version >= 2, &why, &stream);
            assert_eq!(marker(&place.dir, &name), (Some(mark_of(&fs, p)), None));
            // The root's own attributes came too; the marker is not among its xattrs
            // as the tree describes it.
            let root = std::fs::metadata(&got).unwrap();
            assert_eq!((root.mode() & 0o7777, root.uid()), (0o755, uid()), "{why}");
        }
    }
}

/// Receives p in full and s incrementally (both versions) on every place, and
/// compares both with the source.
fn incremental(before: impl Fn(&Fs, u64), after: impl Fn(&Fs, u64)) {
    let (fs, p, s) = snapshots(before, after);
    for place in Place::all() {
        for version in [1, 2] {
            let (pn, sn) = (format!("p{version}"), format!("s{version}"));
            let stream = full(&fs, p, &pn, version);
            receive_plain(&place.dir, &stream[..]).unwrap();
            let mut inc = Vec::new();
            send_incremental(&fs, p, s, sn.as_bytes(), &mut inc, opts(version)).unwrap();
            let why = format!("{} v{version}", place.what);
            let stats = receive_plain(&place.dir, &inc[..])
                .unwrap_or_else(|e| panic!("{why}: {e}\n{}", dump(&inc)));
            assert_eq!(stats.subvolumes.len(), 1);
            same(&fs, s, &place.dir.join(&sn), version >= 2, &why, &inc);
            // The parent is untouched by the copy and the changes.
            same(&fs, p, &place.dir.join(&pn), version >= 2, &why, &stream);
            assert_eq!(marker(&place.dir, &sn).0, Some(mark_of(&fs, s)), "{why}");
        }
    }
}

fn mv(fs: &Fs, top: u64, from: &str, to: &str) {
    let place = |p: &str| match p.rsplit_once('/') {
        Some((d, n)) => (at(fs, top, d), n.to_string()),
        None => (top, p.to_string()),
    };
    let ((fd, fname), (td, tname)) = (place(from), place(to));
    fs.rename(
        fd,
        fname.as_bytes(),
        td,
        tname.as_bytes(),
        RenameFlags::default(),
    )
    .unwrap();
}

#[test]
fn renames_swaps_and_a_directory_moved_below_its_old_child() {
    incremental(
        |fs, v| {
            everything(fs, v);
            let x = mk(fs, v, "x", 0o100644, 0, None);
            fs.write_file(x, 0, b"xxx", false).unwrap();
            let y = mk(fs, v, "y", 0o100644, 0, None);
            fs.write_file(y, 0, b"yyyy", false).unwrap();
        },
        |fs, v| {
            mv(fs, v, "x", "t");
            mv(fs, v, "y", "x");
            mv(fs, v, "t", "y");
            mv(fs, v, "a/b", "b");
            mv(fs, v, "a", "b/a");
            fs.unlink(v, b"fifo").unwrap();
            let n = mk(fs, v, "fifo", 0o100600, 0, None);
            fs.write_file(n, 0, b"a file now", false).unwrap();
        },
    );
}

#[test]
fn hard_links_come_and_go_and_a_file_becomes_a_directory() {
    incremental(
        |fs, v| {
            let f = mk(fs, v, "f", 0o100644, 0, None);
            fs.write_file(f, 0, b"linked", false).unwrap();
            fs.link(f, v, b"l1").unwrap();
            mk(fs, v, "fd", 0o100644, 0, None);
            mk(fs, v, "df", 0o040755, 0, None);
        },
        |fs, v| {
            let f = at(fs, v, "f");
            fs.unlink(v, b"l1").unwrap();
            let d = mk(fs, v, "sub", 0o040755, 0, None);
            fs.link(f, d, b"l2").unwrap();
            fs.link(f, v, b"l3").unwrap();
            fs.unlink(v, b"fd").unwrap();
            mk(fs, v, "fd", 0o040700, 0, None);
            fs.rmdir(v, b"df").unwrap();
            mk(fs, v, "df", 0o100644, 0, None);
        },
    );
}

#[test]
fn xattrs_holes_times_owners_and_clones_change() {
    incremental(
        |fs, v| {
            let f = mk(fs, v, "sparse", 0o100644, 0, None);
            fs.write_file(f, 0, &pattern(300_000, 7), false).unwrap();
            fs.setxattr(f, b"user.a", b"1", Default::default()).unwrap();
            fs.setxattr(f, b"user.b", b"2", Default::default()).unwrap();
            mk(fs, v, "sym", 0o120777, 0, Some(b"sparse"));
        },
        |fs, v| {
            let f = at(fs, v, "sparse");
            let m = arbor_fs::FallocMode {
                keep_size: true,
                punch_hole: true,
                zero_range: false,
            };
            fs.fallocate(f, 4096, 65536, m).unwrap();
            fs.write_file(f, 5 << 20, b"far away", false).unwrap();
            fs.removexattr(f, b"user.a").unwrap();
            fs.setxattr(f, b"user.b", b"changed", Default::default())
                .unwrap();
            fs.setxattr(f, b"user.c", b"new", Default::default())
                .unwrap();
            let owner = if is_root() {
                (1000, 100)
            } else {
                (uid(), gid())
            };
            set(
                fs,
                f,
                SetAttr {
                    uid: Some(owner.0),
                    gid: Some(owner.1),
                    mode: Some(0o640),
                    mtime: time(1_000_000),
                    ..Default::default()
                },
            );
            // Shared data: the stream may send it as clones of the parent's file.
            let copy = mk(fs, v, "copy", 0o100644, 0, None);
            fs.copy_range(f, 0, copy, 0, 4096 * 20).unwrap();
            fs.copy_range(f, 0, copy, 1 << 20, 4096 * 8).unwrap();
            fs.unlink(v, b"sym").unwrap();
            mk(fs, v, "sym", 0o120777, 0, Some(b"copy"));
        },
    );
}

#[test]
fn clones_from_a_snapshot_received_before_are_read_from_it() {
    let (fs, p, s) = snapshots(
        |fs, v| {
            let f = mk(fs, v, "f", 0o100644, 0, None);
            fs.write_file(f, 0, &pattern(1 << 20, 9), false).unwrap();
        },
        |fs, v| {
            let g = mk(fs, v, "g", 0o100644, 0, None);
            fs.copy_range(at(fs, v, "f"), 0, g, 0, 1 << 20).unwrap();
        },
    );
    let place = Place::tmp();
    receive_plain(&place.dir, &full(&fs, p, "p", 2)[..]).unwrap();
    let mut stream = Vec::new();
    let o = SendOptions {
        version: 2,
        clone_sources: vec![p],
        ..Default::default()
    };
    send_full(&fs, s, b"s", &mut stream, o).unwrap();
    assert!(dump(&stream).contains("\nclone "), "{}", dump(&stream));
    receive_plain(&place.dir, &stream[..]).unwrap();
    same(&fs, s, &place.dir.join("s"), true, "clone source", &stream);
}

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../arbor-send/tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The kernel's streams arrive as `btrfs receive` makes them (when root with
/// btrfs-progs), or at least with what their recipe made.
#[test]
fn streams_made_by_the_linux_kernel_are_received() {
    if !is_root() {
        eprintln!("note: the kernel's streams hold root-owned files and a device: needs root");
        return;
    }
    for v in [1, 2] {
        let streams = [
            format!("kernel618_full_v{v}.stream"),
            format!("kernel618_inc_v{v}.stream"),
        ];
        let btrfs = Place::btrfs();
        if let Some(b) = &btrfs {
            for s in &streams {
                let f = b.dir.join(s);
                std::fs::write(&f, fixture(s)).unwrap();
                plain_support::run(
                    std::process::Command::new("btrfs")
                        .args(["receive", "-f"])
                        .arg(&f)
                        .arg(&b.dir),
                );
            }
        }
        for place in Place::all() {
            for s in &streams {
                receive_plain(&place.dir, &fixture(s)[..])
                    .unwrap_or_else(|e| panic!("{} {s}: {e}", place.what));
            }
            for snap in ["snap1", "snap2"] {
                let have = normalize(&describe(&place.dir.join(snap), true));
                let line = |p: &str| {
                    have.iter()
                        .find(|l| l.starts_with(&format!("{p} ")))
                        .unwrap_or_else(|| panic!("{p} missing in {have:#?}"))
                        .clone()
                };
                if snap == "snap1" {
                    assert!(line("a/b/file1").contains("nlink 2"), "{have:#?}");
                    assert!(line("big").contains("mode 104755"));
                    assert!(
                        line("sparse").contains("holes [(0, 409600), (417792, 10485760)]"),
                        "{have:#?}"
                    );
                    assert!(line("c").contains("1000:100"));
                    assert!(line("c").contains("mtime 1577934245.123456789"));
                    assert!(line("blk").contains("rdev 7c8"));
                    assert!(line("hl").contains("user.color="));
                } else {
                    assert!(line("c/file1moved").contains("nlink 2"), "{have:#?}");
                    assert!(line("d/newfile").contains("size 4"));
                    assert!(line("c").contains("mode 40700"));
                }
                if let Some(b) = &btrfs {
                    let want = normalize(&describe(&b.dir.join(snap), true));
                    assert_eq!(have, want, "{} v{v} {snap} vs btrfs receive", place.what);
                }
            }
        }
    }
}

fn stream(cmds: &[Command]) -> Vec<u8> {
    let mut w = StreamWriter::new(Vec::new(), 2).unwrap();
    for c in cmds {
        w.write_command(c).unwrap();
    }
    w.into_inner()
}

fn subvol(name: &str) -> Command {
    Command::Subvol {
        path: name.as_bytes().to_vec(),
        uuid: [7; 16],
        ctransid: 9,
    }
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn symlink(path: &str, to: &Path) -> Command {
    Command::Symlink {
        path: b(path),
        ino: 300,
        path_link: to.as_os_str().as_encoded_bytes().to_vec(),
    }
}

/// What may not change: a directory outside the destination, described fully.
struct Victim {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Victim {
    fn new() -> Victim {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("victim");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("keep"), b"precious").unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        Victim { _tmp: tmp, dir }
    }

    fn state(&self) -> Vec<String> {
        let mut d = describe(self._tmp.path(), true);
        let m = std::fs::metadata(&self.dir).unwrap();
        d.push(format!("{:o} {}", m.mode(), m.mtime_nsec()));
        d
    }
}

#[test]
fn nothing_outside_the_destination_is_touched_through_symlinks() {
    let victim = Victim::new();
    let before = victim.state();
    let place = Place::tmp();
    let (dir, keep) = (&victim.dir, victim.dir.join("keep"));
    let write = |p: &str| Command::Write {
        path: b(p),
        offset: 0,
        data: b("evil"),
    };
    let file = |p: &str| Command::Mkfile {
        path: b(p),
        ino: 301,
    };
    let clone = |p: &str, from: &str| Command::Clone {
        path: b(p),
        offset: 0,
        len: 8,
        clone_uuid: [7; 16],
        clone_ctransid: 9,
        clone_path: b(from),
        clone_offset: 0,
    };
    // Resolving a path through a symlink fails with ELOOP.
    const LOOP: &str = "symbolic links";
    let l = || symlink("l", dir);
    let hostile: Vec<(Vec<Command>, &str)> = vec![
        (vec![l(), write("l/keep")], LOOP),
        (vec![l(), file("l/new")], LOOP),
        (
            vec![
                l(),
                Command::Mkdir {
                    path: b("l/d"),
                    ino: 302,
                },
            ],
            LOOP,
        ),
        (
            vec![
                l(),
                Command::Rename {
                    path: b("l/keep"),
                    path_to: b("x"),
                },
            ],
            LOOP,
        ),
        (
            vec![
                file("f"),
                l(),
                Command::Rename {
                    path: b("f"),
                    path_to: b("l/f"),
                },
            ],
            LOOP,
        ),
        (
            vec![
                l(),
                Command::Link {
                    path: b("hl"),
                    path_link: b("l/keep"),
                },
            ],
            LOOP,
        ),
        (
            vec![
                file("f"),
                l(),
                Command::Link {
                    path: b("l/hl"),
                    path_link: b("f"),
                },
            ],
            LOOP,
        ),
        (vec![l(), Command::Unlink { path: b("l/keep") }], LOOP),
        (vec![l(), Command::Rmdir { path: b("l/sub") }], LOOP),
        (vec![file("f"), l(), clone("f", "l/keep")], LOOP),
        (
            vec![
                l(),
                Command::Chmod {
                    path: b("l/keep"),
                    mode: 0o777,
                },
            ],
            LOOP,
        ),
        (
            vec![
                l(),
                Command::Chown {
                    path: b("l/keep"),
                    uid: 1,
                    gid: 1,
                },
            ],
            LOOP,
        ),
        (
            vec![
                l(),
                Command::SetXattr {
                    path: b("l/keep"),
                    name: b("user.x"),
                    data: b("1"),
                },
            ],
            LOOP,
        ),
        (
            vec![
                l(),
                Command::Utimes {
                    path: b("l/keep"),
                    atime: Timespec { sec: 1, nsec: 0 },
                    mtime: Timespec { sec: 1, nsec: 0 },
                    ctime: Timespec { sec: 1, nsec: 0 },
                    otime: None,
                },
            ],
            LOOP,
        ),
        (
            vec![file("f"), symlink("l", &keep), clone("f", "l")],
            "not a regular file",
        ),
        (
            vec![symlink("l", &keep), clone("l", "l")],
            "not a regular file",
        ),
        (vec![symlink("l", &keep), write("l")], "not a regular file"),
        (
            vec![
                symlink("l", &keep),
                Command::Truncate {
                    path: b("l"),
                    size: 0,
                },
            ],
            "not a regular file",
        ),
        (
            vec![
                symlink("l", &keep),
                Command::Fallocate {
                    path: b("l"),
                    mode: 3,
                    offset: 0,
                    len: 4,
                },
            ],
            "not a regular file",
        ),
        (
            vec![Command::Mkfile {
                path: b("../escape"),
                ino: 1,
            }],
            "\"..\" component",
        ),
        (vec![write("/etc/passwd")], "absolute path"),
        (
            vec![
                Command::Mkfifo {
                    path: b("p"),
                    ino: 303,
                    rdev: 0,
                    mode: 0o10644,
                },
                write("p"),
            ],
            "not a regular file",
        ),
    ];
    for (i, (cmds, why)) in hostile.into_iter().enumerate() {
        let name = format!("h{i}");
        let mut all = vec![subvol(&name)];
        all.extend(cmds);
        let err = receive_plain(&place.dir, &stream(&all)[..]).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ReceiveError::Command { .. }), "#{i}: {text}");
        assert!(text.contains(why), "#{i} {why}: {text}");
        assert_eq!(victim.state(), before, "#{i}: {text}");
        assert_eq!(marker(&place.dir, &name), (None, None), "#{i}");
    }
    // What is not followed still acts on the link itself, harmlessly.
    // A trusted xattr (root only; user ones are not allowed on symlinks) lands on the
    // link itself, through /proc/self/fd.
    let xattr_on_link = Command::SetXattr {
        path: b("l"),
        name: b("trusted.arbor-test"),
        data: b("1"),
    };
    let name = "links";
    let mut cmds = vec![subvol(name), symlink("l", dir)];
    if is_root() {
        cmds.push(xattr_on_link);
    }
    cmds.extend([
        Command::Chmod {
            path: b("l"),
            mode: 0o600,
        },
        Command::Chown {
            path: b("l"),
            uid: uid().into(),
            gid: gid().into(),
        },
        Command::Link {
            path: b("l2"),
            path_link: b("l"),
        },
        Command::End,
    ]);
    receive_plain(&place.dir, &stream(&cmds)[..]).unwrap();
    let l2 = std::fs::symlink_metadata(place.dir.join("links/l2")).unwrap();
    assert!(l2.file_type().is_symlink() && l2.nlink() == 2);
    if is_root() {
        let on_link = xattr::get(place.dir.join("links/l"), "trusted.arbor-test").unwrap();
        assert_eq!(on_link.as_deref(), Some(&b"1"[..]));
        assert_eq!(xattr::get(dir, "trusted.arbor-test").unwrap(), None);
    }
    assert_eq!(victim.state(), before);
    // An incremental stream onto that: the copy of the parent keeps the symlinks as
    // symlinks (nothing of the victim is copied), and writing through one fails.
    let inc = stream(&[
        Command::Snapshot {
            path: b("inc"),
            uuid: [8; 16],
            ctransid: 10,
            clone_uuid: [7; 16],
            clone_ctransid: 9,
        },
        write("l/keep"),
    ]);
    let err = receive_plain(&place.dir, &inc[..]).unwrap_err();
    assert!(err.to_string().contains(LOOP), "{err}");
    let copied = std::fs::symlink_metadata(place.dir.join("inc/l")).unwrap();
    assert!(copied.file_type().is_symlink());
    assert_eq!(std::fs::read_dir(place.dir.join("inc")).unwrap().count(), 2);
    assert_eq!(victim.state(), before);
}

#[test]
fn a_forged_fallocate_length_writes_nothing_past_the_file() {
    let place = Place::tmp();
    // Zero range is what tmpfs lacks: the fallback must not write 2^40 zeros.
    let cmds = [
        subvol("big"),
        Command::Mkfile {
            path: b("f"),
            ino: 257,
        },
        Command::Write {
            path: b("f"),
            offset: 0,
            data: vec![1; 10_000],
        },
        Command::Fallocate {
            path: b("f"),
            mode: 0x10,
            offset: 4096,
            len: 1 << 40,
        },
        Command::End,
    ];
    let started = std::time::Instant::now();
    let r = receive_plain(&place.dir, &stream(&cmds)[..]);
    assert!(started.elapsed().as_secs() < 10, "{r:?}");
    if r.is_ok() {
        let m = std::fs::metadata(place.dir.join("big/f")).unwrap();
        assert_eq!(m.len(), 4096 + (1 << 40));
        assert!(m.blocks() * 512 < 1 << 20, "{} blocks", m.blocks());
    }
}

#[test]
fn a_device_node_the_stream_makes_is_never_written() {
    if !is_root() {
        eprintln!("note: making device nodes needs root");
        return;
    }
    let place = Place::tmp();
    // 1:5 is /dev/zero: harmless, were it ever opened.
    let cmds = [
        subvol("dev"),
        Command::Mknod {
            path: b("z"),
            ino: 257,
            rdev: (1 << 8) | 5,
            mode: 0o20666,
        },
        Command::Write {
            path: b("z"),
            offset: 0,
            data: b("x"),
        },
    ];
    let err = receive_plain(&place.dir, &stream(&cmds)[..]).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[test]
fn a_cut_stream_leaves_no_marker_and_is_no_parent() {
    let (fs, p, s) = snapshots(everything, |fs, v| {
        mk(fs, v, "new", 0o100644, 0, None);
    });
    let place = Place::tmp();
    let whole = full(&fs, p, "p", 2);
    // Everything but the END command (a 10-byte header with no attributes).
    let cut = &whole[..whole.len() - 10];
    let err = receive_plain(&place.dir, cut).unwrap_err();
    assert!(err.to_string().contains("END"), "{err}");
    assert!(
        place.dir.join("p/a/b/file1").exists(),
        "the partial tree stays"
    );
    assert_eq!(marker(&place.dir, "p"), (None, None));
    assert!(note_file(&place.dir, "p").exists(), "a note to resume by");
    let mut inc = Vec::new();
    send_incremental(&fs, p, s, b"s", &mut inc, opts(2)).unwrap();
    let err = receive_plain(&place.dir, &inc[..]).unwrap_err();
    assert!(
        err.to_string().contains("is not here: receive it first"),
        "{err}"
    );
    assert!(!place.dir.join("s").exists());
    // A stream may not forge the marker either.
    let forged = stream(&[
        subvol("forged"),
        Command::SetXattr {
            path: vec![],
            name: b("user.arbor.received"),
            data: b("x 1"),
        },
    ]);
    let err = receive_plain(&place.dir, &forged[..]).unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
    // Nor reuse a name. A new receive of a name deleted since takes it, and the old
    // note goes.
    std::fs::remove_dir_all(place.dir.join("p")).unwrap();
    receive_plain(&place.dir, &whole[..]).unwrap();
    assert!(!note_file(&place.dir, "p").exists());
    let err = receive_plain(&place.dir, &whole[..]).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
}

#[test]
fn an_incremental_stream_without_its_parent_is_refused() {
    let place = Place::tmp();
    let err = receive_plain(&place.dir, &fixture("kernel618_inv_inc_v1.stream")[..]).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("the parent (uuid ") && text.contains("is not here: receive it first"),
        "{text}"
    );
    assert_eq!(std::fs::read_dir(&place.dir).unwrap().count(), 0);
}

/// Where user xattrs are missing (ramfs), the marker is a sidecar file, and the
/// incremental receive finds its parent by it, resumed too.
#[test]
fn without_user_xattrs_the_marker_is_a_sidecar_file() {
    let Some(place) = Place::ramfs() else { return };
    let (fs, p, s) = snapshots(
        |fs, v| {
            let f = mk(fs, v, "f", 0o100644, 0, None);
            fs.write_file(f, 0, &pattern(100_000, 4), false).unwrap();
            mk(fs, v, "d", 0o040755, 0, None);
        },
        |fs, v| {
            let f = at(fs, v, "f");
            let m = arbor_fs::FallocMode {
                keep_size: true,
                punch_hole: true,
                zero_range: false,
            };
            fs.fallocate(f, 8192, 8192, m).unwrap();
            mk(fs, at(fs, v, "d"), "g", 0o100600, 0, None);
        },
    );
    let whole = full(&fs, p, "p", 2);
    receive_plain(&place.dir, &whole[..]).unwrap();
    assert_eq!(
        marker(&place.dir, "p"),
        (None, Some(format!("{}\n", mark_of(&fs, p))))
    );
    let mut inc = Vec::new();
    send_incremental(&fs, p, s, b"s", &mut inc, opts(2)).unwrap();
    // A second receive of the name is refused, and leaves the first one's marker.
    let err = receive_plain(&place.dir, &whole[..]).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(marker(&place.dir, "p").1.is_some());
    // Cut, it resumes as elsewhere: the note is a file anyway.
    cut_and_resume(&place.dir, "s", &inc, inc.len() / 2, false, |t| {
        let mut out = Vec::new();
        send_incremental(&fs, p, s, b"s", &mut out, resuming(2, t)).unwrap();
        out
    });
    // ramfs has no holes: compare the bytes only.
    same(&fs, s, &place.dir.join("s"), false, "ramfs", &inc);
    assert_eq!(
        marker(&place.dir, "s").1,
        Some(format!("{}\n", mark_of(&fs, s)))
    );
}

// ---- resuming an interrupted receive ------------------------------------------------

/// The first bytes of a stream, then an I/O error: a connection that broke.
struct Broken<'a>(&'a [u8]);

impl std::io::Read for Broken<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.0.is_empty() {
            return Err(std::io::Error::other("connection reset"));
        }
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fn resuming(version: u32, token: ResumeToken) -> SendOptions {
    SendOptions {
        version,
        resume: Some(token),
        ..Default::default()
    }
}

fn note_file(dest: &Path, name: &str) -> PathBuf {
    dest.join(format!(".{name}.arbor-partial"))
}

/// The resume token of the unfinished receive `name`, the only one in `dest`, which
/// is not marked finished.
fn token(dest: &Path, name: &str) -> ResumeToken {
    let found = PlainTarget::new(dest).unwrap().unfinished().unwrap();
    let names: Vec<_> = found.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, [name.as_bytes()], "{}", dest.display());
    assert_eq!(marker(dest, name), (None, None), "unfinished, not marked");
    let t = found[0].1;
    assert_eq!(ResumeToken::parse(&t.to_string()), Ok(t));
    t
}

/// Receives the first `cut` bytes of `stream` into `dest` (then an I/O error if
/// `broken`, else the end of the input), which fails and leaves `name` unfinished;
/// then the rest `rest(token)` makes, which finishes it.
fn cut_and_resume(
    dest: &Path,
    name: &str,
    stream: &[u8],
    cut: usize,
    broken: bool,
    rest: impl Fn(ResumeToken) -> Vec<u8>,
) {
    let why = format!("{} cut at {cut} of {}", dest.display(), stream.len());
    let err = if broken {
        receive_plain(dest, Broken(&stream[..cut])).unwrap_err()
    } else {
        receive_plain(dest, &stream[..cut]).unwrap_err()
    };
    assert!(dest.join(name).is_dir(), "{why}: {err}");
    let t = token(dest, name);
    let rest = rest(t);
    // Only what had not arrived goes again: at most the command that was cut, and a
    // few headers.
    let chunk = if t.version == 1 { 48 << 10 } else { 128 << 10 };
    assert!(
        rest.len() < stream.len() - cut + chunk + 4096,
        "{why} ({err}): the rest is {} bytes, token {t:?}",
        rest.len()
    );
    receive_plain(dest, &rest[..]).unwrap_or_else(|e| panic!("{why}: {e}\n{}", dump(&rest)));
    assert!(!note_file(dest, name).exists(), "{why}: the note is gone");
    assert!(
        PlainTarget::new(dest)
            .unwrap()
            .unfinished()
            .unwrap()
            .is_empty()
    );
}

/// A full stream cut anywhere (the input ending or breaking) resumes where it stopped,
/// and the result is the snapshot, marked; an incremental one onto it too.
#[test]
fn a_cut_stream_resumes_where_it_stopped() {
    let (fs, p, s) = snapshots(everything, |fs, v| {
        let f = mk(fs, v, "new", 0o100644, 0, None);
        fs.write_file(f, 0, &pattern(200_000, 5), false).unwrap();
        mv(fs, v, "a/b", "b");
        fs.unlink(v, b"hl").unwrap();
    });
    for place in Place::all() {
        for version in [1, 2] {
            let stream = full(&fs, p, "p", version);
            let mut inc = Vec::new();
            send_incremental(&fs, p, s, b"s", &mut inc, opts(version)).unwrap();
            let len = stream.len();
            for (i, cut) in [len / 3, len / 2, len * 2 / 3, len - 10]
                .into_iter()
                .enumerate()
            {
                let dest = place.dir.join(format!("v{version}-{i}"));
                std::fs::create_dir(&dest).unwrap();
                let why = format!("{} v{version} cut {cut} of {len}", place.what);
                cut_and_resume(&dest, "p", &stream, cut, i == 2, |t| {
                    let mut out = Vec::new();
                    send_full(&fs, p, b"p", &mut out, resuming(version, t)).unwrap();
                    out
                });
                same(&fs, p, &dest.join("p"), version >= 2, &why, &stream);
                assert_eq!(marker(&dest, "p"), (Some(mark_of(&fs, p)), None), "{why}");
                // The finished directory is a parent; the incremental stream resumes
                // onto its copy too.
                let cut = inc.len() * (i + 1) / 5;
                cut_and_resume(&dest, "s", &inc, cut, i == 1, |t| {
                    let mut out = Vec::new();
                    send_incremental(&fs, p, s, b"s", &mut out, resuming(version, t)).unwrap();
                    out
                });
                same(&fs, s, &dest.join("s"), version >= 2, &why, &inc);
                same(&fs, p, &dest.join("p"), version >= 2, &why, &stream);
            }
        }
    }
}

/// A stream cut before its subvolume began leaves nothing to resume: it is received
/// again from the start.
#[test]
fn a_stream_cut_before_its_first_command_leaves_nothing() {
    let place = Place::tmp();
    let whole = stream(&[subvol("early"), Command::End]);
    // The header and the subvol command, not the END after it.
    receive_plain(&place.dir, &whole[..whole.len() - 10]).unwrap_err();
    assert_eq!(std::fs::read_dir(&place.dir).unwrap().count(), 0);
    assert!(
        PlainTarget::new(&place.dir)
            .unwrap()
            .unfinished()
            .unwrap()
            .is_empty()
    );
    receive_plain(&place.dir, &whole[..]).unwrap();
    assert!(marker(&place.dir, "early").0.is_some());
}

/// The commands of `stream` changed by `f` (the header says resumed).
fn rewrite(stream: &[u8], f: impl Fn(Command) -> Command) -> Vec<u8> {
    let r = arbor_send::StreamReader::new(stream).unwrap();
    let mut w = StreamWriter::new_resumed(Vec::new(), r.version()).unwrap();
    for item in r {
        w.write_command(&f(item.unwrap().1)).unwrap();
    }
    w.into_inner()
}

fn refused(dest: &Path, stream: &[u8], why: &str) {
    let e = receive_plain(dest, stream).unwrap_err().to_string();
    assert!(e.contains(why), "{why}: {e}");
}

#[test]
fn a_resume_that_does_not_fit_is_refused() {
    let (fs, p, s) = snapshots(everything, |fs, v| {
        mk(fs, v, "new", 0o100644, 0, None);
    });
    let place = Place::tmp();
    let (a, b) = (place.dir.join("a"), place.dir.join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let stream = full(&fs, p, "p", 2);
    receive_plain(&a, &stream[..stream.len() / 2]).unwrap_err();
    let t = token(&a, "p");
    let rest = |t| {
        let mut out = Vec::new();
        send_full(&fs, p, b"p", &mut out, resuming(2, t)).unwrap();
        out
    };
    let good = rest(t);
    // The rest of another snapshot's receive of the same name.
    let other = full(&fs, s, "p", 2);
    receive_plain(&b, &other[..other.len() / 2]).unwrap_err();
    let mut theirs = Vec::new();
    send_full(&fs, s, b"p", &mut theirs, resuming(2, token(&b, "p"))).unwrap();
    refused(&a, &theirs, "the unfinished receive of another stream");
    // A stream that resumes at another point than the receive stopped.
    let early = rewrite(&good, |c| match c {
        Command::ArborResume {
            uuid,
            ctransid,
            skip,
        } => Command::ArborResume {
            uuid,
            ctransid,
            skip: skip - 1,
        },
        c => c,
    });
    refused(&a, &early, &format!("but p stopped after {}", t.applied));
    // Nothing to resume elsewhere.
    refused(
        &place.dir,
        &good,
        "p is not in the destination: nothing to resume",
    );
    // A full stream does not resume, and does not take the name or the note either.
    refused(&a, &stream, "p already exists in the destination");
    assert_eq!(token(&a, "p"), t);
    // Without its note it cannot resume (as after a crash).
    std::fs::rename(note_file(&a, "p"), a.join("saved")).unwrap();
    refused(&a, &good, "p has no progress note .p.arbor-partial");
    std::fs::rename(a.join("saved"), note_file(&a, "p")).unwrap();
    // Changed since it stopped: refused, even once undone.
    std::fs::write(a.join("p/intruder"), b"x").unwrap();
    refused(&a, &good, "p changed since its receive stopped");
    std::fs::remove_file(a.join("p/intruder")).unwrap();
    refused(&a, &good, "p changed since its receive stopped");
    // None of this marked the partial directory finished.
    assert_eq!(marker(&a, "p"), (None, None));
    assert_eq!(token(&a, "p"), t);
    // The other one resumes and finishes; then there is nothing to resume.
    receive_plain(&b, &theirs[..]).unwrap();
    same(&fs, s, &b.join("p"), true, "b", &theirs);
    refused(&b, &theirs, "p is a finished receive: nothing to resume");
}

/// A command that fails is not counted: the note says how many came before it, and
/// the resumed stream starts at it. The streams are made by hand here (the tail has
/// another command in the failed one's place; the receiver checks only the count).
#[test]
fn a_failed_command_is_not_counted() {
    let place = Place::tmp();
    let victim = Victim::new();
    let before = victim.state();
    let write = |p: &str, offset: u64, data: &str| Command::Write {
        path: b(p),
        offset,
        data: b(data),
    };
    let first = stream(&[
        subvol("cf"),
        Command::Mkfile {
            path: b("f"),
            ino: 257,
        },
        write("f", 0, "hello"),
        symlink("l", &victim.dir),
        write("l/keep", 0, "evil"),
        write("f", 5, " never"),
    ]);
    let e = receive_plain(&place.dir, &first[..])
        .unwrap_err()
        .to_string();
    assert!(e.contains("command #4 (write)"), "{e}");
    let t = token(&place.dir, "cf");
    assert_eq!(
        (t.uuid, t.ctransid, t.version, t.applied),
        ([7; 16], 9, 2, 3)
    );
    let resumed = |version: u32, uuid: [u8; 16], skip: u64, tail: &[Command]| {
        let mut w = StreamWriter::new_resumed(Vec::new(), version).unwrap();
        let head = [
            Command::Subvol {
                path: b("cf"),
                uuid,
                ctransid: 9,
            },
            Command::ArborResume {
                uuid,
                ctransid: 9,
                skip,
            },
        ];
        for c in head.iter().chain(tail) {
            w.write_command(c).unwrap();
        }
        w.into_inner()
    };
    let tail = [write("f", 5, " world"), Command::End];
    refused(
        &place.dir,
        &resumed(1, [7; 16], 3, &tail),
        "from a version 2 stream",
    );
    refused(&place.dir, &resumed(2, [8; 16], 3, &tail), "another stream");
    refused(
        &place.dir,
        &resumed(2, [7; 16], 4, &tail),
        "stopped after 3",
    );
    // A resumed stream cut again leaves a note again, counting on.
    let again = resumed(2, [7; 16], 3, &tail);
    receive_plain(&place.dir, &again[..again.len() - 10]).unwrap_err();
    let t2 = token(&place.dir, "cf");
    assert_eq!(t2.applied, 4);
    assert_ne!(t2.digest, t.digest);
    receive_plain(&place.dir, &resumed(2, [7; 16], 4, &[Command::End])[..]).unwrap();
    let cf = place.dir.join("cf");
    assert_eq!(std::fs::read(cf.join("f")).unwrap(), b"hello world");
    assert!(
        std::fs::symlink_metadata(cf.join("l"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(
        marker(&place.dir, "cf").0.as_deref(),
        Some("07070707070707070707070707070707 9")
    );
    assert!(!note_file(&place.dir, "cf").exists());
    assert_eq!(victim.state(), before);
}
