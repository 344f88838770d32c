//! Subvolumes and snapshots in the filesystem model: creation, O(1) snapshots that
//! share their blocks, read-only snapshots, deletion that gives the space back,
//! inode numbers unique across subvolumes, and the checkers after each step.

mod common;

use common::{DIR, REG, assert_consistent, fs_on, mk, names, who};

use arbor_fs::ino::{Loc, TOP_SUBVOL};
use arbor_fs::{Fs, FsError, FsOptions, ROOT_INO, RenameFlags};

fn put(fs: &Fs, parent: u64, name: &str, data: &[u8]) -> u64 {
    let ino = mk(fs, parent, name, REG);
    fs.write_file(ino, 0, data, false).unwrap();
    ino
}

fn read(fs: &Fs, dir: u64, name: &str) -> Vec<u8> {
    let ino = fs.lookup(dir, name.as_bytes()).unwrap().ino;
    fs.read_file(ino, 0, u32::MAX).unwrap()
}

#[test]
fn a_subvolume_is_a_directory_with_its_own_inode_numbers() {
    let (dev, fs) = fs_on(64 << 20);
    let top_file = put(&fs, ROOT_INO, "f", b"top");
    let info = fs.subvol_create(ROOT_INO, b"vol", who()).unwrap();
    assert_eq!(info.id, 256);
    assert_eq!(info.parent, Some(TOP_SUBVOL));
    assert_eq!(info.path, b"vol");
    let root = fs.lookup(ROOT_INO, b"vol").unwrap();
    assert_eq!(root.ino, info.root);
    assert!(root.is_dir());
    assert_eq!((root.uid, root.gid), (1000, 1000));
    assert_eq!(
        fs.getattr(ROOT_INO).unwrap().nlink,
        3,
        "counts as a subdirectory"
    );

    let inner = put(&fs, root.ino, "f", b"inner");
    assert_ne!(inner, top_file, "st_ino is unique across subvolumes");
    assert_eq!(
        Loc::of(inner).unwrap(),
        Loc::new(256, Loc::of(top_file).unwrap().ino)
    );
    assert_eq!(read(&fs, root.ino, "f"), b"inner");
    assert_eq!(read(&fs, ROOT_INO, "f"), b"top");

    let list = fs.readdir(ROOT_INO, 0, usize::MAX).unwrap();
    let e = list.iter().find(|d| d.name == b"vol").unwrap();
    assert_eq!((e.ino, e.dtype), (root.ino, 4));
    let dots = fs.readdir(root.ino, 0, 2).unwrap();
    assert_eq!(dots[1].name, b"..");
    assert_eq!(dots[1].ino, ROOT_INO, "the parent of a subvolume's root");
    assert_eq!(fs.lookup(root.ino, b"..").unwrap().ino, ROOT_INO);

    assert!(matches!(
        fs.rmdir(ROOT_INO, b"vol"),
        Err(FsError::NotPermitted(_))
    ));
    assert!(matches!(fs.unlink(ROOT_INO, b"vol"), Err(FsError::IsDir)));
    assert!(matches!(
        fs.rename(root.ino, b"f", ROOT_INO, b"g", RenameFlags::default()),
        Err(FsError::CrossSubvolume)
    ));
    assert!(matches!(
        fs.link(inner, ROOT_INO, b"g"),
        Err(FsError::CrossSubvolume)
    ));
    fs.rename(
        ROOT_INO,
        b"vol",
        ROOT_INO,
        b"renamed",
        RenameFlags::default(),
    )
    .unwrap();
    let d = mk(&fs, ROOT_INO, "d", DIR);
    fs.rename(ROOT_INO, b"renamed", d, b"vol", RenameFlags::default())
        .unwrap();
    assert_eq!(fs.subvol_info(256).unwrap().path, b"d/vol");
    assert_eq!(fs.lookup(info.root, b"..").unwrap().ino, d);
    assert_consistent(&dev, &fs);
}

