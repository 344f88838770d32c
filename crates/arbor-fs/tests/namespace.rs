//! Names: create, link, unlink, rmdir and every kind of rename, with link counts,
//! times and the checkers; files unlinked while open; names that are too long; and a
//! full device.

mod common;

use common::{DIR, REG, assert_consistent, entries, fs_on, mk, who};

use arbor_fs::{Fs, FsError, FsOptions, ROOT_INO, RenameFlags};
use std::sync::Arc;

#[test]
fn link_counts_follow_names_and_subdirectories() {
    let (dev, fs) = fs_on(32 << 20);
    let d = mk(&fs, ROOT_INO, "d", DIR);
    let f = mk(&fs, d, "f", REG);
    assert_eq!(fs.getattr(ROOT_INO).unwrap().nlink, 3);
    fs.link(f, ROOT_INO, b"g").unwrap();
    assert_eq!(fs.getattr(f).unwrap().nlink, 2);
    mk(&fs, d, "sub", DIR);
    assert_eq!(fs.getattr(d).unwrap().nlink, 3);
    assert_eq!(fs.lookup(d, b"..").unwrap().ino, ROOT_INO);
    assert_eq!(entries(&fs, d), [".", "..", "f", "sub"]);
    assert!(matches!(fs.rmdir(ROOT_INO, b"d"), Err(FsError::NotEmpty)));
    assert!(matches!(fs.unlink(ROOT_INO, b"d"), Err(FsError::IsDir)));
    assert!(matches!(fs.rmdir(ROOT_INO, b"g"), Err(FsError::NotDir)));
    fs.unlink(d, b"f").unwrap();
    assert_eq!(fs.getattr(f).unwrap().nlink, 1);
    fs.rmdir(d, b"sub").unwrap();
    assert_eq!(fs.getattr(d).unwrap().nlink, 2);
    assert_consistent(&dev, &fs);
}

#[test]
fn rename_replaces_moves_exchanges_and_refuses() {
    let (dev, fs) = fs_on(32 << 20);
    let a = mk(&fs, ROOT_INO, "a", DIR);
    let b = mk(&fs, ROOT_INO, "b", DIR);
    let x = mk(&fs, a, "x", REG);
    let y = mk(&fs, b, "y", REG);
    let none = RenameFlags::default();
    // Over an existing file: the old one goes.
    fs.rename(a, b"x", b, b"y", none).unwrap();
    assert_eq!(fs.lookup(b, b"y").unwrap().ino, x);
    assert!(matches!(fs.getattr(y), Err(FsError::NotFound)));
    // NOREPLACE.
    let z = mk(&fs, a, "z", REG);
    let noreplace = RenameFlags {
        noreplace: true,
        ..Default::default()
    };
    assert!(matches!(
        fs.rename(a, b"z", b, b"y", noreplace),
        Err(FsError::Exists)
    ));
    // EXCHANGE between directories, a file with a directory.
    let sub = mk(&fs, b, "sub", DIR);
    let exchange = RenameFlags {
        exchange: true,
        ..Default::default()
    };
    fs.rename(a, b"z", b, b"sub", exchange).unwrap();
    assert_eq!(fs.lookup(a, b"z").unwrap().ino, sub);
    assert_eq!(fs.lookup(b, b"sub").unwrap().ino, z);
    assert_eq!(fs.getattr(a).unwrap().nlink, 3);
    assert_eq!(fs.getattr(b).unwrap().nlink, 2);
    assert_eq!(fs.lookup(sub, b"..").unwrap().ino, a);
    // A directory over an empty directory; not over a non-empty one; not into itself.
    let empty = mk(&fs, ROOT_INO, "empty", DIR);
    fs.rename(a, b"z", ROOT_INO, b"empty", none).unwrap();
    assert!(matches!(fs.getattr(empty), Err(FsError::NotFound)));
    assert!(matches!(
        fs.rename(ROOT_INO, b"empty", ROOT_INO, b"b", none),
        Err(FsError::NotEmpty)
    ));
    assert!(matches!(
        fs.rename(ROOT_INO, b"b", b, b"inner", none),
        Err(FsError::Invalid(_))
    ));
    assert!(matches!(
        fs.rename(ROOT_INO, b"a", b, b"sub", none),
        Err(FsError::NotDir)
    ));
    // Same inode under both names: nothing happens.
    fs.link(x, ROOT_INO, b"x2").unwrap();
    fs.rename(b, b"y", ROOT_INO, b"x2", none).unwrap();
    assert_eq!(fs.getattr(x).unwrap().nlink, 2);
    // Within one directory.
    fs.rename(ROOT_INO, b"x2", ROOT_INO, b"x3", none).unwrap();
    assert!(entries(&fs, ROOT_INO).contains(&"x3".to_string()));
    assert_consistent(&dev, &fs);
}

