//! `arbor subvolume` and `arbor filesystem df` on a mounted filesystem: through the
//! daemon's control socket, visible at once through the mount.

use crate::harness::{Mount, arbor, as_nobody, ok};
use std::io::Write;
use std::os::unix::fs::MetadataExt;

fn sub(args: &[&str]) -> String {
    ok(
        arbor().arg("subvolume").args(args).output().unwrap(),
        &format!("subvolume {args:?}"),
    )
}

fn list_json(m: &Mount) -> Vec<serde_json::Value> {
    let out = sub(&["list", "--format", "json", m.mnt.to_str().unwrap()]);
    serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap()
}

#[test]
fn subvolume_commands_work_through_the_daemon() {
    let mut m = Mount::new("256M", "");
    let p = |s: &str| m.path(s).to_str().unwrap().to_string();
    sub(&["create", &p("vol")]);
    std::fs::write(m.path("vol/f"), b"in the subvolume").unwrap();
    std::fs::create_dir(m.path("vol/d")).unwrap();
    sub(&["snapshot", &p("vol"), &p("rw")]);
    std::fs::create_dir(m.path("snaps")).unwrap();
    sub(&["snapshot", "-r", &p("vol"), &p("snaps")]);
    assert_eq!(std::fs::read(m.path("rw/f")).unwrap(), b"in the subvolume");
    assert_eq!(
        std::fs::read(m.path("snaps/vol/f")).unwrap(),
        b"in the subvolume"
    );

    // Each subvolume has its own inode numbers; the files' differ across them.
    let ino = |s: &str| std::fs::metadata(m.path(s)).unwrap().ino();
    assert_ne!(ino("vol/f"), ino("rw/f"));
    assert_ne!(ino("vol"), ino("rw"));

    // The read-only snapshot refuses every change; the writable one diverges.
    for r in [
        std::fs::write(m.path("snaps/vol/f"), b"x").err(),
        std::fs::write(m.path("snaps/vol/new"), b"x").err(),
        std::fs::create_dir(m.path("snaps/vol/d2")).err(),
        std::fs::remove_file(m.path("snaps/vol/f")).err(),
    ] {
        assert_eq!(r.and_then(|e| e.raw_os_error()), Some(libc::EROFS));
    }
    std::fs::write(m.path("rw/f"), b"changed").unwrap();
    assert_eq!(std::fs::read(m.path("vol/f")).unwrap(), b"in the subvolume");

    let list = list_json(&m);
    let paths: Vec<&str> = list.iter().map(|v| v["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["", "vol", "rw", "snaps/vol"]);
    let vol_uuid = list[1]["uuid"].as_str().unwrap();
    assert_eq!(list[3]["parent_uuid"].as_str(), Some(vol_uuid));
    assert_eq!(list[3]["read_only"], true);
    let text = sub(&["list", &p("")]);
    assert!(text.contains("ID 258 gen"), "{text}");
    assert!(text.contains("top level 5 referenced "), "{text}");
    assert!(text.contains(" path snaps/vol\n"), "{text}");
    let show = sub(&["show", &p("snaps/vol/d")]);
    assert!(show.contains("Subvolume ID: \t\t258"), "{show}");
    assert!(show.contains("Flags: \t\t\treadonly"), "{show}");
    assert!(
        show.contains(&format!("Parent UUID: \t\t{vol_uuid}")),
        "{show}"
    );
    assert!(show.contains("Referenced: \t\t16.00B"), "{show}");
    assert!(show.contains("Exclusive: \t\t"), "{show}");
    let show = sub(&["show", &p("vol")]);
    assert!(
        show.contains("\t\t\t\trw\n") && show.contains("\t\t\t\tsnaps/vol\n"),
        "{show}"
    );

    // Plain rmdir refuses a subvolume; delete works and the space comes back.
    let e = std::fs::remove_dir(m.path("rw")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    let out = arbor()
        .args(["subvolume", "delete", &p("snaps")])
        .output()
        .unwrap();
    assert!(!out.status.success(), "snaps is a plain directory");
    sub(&["delete", &p("rw"), &p("snaps/vol")]);
    assert!(!m.path("rw").exists());
    sub(&["sync", &p("")]);
    let df = ok(
        arbor().args(["filesystem", "df", &p("")]).output().unwrap(),
        "df",
    );
    assert!(
        df.contains("Subvolumes: 2, deleted subvolume nodes still to free: 0"),
        "{df}"
    );
    m.umount();
    assert!(m.check().contains("no problems found"));
}

#[test]
fn a_snapshot_holds_data_written_but_not_yet_synced() {
    let m = Mount::new("256M", "commit=3600");
    let p = |s: &str| m.path(s).to_str().unwrap().to_string();
    sub(&["create", &p("vol")]);
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let mut f = std::fs::File::create(m.path("vol/unsynced")).unwrap();
    f.write_all(&data).unwrap();
    // No fsync and no close: the bytes may still sit in the kernel's page cache.
    sub(&["snapshot", "-r", &p("vol"), &p("snap")]);
    f.write_all(b"after the snapshot").unwrap();
    drop(f);
    assert!(std::fs::read(m.path("snap/unsynced")).unwrap() == data);
}

#[test]
fn other_users_may_create_subvolumes_where_they_may_write_but_not_delete_them() {
    let m = Mount::new("128M", "");
    let p = |s: &str| m.path(s).to_str().unwrap().to_string();
    std::fs::create_dir(m.path("open")).unwrap();
    std::fs::set_permissions(
        m.path("open"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let exe = env!("CARGO_BIN_EXE_arbor");
    let out = as_nobody(&format!("{exe} subvolume create {}", p("open/mine")));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::metadata(m.path("open/mine")).unwrap().uid(), 65534);
    let out = as_nobody(&format!("{exe} subvolume create {}", p("theirs")));
    assert!(
        !out.status.success(),
        "no write permission in the top directory"
    );
    let out = as_nobody(&format!("{exe} subvolume delete {}", p("open/mine")));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs root"),
        "{out:?}"
    );
}

#[test]
fn diff_lists_what_changed_between_two_snapshots() {
    let m = Mount::new("128M", "");
    let p = |s: &str| m.path(s).to_str().unwrap().to_string();
    sub(&["create", &p("v")]);
    std::fs::create_dir(m.path("v/d")).unwrap();
    std::fs::write(m.path("v/d/a"), b"a").unwrap();
    std::fs::write(m.path("v/b"), b"b").unwrap();
    std::fs::write(m.path("v/c"), b"c").unwrap();
    sub(&["snapshot", "-r", &p("v"), &p("s1")]);
    std::fs::write(m.path("v/c"), b"changed").unwrap();
    std::fs::rename(m.path("v/d/a"), m.path("v/a2")).unwrap();
    std::fs::remove_file(m.path("v/b")).unwrap();
    std::fs::write(m.path("v/new"), b"").unwrap();
    sub(&["snapshot", "-r", &p("v"), &p("s2")]);
    let out = ok(
        arbor().args(["diff", &p("s1"), &p("s2")]).output().unwrap(),
        "diff",
    );
    assert_eq!(
        out, "M\t/\n-\t/b\nM\t/c\nM\t/d\nR\t/d/a -> /a2\n+\t/new\n",
        "{out}"
    );
    // Against the live subvolume too, and nothing between a snapshot and itself.
    let out = ok(
        arbor().args(["diff", &p("s2"), &p("v")]).output().unwrap(),
        "diff",
    );
    assert_eq!(out, "");
}

/// copy_file_range within the filesystem shares blocks: `cp` of a large file takes no
/// new space, and the two files stay independent.
#[test]
fn cp_makes_reflinks_that_take_no_space_and_stay_independent() {
    let m = Mount::new("512M", "");
    let p = |s: &str| m.path(s).to_str().unwrap().to_string();
    let data: Vec<u8> = (0..(64u32 << 20) + 123)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(m.path("big"), &data).unwrap();
    sub(&["create", &p("vol")]);
    ok(arbor().args(["sync", &p("")]).output().unwrap(), "sync");
    let free = nix::sys::statvfs::statvfs(&m.mnt).unwrap().blocks_free();
    let out = std::process::Command::new("cp")
        .arg(m.path("big"))
        .arg(m.path("vol/copy"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    ok(arbor().args(["sync", &p("")]).output().unwrap(), "sync");
    let used = free - nix::sys::statvfs::statvfs(&m.mnt).unwrap().blocks_free();
    assert!(used < 256, "cp of 64 MiB took {used} blocks of 4 KiB");
    assert!(std::fs::read(m.path("vol/copy")).unwrap() == data);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path("vol/copy"))
        .unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(1 << 20)).unwrap();
    f.write_all(b"only in the copy").unwrap();
    drop(f);
    assert!(std::fs::read(m.path("big")).unwrap() == data);
}
