//! Differential test against the real `btrfs receive --dump` of btrfs-progs 6.2: streams
//! full of the corner cases the kernel fixtures lack (escaping, column padding, raw xattr
//! bytes, clone lengths of 2^31 and more, negative fallocate modes, fileattr, encoded
//! writes without ENCRYPTION, dates far from now, paths too long to join, streams that
//! fail halfway) must print the same bytes and fail or succeed alike.
//!
//! Skipped (with a note on stderr) when `btrfs --version` is not btrfs-progs v6.2, as the
//! output of other versions differs on purpose (see the `dump` module).

mod common;

use std::process::Command as Process;

use arbor_send::{Command, StreamWriter, Timespec, dump_stream};
use common::raw_command;

fn progs_6_2_available() -> bool {
    match Process::new("btrfs").arg("--version").output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim() == "btrfs-progs v6.2",
        Err(_) => false,
    }
}

/// `TZ=UTC btrfs receive --dump` of the stream: (stdout, success).
fn progs_dump(stream: &[u8]) -> (Vec<u8>, bool) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.stream");
    std::fs::write(&f, stream).unwrap();
    let out = Process::new("btrfs")
        .args(["receive", "--dump", "-f"])
        .arg(&f)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    (out.stdout, out.status.success())
}

fn ours(stream: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let ok = dump_stream(stream, &mut out).is_ok();
    (out, ok)
}

fn encode(version: u32, cmds: &[Command]) -> Vec<u8> {
    let mut w = StreamWriter::new(Vec::new(), version).unwrap();
    for c in cmds {
        w.write_command(c).unwrap();
    }
    w.into_inner()
}

fn p(s: &[u8]) -> Vec<u8> {
    s.to_vec()
}

fn t(sec: i64) -> Timespec {
    Timespec {
        sec,
        nsec: 999_999_999,
    }
}

fn corner_cases_v1() -> Vec<Command> {
    let mut v = vec![
        Command::Mkfile {
            path: p(b"before subvol"),
            ino: 1,
        },
        Command::Subvol {
            path: p(b"my snap"),
            uuid: *b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\xaa\xbb\xcc\xdd\xee\xff",
            ctransid: u64::MAX,
        },
        Command::Chown {
            path: p(b""),
            uid: u64::MAX,
            gid: 5,
        },
        Command::Chmod {
            path: p(b""),
            mode: 0o7777,
        },
        Command::Mkdir {
            path: p(b"dir with\ttab/"),
            ino: 2,
        },
        Command::Mkfile {
            path: p(b"a\nb\\c\x01\x07\x08\x1b\x0c\r\x0b\x7f\xe9\xff~"),
            ino: 3,
        },
        Command::Mknod {
            path: p(b"n"),
            ino: 4,
            rdev: 0x7c8,
            mode: 0o60644,
        },
        Command::Mkfifo {
            path: p(b"fifo"),
            ino: 5,
            rdev: 0,
            mode: 0o10644,
        },
        Command::Mksock {
            path: p(b"sock"),
            ino: 6,
            rdev: 0,
            mode: 0o140755,
        },
        Command::Symlink {
            path: p(b"s"),
            ino: 7,
            path_link: p(b"target with space/\x01\\"),
        },
        Command::Rename {
            path: p(b"a"),
            path_to: p(b"b c\n"),
        },
        Command::Link {
            path: p(b"l"),
            path_link: p(b"x y"),
        },
        Command::Unlink { path: p(b"u") },
        Command::Rmdir { path: p(b"r/") },
        Command::SetXattr {
            path: p(b"f"),
            name: p(b"user.a b"),
            data: p(b"va\0lue"),
        },
        Command::SetXattr {
            path: p(b""),
            name: p(b"user.bin\x01"),
            data: p(b"\xff\x01 \n\t"),
        },
        Command::SetXattr {
            path: p(b"f"),
            name: p(b"user.empty"),
            data: Vec::new(),
        },
        Command::RemoveXattr {
            path: p(b"f"),
            name: p(b"user.\x01x y"),
        },
        Command::Write {
            path: p(b"f"),
            offset: 12345,
            data: vec![0xab; 100],
        },
        Command::Truncate {
            path: p(b"f"),
            size: u64::MAX,
        },
        Command::UpdateExtent {
            path: p(b"f"),
            offset: 1,
            len: 2,
        },
    ];
    for len in [
        0,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        0x1_0000_0001,
        0x1_8000_0000,
        u64::MAX,
    ] {
        v.push(Command::Clone {
            path: p(b"dst"),
            offset: 4096,
            len,
            clone_uuid: [9; 16],
            clone_ctransid: 3,
            clone_path: p(b"src dir/f\n"),
            clone_offset: 7,
        });
    }
    for (a, m, c) in [
        (0, -1, 253_402_300_800),
        (-62_135_596_800, -62_135_596_801, -100_000_000_000),
        (
            1_577_934_245,
            67_768_036_191_676_799,
            -67_768_040_609_740_800,
        ),
    ] {
        v.push(Command::Utimes {
            path: p(b"f"),
            atime: t(a),
            mtime: t(m),
            ctime: t(c),
            otime: Some(t(1)),
        });
    }
    // Paths around the 32-column boundary: "./my snap/" escapes to 11 characters.
    for n in 15..24 {
        v.push(Command::Chmod {
            path: vec![b'x'; n],
            mode: 0o644,
        });
        v.push(Command::Chmod {
            path: [vec![b'y'; n - 2], p(b" ")].concat(),
            mode: 0o644,
        });
    }
    v.push(Command::Truncate {
        path: vec![b'z'; 300],
        size: 0,
    });
    v.push(Command::Snapshot {
        path: p(b"snap2/"),
        uuid: [0xee; 16],
        ctransid: 8,
        clone_uuid: [0x11; 16],
        clone_ctransid: 7,
    });
    v.push(Command::Mkfile {
        path: p(b"x"),
        ino: 9,
    });
    v.push(Command::End);
    v
}

