//! `receive` into arbor: streams arbor sends and streams the Linux kernel made are
//! re-created natively; hostile streams are refused with the command's index and byte
//! offset, touching nothing outside the new subvolume; a cut stream leaves a writable,
//! unmarked subvolume.

mod common;

use arbor_fs::ROOT_INO;
use arbor_send::{Command, StreamWriter, Timespec};
use arbor_sendrecv::{ReceiveError, SendOptions, receive, send_full};
use common::{describe, fresh, pattern, who};
use std::path::PathBuf;

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../arbor-send/tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn an_arbor_send_received_into_arbor_is_the_same_tree() {
    let src = fresh();
    let vol = src.subvol_create(ROOT_INO, b"vol", who()).unwrap().root;
    let mk = |p: u64, n: &str, mode: u32, t: Option<&[u8]>| {
        src.create(p, n.as_bytes(), mode, 0, who(), t).unwrap().ino
    };
    let d = mk(vol, "d", 0o040750, None);
    let f = mk(d, "f", 0o100640, None);
    src.write_file(f, 0, &pattern(300_000, 1), false).unwrap();
    src.write_file(f, 2_000_000, b"after a hole", false)
        .unwrap();
    src.setxattr(f, b"user.k", b"v", Default::default())
        .unwrap();
    src.link(f, vol, b"f2").unwrap();
    mk(vol, "s", 0o120777, Some(b"d/f"));
    mk(vol, "p", 0o010600, None);
    let small = mk(vol, "small", 0o100644, None);
    src.write_file(small, 0, b"inline", false).unwrap();
    let snap = src.subvol_snapshot(vol, ROOT_INO, b"snap", true).unwrap();
    for version in [1, 2] {
        let mut stream = Vec::new();
        send_full(
            &src,
            snap.root,
            b"snap",
            &mut stream,
            SendOptions {
                version,
                ..Default::default()
            },
        )
        .unwrap();
        let dst = fresh();
        let stats = receive(&dst, ROOT_INO, &stream[..]).unwrap();
        assert_eq!(stats.subvolumes.len(), 1);
        let got = dst.lookup(ROOT_INO, b"snap").unwrap().ino;
        assert_eq!(got, stats.subvolumes[0]);
        assert_eq!(
            describe(&dst, got, true),
            describe(&src, snap.root, true),
            "v{version}"
        );
        let info = dst
            .subvol_info(arbor_fs::ino::Loc::of(got).unwrap().subvol)
            .unwrap();
        assert!(info.item.read_only());
        assert_eq!(info.item.received_uuid, snap.item.uuid);
        assert_eq!(info.item.stransid, snap.generation);
        assert!(dst.fsck().unwrap().is_empty());
    }
}

#[test]
fn full_streams_made_by_the_linux_kernel_are_received() {
    for name in ["kernel618_full_v1.stream", "kernel618_full_v2.stream"] {
        let fs = fresh();
        let stats = receive(&fs, ROOT_INO, &fixture(name)[..]).unwrap();
        let root = stats.subvolumes[0];
        let t = describe(&fs, root, true);
        let find = |p: &str| {
            t.iter()
                .find(|l| l.starts_with(&format!("{p} ")))
                .unwrap_or_else(|| panic!("{p} missing in {t:#?}"))
                .clone()
        };
        assert!(find("a/b/file1").contains("nlink 2"), "{t:#?}");
        assert!(find("a/b/file1").contains("size 6"));
        assert!(find("hl").contains("user.color="));
        assert!(find("big").contains("mode 104755") && find("big").contains("size 200000"));
        let sparse = find("sparse");
        assert!(
            sparse.contains("size 10485760") && sparse.contains("holes [(0, "),
            "{sparse}"
        );
        assert!(find("c").contains("1000:100") && find("c").contains("mtime 1577934245.123456789"));
        assert!(find("sym").contains("mode 120777"));
        assert!(find("blk").contains("mode 60644") && find("blk").contains("rdev 7c8"));
        assert!(find("fifo").contains("mode 10644"));
        assert!(find("sock").contains("mode 140755"));
        let info = fs
            .subvol_info(arbor_fs::ino::Loc::of(root).unwrap().subvol)
            .unwrap();
        assert!(info.item.read_only() && info.item.received_uuid != [0; 16]);
        assert!(fs.fsck().unwrap().is_empty());
    }
}

