//! Mounting and unmounting: the daemon, read-only mounts, the image lock, the mount
//! helper and fstab.

use crate::harness::{Mount, arbor, ok};
use std::io::ErrorKind;
use std::process::Command;

#[test]
fn mount_returns_once_ready_and_umount_commits() {
    let mut m = Mount::new("256M", "");
    // Ready at once: no waiting for the daemon.
    std::fs::write(m.path("hello"), b"hello world").unwrap();
    std::fs::create_dir(m.path("dir")).unwrap();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(mounts.contains(&*m.mnt.to_string_lossy()), "{mounts}");
    m.umount();
    assert!(m.daemon_pid().is_none(), "the daemon ended");
    assert!(m.check().contains("no problems found"));
    m.mount("");
    assert_eq!(std::fs::read(m.path("hello")).unwrap(), b"hello world");
    assert!(m.path("dir").is_dir());
}

#[test]
fn a_second_opener_of_the_image_is_refused() {
    let m = Mount::new("128M", "");
    let other = tempfile::tempdir().unwrap();
    let out = arbor()
        .arg("mount")
        .arg(&m.image)
        .arg(other.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use"), "{err}");
    let out = arbor().arg("check").arg(&m.image).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
}

#[test]
fn a_read_only_mount_refuses_every_change() {
    let mut m = Mount::new("128M", "");
    std::fs::write(m.path("f"), b"data").unwrap();
    m.umount();
    m.mount("ro");
    assert_eq!(std::fs::read(m.path("f")).unwrap(), b"data");
    for r in [
        std::fs::write(m.path("g"), b"x"),
        std::fs::write(m.path("f"), b"x"),
        std::fs::create_dir(m.path("d")),
        std::fs::remove_file(m.path("f")),
    ] {
        let e = r.expect_err("a change on a read-only mount");
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    }
    m.umount();
    assert!(m.check().contains("no problems found"));
}

#[test]
fn mount_reports_errors_instead_of_hanging() {
    let m = Mount::image("64M");
    let out = arbor()
        .arg("mount")
        .arg(&m.image)
        .arg(m.dir.path().join("missing"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let garbage = m.dir.path().join("garbage.img");
    std::fs::write(&garbage, vec![0u8; 4 << 20]).unwrap();
    let out = arbor()
        .arg("mount")
        .arg(&garbage)
        .arg(&m.mnt)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("superblock"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `mount -t fuse.arbor` and an fstab line go through /sbin/mount.fuse.arbor.
#[test]
fn the_mount_helper_serves_mount_t_and_fstab() {
    let helper = std::path::Path::new("/sbin/mount.fuse.arbor");
    match std::fs::symlink_metadata(helper) {
        Ok(_) => std::fs::remove_file(helper).unwrap(),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => panic!("{e}"),
    }
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_arbor"), helper).unwrap();
    let mut m = Mount::image("128M");
    let out = Command::new("mount")
        .args(["-t", "fuse.arbor", "-o", "commit=2"])
        .arg(&m.image)
        .arg(&m.mnt)
        .output()
        .unwrap();
    ok(out, "mount -t fuse.arbor");
    m.mounted = true;
    std::fs::write(m.path("via-helper"), b"1").unwrap();
    retry_while_busy(Command::new("umount").arg(&m.mnt), "umount");
    // Plain umount returns before the daemon's final commit; arbor check waits for
    // nothing, so wait for the lock to be free first.
    wait_unlocked(&m.image);
    m.mounted = false;
    let fstab = m.dir.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "{} {} fuse.arbor defaults,noauto,nofail,commit=1 0 0\n",
            m.image.display(),
            m.mnt.display()
        ),
    )
    .unwrap();
    let out = Command::new("mount")
        .arg("-T")
        .arg(&fstab)
        .arg(&m.mnt)
        .output()
        .unwrap();
    ok(out, "mount from fstab");
    m.mounted = true;
    assert_eq!(std::fs::read(m.path("via-helper")).unwrap(), b"1");
    m.umount();
    let _ = std::fs::remove_file(helper);
    assert!(m.check().contains("no problems found"));
}

fn wait_unlocked(image: &std::path::Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let f = std::fs::File::open(image).unwrap();
        if f.try_lock().is_ok() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "daemon never let go");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The kernel's side of the speed settings: several worker threads serve requests,
/// writes arrive in 1 MiB requests, the writeback cache, parallel directory operations
/// and readdirplus are on, and readahead is 1 MiB.
#[test]
fn requests_are_served_by_several_threads_in_1_mib_writes() {
    let m = Mount::image("256M");
    let daemon = serve_in_foreground(&m, "");
    let data = vec![0x3cu8; 16 << 20];
    std::fs::write(m.path("big"), &data).unwrap();
    std::fs::File::open(m.path("big"))
        .unwrap()
        .sync_all()
        .unwrap();
    // Opening again keeps the cached pages: these reads never reach the daemon.
    for _ in 0..3 {
        assert!(std::fs::read(m.path("big")).unwrap() == data);
    }
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let dir = m.path(&format!("d{t}"));
            std::thread::spawn(move || {
                std::fs::create_dir(&dir).unwrap();
                for i in 0..300 {
                    std::fs::write(dir.join(format!("f{i}")), b"x").unwrap();
                    std::fs::metadata(dir.join(format!("f{i}"))).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(&m.mnt).unwrap().dev();
    let knob = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    assert_eq!(std::fs::read_to_string(&knob).unwrap().trim(), "1024");
    let log = unmount_and_read_log(&m, daemon);
    for cap in [
        "FUSE_WRITEBACK_CACHE",
        "FUSE_PARALLEL_DIROPS",
        "FUSE_POSIX_ACL",
        "FUSE_DO_READDIRPLUS",
        "FUSE_HANDLE_KILLPRIV_V2",
    ] {
        assert!(log.contains(cap), "{cap} not negotiated:\n{log}");
    }
    assert!(log.contains("largest write 1048576 bytes"), "{log}");
    assert!(
        log.contains("largest read 0 bytes"),
        "cached pages were read from the daemon again:\n{log}"
    );
    let threads: u32 = log
        .split(" requests on ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(threads >= 2, "served by {threads} threads:\n{log}");
}

/// `-o nowriteback` turns the kernel's write cache off: every write(2) reaches the
/// daemon as it is, in its own size.
#[test]
fn nowriteback_sends_each_write_as_it_comes() {
    let m = Mount::image("64M");
    let daemon = serve_in_foreground(&m, "nowriteback");
    let chunk: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let mut f = std::fs::File::create(m.path("f")).unwrap();
    for _ in 0..64 {
        std::io::Write::write_all(&mut f, &chunk).unwrap();
    }
    drop(f);
    assert_eq!(std::fs::read(m.path("f")).unwrap(), chunk.repeat(64));
    let log = unmount_and_read_log(&m, daemon);
    assert!(!log.contains("FUSE_WRITEBACK_CACHE"), "{log}");
    assert!(log.contains("largest write 4096 bytes"), "{log}");
}

/// The kernel keeps a written file's times itself (writeback cache) from its coarse
/// clock, and sends them back in a SETATTR at close if they changed. The daemon stamps
/// a new file from the same clock, so a file written within the tick of its create
/// closes without that extra round trip (it used to cost one per file).
#[test]
fn a_file_written_right_after_its_create_closes_without_a_setattr() {
    let m = Mount::image("64M");
    let daemon = serve_in_foreground(&m, "");
    let files = 200;
    for i in 0..files {
        std::fs::write(m.path(&format!("f{i}")), [7u8; 1024]).unwrap();
    }
    let log = unmount_and_read_log(&m, daemon);
    // "served N requests on T threads (create 200, getattr 2, ...); ..."
    let kinds = log
        .split(" threads (")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or("");
    let count = |kind: &str| -> u64 {
        kinds
            .split(", ")
            .find_map(|e| e.strip_prefix(kind)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(count("create"), files, "{log}");
    // A tick (1 to 10 ms) ending between a create and its write still costs one.
    assert!(count("setattr") < files / 4, "{log}");
}

/// Runs `arbor -v mount -f -o OPTIONS` on the image and returns once it is mounted.
fn serve_in_foreground(m: &Mount, options: &str) -> std::process::Child {
    let daemon = arbor()
        .args(["-v", "mount", "-f", "-o", options])
        .arg(&m.image)
        .arg(&m.mnt)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .contains(&*m.mnt.to_string_lossy())
    {
        assert!(std::time::Instant::now() < deadline, "never mounted");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    daemon
}

/// Unmounts a mount served by [`serve_in_foreground`] and returns the daemon's log.
fn unmount_and_read_log(m: &Mount, daemon: std::process::Child) -> String {
    retry_while_busy(Command::new("umount").arg(&m.mnt), "umount");
    let out = daemon.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Plain umount(8) and fusermount3 -u end the daemon too, after its final commit.
#[test]
fn umount_and_fusermount3_commit_and_end_the_daemon() {
    let mut m = Mount::new("128M", "commit=3600");
    std::fs::write(m.path("a"), b"by umount").unwrap();
    retry_while_busy(Command::new("umount").arg(&m.mnt), "umount");
    wait_unlocked(&m.image);
    m.mounted = false;
    assert!(m.daemon_pid().is_none());
    m.mount("commit=3600");
    assert_eq!(std::fs::read(m.path("a")).unwrap(), b"by umount");
    std::fs::write(m.path("b"), b"by fusermount3").unwrap();
    retry_while_busy(
        Command::new("fusermount3").arg("-u").arg(&m.mnt),
        "fusermount3 -u (Debian package fuse3, installed by scripts/tools.sh)",
    );
    wait_unlocked(&m.image);
    m.mounted = false;
    assert!(m.check().contains("no problems found"));
    m.mount("");
    assert_eq!(std::fs::read(m.path("b")).unwrap(), b"by fusermount3");
}

/// Runs an unmount command, again while it fails with EBUSY: the release of a file
/// closed just before may still be in flight to the daemon (the kernel sends it
/// asynchronously and the mount stays busy until it is answered).
fn retry_while_busy(cmd: &mut Command, what: &str) {
    for _ in 0..100 {
        let out = cmd.output().expect(what);
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("busy"), "{what} failed: {err}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("{what}: still busy after 2 s");
}
