//! POSIX behaviour through the kernel: what real programs rely on.

use crate::harness::{Mount, as_nobody};
use nix::fcntl::{AT_FDCWD, FallocateFlags, RenameFlags, fallocate, renameat2};
use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Whence, lseek};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn errno<T: std::fmt::Debug>(r: nix::Result<T>) -> i32 {
    r.expect_err("should fail") as i32
}

#[test]
fn rename_noreplace_exchange_and_directory_over_empty_directory() {
    let m = Mount::new("128M", "");
    std::fs::write(m.path("a"), b"A").unwrap();
    std::fs::write(m.path("b"), b"B").unwrap();
    let r = renameat2(
        AT_FDCWD,
        &m.path("a"),
        AT_FDCWD,
        &m.path("b"),
        RenameFlags::RENAME_NOREPLACE,
    );
    assert_eq!(errno(r), libc::EEXIST);
    renameat2(
        AT_FDCWD,
        &m.path("a"),
        AT_FDCWD,
        &m.path("b"),
        RenameFlags::RENAME_EXCHANGE,
    )
    .unwrap();
    assert_eq!(std::fs::read(m.path("a")).unwrap(), b"B");
    assert_eq!(std::fs::read(m.path("b")).unwrap(), b"A");
    std::fs::create_dir_all(m.path("d1/inner")).unwrap();
    std::fs::create_dir(m.path("d2")).unwrap();
    std::fs::rename(m.path("d1"), m.path("d2")).unwrap();
    assert!(m.path("d2/inner").is_dir());
    assert!(!m.path("d1").exists());
    std::fs::create_dir(m.path("d3")).unwrap();
    let e = std::fs::rename(m.path("d3"), m.path("d2")).unwrap_err();
    assert!(matches!(
        e.raw_os_error(),
        Some(libc::ENOTEMPTY) | Some(libc::EEXIST)
    ));
    // Link counts, directories included.
    assert_eq!(std::fs::metadata(m.path("d2")).unwrap().nlink(), 3);
    assert_eq!(std::fs::metadata(&m.mnt).unwrap().nlink(), 4);
    std::fs::hard_link(m.path("a"), m.path("d2/a2")).unwrap();
    assert_eq!(std::fs::metadata(m.path("a")).unwrap().nlink(), 2);
}

#[test]
fn an_unlinked_open_file_keeps_its_data_until_the_last_close() {
    let m = Mount::new("256M", "");
    let data = vec![0xabu8; 8 << 20];
    std::fs::write(m.path("f"), &data).unwrap();
    let before = nix::sys::statvfs::statvfs(&m.mnt).unwrap().blocks_free();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("f"))
        .unwrap();
    std::fs::remove_file(m.path("f")).unwrap();
    assert!(!m.path("f").exists());
    f.write_all(b"more").unwrap();
    f.sync_all().unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut back = Vec::new();
    f.read_to_end(&mut back).unwrap();
    let mut want = data.clone();
    want[..4].copy_from_slice(b"more");
    assert!(
        back == want,
        "the unlinked file reads back what was written"
    );
    drop(f);
    // fsync of any file or directory commits everything (syncfs does not reach a
    // FUSE daemon: the kernel sends FUSE_SYNCFS to virtiofs only).
    let root = File::open(&m.mnt).unwrap();
    root.sync_all().unwrap();
    root.sync_all().unwrap();
    let after = nix::sys::statvfs::statvfs(&m.mnt).unwrap().blocks_free();
    assert!(
        after >= before + (8 << 20) / 4096 - 16,
        "space came back: {before} -> {after}"
    );
}

#[test]
fn truncate_fallocate_and_seek_data_hole() {
    let m = Mount::new("256M", "");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path("f"))
        .unwrap();
    f.write_all(&vec![1u8; 100_000]).unwrap();
    f.set_len(10_000).unwrap();
    f.set_len(50_000).unwrap();
    let mut back = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut back).unwrap();
    assert_eq!(back.len(), 50_000);
    assert!(back[..10_000].iter().all(|&b| b == 1));
    assert!(
        back[10_000..].iter().all(|&b| b == 0),
        "truncate up shows zeros"
    );
    // Allocate, keep size, punch a hole, zero a range.
    fallocate(&f, FallocateFlags::empty(), 0, 1 << 20).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 1 << 20);
    fallocate(&f, FallocateFlags::FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 1 << 20);
    assert!(f.metadata().unwrap().blocks() * 512 >= 2 << 20);
    fallocate(
        &f,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        1000,
        5000,
    )
    .unwrap();
    fallocate(&f, FallocateFlags::FALLOC_FL_ZERO_RANGE, 7000, 100).unwrap();
    let mut back = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut back).unwrap();
    assert!(back[..1000].iter().all(|&b| b == 1));
    assert!(back[1000..6000].iter().all(|&b| b == 0));
    assert!(back[6000..7000].iter().all(|&b| b == 1));
    assert!(back[7000..7100].iter().all(|&b| b == 0));
    assert!(back[7100..10_000].iter().all(|&b| b == 1));
    let bad = fallocate(&f, FallocateFlags::FALLOC_FL_COLLAPSE_RANGE, 0, 4096);
    assert_eq!(errno(bad), libc::EOPNOTSUPP);
    // A sparse file: data at 1 MiB only.
    let g = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path("sparse"))
        .unwrap();
    nix::sys::uio::pwrite(&g, &[7u8; 4096], 1 << 20).unwrap();
    g.set_len(4 << 20).unwrap();
    g.sync_all().unwrap();
    assert_eq!(lseek(&g, 0, Whence::SeekData).unwrap(), 1 << 20);
    assert_eq!(lseek(&g, 0, Whence::SeekHole).unwrap(), 0);
    assert_eq!(
        lseek(&g, 1 << 20, Whence::SeekHole).unwrap(),
        (1 << 20) + 4096
    );
    assert_eq!(
        errno(lseek(&g, (2 << 20) as i64, Whence::SeekData)),
        libc::ENXIO
    );
    assert_eq!(
        g.metadata().unwrap().blocks(),
        8,
        "one 4 KiB block allocated"
    );
}

