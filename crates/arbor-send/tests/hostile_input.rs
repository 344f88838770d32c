//! Damaged and forged streams: every one is an error (never a panic) that names the
//! command index and byte offset, nothing of a damaged command is returned, and a forged
//! length is refused before it is read or allocated.

mod common;

use std::io::{self, Read};

use arbor_send::wire::{
    COMMAND_HEADER_SIZE, HEADER_SIZE, MAX_COMMAND_SIZE_V1, MAX_COMMAND_SIZE_V2,
};
use arbor_send::{
    Attr, Command, CommandKind, DecodeError, DecodeErrorKind, Dumper, EncodeError, StreamReader,
    StreamWriter, ValueProblem, wire,
};
use common::{
    FIXTURES, command_spans, decode_all, decode_items, raw_command, raw_stream, reseal, stream, tlv,
};
use proptest::prelude::*;

/// Fixtures small enough to cut or damage at every byte of the whole stream (the cost is
/// quadratic); the others are cut and damaged command by command.
const WHOLE_STREAM_LIMIT: usize = 16 << 10;

fn assert_cut_error(e: &DecodeError, index: u64, offset: u64, what: &str) {
    assert_eq!((e.index, e.offset), (index, offset), "{what}: {e}");
    assert!(
        matches!(
            e.kind,
            DecodeErrorKind::TruncatedCommand { .. } | DecodeErrorKind::MissingEnd
        ),
        "{what}: {e}"
    );
}

#[test]
fn a_fixture_cut_at_any_byte_is_an_error_naming_the_cut_command() {
    for name in FIXTURES {
        let bytes = stream(name);
        let spans = command_spans(&bytes);
        let full = decode_all(&bytes);
        if bytes.len() <= WHOLE_STREAM_LIMIT {
            for cut in 0..bytes.len() {
                let what = format!("{name} cut at {cut}");
                let (items, err) = decode_items(&bytes[..cut]);
                let err = err.unwrap_or_else(|| panic!("{what}: no error"));
                if cut < HEADER_SIZE {
                    assert!(items.is_empty());
                    assert_eq!((err.index, err.offset), (0, 0), "{what}");
                    assert!(err.kind.is_header(), "{what}: {err}");
                    continue;
                }
                // Commands wholly before the cut come out intact, then the cut one fails.
                let whole = spans.iter().take_while(|(o, s)| o + s <= cut).count();
                assert_eq!(items.len(), whole, "{what}");
                for (i, (_, c)) in items.iter().enumerate() {
                    assert_eq!(c, &full[i], "{what}");
                }
                let start = spans.get(whole).map_or(cut, |s| s.0);
                assert_cut_error(&err, whole as u64, start as u64, &what);
            }
        }
        // Each command alone behind a header, cut at each of its bytes.
        let head = &bytes[..HEADER_SIZE];
        for (k, &(offset, size)) in spans.iter().enumerate() {
            for cut in 0..size {
                let mut input = head.to_vec();
                input.extend_from_slice(&bytes[offset..offset + cut]);
                let (items, err) = decode_items(&input);
                let what = format!("{name} command #{k} cut at {cut}");
                assert!(items.is_empty(), "{what}");
                assert_cut_error(&err.expect("error"), 0, HEADER_SIZE as u64, &what);
            }
        }
    }
}

fn damage_kinds_ok(e: &DecodeError) -> bool {
    matches!(
        e.kind,
        DecodeErrorKind::CrcMismatch { .. }
            | DecodeErrorKind::CommandTooLarge { .. }
            | DecodeErrorKind::TruncatedCommand { .. }
    )
}