#[test]
fn rename_updates_ctime_and_parent_times() {
    let (_dev, fs) = fs_on(32 << 20);
    let f = mk(&fs, ROOT_INO, "f", REG);
    let before = fs.getattr(f).unwrap().ctime;
    let dir_before = fs.getattr(ROOT_INO).unwrap().mtime;
    // Longer than a tick of the coarse clock the times come from (10 ms at HZ=100).
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs.rename(ROOT_INO, b"f", ROOT_INO, b"g", RenameFlags::default())
        .unwrap();
    assert!(fs.getattr(f).unwrap().ctime > before);
    assert!(fs.getattr(ROOT_INO).unwrap().mtime > dir_before);
}

#[test]
fn an_unlinked_open_file_lives_until_closed_or_the_next_mount() {
    let (dev, fs) = fs_on(64 << 20);
    let f = mk(&fs, ROOT_INO, "f", REG);
    fs.write_file(f, 0, &vec![5u8; 3 << 20], false).unwrap();
    fs.open_inode(f).unwrap();
    fs.unlink(ROOT_INO, b"f").unwrap();
    assert_eq!(fs.read_file(f, 0, 10).unwrap(), vec![5u8; 10]);
    assert_consistent(&dev, &fs);
    let used = fs.statfs().unwrap().blocks_free;
    fs.release_inode(f).unwrap();
    assert!(matches!(fs.getattr(f), Err(FsError::NotFound)));
    fs.sync().unwrap();
    fs.sync().unwrap();
    assert!(fs.statfs().unwrap().blocks_free >= used + (3 << 20) / 4096);
    // Crash while open: the orphan is freed at the next mount.
    let g = mk(&fs, ROOT_INO, "g", REG);
    fs.write_file(g, 0, b"data", false).unwrap();
    fs.open_inode(g).unwrap();
    fs.unlink(ROOT_INO, b"g").unwrap();
    fs.sync().unwrap();
    drop(fs);
    let fs = Fs::open(dev.clone(), &FsOptions::default()).unwrap();
    assert!(matches!(fs.getattr(g), Err(FsError::NotFound)));
    assert_consistent(&dev, &fs);
}

#[test]
fn names_longer_than_255_bytes_are_refused_everywhere() {
    let (dev, fs) = fs_on(32 << 20);
    let long = vec![b'a'; 256];
    let ok = vec![b'a'; 255];
    assert!(matches!(
        fs.create(ROOT_INO, &long, REG, 0, who(), None),
        Err(FsError::NameTooLong(256))
    ));
    assert!(matches!(
        fs.lookup(ROOT_INO, &long),
        Err(FsError::NameTooLong(256))
    ));
    let f = fs.create(ROOT_INO, &ok, REG, 0, who(), None).unwrap().ino;
    assert!(matches!(
        fs.link(f, ROOT_INO, &long),
        Err(FsError::NameTooLong(_))
    ));
    assert!(matches!(
        fs.rename(ROOT_INO, &ok, ROOT_INO, &long, RenameFlags::default()),
        Err(FsError::NameTooLong(_))
    ));
    assert_consistent(&dev, &fs);
}