#[test]
fn timestamps_utime_now_omit_and_nanoseconds() {
    let m = Mount::new("128M", "");
    std::fs::write(m.path("f"), b"x").unwrap();
    let at = TimeSpec::new(1_000_000_000, 123_456_789);
    let mt = TimeSpec::new(1_100_000_000, 987_654_321);
    utimensat(
        AT_FDCWD,
        &m.path("f"),
        &at,
        &mt,
        UtimensatFlags::FollowSymlink,
    )
    .unwrap();
    let md = std::fs::metadata(m.path("f")).unwrap();
    assert_eq!((md.atime(), md.atime_nsec()), (1_000_000_000, 123_456_789));
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_100_000_000, 987_654_321));
    // UTIME_OMIT leaves atime; UTIME_NOW sets mtime to now.
    utimensat(
        AT_FDCWD,
        &m.path("f"),
        &TimeSpec::UTIME_OMIT,
        &TimeSpec::UTIME_NOW,
        UtimensatFlags::FollowSymlink,
    )
    .unwrap();
    let md2 = std::fs::metadata(m.path("f")).unwrap();
    assert_eq!(
        (md2.atime(), md2.atime_nsec()),
        (1_000_000_000, 123_456_789)
    );
    assert!(md2.mtime() > 1_700_000_000);
    assert!(md2.ctime() >= md.ctime());
    // Writing changes mtime and ctime; creating a name changes the directory's.
    let dir_before = std::fs::metadata(&m.mnt).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(m.path("g"), b"y").unwrap();
    let dir_after = std::fs::metadata(&m.mnt).unwrap();
    assert!(
        (dir_after.mtime(), dir_after.mtime_nsec()) > (dir_before.mtime(), dir_before.mtime_nsec())
    );
}

#[test]
fn setuid_and_setgid_are_cleared_on_write_and_chown() {
    let m = Mount::new("128M", "");
    let f = m.path("prog");
    let mode = |f: &std::path::Path| std::fs::metadata(f).unwrap().mode() & 0o7777;
    std::fs::write(&f, b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o6777)).unwrap();
    let mut w = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
    w.write_all(b"# root may write\n").unwrap();
    w.sync_all().unwrap();
    drop(w);
    assert_eq!(mode(&f), 0o6777, "root (CAP_FSETID) keeps both on write");
    let out = as_nobody(&format!("echo more >> {}", f.display()));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&f), 0o777, "a write by another user clears both");

    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o6777)).unwrap();
    let out = as_nobody(&format!("truncate -s 4 {}", f.display()));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&f), 0o777, "a truncation by another user clears both");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o6777)).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(2)
        .unwrap();
    assert_eq!(mode(&f), 0o6777, "root keeps both on truncation");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o2745)).unwrap();
    let out = as_nobody(&format!("echo more >> {}", f.display()));
    assert!(!out.status.success(), "no write permission: {out:?}");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o2767)).unwrap();
    let out = as_nobody(&format!("echo more >> {}", f.display()));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        mode(&f),
        0o2767,
        "set-group-ID without group execute (mandatory locking) stays"
    );

    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::chown(&f, Some(1), Some(1)).unwrap();
    assert_eq!(mode(&f), 0o755, "chown clears setuid");

    // File capabilities (VFS_CAP_REVISION_2, CAP_NET_BIND_SERVICE permitted and
    // effective) go on any write, a root's too, and on chown.
    let caps: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    for (how, change) in [
        (
            "write",
            &(|f: &std::path::Path| {
                let mut w = std::fs::OpenOptions::new().append(true).open(f).unwrap();
                w.write_all(b"x").unwrap();
                w.sync_all().unwrap();
            }) as &dyn Fn(&std::path::Path),
        ),
        ("chown", &|f: &std::path::Path| {
            std::os::unix::fs::chown(f, Some(2), Some(2)).unwrap()
        }),
    ] {
        xattr::set(&f, "security.capability", &caps).unwrap();
        assert!(xattr::get(&f, "security.capability").unwrap().is_some());
        change(&f);
        assert_eq!(
            xattr::get(&f, "security.capability").unwrap(),
            None,
            "a {how} removes security.capability"
        );
    }
}