#[test]
fn a_flipped_byte_in_a_command_is_caught_before_any_of_it_is_returned() {
    for name in FIXTURES {
        let bytes = stream(name);
        let spans = command_spans(&bytes);
        let full = decode_all(&bytes);
        let head = &bytes[..HEADER_SIZE];
        for (k, &(offset, size)) in spans.iter().enumerate() {
            // Every byte of commands up to 4 KiB; of bigger ones (file data), the first
            // and last 256 bytes and every 61st byte between.
            let positions: Vec<usize> = if size <= 4096 {
                (0..size).collect()
            } else {
                (0..256)
                    .chain((256..size - 256).step_by(61))
                    .chain(size - 256..size)
                    .collect()
            };
            // The damaged command, then the rest of the stream to read into if its
            // length grew.
            let mut input = head.to_vec();
            input.extend_from_slice(&bytes[offset..]);
            for p in positions {
                for flip in [0xff_u8, 0x01, 0x80] {
                    let at = HEADER_SIZE + p;
                    input[at] ^= flip;
                    let mut reader = StreamReader::new(&input[..]).expect("header intact");
                    let first = reader.next().expect("an item");
                    input[at] ^= flip;
                    let what = format!("{name} command #{k} byte {p} ^ {flip:#x}");
                    let e = match first {
                        Ok((_, c)) => panic!("{what}: decoded as {:?}", c.kind()),
                        Err(e) => e,
                    };
                    assert_eq!((e.index, e.offset), (0, HEADER_SIZE as u64), "{what}: {e}");
                    assert!(damage_kinds_ok(&e), "{what}: {e}");
                    assert_eq!(e.command, None, "{what}: interpreted before the CRC check");
                }
            }
        }
        // Small fixtures: every byte of the whole stream, header included.
        if bytes.len() <= WHOLE_STREAM_LIMIT {
            let mut input = bytes.clone();
            for p in 0..bytes.len() {
                input[p] ^= 0xff;
                let (items, err) = decode_items(&input);
                input[p] ^= 0xff;
                let what = format!("{name} byte {p}");
                let err = err.unwrap_or_else(|| panic!("{what}: no error"));
                if p < HEADER_SIZE {
                    assert!(items.is_empty() && err.kind.is_header(), "{what}: {err}");
                    continue;
                }
                let k = spans.iter().position(|(o, s)| p < o + s).unwrap();
                assert_eq!(items.len(), k, "{what}");
                for (i, (_, c)) in items.iter().enumerate() {
                    assert_eq!(c, &full[i], "{what}");
                }
                assert_eq!(
                    (err.index, err.offset),
                    (k as u64, spans[k].0 as u64),
                    "{what}"
                );
                assert!(damage_kinds_ok(&err), "{what}: {err}");
            }
        }
    }
}

/// A reader that counts the bytes handed out.
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// A header, then a command header claiming `len` payload bytes, then endless zeros.
fn forged(version: u32, len: u32) -> Counting<impl Read> {
    let mut head = wire::header(version).to_vec();
    head.extend_from_slice(&len.to_le_bytes());
    head.extend_from_slice(&15u16.to_le_bytes());
    head.extend_from_slice(&[0; 4]);
    Counting {
        inner: io::Cursor::new(head).chain(io::repeat(0)),
        count: 0,
    }
}

#[test]
fn a_forged_huge_length_is_refused_without_reading_or_allocating_it() {
    for (version, cap) in [
        (1, MAX_COMMAND_SIZE_V1),
        (2, MAX_COMMAND_SIZE_V2),
        (3, MAX_COMMAND_SIZE_V2),
    ] {
        let limit = (cap - COMMAND_HEADER_SIZE) as u32;
        for len in [u32::MAX, 1 << 31, limit + 1] {
            let mut input = forged(version, len);
            let mut reader = StreamReader::new(&mut input).unwrap();
            let e = reader.next().unwrap().unwrap_err();
            assert!(
                matches!(e.kind, DecodeErrorKind::CommandTooLarge { len: l, max } if l == len && max == cap),
                "v{version} len {len}: {e}"
            );
            assert_eq!((e.index, e.offset), (0, HEADER_SIZE as u64));
            assert!(reader.next().is_none(), "the reader stops after an error");
            // Nothing was read past the command header.
            let read = reader.into_inner().count;
            assert_eq!(read, (HEADER_SIZE + COMMAND_HEADER_SIZE) as u64);
        }
        // The largest allowed length is read (exactly that much), then fails its CRC.
        let mut input = forged(version, limit);
        let mut reader = StreamReader::new(&mut input).unwrap();
        let e = reader.next().unwrap().unwrap_err();
        assert!(matches!(e.kind, DecodeErrorKind::CrcMismatch { .. }), "{e}");
        assert_eq!(reader.into_inner().count, (HEADER_SIZE + cap) as u64);
    }
}

