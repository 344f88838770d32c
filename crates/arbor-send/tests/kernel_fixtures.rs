//! Real kernel streams (Linux 6.18, see tests/fixtures/README.md): each decodes without
//! error, dumps to exactly what `TZ=UTC btrfs receive --dump` of btrfs-progs 6.2 printed,
//! and re-encodes to exactly the kernel's bytes.

mod common;

use arbor_send::{Command, Dumper, StreamReader, StreamWriter, dump_stream};
use common::{FIXTURES, command_spans, decode_all, decode_items, progs_dump, stream};

#[test]
fn every_kernel_fixture_decodes_completely_with_positions_of_each_command() {
    for name in FIXTURES {
        let bytes = stream(name);
        let spans = command_spans(&bytes);
        let (items, err) = decode_items(&bytes);
        assert!(err.is_none(), "{name}: {}", err.unwrap());
        assert_eq!(items.len(), spans.len(), "{name}");
        for (i, ((info, _), (offset, _))) in items.iter().zip(&spans).enumerate() {
            assert_eq!(info.index, i as u64, "{name}");
            assert_eq!(info.offset, *offset as u64, "{name}");
        }
        assert_eq!(items.last().map(|(_, c)| c), Some(&Command::End), "{name}");
    }
}

#[test]
fn dump_of_every_kernel_fixture_matches_btrfs_progs_6_2_byte_for_byte() {
    for name in FIXTURES {
        let bytes = stream(name);
        let mut out = Vec::new();
        dump_stream(&bytes[..], &mut out).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = progs_dump(name);
        if out != want {
            let got = String::from_utf8_lossy(&out);
            let want = String::from_utf8_lossy(&want);
            for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
                assert_eq!(g, w, "{name}: line {}", i + 1);
            }
            panic!(
                "{name}: {} lines dumped, btrfs-progs printed {}",
                got.lines().count(),
                want.lines().count()
            );
        }
    }
}

#[test]
fn dumper_tracks_the_subvolume_of_snapshot_streams() {
    let bytes = stream("kernel618_inc_v2");
    let mut d = Dumper::new();
    assert_eq!(d.subvol_path(), b".");
    let first = decode_all(&bytes).remove(0);
    d.dump(&first, &mut Vec::new()).unwrap();
    assert_eq!(d.subvol_path(), b"./snap2");
}

#[test]
fn every_kernel_fixture_reencodes_to_the_same_bytes() {
    for name in FIXTURES {
        let bytes = stream(name);
        let reader = StreamReader::new(&bytes[..]).unwrap();
        let version = reader.version();
        let mut w = StreamWriter::new(Vec::new(), version).unwrap();
        for item in reader {
            let (info, cmd) = item.unwrap();
            w.write_command(&cmd)
                .unwrap_or_else(|e| panic!("{name}: command #{}: {e}", info.index));
        }
        let out = w.into_inner();
        if out != bytes {
            let at = out.iter().zip(&bytes).position(|(a, b)| a != b);
            panic!(
                "{name}: re-encoded {} bytes, kernel wrote {}; first difference at {at:?}",
                out.len(),
                bytes.len()
            );
        }
    }
}

#[test]
fn fixtures_cover_every_version_one_and_two_command() {
    use arbor_send::CommandKind;
    let mut seen = std::collections::BTreeSet::new();
    for name in FIXTURES {
        for c in decode_all(&stream(name)) {
            seen.insert(c.kind());
        }
    }
    // Kernel streams of this recipe never carry these; the round-trip and progs-oracle
    // tests cover them instead.
    let not_in_fixtures = [
        CommandKind::RemoveXattr,
        CommandKind::Fileattr,
        CommandKind::EnableVerity,
        CommandKind::ArborResume,
    ];
    for &k in CommandKind::ALL {
        assert_eq!(
            seen.contains(&k),
            !not_in_fixtures.contains(&k),
            "{}",
            k.name()
        );
    }
}
