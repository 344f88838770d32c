//! Random command sequences with valid fields encode (v1, v2, v3) and decode back to the
//! same commands; and encoding refuses exactly what the decoder would refuse.

mod common;

use arbor_send::{Command, CommandKind, StreamWriter, Timespec, Uuid};
use common::decode_all;
use proptest::prelude::*;
use proptest::strategy::{BoxedStrategy, Union};

/// A path: 1..40 bytes, anything but NUL (spaces, newlines, high bytes included).
fn path() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(1u8..=255, 1..40)
}

/// A path that may be "", the subvolume root.
fn root_or_path() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(1u8..=255, 0..40)
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<Uuid>()
}

fn time() -> impl Strategy<Value = Timespec> {
    (any::<i64>(), 0u32..1_000_000_000).prop_map(|(sec, nsec)| Timespec { sec, nsec })
}

fn command(kind: CommandKind) -> BoxedStrategy<Command> {
    let u = any::<u64>;
    match kind {
        CommandKind::Subvol => (path(), uuid(), u())
            .prop_map(|(path, uuid, ctransid)| Command::Subvol {
                path,
                uuid,
                ctransid,
            })
            .boxed(),
        CommandKind::Snapshot => (path(), uuid(), u(), uuid(), u())
            .prop_map(
                |(path, uuid, ctransid, clone_uuid, clone_ctransid)| Command::Snapshot {
                    path,
                    uuid,
                    ctransid,
                    clone_uuid,
                    clone_ctransid,
                },
            )
            .boxed(),
        CommandKind::Mkfile => (path(), u())
            .prop_map(|(path, ino)| Command::Mkfile { path, ino })
            .boxed(),
        CommandKind::Mkdir => (path(), u())
            .prop_map(|(path, ino)| Command::Mkdir { path, ino })
            .boxed(),
        CommandKind::Mknod => (path(), u(), u(), u())
            .prop_map(|(path, ino, rdev, mode)| Command::Mknod {
                path,
                ino,
                rdev,
                mode,
            })
            .boxed(),
        CommandKind::Mkfifo => (path(), u(), u(), u())
            .prop_map(|(path, ino, rdev, mode)| Command::Mkfifo {
                path,
                ino,
                rdev,
                mode,
            })
            .boxed(),
        CommandKind::Mksock => (path(), u(), u(), u())
            .prop_map(|(path, ino, rdev, mode)| Command::Mksock {
                path,
                ino,
                rdev,
                mode,
            })
            .boxed(),
        CommandKind::Symlink => (path(), u(), path())
            .prop_map(|(path, ino, path_link)| Command::Symlink {
                path,
                ino,
                path_link,
            })
            .boxed(),
        CommandKind::Rename => (path(), path())
            .prop_map(|(path, path_to)| Command::Rename { path, path_to })
            .boxed(),
        CommandKind::Link => (path(), path())
            .prop_map(|(path, path_link)| Command::Link { path, path_link })
            .boxed(),
        CommandKind::Unlink => path().prop_map(|path| Command::Unlink { path }).boxed(),
        CommandKind::Rmdir => path().prop_map(|path| Command::Rmdir { path }).boxed(),
        CommandKind::SetXattr => (root_or_path(), path(), bytes(200))
            .prop_map(|(path, name, data)| Command::SetXattr { path, name, data })
            .boxed(),
        CommandKind::RemoveXattr => (root_or_path(), path())
            .prop_map(|(path, name)| Command::RemoveXattr { path, name })
            .boxed(),
        CommandKind::Write => (path(), u(), bytes(3000))
            .prop_map(|(path, offset, data)| Command::Write { path, offset, data })
            .boxed(),
        CommandKind::Clone => (path(), u(), u(), uuid(), u(), path(), u())
            .prop_map(
                |(path, offset, len, clone_uuid, clone_ctransid, clone_path, clone_offset)| {
                    Command::Clone {
                        path,
                        offset,
                        len,
                        clone_uuid,
                        clone_ctransid,
                        clone_path,
                        clone_offset,
                    }
                },
            )
            .boxed(),
        CommandKind::Truncate => (path(), u())
            .prop_map(|(path, size)| Command::Truncate { path, size })
            .boxed(),
        CommandKind::Chmod => (root_or_path(), u())
            .prop_map(|(path, mode)| Command::Chmod { path, mode })
            .boxed(),
        CommandKind::Chown => (root_or_path(), u(), u())
            .prop_map(|(path, uid, gid)| Command::Chown { path, uid, gid })
            .boxed(),
        CommandKind::Utimes => (
            root_or_path(),
            time(),
            time(),
            time(),
            proptest::option::of(time()),
        )
            .prop_map(|(path, atime, mtime, ctime, otime)| Command::Utimes {
                path,
                atime,
                mtime,
                ctime,
                otime,
            })
            .boxed(),
        CommandKind::End => Just(Command::End).boxed(),
        CommandKind::ArborResume => (uuid(), u(), u())
            .prop_map(|(uuid, ctransid, skip)| Command::ArborResume {
                uuid,
                ctransid,
                skip,
            })
            .boxed(),
        CommandKind::UpdateExtent => (path(), u(), u())
            .prop_map(|(path, offset, len)| Command::UpdateExtent { path, offset, len })
            .boxed(),
        CommandKind::Fallocate => (path(), any::<u32>(), u(), u())
            .prop_map(|(path, mode, offset, len)| Command::Fallocate {
                path,
                mode,
                offset,
                len,
            })
            .boxed(),
        CommandKind::Fileattr => (root_or_path(), u())
            .prop_map(|(path, attr)| Command::Fileattr { path, attr })
            .boxed(),
        CommandKind::EncodedWrite => (
            path(),
            (u(), u(), u(), u()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            bytes(3000),
        )
            .prop_map(
                |(path, (offset, file_len, len, off), compression, encryption, data)| {
                    Command::EncodedWrite {
                        path,
                        offset,
                        unencoded_file_len: file_len,
                        unencoded_len: len,
                        unencoded_offset: off,
                        compression,
                        encryption,
                        data,
                    }
                },
            )
            .boxed(),
        CommandKind::EnableVerity => (path(), any::<u8>(), any::<u32>(), bytes(40), bytes(300))
            .prop_map(
                |(path, algorithm, block_size, salt, sig)| Command::EnableVerity {
                    path,
                    algorithm,
                    block_size,
                    salt,
                    sig,
                },
            )
            .boxed(),
    }
}

/// Any command a stream of `version` may carry, END excepted (it ends the sequence).
fn any_command(version: u32) -> Union<BoxedStrategy<Command>> {
    Union::new(
        CommandKind::ALL
            .iter()
            .filter(|k| k.min_version() <= version && **k != CommandKind::End)
            .map(|&k| command(k)),
    )
}

fn round_trip(version: u32, cmds: &[Command]) -> Result<(), TestCaseError> {
    let mut w = StreamWriter::new(Vec::new(), version).unwrap();
    for c in cmds {
        w.write_command(c)
            .map_err(|e| TestCaseError::fail(format!("{e}")))?;
    }
    w.write_command(&Command::End).unwrap();
    let mut want = cmds.to_vec();
    want.push(Command::End);
    prop_assert_eq!(decode_all(&w.into_inner()), want);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn random_v1_command_sequences_round_trip(
        cmds in proptest::collection::vec(any_command(1), 0..24)
    ) {
        round_trip(1, &cmds)?;
    }

    #[test]
    fn random_v2_command_sequences_round_trip(
        cmds in proptest::collection::vec(any_command(2), 0..24)
    ) {
        round_trip(2, &cmds)?;
    }

    #[test]
    fn random_v3_command_sequences_round_trip(
        cmds in proptest::collection::vec(any_command(3), 0..24)
    ) {
        round_trip(3, &cmds)?;
    }

    #[test]
    fn every_v3_command_dumps_without_panicking(cmd in any_command(3)) {
        let mut d = arbor_send::Dumper::new();
        let _ = d.dump(&cmd, &mut std::io::sink());
    }
}