#[test]
fn wrong_magic_or_version_is_refused_and_versions_one_to_three_accepted() {
    let end = raw_command(21, &[]);
    let with_header = |magic: &[u8], version: u32| {
        let mut v = magic.to_vec();
        v.extend_from_slice(&version.to_le_bytes());
        v.extend_from_slice(&end);
        v
    };
    for magic in [
        &b"btrfs-stream!"[..],
        b"btrfs-strean\0",
        b"BTRFS-STREAM\0",
        b"\0btrfs-stream",
    ] {
        let e = StreamReader::new(&with_header(magic, 1)[..]).unwrap_err();
        assert!(matches!(e.kind, DecodeErrorKind::BadMagic { .. }), "{e}");
        assert_eq!((e.index, e.offset), (0, 0));
    }
    for version in [0, 4, 5, 0x0100, u32::MAX] {
        let e = StreamReader::new(&with_header(b"btrfs-stream\0", version)[..]).unwrap_err();
        assert!(
            matches!(e.kind, DecodeErrorKind::UnsupportedVersion(v) if v == version),
            "{e}"
        );
    }
    for version in 1..=3 {
        let bytes = with_header(b"btrfs-stream\0", version);
        assert_eq!(decode_all(&bytes), vec![Command::End], "version {version}");
    }
    let e = StreamReader::new(&[][..]).unwrap_err();
    assert!(matches!(e.kind, DecodeErrorKind::Empty), "{e}");
}

#[test]
fn a_stream_without_end_is_an_error_after_its_last_command() {
    let mut bytes = wire::header(1).to_vec();
    let mkdir = raw_command(4, &[tlv(15, b"d"), tlv(3, &[1; 8])].concat());
    bytes.extend_from_slice(&mkdir);
    let (items, err) = decode_items(&bytes);
    assert_eq!(items.len(), 1);
    let err = err.unwrap();
    assert!(matches!(err.kind, DecodeErrorKind::MissingEnd));
    assert_eq!((err.index, err.offset), (1, bytes.len() as u64));
}

#[test]
fn concatenated_streams_decode_in_sequence_and_garbage_after_end_is_refused() {
    let a = raw_stream(
        1,
        &[raw_command(4, &[tlv(15, b"d"), tlv(3, &[1; 8])].concat())],
    );
    let b = raw_stream(2, &[]);
    let both = [a.clone(), b].concat();
    let mut reader = StreamReader::new(&both[..]).unwrap();
    let items: Vec<_> = reader.by_ref().map(|i| i.unwrap()).collect();
    assert_eq!(items.len(), 3);
    assert_eq!(items[2].0.index, 2);
    assert_eq!(items[2].0.offset, (a.len() + HEADER_SIZE) as u64);
    assert_eq!(reader.version(), 2);

    let mut junk = a.clone();
    junk.extend_from_slice(b"not a header at all");
    let (items, err) = decode_items(&junk);
    assert_eq!(items.len(), 2);
    let err = err.unwrap();
    assert!(
        matches!(err.kind, DecodeErrorKind::BadMagic { .. }),
        "{err}"
    );
    assert_eq!((err.index, err.offset), (2, a.len() as u64));
}

/// One MKFILE-like command with the given payload, checked in a v1 stream: returns the error.
fn refused(version: u32, cmd: u16, payload: &[u8]) -> DecodeError {
    let bytes = raw_stream(version, &[raw_command(cmd, payload)]);
    let (items, err) = decode_items(&bytes);
    assert!(items.is_empty(), "accepted: {items:?}");
    let err = err.expect("an error");
    assert_eq!((err.index, err.offset), (0, HEADER_SIZE as u64), "{err}");
    err
}