#[test]
fn symlinks_hold_targets_up_to_path_max() {
    let (dev, fs) = fs_on(32 << 20);
    for len in [1usize, 100, 3000, 4095] {
        let target = vec![b'x'; len];
        let name = format!("l{len}");
        let l = fs
            .create(ROOT_INO, name.as_bytes(), 0o120777, 0, who(), Some(&target))
            .unwrap();
        assert_eq!(l.size, len as u64);
        assert_eq!(fs.readlink(l.ino).unwrap(), target);
    }
    assert_consistent(&dev, &fs);
}

#[test]
fn xattrs_in_every_namespace_and_acls_set_the_mode() {
    let (dev, fs) = fs_on(32 << 20);
    let f = mk(&fs, ROOT_INO, "f", REG);
    let flags = arbor_fs::XattrFlags::default();
    for name in ["user.a", "trusted.b", "security.c"] {
        fs.setxattr(f, name.as_bytes(), b"value", flags).unwrap();
        assert_eq!(fs.getxattr(f, name.as_bytes()).unwrap(), b"value");
    }
    assert!(matches!(
        fs.setxattr(f, b"bogus.x", b"", flags),
        Err(FsError::NotSupported(_))
    ));
    assert_eq!(fs.listxattr(f).unwrap().len(), 3);
    fs.removexattr(f, b"user.a").unwrap();
    assert!(matches!(fs.getxattr(f, b"user.a"), Err(FsError::NoAttr)));
    // user::rw- user:7:r-- group::r-- mask::r-- other::---
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, 0u32),
        (2, 4, 7),
        (4, 4, 0),
        (0x10, 4, 0),
        (0x20, 0, 0),
    ] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    fs.setxattr(f, b"system.posix_acl_access", &acl, flags)
        .unwrap();
    assert_eq!(fs.getattr(f).unwrap().mode & 0o777, 0o640);
    assert!(matches!(
        fs.setxattr(f, b"system.posix_acl_access", &acl[..10], flags),
        Err(FsError::Invalid(_))
    ));
    // A directory's default ACL is inherited, and masks the new file's mode.
    let d = mk(&fs, ROOT_INO, "d", DIR);
    fs.setxattr(d, b"system.posix_acl_default", &acl, flags)
        .unwrap();
    let g = mk(&fs, d, "g", 0o100666);
    assert_eq!(fs.getattr(g).unwrap().mode & 0o777, 0o640);
    assert!(fs.getxattr(g, b"system.posix_acl_access").is_ok());
    let sub = mk(&fs, d, "sub", DIR);
    assert!(fs.getxattr(sub, b"system.posix_acl_default").is_ok());
    assert_consistent(&dev, &fs);
}