#[test]
fn streams_arbor_cannot_apply_yet_are_refused_by_name() {
    let fs = fresh();
    let err = receive(&fs, ROOT_INO, &fixture("kernel618_inc_v1.stream")[..]).unwrap_err();
    assert!(
        err.to_string().contains("command #0 (snapshot) at byte 17"),
        "{err}"
    );
    let err = receive(&fs, ROOT_INO, &fixture("kernel618_nodata_v1.stream")[..]).unwrap_err();
    assert!(err.to_string().contains("update_extent"), "{err}");
}

fn stream(cmds: &[Command]) -> Vec<u8> {
    let mut w = StreamWriter::new(Vec::new(), 1).unwrap();
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

#[test]
fn hostile_paths_are_refused_and_nothing_outside_the_new_subvolume_changes() {
    let fs = fresh();
    let outside = fs
        .create(ROOT_INO, b"victim", 0o100644, 0, who(), None)
        .unwrap();
    fs.write_file(outside.ino, 0, b"keep", false).unwrap();
    let bad: Vec<(Vec<Command>, &str)> = vec![
        (
            vec![Command::Mkfile {
                path: b"x".to_vec(),
                ino: 257,
            }],
            "before the first subvol",
        ),
        (vec![subvol("../escape")], "component"),
        (vec![subvol("a/b")], "single name"),
        (
            vec![
                subvol("r1"),
                Command::Mkfile {
                    path: b"../victim".to_vec(),
                    ino: 257,
                },
            ],
            "\"..\" component",
        ),
        (
            vec![
                subvol("r2"),
                Command::Unlink {
                    path: b"/victim".to_vec(),
                },
            ],
            "absolute path",
        ),
        (
            vec![
                subvol("r3"),
                Command::Mkdir {
                    path: b"a//b".to_vec(),
                    ino: 257,
                },
            ],
            "\"\" component",
        ),
        (
            vec![
                subvol("r4"),
                Command::Symlink {
                    path: b"l".to_vec(),
                    ino: 257,
                    path_link: b"/".to_vec(),
                },
                Command::Mkfile {
                    path: b"l/victim".to_vec(),
                    ino: 258,
                },
            ],
            "not a directory",
        ),
    ];
    for (cmds, why) in bad {
        let err = receive(&fs, ROOT_INO, &stream(&cmds)[..]).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ReceiveError::Command { .. }), "{text}");
        assert!(text.contains(why), "{why}: {text}");
        assert!(
            text.contains("command #") && text.contains(" at byte "),
            "{text}"
        );
    }
    // A clone from another subvolume of the receiving filesystem is refused: a stream
    // may read only itself and its declared parent.
    let other = fs.subvol_create(ROOT_INO, b"private", who()).unwrap();
    let secret = fs
        .create(other.root, b"s", 0o100600, 0, who(), None)
        .unwrap();
    fs.write_file(secret.ino, 0, &[9u8; 8192], false).unwrap();
    let err = receive(
        &fs,
        ROOT_INO,
        &stream(&[
            subvol("thief"),
            Command::Mkfile {
                path: b"f".to_vec(),
                ino: 257,
            },
            Command::Clone {
                path: b"f".to_vec(),
                offset: 0,
                len: 8192,
                clone_uuid: other.item.uuid,
                clone_ctransid: other.generation,
                clone_path: b"s".to_vec(),
                clone_offset: 0,
            },
        ])[..],
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("not a read-only snapshot in the destination directory"),
        "{err}"
    );
    assert_eq!(fs.read_file(outside.ino, 0, 100).unwrap(), b"keep");
    assert!(fs.fsck().unwrap().is_empty());
}

#[test]
fn a_cut_stream_leaves_a_writable_unmarked_subvolume() {
    let fs = fresh();
    let full = stream(&[
        subvol("half"),
        Command::Mkfile {
            path: b"f".to_vec(),
            ino: 257,
        },
        Command::Write {
            path: b"f".to_vec(),
            offset: 0,
            data: b"data".to_vec(),
        },
        Command::Utimes {
            path: b"f".to_vec(),
            atime: Timespec { sec: 1, nsec: 0 },
            mtime: Timespec { sec: 2, nsec: 0 },
            ctime: Timespec { sec: 3, nsec: 0 },
            otime: None,
        },
    ]);
    let err = receive(&fs, ROOT_INO, &full[..]).unwrap_err();
    assert!(err.to_string().contains("END"), "{err}");
    let half = fs.lookup(ROOT_INO, b"half").unwrap().ino;
    let info = fs
        .subvol_info(arbor_fs::ino::Loc::of(half).unwrap().subvol)
        .unwrap();
    assert!(!info.item.read_only(), "never looks finished");
    assert_eq!(info.item.received_uuid, [0; 16]);
}