fn corner_cases_v2() -> Vec<Command> {
    vec![
        Command::Subvol {
            path: p(b"v2"),
            uuid: [1; 16],
            ctransid: 1,
        },
        Command::Fallocate {
            path: p(b"f"),
            mode: 3,
            offset: 0,
            len: 413_696,
        },
        Command::Fallocate {
            path: p(b"f"),
            mode: u32::MAX,
            offset: u64::MAX,
            len: 0,
        },
        Command::Fallocate {
            path: p(b"f"),
            mode: 0x8000_0000,
            offset: 1,
            len: 1,
        },
        Command::Fileattr {
            path: p(b"f"),
            attr: 0x10,
        },
        Command::Fileattr {
            path: p(b""),
            attr: u64::MAX,
        },
        Command::EncodedWrite {
            path: p(b"f"),
            offset: 0,
            unencoded_file_len: 1000,
            unencoded_len: 1000,
            unencoded_offset: 0,
            compression: None,
            encryption: None,
            data: vec![1; 19],
        },
        Command::EncodedWrite {
            path: p(b"f g"),
            offset: 131_072,
            unencoded_file_len: 57_856,
            unencoded_len: 61_440,
            unencoded_offset: 4096,
            compression: Some(u32::MAX),
            encryption: Some(1),
            data: vec![2; 4096],
        },
        Command::Write {
            path: p(b"big"),
            offset: 0,
            data: vec![3; 128 << 10],
        },
        Command::Utimes {
            path: p(b"big"),
            atime: t(5),
            mtime: t(6),
            ctime: t(7),
            otime: Some(t(8)),
        },
        Command::End,
    ]
}

fn subvol(name: &[u8]) -> Command {
    Command::Subvol {
        path: name.to_vec(),
        uuid: [4; 16],
        ctransid: 4,
    }
}