#[test]
fn snapshots_share_everything_and_diverge_on_write() {
    let (dev, fs) = fs_on(256 << 20);
    let vol = fs.subvol_create(ROOT_INO, b"vol", who()).unwrap().root;
    let big: Vec<u8> = (0..32u32 << 20).map(|i| (i % 251) as u8).collect();
    put(&fs, vol, "big", &big);
    put(&fs, vol, "small", b"before");
    fs.sync().unwrap();
    let free = fs.statfs().unwrap().blocks_free;

    let snap = fs.subvol_snapshot(vol, ROOT_INO, b"snap", false).unwrap();
    fs.sync().unwrap();
    let used = free - fs.statfs().unwrap().blocks_free;
    assert!(used < 16, "a snapshot of 32 MiB took {used} blocks");
    assert_eq!(
        snap.item.parent_uuid,
        fs.subvol_info(256).unwrap().item.uuid
    );
    assert_eq!(read(&fs, snap.root, "big"), big);

    let referenced = |id: u64| fs.subvol_info(id).unwrap().referenced_bytes;
    assert_eq!(referenced(256), (32 << 20) + 6);
    assert_eq!(
        referenced(snap.id),
        (32 << 20) + 6,
        "a snapshot references the same"
    );
    // Kept by every commit: ask after one.
    let exclusive = |id: u64| {
        fs.sync().unwrap();
        fs.subvol_exclusive_bytes(id).unwrap()
    };
    assert_eq!((exclusive(256), exclusive(snap.id)), (0, 0), "all shared");
    let small = fs.lookup(vol, b"small").unwrap().ino;
    fs.write_file(small, 0, b"after!", false).unwrap();
    let snap_small = fs.lookup(snap.root, b"small").unwrap().ino;
    fs.write_file(snap_small, 0, b"snap..", false).unwrap();
    put(&fs, snap.root, "new", b"only in the snapshot");
    assert_eq!(read(&fs, vol, "small"), b"after!");
    assert_eq!(read(&fs, snap.root, "small"), b"snap..");
    assert_eq!(names(&fs, vol), ["big", "small"]);
    assert_eq!(names(&fs, snap.root), ["big", "small", "new"]);
    fs.unlink(vol, b"big").unwrap();
    assert_eq!(referenced(256), 6);
    assert_eq!(referenced(snap.id), (32 << 20) + 6 + 20);
    // The big file's data now belongs to the snapshot alone; deleting it frees that.
    let alone = exclusive(snap.id);
    assert!((32 << 20..33 << 20).contains(&alone), "{alone}");
    assert!(exclusive(256) < 1 << 20, "{}", exclusive(256));
    assert_consistent(&dev, &fs);
    let alone = exclusive(snap.id);
    let free = fs.statfs().unwrap().blocks_free;
    fs.subvol_delete(ROOT_INO, b"snap").unwrap();
    while fs.subvol_cleanup_pending().unwrap() > 0 {
        fs.sync().unwrap();
    }
    fs.sync().unwrap();
    let freed = (fs.statfs().unwrap().blocks_free - free) * 4096;
    assert_eq!(
        freed, alone,
        "deleting the snapshot frees its exclusive bytes"
    );
    assert_consistent(&dev, &fs);
}

#[test]
fn read_only_snapshots_refuse_every_change() {
    let (dev, fs) = fs_on(64 << 20);
    let f = put(&fs, ROOT_INO, "f", b"data");
    mk(&fs, ROOT_INO, "d", DIR);
    let snap = fs.subvol_snapshot(ROOT_INO, ROOT_INO, b"ro", true).unwrap();
    assert!(snap.item.read_only());
    assert!(fs.is_read_only_inode(snap.root));
    assert!(!fs.is_read_only_inode(f));
    let sf = fs.lookup(snap.root, b"f").unwrap().ino;
    let refused = |r: Result<(), FsError>| {
        assert!(
            matches!(r, Err(FsError::ReadOnly(id)) if id == snap.id),
            "{r:?}"
        )
    };
    refused(fs.write_file(sf, 0, b"x", false).map(drop));
    refused(fs.create(snap.root, b"n", REG, 0, who(), None).map(drop));
    refused(fs.unlink(snap.root, b"f"));
    refused(fs.rmdir(snap.root, b"d"));
    refused(
        fs.setattr(
            sf,
            &arbor_fs::SetAttr {
                mode: Some(0o600),
                ..Default::default()
            },
        )
        .map(drop),
    );
    refused(fs.setxattr(sf, b"user.x", b"1", Default::default()));
    refused(fs.rename(snap.root, b"f", snap.root, b"g", RenameFlags::default()));
    refused(fs.subvol_create(snap.root, b"inner", who()).map(drop));
    assert_eq!(read(&fs, snap.root, "f"), b"data");
    fs.write_file(f, 0, b"DATA", false).unwrap();
    assert_eq!(read(&fs, snap.root, "f"), b"data");

    // The flag survives a reopen, and can be cleared.
    fs.sync().unwrap();
    drop(fs);
    let fs = Fs::open(dev.clone(), &FsOptions::default()).unwrap();
    assert!(fs.is_read_only_inode(snap.root));
    fs.subvol_set_read_only(snap.id, false).unwrap();
    fs.write_file(sf, 0, b"rw", false).unwrap();
    assert_consistent(&dev, &fs);
}