#[test]
fn long_names_are_refused_with_enametoolong() {
    let m = Mount::new("128M", "");
    let long = "n".repeat(256);
    let e = std::fs::write(m.path(&long), b"").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG));
    let e = std::fs::create_dir(m.path(&long)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG));
    std::fs::write(m.path(&"n".repeat(255)), b"").unwrap();
}

#[test]
fn special_files_symlinks_and_xattrs() {
    let m = Mount::new("128M", "");
    nix::unistd::mkfifo(
        &m.path("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    nix::sys::stat::mknod(
        &m.path("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let sock = std::os::unix::net::UnixListener::bind(m.path("sock")).unwrap();
    drop(sock);
    std::os::unix::fs::symlink("target/of/link", m.path("link")).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(m.path("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let null = std::fs::symlink_metadata(m.path("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert!(
        std::fs::symlink_metadata(m.path("sock"))
            .unwrap()
            .file_type()
            .is_socket()
    );
    assert_eq!(
        std::fs::read_link(m.path("link")).unwrap().to_str(),
        Some("target/of/link")
    );
    std::fs::write(m.path("f"), b"x").unwrap();
    xattr::set(m.path("f"), "user.color", b"blue").unwrap();
    xattr::set(m.path("f"), "trusted.t", b"1").unwrap();
    xattr::set(m.path("f"), "security.s", b"2").unwrap();
    assert_eq!(
        xattr::get(m.path("f"), "user.color").unwrap().as_deref(),
        Some(&b"blue"[..])
    );
    let names: Vec<_> = xattr::list(m.path("f")).unwrap().collect();
    assert_eq!(names.len(), 3);
    xattr::remove(m.path("f"), "user.color").unwrap();
    assert_eq!(xattr::get(m.path("f"), "user.color").unwrap(), None);
}

#[test]
fn posix_acls_take_effect() {
    let m = Mount::new("128M", "");
    let f = m.path("secret");
    std::fs::write(&f, b"for nobody's eyes").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cat = format!("cat {}", f.display());
    assert!(
        !as_nobody(&cat).status.success(),
        "mode 600 keeps nobody out"
    );
    let out = std::process::Command::new("setfacl")
        .args(["-m", "u:65534:r"])
        .arg(&f)
        .output()
        .expect("setfacl (Debian package acl)");
    assert!(out.status.success(), "{out:?}");
    let read = as_nobody(&cat);
    assert!(read.status.success(), "the ACL lets nobody read: {read:?}");
    assert_eq!(read.stdout, b"for nobody's eyes");
    // The mask shows in the group bits.
    assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o070, 0o040);
    // A default ACL is inherited by new files.
    std::fs::create_dir(m.path("shared")).unwrap();
    let out = std::process::Command::new("setfacl")
        .args(["-d", "-m", "u:65534:rw"])
        .arg(m.path("shared"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::write(m.path("shared/new"), b"x").unwrap();
    std::fs::set_permissions(m.path("shared"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let w = as_nobody(&format!("echo hi > {}", m.path("shared/new").display()));
    assert!(w.status.success(), "inherited ACL lets nobody write: {w:?}");
}

#[test]
fn statfs_reports_the_real_free_space_and_enospc_is_clean() {
    let mut m = Mount::new("96M", "");
    let s0 = nix::sys::statvfs::statvfs(&m.mnt).unwrap();
    assert_eq!(s0.blocks() * s0.fragment_size(), 96 << 20);
    std::fs::write(m.path("keep"), vec![3u8; 8 << 20]).unwrap();
    File::open(&m.mnt).unwrap().sync_all().unwrap();
    let s1 = nix::sys::statvfs::statvfs(&m.mnt).unwrap();
    let used = (s0.blocks_free() - s1.blocks_free()) * s1.fragment_size();
    assert!(
        (8 << 20..10 << 20).contains(&used),
        "8 MiB written, {used} used"
    );
    // Fill the device.
    let mut big = File::create(m.path("big")).unwrap();
    let chunk = vec![9u8; 1 << 20];
    let err = loop {
        if let Err(e) = big.write_all(&chunk).and_then(|()| big.sync_all()) {
            break e;
        }
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    drop(big);
    assert_eq!(std::fs::read(m.path("keep")).unwrap(), vec![3u8; 8 << 20]);
    std::fs::remove_file(m.path("big")).unwrap();
    std::fs::write(m.path("after"), b"room again").unwrap();
    m.umount();
    assert!(m.check().contains("no problems found"));
}

#[test]
fn syncfs_after_unlinking_a_written_file_succeeds() {
    let m = Mount::new("128M", "");
    std::fs::write(m.path("f"), b"data").unwrap();
    let root = File::open(&m.mnt).unwrap();
    nix::unistd::syncfs(&root).unwrap();
    std::fs::write(m.path("f"), b"more data").unwrap();
    std::fs::remove_file(m.path("f")).unwrap();
    // The kernel writes the freed inode's times back; that must not fail syncfs.
    nix::unistd::syncfs(&root).unwrap();
}
