//! `diff_subvols`: what changed between two snapshots, path by path, found by the tree
//! comparison that skips shared subtrees.

use arbor_engine::MkfsOptions;
use arbor_engine::storage::MemStorage;
use arbor_fs::{Caller, DiffEntry, Fs, FsOptions, ROOT_INO, RenameFlags};
use std::sync::Arc;

const REG: u32 = 0o100644;
const DIR: u32 = 0o040755;

fn fs_on(size: u64) -> Fs {
    let dev = Arc::new(MemStorage::new(size));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    Fs::open(dev, &FsOptions::default()).unwrap()
}

fn who() -> Caller {
    Caller {
        uid: 0,
        gid: 0,
        umask: 0o022,
    }
}

fn mk(fs: &Fs, parent: u64, name: &str, mode: u32) -> u64 {
    fs.create(parent, name.as_bytes(), mode, 0, who(), None)
        .unwrap()
        .ino
}

fn p(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

#[test]
fn diff_lists_added_removed_modified_and_renamed_paths() {
    let fs = fs_on(64 << 20);
    let vol = fs.subvol_create(ROOT_INO, b"vol", who()).unwrap().root;
    let d = mk(&fs, vol, "d", DIR);
    let keep = mk(&fs, d, "keep", REG);
    let edit = mk(&fs, d, "edit", REG);
    fs.write_file(edit, 0, b"old", false).unwrap();
    mk(&fs, d, "gone", REG);
    let moved = mk(&fs, vol, "moved", REG);
    let sub = mk(&fs, vol, "sub", DIR);
    mk(&fs, sub, "inside", REG);
    let old = fs
        .subvol_snapshot(vol, ROOT_INO, b"old", true)
        .unwrap()
        .root;

    fs.write_file(edit, 0, b"new contents", false).unwrap();
    fs.unlink(d, b"gone").unwrap();
    mk(&fs, d, "added", REG);
    fs.rename(vol, b"moved", d, b"moved-here", RenameFlags::default())
        .unwrap();
    fs.rename(vol, b"sub", vol, b"sub2", RenameFlags::default())
        .unwrap();
    fs.link(keep, vol, b"keep-link").unwrap();
    let _ = moved;
    let new = fs
        .subvol_snapshot(vol, ROOT_INO, b"new", true)
        .unwrap()
        .root;

    let diff = fs.diff_subvols(old, new).unwrap();
    let mut got = diff.entries.clone();
    got.sort();
    let mut want = vec![
        DiffEntry::Modified {
            path: p("/"),
            dir: true,
        },
        DiffEntry::Modified {
            path: p("/d"),
            dir: true,
        },
        DiffEntry::Modified {
            path: p("/d/edit"),
            dir: false,
        },
        DiffEntry::Modified {
            path: p("/d/keep"),
            dir: false,
        },
        DiffEntry::Removed {
            path: p("/d/gone"),
            dir: false,
        },
        DiffEntry::Added {
            path: p("/d/added"),
            dir: false,
        },
        DiffEntry::Added {
            path: p("/keep-link"),
            dir: false,
        },
        DiffEntry::Renamed {
            from: p("/moved"),
            to: p("/d/moved-here"),
            dir: false,
        },
        DiffEntry::Renamed {
            from: p("/sub"),
            to: p("/sub2"),
            dir: true,
        },
    ];
    want.sort();
    assert_eq!(got, want);

    // Backwards, everything turns around.
    let back = fs.diff_subvols(new, old).unwrap();
    assert!(back.entries.contains(&DiffEntry::Added {
        path: p("/d/gone"),
        dir: false
    }));
    assert!(back.entries.contains(&DiffEntry::Renamed {
        from: p("/sub2"),
        to: p("/sub"),
        dir: true
    }));
    assert!(fs.diff_subvols(new, new).unwrap().entries.is_empty());
}

#[test]
fn files_made_separately_in_two_snapshots_are_not_mistaken_for_one() {
    let fs = fs_on(64 << 20);
    let vol = fs.subvol_create(ROOT_INO, b"vol", who()).unwrap().root;
    let a = fs.subvol_snapshot(vol, ROOT_INO, b"a", false).unwrap().root;
    let b = fs.subvol_snapshot(vol, ROOT_INO, b"b", false).unwrap().root;
    // The same inode number, made in each snapshot by its own create.
    let fa = mk(&fs, a, "x", REG);
    let fb = mk(&fs, b, "y", REG);
    assert_eq!(fa & ((1 << 40) - 1), fb & ((1 << 40) - 1));
    let mut got = fs.diff_subvols(a, b).unwrap().entries;
    got.retain(|e| !matches!(e, DiffEntry::Modified { path, .. } if path == b"/"));
    assert_eq!(
        got,
        [
            DiffEntry::Removed {
                path: p("/x"),
                dir: false
            },
            DiffEntry::Added {
                path: p("/y"),
                dir: false
            },
        ]
    );
}

#[test]
fn the_cost_of_a_diff_follows_the_change_not_the_subvolume() {
    let fs = fs_on(512 << 20);
    let vol = fs.subvol_create(ROOT_INO, b"vol", who()).unwrap().root;
    let mut files = Vec::new();
    for d in 0..20 {
        let dir = mk(&fs, vol, &format!("d{d}"), DIR);
        for i in 0..1000 {
            files.push(mk(&fs, dir, &format!("f{i}"), REG));
        }
    }
    fs.sync().unwrap();
    let old = fs
        .subvol_snapshot(vol, ROOT_INO, b"old", true)
        .unwrap()
        .root;
    for &f in files.iter().step_by(4001) {
        fs.write_file(f, 0, b"changed", false).unwrap();
    }
    let new = fs
        .subvol_snapshot(vol, ROOT_INO, b"new", true)
        .unwrap()
        .root;
    let diff = fs.diff_subvols(old, new).unwrap();
    let modified = diff
        .entries
        .iter()
        .filter(|e| matches!(e, DiffEntry::Modified { dir: false, .. }))
        .count();
    assert_eq!(modified, 5);
    // 20,000 files are some 80,000 items in well over 1,000 nodes; five changed
    // files touch a handful of paths.
    assert!(
        diff.stats.nodes_read() < 120,
        "read {} nodes for 5 changed files",
        diff.stats.nodes_read()
    );
}