#[test]
fn a_full_device_fails_cleanly_and_deleting_makes_room() {
    let (dev, fs) = fs_on(48 << 20);
    let chunk = vec![7u8; 1 << 20];
    let mut written = Vec::new();
    let mut full = false;
    for i in 0..100 {
        let f = mk(&fs, ROOT_INO, &format!("f{i}"), REG);
        match fs.write_file(f, 0, &chunk, false) {
            Ok(_) => written.push(f),
            Err(FsError::Engine(arbor_engine::Error::NoSpace { .. })) => {
                full = true;
                break;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(full, "48 MiB never filled up");
    assert_consistent(&dev, &fs);
    for f in &written {
        assert_eq!(fs.read_file(*f, 0, 1 << 20).unwrap(), chunk);
    }
    for i in 0..written.len() / 2 {
        fs.unlink(ROOT_INO, format!("f{i}").as_bytes()).unwrap();
    }
    fs.sync().unwrap();
    let f = mk(&fs, ROOT_INO, "again", REG);
    fs.write_file(f, 0, &chunk, false).unwrap();
    assert_consistent(&dev, &fs);
}

#[test]
fn a_change_that_fails_half_done_is_never_committed() {
    use arbor_engine::{Config, Engine};
    use arbor_fs::items::{encode_xattrs, key, name_hash, ty};
    let (dev, fs) = fs_on(32 << 20);
    mk(&fs, ROOT_INO, "kept", REG);
    fs.sync().unwrap();
    drop(fs);
    // Forge a malformed default ACL on the root directory, past setxattr's checks.
    let cfg = Config {
        data_refs: Some(Arc::new(arbor_fs::FsDataRefs)),
        ..Config::default()
    };
    let mut e = Engine::open(dev.clone(), cfg).unwrap();
    let name = b"system.posix_acl_default";
    let value = encode_xattrs(&[(name.to_vec(), vec![2, 0, 0, 0, 1])]);
    e.insert(5, key(ROOT_INO, ty::XATTR_ITEM, name_hash(name)), &value)
        .unwrap();
    e.commit().unwrap();
    drop(e);
    let fs = Fs::open(dev.clone(), &FsOptions::default()).unwrap();
    // Creating a file takes an inode number, then fails reading the ACL.
    let err = fs
        .create(ROOT_INO, b"new", REG, 0, who(), None)
        .unwrap_err();
    assert!(matches!(err, FsError::Invalid(_)), "{err}");
    // From then on nothing is changed or committed.
    assert!(fs.create(ROOT_INO, b"other", REG, 0, who(), None).is_err());
    assert!(fs.sync().is_err());
    assert!(fs.lookup(ROOT_INO, b"kept").is_ok(), "reads still work");
    drop(fs);
    let fs = Fs::open(dev.clone(), &FsOptions::default()).unwrap();
    assert!(matches!(
        fs.lookup(ROOT_INO, b"new"),
        Err(FsError::NotFound)
    ));
    assert!(fs.lookup(ROOT_INO, b"kept").is_ok());
    assert!(Fs::check_image(dev).is_clean());
}

#[test]
fn writes_truncations_and_chowns_drop_file_capabilities_and_set_id_bits() {
    let (dev, fs) = fs_on(32 << 20);
    let f = mk(&fs, ROOT_INO, "prog", REG);
    let flags = arbor_fs::XattrFlags::default();
    let cap = b"security.capability";
    let mode = |fs: &Fs| fs.getattr(f).unwrap().mode & 0o7777;
    let has_cap = |fs: &Fs| fs.getxattr(f, cap).is_ok();
    let set = |s: arbor_fs::SetAttr| fs.setattr(f, &s).unwrap();
    set(arbor_fs::SetAttr {
        mode: Some(0o6775),
        ..Default::default()
    });

    fs.setxattr(f, cap, b"caps", flags).unwrap();
    fs.write_file(f, 0, b"root writes", false).unwrap();
    assert!(!has_cap(&fs), "any write drops security.capability");
    assert_eq!(
        mode(&fs),
        0o6775,
        "a write without kill_suid keeps set-ID bits"
    );
    fs.write_file(f, 0, b"user writes", true).unwrap();
    assert_eq!(mode(&fs), 0o775, "kill_suid clears both (group-executable)");

    fs.setxattr(f, cap, b"caps", flags).unwrap();
    set(arbor_fs::SetAttr {
        mode: Some(0o2765),
        ..Default::default()
    });
    set(arbor_fs::SetAttr {
        size: Some(3),
        kill_suid: true,
        ..Default::default()
    });
    assert!(!has_cap(&fs), "a truncation drops security.capability");
    assert_eq!(
        mode(&fs),
        0o2765,
        "set-group-ID without group execute stays"
    );

    fs.setxattr(f, cap, b"caps", flags).unwrap();
    set(arbor_fs::SetAttr {
        mode: Some(0o4755),
        ..Default::default()
    });
    set(arbor_fs::SetAttr {
        uid: Some(7),
        kill_suid: true,
        ..Default::default()
    });
    assert!(!has_cap(&fs), "a chown drops security.capability");
    assert_eq!(mode(&fs), 0o755);

    fs.setxattr(f, cap, b"caps", flags).unwrap();
    set(arbor_fs::SetAttr {
        mode: Some(0o644),
        ..Default::default()
    });
    assert!(has_cap(&fs), "a chmod keeps it");
    assert_consistent(&dev, &fs);
}
