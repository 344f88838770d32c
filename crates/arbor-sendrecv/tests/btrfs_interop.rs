//! A full send of an arbor snapshot is a stream the real `btrfs receive` (btrfs-progs,
//! on a loop-mounted btrfs) applies, re-creating the same tree: contents, holes, modes,
//! owners, times, xattrs, hard links, symlinks and special files. Needs root, the
//! btrfs-progs package and loop devices; skips (saying so) without them.

mod common;

use arbor_engine::MkfsOptions;
use arbor_engine::storage::MemStorage;
use arbor_fs::{Fs, FsOptions, ROOT_INO, SetAttr, SetTime, Time};
use arbor_sendrecv::{SendOptions, send_full, send_incremental};
use common::{pattern, who};
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn root_with_btrfs() -> bool {
    let root = nix_uid() == 0;
    let progs = Command::new("btrfs").arg("--version").output().is_ok();
    if !(root && progs) {
        eprintln!("skipped: needs root and btrfs-progs");
    }
    root && progs
}

fn nix_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
}

/// A tree with one of everything, snapshotted read-only as "snap1".
fn source() -> (Fs, u64) {
    let dev = Arc::new(MemStorage::new(256 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Fs::open(dev, &FsOptions::default()).unwrap();
    let vol = fs.subvol_create(ROOT_INO, b"src", who()).unwrap().root;
    let mk = |parent: u64, name: &str, mode: u32, rdev: u64, target: Option<&[u8]>| {
        fs.create(parent, name.as_bytes(), mode, rdev, who(), target)
            .unwrap()
            .ino
    };
    let a = mk(vol, "a", 0o040755, 0, None);
    let b = mk(a, "b", 0o040755, 0, None);
    let c = mk(vol, "c", 0o040755, 0, None);
    let file1 = mk(b, "file1", 0o100644, 0, None);
    fs.write_file(file1, 0, b"hello\n", false).unwrap();
    fs.setxattr(file1, b"user.color", b"blue", Default::default())
        .unwrap();
    let big = mk(vol, "big", 0o100644, 0, None);
    fs.write_file(big, 0, &pattern(200_000, 1), false).unwrap();
    let sparse = mk(vol, "sparse", 0o100644, 0, None);
    fs.write_file(sparse, 409_600, &pattern(8192, 2), false)
        .unwrap();
    fs.setattr(
        sparse,
        &SetAttr {
            size: Some(10 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    mk(vol, "sym", 0o120777, 0, Some(b"a/b/file1"));
    fs.link(file1, vol, b"hl").unwrap();
    mk(vol, "fifo", 0o010644, 0, None);
    mk(vol, "blk", 0o060644, (7 << 8) | 200, None);
    mk(vol, "sock", 0o140755, 0, None);
    let at = |sec| {
        Some(SetTime::At(Time {
            sec,
            nsec: 123_456_789,
        }))
    };
    fs.setattr(
        big,
        &SetAttr {
            mode: Some(0o4755),
            ..Default::default()
        },
    )
    .unwrap();
    fs.setattr(
        c,
        &SetAttr {
            uid: Some(1000),
            gid: Some(100),
            atime: at(1_577_934_245),
            mtime: at(1_577_934_245),
            ..Default::default()
        },
    )
    .unwrap();
    let deep = mk(c, "deep", 0o100600, 0, None);
    fs.write_file(deep, 0, &pattern(70_000, 3), false).unwrap();
    let snap = fs.subvol_snapshot(vol, ROOT_INO, b"snap1", true).unwrap();
    (fs, snap.root)
}

/// What a tree holds, path by path, as comparable text.
fn walk_fs(fs: &Fs, root: u64) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(root, String::new())];
    let mut first: BTreeMap<u64, String> = BTreeMap::new();
    while let Some((dir, prefix)) = todo.pop() {
        for e in fs.readdir(dir, 2, usize::MAX).unwrap() {
            let path = format!("{prefix}{}", String::from_utf8_lossy(&e.name));
            let i = fs.getattr(e.ino).unwrap();
            let mut desc = format!(
                "mode {:o} uid {} gid {} mtime {}.{}",
                i.mode, i.uid, i.gid, i.mtime.sec, i.mtime.nsec
            );
            match i.mode & 0o170000 {
                0o040000 => todo.push((e.ino, format!("{path}/"))),
                0o100000 => {
                    let data = fs.read_file(e.ino, 0, u32::MAX).unwrap();
                    desc += &format!(" size {} sum {:08x}", data.len(), crc(&data));
                    let mut names = fs.listxattr(e.ino).unwrap();
                    names.sort();
                    for n in names {
                        let v = fs.getxattr(e.ino, &n).unwrap();
                        desc += &format!(
                            " {}={}",
                            String::from_utf8_lossy(&n),
                            String::from_utf8_lossy(&v)
                        );
                    }
                    if i.nlink > 1 {
                        let f = first.entry(e.ino).or_insert(path.clone());
                        desc += &format!(" links {}", i.nlink);
                        let _ = f;
                    }
                }
                0o120000 => {
                    desc += &format!(
                        " -> {}",
                        String::from_utf8_lossy(&fs.readlink(e.ino).unwrap())
                    )
                }
                0o060000 | 0o020000 => desc += &format!(" rdev {:x}", i.rdev),
                _ => {}
            }
            out.insert(path, desc);
        }
    }
    out
}

fn crc(d: &[u8]) -> u32 {
    // A small FNV-1a is enough to compare contents.
    d.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn walk_dir(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let path = format!("{prefix}{}", e.file_name().to_string_lossy());
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let mut desc = format!(
                "mode {:o} uid {} gid {} mtime {}.{}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec()
            );
            let ft = m.file_type();
            if ft.is_dir() {
                todo.push((e.path(), format!("{path}/")));
            } else if ft.is_file() {
                let data = std::fs::read(e.path()).unwrap();
                desc += &format!(" size {} sum {:08x}", data.len(), crc(&data));
                let mut names: Vec<_> = xattr::list(e.path()).unwrap().collect();
                names.sort();
                for n in names {
                    let v = xattr::get(e.path(), &n).unwrap().unwrap_or_default();
                    desc += &format!(" {}={}", n.to_string_lossy(), String::from_utf8_lossy(&v));
                }
                if m.nlink() > 1 {
                    desc += &format!(" links {}", m.nlink());
                }
            } else if ft.is_symlink() {
                desc += &format!(" -> {}", std::fs::read_link(e.path()).unwrap().display());
            } else if ft.is_block_device() || ft.is_char_device() {
                let (ma, mi) = (nix_major(m.rdev()), nix_minor(m.rdev()));
                desc += &format!(" rdev {:x}", (ma << 8) | mi);
            }
            out.insert(path, desc);
        }
    }
    out
}

fn nix_major(d: u64) -> u64 {
    ((d >> 32) & 0xffff_f000) | ((d >> 8) & 0xfff)
}
fn nix_minor(d: u64) -> u64 {
    ((d >> 12) & 0xffff_ff00) | (d & 0xff)
}

/// A loop-mounted btrfs, unmounted and removed on drop.
struct Btrfs {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl Btrfs {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("arbor-btrfs-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let img = dir.path().join("b.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        std::fs::File::create(&img)
            .unwrap()
            .set_len(512 << 20)
            .unwrap();
        run(Command::new("mkfs.btrfs").arg("-q").arg(&img));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt));
        Self { _dir: dir, mnt }
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn run(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn btrfs_receive_recreates_a_full_arbor_send() {
    if !root_with_btrfs() {
        return;
    }
    let (fs, snap) = source();
    let want = walk_fs(&fs, snap);
    assert!(want.len() >= 12, "{want:#?}");
    for version in [1, 2] {
        let mut stream = Vec::new();
        let stats = send_full(
            &fs,
            snap,
            b"snap1",
            &mut stream,
            SendOptions {
                version,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(stats.data_bytes < 300_000, "holes are not sent: {stats:?}");
        let b = Btrfs::new();
        let file = b.mnt.join("stream");
        std::fs::write(&file, &stream).unwrap();
        run(Command::new("btrfs")
            .args(["receive", "--dump", "-f"])
            .arg(&file));
        run(Command::new("btrfs")
            .args(["receive", "-f"])
            .arg(&file)
            .arg(&b.mnt));
        let got = walk_dir(&b.mnt.join("snap1"));
        assert_eq!(got, want, "stream v{version}");
        // Holes stay holes: the 10 MiB sparse file takes a few blocks.
        let sparse = std::fs::metadata(b.mnt.join("snap1/sparse")).unwrap();
        assert!(
            sparse.blocks() * 512 < 1 << 20,
            "{} blocks",
            sparse.blocks()
        );
        let show = run(Command::new("btrfs")
            .args(["subvolume", "show"])
            .arg(b.mnt.join("snap1")));
        let uuid = fs
            .subvol_info(arbor_fs::ino::Loc::of(snap).unwrap().subvol)
            .unwrap()
            .item
            .uuid;
        let uuid: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            show.replace('-', "").contains(&uuid),
            "received UUID:\n{show}"
        );
        assert!(show.contains("readonly"), "{show}");
    }
}

/// Bytes of `path` (a file or a tree) that nothing else on the btrfs shares.
fn btrfs_exclusive(path: &Path) -> u64 {
    let out = run(Command::new("btrfs")
        .args(["filesystem", "du", "-s", "--raw"])
        .arg(path));
    out.lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("btrfs filesystem du: {out}"))
}

#[test]
fn btrfs_receive_applies_clones_from_the_stream_the_parent_and_c_sources() {
    if !root_with_btrfs() {
        return;
    }
    let dev = Arc::new(MemStorage::new(256 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Fs::open(dev, &FsOptions::default()).unwrap();
    let mkfile = |dir: u64, name: &str, data: &[u8]| {
        let ino = fs
            .create(dir, name.as_bytes(), 0o100644, 0, who(), None)
            .unwrap()
            .ino;
        fs.write_file(ino, 0, data, false).unwrap();
        ino
    };
    let vol = fs.subvol_create(ROOT_INO, b"vol", who()).unwrap().root;
    let data = pattern((1 << 20) + 100, 7);
    let a = mkfile(vol, "a", &data);
    let b = mkfile(vol, "b", b"");
    fs.copy_range(a, 0, b, 0, data.len() as u64).unwrap();
    let s1 = fs.subvol_snapshot(vol, ROOT_INO, b"s1", true).unwrap().root;
    let c = mkfile(vol, "c", &pattern(50_000, 8));
    fs.copy_range(a, 262_144, c, 8192, 524_288).unwrap();
    let s2 = fs.subvol_snapshot(vol, ROOT_INO, b"s2", true).unwrap().root;
    let yv = fs.subvol_create(ROOT_INO, b"yv", who()).unwrap().root;
    let y_copy = mkfile(yv, "copy", b"");
    let s1_a = fs.lookup(s1, b"a").unwrap().ino;
    fs.copy_range(s1_a, 0, y_copy, 0, data.len() as u64)
        .unwrap();
    let y = fs.subvol_snapshot(yv, ROOT_INO, b"y", true).unwrap().root;
    for version in [1, 2] {
        let o = |clone_sources| SendOptions {
            version,
            clone_sources,
            ..Default::default()
        };
        let mut streams = Vec::new();
        let mut full_s1 = Vec::new();
        send_full(&fs, s1, b"s1", &mut full_s1, o(vec![])).unwrap();
        streams.push(("s1", s1, full_s1));
        let mut inc = Vec::new();
        send_incremental(&fs, s1, s2, b"s2", &mut inc, o(vec![])).unwrap();
        streams.push(("s2", s2, inc));
        let mut with_c = Vec::new();
        send_full(&fs, y, b"y", &mut with_c, o(vec![s1])).unwrap();
        streams.push(("y", y, with_c));
        let bt = Btrfs::new();
        for (name, root, stream) in &streams {
            let file = bt.mnt.join(format!("{name}.stream"));
            std::fs::write(&file, stream).unwrap();
            let dump = run(Command::new("btrfs")
                .args(["receive", "--dump", "-f"])
                .arg(&file));
            assert!(dump.contains("clone "), "{name} v{version}: {dump}");
            run(Command::new("btrfs")
                .args(["receive", "-f"])
                .arg(&file)
                .arg(&bt.mnt));
            let got = walk_dir(&bt.mnt.join(name));
            assert_eq!(got, walk_fs(&fs, *root), "{name} v{version}");
        }
        run(Command::new("sync").arg("-f").arg(&bt.mnt));
        // The clones share blocks on btrfs too: only partial last blocks and c's own
        // bytes are the copies' own.
        assert!(btrfs_exclusive(&bt.mnt.join("s1/b")) <= 4096);
        assert!(btrfs_exclusive(&bt.mnt.join("s2/c")) <= 64 << 10);
        assert!(btrfs_exclusive(&bt.mnt.join("y")) <= 8192);
    }
}

#[test]
fn a_writable_subvolume_is_refused() {
    let dev = Arc::new(MemStorage::new(64 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Fs::open(dev, &FsOptions::default()).unwrap();
    let vol = fs.subvol_create(ROOT_INO, b"rw", who()).unwrap().root;
    let err = send_full(&fs, vol, b"rw", Vec::new(), SendOptions::default()).unwrap_err();
    assert!(err.to_string().contains("not read-only"), "{err}");
}

#[test]
fn every_full_stream_decodes_and_dumps() {
    let (fs, snap) = source();
    for version in [1, 2] {
        for no_data in [false, true] {
            let mut stream = Vec::new();
            send_full(
                &fs,
                snap,
                b"snap1",
                &mut stream,
                SendOptions {
                    version,
                    no_data,
                    ..Default::default()
                },
            )
            .unwrap();
            let mut text = Vec::new();
            arbor_send::dump_stream(&stream[..], &mut text).unwrap();
            let text = String::from_utf8(text).unwrap();
            assert!(text.starts_with("subvol          ./snap1 "), "{text}");
            assert!(
                text.contains("link            ./snap1/hl")
                    || text.contains("link            ./snap1/a/b/file1"),
                "{text}"
            );
            if no_data {
                assert!(
                    text.contains("update_extent") && !text.contains("\nwrite "),
                    "{text}"
                );
            }
        }
    }
}