#[test]
fn deleting_a_subvolume_gives_its_space_back() {
    let (dev, fs) = fs_on(256 << 20);
    fs.sync().unwrap();
    let fresh = fs.statfs().unwrap().blocks_free;
    let vol = fs.subvol_create(ROOT_INO, b"vol", who()).unwrap();
    for i in 0..200 {
        put(&fs, vol.root, &format!("f{i}"), &vec![i as u8; 64 << 10]);
    }
    let snap = fs
        .subvol_snapshot(vol.root, ROOT_INO, b"snap", true)
        .unwrap();
    let inner = fs.subvol_create(vol.root, b"inner", who()).unwrap();
    fs.sync().unwrap();
    assert!(fs.statfs().unwrap().blocks_free < fresh - 3000);

    assert!(matches!(
        fs.subvol_delete(ROOT_INO, b"vol"),
        Err(FsError::NotEmpty)
    ));
    assert!(matches!(
        fs.subvol_delete(ROOT_INO, b"nothing"),
        Err(FsError::NotFound)
    ));
    let d = mk(&fs, ROOT_INO, "plain", DIR);
    assert!(matches!(
        fs.subvol_delete(ROOT_INO, b"plain"),
        Err(FsError::Invalid(_))
    ));
    fs.rmdir(ROOT_INO, b"plain").unwrap();
    let _ = d;

    let f = fs.lookup(inner.root, b"..").unwrap();
    assert_eq!(f.ino, vol.root);
    let open = put(&fs, inner.root, "open", b"x");
    fs.open_inode(open).unwrap();
    assert!(matches!(
        fs.subvol_delete(vol.root, b"inner"),
        Err(FsError::Busy(_))
    ));
    fs.release_inode(open).unwrap();
    assert_eq!(fs.subvol_delete(vol.root, b"inner").unwrap(), inner.id);
    assert_eq!(fs.subvol_delete(ROOT_INO, b"vol").unwrap(), vol.id);
    assert!(matches!(
        fs.lookup(ROOT_INO, b"vol"),
        Err(FsError::NotFound)
    ));
    assert!(matches!(fs.getattr(vol.root), Err(FsError::NotFound)));
    // The snapshot keeps every file.
    assert_eq!(read(&fs, snap.root, "f7"), vec![7u8; 64 << 10]);
    assert_consistent(&dev, &fs);
    assert_eq!(fs.subvol_delete(ROOT_INO, b"snap").unwrap(), snap.id);
    for _ in 0..1000 {
        fs.sync().unwrap();
        if fs.subvol_cleanup_pending().unwrap() == 0 {
            break;
        }
    }
    assert_eq!(fs.subvol_cleanup_pending().unwrap(), 0);
    fs.sync().unwrap();
    assert_eq!(
        fs.subvol_list().unwrap().len(),
        1,
        "only the top level is left"
    );
    assert_eq!(
        fs.statfs().unwrap().blocks_free,
        fresh,
        "every block is back"
    );
    assert_consistent(&dev, &fs);
}

#[test]
fn nested_subvolumes_become_empty_directories_in_a_snapshot() {
    let (dev, fs) = fs_on(64 << 20);
    let a = mk(&fs, ROOT_INO, "a", DIR);
    let inner = fs.subvol_create(a, b"inner", who()).unwrap();
    put(&fs, inner.root, "x", b"x");
    let snap = fs
        .subvol_snapshot(ROOT_INO, ROOT_INO, b"snap", false)
        .unwrap();
    let sa = fs.lookup(snap.root, b"a").unwrap().ino;
    let placeholder = fs.lookup(sa, b"inner").unwrap();
    assert!(placeholder.is_dir());
    assert_eq!(fs.subvol_of(placeholder.ino).unwrap(), snap.id);
    assert!(names(&fs, placeholder.ino).is_empty());
    let paths: Vec<Vec<u8>> = fs
        .subvol_list()
        .unwrap()
        .into_iter()
        .map(|i| i.path)
        .collect();
    assert_eq!(paths, [b"".to_vec(), b"a/inner".to_vec(), b"snap".to_vec()]);
    let deep = fs
        .subvol_snapshot(inner.root, inner.root, b"self", true)
        .unwrap();
    assert_eq!(fs.subvol_info(deep.id).unwrap().path, b"a/inner/self");
    assert!(names(&fs, deep.root).contains(&"x".to_string()));
    assert!(
        !names(&fs, deep.root).contains(&"self".to_string()),
        "taken before the entry"
    );
    assert_consistent(&dev, &fs);
}

#[test]
fn files_open_and_unlinked_in_the_source_are_not_in_the_snapshot() {
    let (dev, fs) = fs_on(64 << 20);
    let f = put(&fs, ROOT_INO, "gone", &vec![1u8; 100_000]);
    fs.open_inode(f).unwrap();
    fs.unlink(ROOT_INO, b"gone").unwrap();
    let snap = fs
        .subvol_snapshot(ROOT_INO, ROOT_INO, b"snap", true)
        .unwrap();
    assert!(names(&fs, snap.root).is_empty());
    assert_consistent(&dev, &fs);
    fs.release_inode(f).unwrap();
    assert_consistent(&dev, &fs);
}