/// Byte offset of the TLV at `pos` of the payload of the first command.
fn at(pos: usize) -> u64 {
    (HEADER_SIZE + COMMAND_HEADER_SIZE + pos) as u64
}

#[test]
fn each_malformed_attribute_is_refused_with_its_offset() {
    let path = tlv(15, b"f");
    let ino = tlv(3, &257u64.to_le_bytes());
    let p = path.len();
    use DecodeErrorKind as K;

    let e = refused(1, 3, &[path.clone(), tlv(36, b"x")].concat());
    assert!(
        matches!(e.kind, K::UnknownAttribute { at: a, number: 36 } if a == at(p)),
        "{e}"
    );
    let e = refused(1, 3, &[tlv(0, b""), path.clone()].concat());
    assert!(
        matches!(e.kind, K::UnknownAttribute { number: 0, .. }),
        "{e}"
    );
    let e = refused(1, 3, &[path.clone(), ino.clone(), tlv(4, &[0; 8])].concat());
    assert!(
        matches!(e.kind, K::UnexpectedAttribute { attr: Attr::Size, at: a } if a == at(p + ino.len())),
        "{e}"
    );
    assert_eq!(e.command, Some(CommandKind::Mkfile));
    let e = refused(1, 3, &[path.clone(), ino.clone(), path.clone()].concat());
    assert!(
        matches!(
            e.kind,
            K::DuplicateAttribute {
                attr: Attr::Path,
                ..
            }
        ),
        "{e}"
    );
    let e = refused(1, 3, &[path.clone(), tlv(3, &[1; 4])].concat());
    assert!(
        matches!(
            e.kind,
            K::AttributeSize {
                attr: Attr::Ino,
                len: 4,
                expected: 8,
                ..
            }
        ),
        "{e}"
    );
    let e = refused(1, 3, &path);
    assert!(matches!(e.kind, K::MissingAttribute(Attr::Ino)), "{e}");
    let mut overrun = path.clone();
    overrun.extend_from_slice(&[3, 0, 8, 0, 1, 2, 3]);
    let e = refused(1, 3, &overrun);
    assert!(
        matches!(e.kind, K::TruncatedAttribute { at: a } if a == at(p)),
        "{e}"
    );
    let e = refused(1, 3, &[path.clone(), ino.clone(), vec![3]].concat());
    assert!(matches!(e.kind, K::TruncatedAttribute { .. }), "{e}");
    let e = refused(1, 3, &[tlv(15, b""), ino.clone()].concat());
    assert!(
        matches!(e.kind, K::InvalidValue { field, at: a } if field.attr == Attr::Path && field.problem == ValueProblem::Empty && a == at(0)),
        "{e}"
    );
    let e = refused(1, 3, &[tlv(15, b"a\0b"), ino.clone()].concat());
    assert!(
        matches!(e.kind, K::InvalidValue { field, .. } if field.problem == ValueProblem::Nul(1)),
        "{e}"
    );
    let e = refused(1, 3, &[tlv(15, &[b'a'; 4096]), ino.clone()].concat());
    assert!(
        matches!(e.kind, K::InvalidValue { field, .. } if field.problem == ValueProblem::TooLong { len: 4096, max: 4095 }),
        "{e}"
    );
    let mut t = 5i64.to_le_bytes().to_vec();
    t.extend_from_slice(&1_000_000_000u32.to_le_bytes());
    let e = refused(
        1,
        20,
        &[path.clone(), tlv(11, &t), tlv(10, &t), tlv(9, &t)].concat(),
    );
    assert!(
        matches!(e.kind, K::InvalidValue { field, .. } if field.attr == Attr::Atime),
        "{e}"
    );
    let e = refused(1, 11, &[path.clone(), tlv(16, b"x")].concat());
    assert!(
        matches!(
            e.kind,
            K::UnexpectedAttribute {
                attr: Attr::PathTo,
                ..
            }
        ),
        "{e}"
    );
    let e = refused(1, 21, &path);
    assert!(
        matches!(
            e.kind,
            K::UnexpectedAttribute {
                attr: Attr::Path,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn unknown_commands_and_commands_newer_than_the_stream_are_refused() {
    use DecodeErrorKind as K;
    for n in [0u16, 27, 0xffff] {
        let e = refused(2, n, &[]);
        assert!(matches!(e.kind, K::UnknownCommand(m) if m == n), "{e}");
    }
    let falloc = [
        tlv(15, b"f"),
        tlv(25, &3u32.to_le_bytes()),
        tlv(18, &[0; 8]),
        tlv(4, &[0; 8]),
    ]
    .concat();
    let e = refused(1, 23, &falloc);
    assert!(
        matches!(
            e.kind,
            K::CommandNotInVersion {
                kind: CommandKind::Fallocate,
                version: 1
            }
        ),
        "{e}"
    );
    assert_eq!(
        decode_all(&raw_stream(2, &[raw_command(23, &falloc)])).len(),
        2
    );
    let e = refused(2, 26, &[]);
    assert!(matches!(e.kind, K::CommandNotInVersion { .. }), "{e}");
}

#[test]
fn v2_data_takes_the_rest_of_the_command_and_v1_data_may_sit_anywhere() {
    // v2: DATA first swallows the FILE_OFFSET TLV behind it, which is then missing.
    let mut payload = tlv(15, b"f");
    payload.extend_from_slice(&19u16.to_le_bytes());
    payload.extend_from_slice(&tlv(18, &[0; 8]));
    let e = refused(2, 15, &payload);
    assert!(
        matches!(e.kind, DecodeErrorKind::MissingAttribute(Attr::FileOffset)),
        "{e}"
    );
    // v1: DATA is an ordinary TLV; order does not matter to the decoder.
    let payload = [tlv(19, b"hi"), tlv(18, &7u64.to_le_bytes()), tlv(15, b"f")].concat();
    let cmds = decode_all(&raw_stream(1, &[raw_command(15, &payload)]));
    assert_eq!(
        cmds[0],
        Command::Write {
            path: b"f".to_vec(),
            offset: 7,
            data: b"hi".to_vec()
        }
    );
    // v2: a DATA TLV header with an empty rest is empty data.
    let mut payload = [tlv(15, b"f"), tlv(18, &[0; 8])].concat();
    payload.extend_from_slice(&19u16.to_le_bytes());
    let cmds = decode_all(&raw_stream(2, &[raw_command(15, &payload)]));
    assert!(matches!(&cmds[0], Command::Write { data, .. } if data.is_empty()));
}

#[test]
fn the_root_path_is_accepted_only_where_the_root_can_be_meant() {
    let chown = [tlv(15, b""), tlv(6, &[0; 8]), tlv(7, &[0; 8])].concat();
    assert_eq!(
        decode_all(&raw_stream(1, &[raw_command(19, &chown)])).len(),
        2
    );
    let e = refused(1, 11, &tlv(15, b""));
    assert!(
        matches!(e.kind, DecodeErrorKind::InvalidValue { .. }),
        "{e}"
    );
}

#[test]
fn largest_commands_of_each_version_round_trip() {
    // 10 header + 5 path + 12 offset + 4 (v1) or 2 (v2) DATA header bytes.
    for (version, size, data_header) in
        [(1, MAX_COMMAND_SIZE_V1 - 1, 4), (2, MAX_COMMAND_SIZE_V2, 2)]
    {
        let cmd = Command::Write {
            path: b"f".to_vec(),
            offset: 1 << 40,
            data: (0..size - 27 - data_header).map(|i| i as u8).collect(),
        };
        let mut w = StreamWriter::new(Vec::new(), version).unwrap();
        w.write_command(&cmd).unwrap();
        w.write_command(&Command::End).unwrap();
        let bytes = w.into_inner();
        assert_eq!(bytes.len(), HEADER_SIZE + size + COMMAND_HEADER_SIZE);
        assert_eq!(decode_all(&bytes), vec![cmd, Command::End]);
    }
}

#[test]
fn a_v1_command_of_exactly_64_kib_decodes_but_the_encoder_stays_below() {
    // The kernel's v1 buffer holds 64 KiB; btrfs-progs before 5.19 refuse 64 KiB.
    let data = vec![7u8; MAX_COMMAND_SIZE_V1 - COMMAND_HEADER_SIZE - 5 - 12 - 4];
    let payload = [tlv(15, b"f"), tlv(18, &[0; 8]), tlv(19, &data)].concat();
    let raw = raw_command(15, &payload);
    assert_eq!(raw.len(), MAX_COMMAND_SIZE_V1);
    let cmds = decode_all(&raw_stream(1, &[raw]));
    let e = StreamWriter::new(Vec::new(), 1)
        .unwrap()
        .write_command(&cmds[0])
        .unwrap_err();
    assert!(
        matches!(e, EncodeError::CommandTooLarge { size, max, version: 1, .. } if size == MAX_COMMAND_SIZE_V1 && max == MAX_COMMAND_SIZE_V1 - 1),
        "{e}"
    );
}

/// Applies `(position, byte)` overwrites, an optional cut and an optional insertion.
fn mutate(
    mut b: Vec<u8>,
    writes: &[(usize, u8)],
    cut: Option<usize>,
    insert: Option<(usize, Vec<u8>)>,
) -> Vec<u8> {
    for &(p, v) in writes {
        let len = b.len();
        b[p % len] = v;
    }
    if let Some((p, bytes)) = insert {
        let p = p % (b.len() + 1);
        b.splice(p..p, bytes);
    }
    if let Some(c) = cut {
        b.truncate(c % (b.len() + 1));
    }
    b
}

/// Decodes everything, dumps everything; if all of it decoded, re-encoding (in the
/// highest version met, as concatenated streams may mix versions) must decode to the same
/// commands. Only v1 commands of exactly 64 KiB may fail to re-encode: the decoder takes
/// what a kernel can write, the encoder stays below what btrfs-progs < 5.19 can read.
fn exercise(bytes: &[u8]) {
    let Ok(mut reader) = StreamReader::new(bytes) else {
        return;
    };
    let mut d = Dumper::new();
    let mut cmds = Vec::new();
    let mut version = reader.version();
    while let Some(item) = reader.next() {
        match item {
            Ok((_, c)) => {
                let _ = d.dump(&c, &mut io::sink());
                version = version.max(reader.version());
                cmds.push(c);
            }
            Err(e) => {
                let _ = e.to_string();
                return;
            }
        }
    }
    let mut w = StreamWriter::new(Vec::new(), version).unwrap();
    for c in &cmds {
        match w.write_command(c) {
            Ok(()) => {}
            Err(EncodeError::CommandTooLarge {
                size, version: 1, ..
            }) if size == MAX_COMMAND_SIZE_V1 => {
                return;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(decode_all(&w.into_inner()), cmds);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn randomly_mutated_fixtures_never_panic(
        which in 0usize..4,
        writes in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<usize>()),
        insert in proptest::option::of((any::<usize>(), proptest::collection::vec(any::<u8>(), 1..12))),
        resealed in any::<bool>(),
    ) {
        let mut b = mutate(stream(FIXTURES[which]), &writes, cut, insert);
        if resealed {
            reseal(&mut b);
        }
        exercise(&b);
    }

    #[test]
    fn random_tlvs_in_a_valid_frame_never_panic(
        version in 1u32..=3,
        cmd in 0u16..30,
        tlvs in proptest::collection::vec((0u16..40, proptest::collection::vec(any::<u8>(), 0..20)), 0..8),
        tail in proptest::collection::vec(any::<u8>(), 0..4),
    ) {
        let mut payload: Vec<u8> = tlvs.iter().flat_map(|(t, v)| tlv(*t, v)).collect();
        payload.extend_from_slice(&tail);
        let bytes = raw_stream(version, &[raw_command(cmd, &payload)]);
        exercise(&bytes);
    }
}