/// Streams that fail halfway, or that hit 6.2's odd handling of paths too long to join.
fn odd_streams() -> Vec<(&'static str, Vec<u8>)> {
    let long = vec![b'q'; 4095];
    let ok = Command::Mkfile {
        path: p(b"ok"),
        ino: 1,
    };
    let mut v = vec![
        (
            "utimes year overflow",
            encode(
                1,
                &[
                    subvol(b"s"),
                    ok.clone(),
                    Command::Utimes {
                        path: p(b"f"),
                        atime: t(0),
                        mtime: t(i64::MAX),
                        ctime: t(0),
                        otime: None,
                    },
                    ok.clone(),
                    Command::End,
                ],
            ),
        ),
        (
            "path too long to join",
            encode(
                1,
                &[
                    subvol(b"s"),
                    ok.clone(),
                    Command::Mkfile {
                        path: long.clone(),
                        ino: 2,
                    },
                    ok.clone(),
                    Command::End,
                ],
            ),
        ),
        (
            "symlink, link and rename with a PATH too long to join",
            encode(
                1,
                &[
                    subvol(b"s"),
                    Command::Symlink {
                        path: long.clone(),
                        ino: 2,
                        path_link: p(b"t t"),
                    },
                    Command::Link {
                        path: long.clone(),
                        path_link: p(b"l\n"),
                    },
                    Command::Rename {
                        path: long.clone(),
                        path_to: p(b"to"),
                    },
                    ok.clone(),
                    Command::End,
                ],
            ),
        ),
        (
            "rename with a PATH_TO too long to join",
            encode(
                1,
                &[
                    subvol(b"s"),
                    Command::Rename {
                        path: p(b"from"),
                        path_to: long.clone(),
                    },
                    ok.clone(),
                    Command::End,
                ],
            ),
        ),
        (
            "clone with a CLONE_PATH too long to join",
            encode(
                1,
                &[
                    subvol(b"s"),
                    Command::Clone {
                        path: p(b"d"),
                        offset: 0,
                        len: 1,
                        clone_uuid: [0; 16],
                        clone_ctransid: 0,
                        clone_path: long.clone(),
                        clone_offset: 0,
                    },
                    Command::End,
                ],
            ),
        ),
        (
            "subvol name too long to join",
            encode(1, &[subvol(&long), ok.clone(), Command::End]),
        ),
        (
            "just under the join limit",
            encode(
                1,
                &[
                    subvol(b"s"),
                    Command::Mkfile {
                        path: vec![b'q'; 4090],
                        ino: 2,
                    },
                    Command::End,
                ],
            ),
        ),
        ("no END", encode(1, &[subvol(b"s"), ok.clone()])),
        (
            "stops at the first END",
            [
                encode(1, &[subvol(b"a"), Command::End]),
                encode(1, &[subvol(b"b"), Command::End]),
            ]
            .concat(),
        ),
    ];
    let mut bad_crc = encode(1, &[subvol(b"s"), ok.clone(), ok, Command::End]);
    let n = bad_crc.len();
    bad_crc[n - 12] ^= 1; // inside the second "ok" mkfile
    v.push(("bad CRC", bad_crc));
    // END framed by hand, right after SUBVOL.
    let mut end_by_hand = encode(1, &[subvol(b"s")]);
    end_by_hand.extend_from_slice(&raw_command(21, &[]));
    v.push(("END right after SUBVOL", end_by_hand));
    v
}

#[test]
fn dump_matches_installed_btrfs_progs_6_2_on_corner_cases() {
    if !progs_6_2_available() {
        eprintln!("skipped: btrfs-progs v6.2 is not installed");
        return;
    }
    let mut cases = vec![
        ("corner cases v1", encode(1, &corner_cases_v1())),
        ("corner cases v2", encode(2, &corner_cases_v2())),
    ];
    cases.extend(odd_streams());
    for (what, stream) in cases {
        let (want, want_ok) = progs_dump(&stream);
        let (got, got_ok) = ours(&stream);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{what}"
        );
        assert_eq!(got, want, "{what}");
        assert_eq!(got_ok, want_ok, "{what}: success");
    }
}
