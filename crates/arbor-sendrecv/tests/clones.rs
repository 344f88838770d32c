//! Data the receiver already has is cloned, not sent: data extents sent earlier in the
//! same stream, those of the parent of an incremental send, and those of `-c` clone
//! sources. The received files share their blocks as the sent ones do; a stream that
//! clones from a snapshot outside the destination directory is refused.

mod common;

use arbor_fs::ino::Loc;
use arbor_fs::{Fs, ROOT_INO};
use arbor_sendrecv::{SendOptions, SendStats, receive, send_full, send_incremental};
use common::{describe, fresh, pattern, who};
use std::collections::BTreeSet;

fn file(fs: &Fs, dir: u64, name: &str, data: &[u8]) -> u64 {
    let ino = fs
        .create(dir, name.as_bytes(), 0o100644, 0, who(), None)
        .unwrap()
        .ino;
    fs.write_file(ino, 0, data, false).unwrap();
    ino
}

fn lookup(fs: &Fs, mut dir: u64, path: &str) -> u64 {
    for part in path.split('/') {
        dir = fs.lookup(dir, part.as_bytes()).unwrap().ino;
    }
    dir
}

/// The data extents a file's blocks are in.
fn extents(fs: &Fs, ino: u64) -> BTreeSet<u64> {
    fs.data_pieces(ino, 0, u64::MAX)
        .unwrap()
        .iter()
        .map(|p| p.disk_bytenr)
        .collect()
}

fn shares(fs: &Fs, a: u64, b: u64) -> bool {
    !extents(fs, a).is_disjoint(&extents(fs, b))
}

fn dump(stream: &[u8]) -> String {
    let mut text = Vec::new();
    arbor_send::dump_stream(stream, &mut text).unwrap();
    String::from_utf8(text).unwrap()
}

fn opts(version: u32, clone_sources: Vec<u64>) -> SendOptions {
    SendOptions {
        version,
        clone_sources,
        ..Default::default()
    }
}

fn full(fs: &Fs, root: u64, name: &[u8], o: SendOptions) -> (Vec<u8>, SendStats) {
    let mut stream = Vec::new();
    let stats = send_full(fs, root, name, &mut stream, o).unwrap();
    (stream, stats)
}

const MIB: usize = 1 << 20;

/// A fresh filesystem holding s1 received in full, and the incremental stream from s1 to
/// s2 (not yet received), in stream `version`.
fn received_s1_and_s2_from(fs: &Fs, s1: u64, s2: u64, version: u32) -> (Fs, Vec<u8>, SendStats) {
    let dst = fresh();
    let (base, _) = full(fs, s1, b"s1", opts(version, vec![]));
    receive(&dst, ROOT_INO, &base[..]).unwrap();
    let mut inc = Vec::new();
    let stats = send_incremental(fs, s1, s2, b"s2", &mut inc, opts(version, vec![])).unwrap();
    (dst, inc, stats)
}

#[test]
fn a_full_send_clones_what_the_stream_already_sent() {
    let fs = fresh();
    let vol = fs.subvol_create(ROOT_INO, b"vol", who()).unwrap().root;
    let data = pattern(MIB + 100, 1);
    let a = file(&fs, vol, "a", &data);
    let b = file(&fs, vol, "b", b"");
    assert_eq!(
        fs.copy_range(a, 0, b, 0, data.len() as u64).unwrap(),
        data.len() as u64
    );
    // Part of a, at another offset of c, between bytes of its own.
    let c = file(&fs, vol, "c", &pattern(300_000, 2));
    fs.copy_range(a, 65_536, c, 8192, 131_072).unwrap();
    let snap = fs.subvol_snapshot(vol, ROOT_INO, b"snap", true).unwrap();
    for version in [1, 2] {
        let (stream, stats) = full(&fs, snap.root, b"snap", opts(version, vec![]));
        assert!(dump(&stream).contains("clone "), "v{version}");
        // a once, c's own bytes, and the partial last block of b.
        assert!(
            stats.data_bytes < (MIB + 300_000 + 8192) as u64,
            "{stats:?}"
        );
        assert_eq!(stats.cloned_bytes, (MIB + 131_072) as u64, "{stats:?}");
        let dst = fresh();
        let got = receive(&dst, ROOT_INO, &stream[..]).unwrap().subvolumes[0];
        assert_eq!(describe(&dst, got, true), describe(&fs, snap.root, true));
        let (ra, rb, rc) = (
            lookup(&dst, got, "a"),
            lookup(&dst, got, "b"),
            lookup(&dst, got, "c"),
        );
        assert!(shares(&dst, ra, rb) && shares(&dst, ra, rc), "v{version}");
    }
}

#[test]
fn an_incremental_send_clones_from_the_parent() {
    let fs = fresh();
    let vol = fs.subvol_create(ROOT_INO, b"vol", who()).unwrap().root;
    let data = pattern(2 * MIB + 10, 3);
    let a = file(&fs, vol, "a", &data);
    let s1 = fs.subvol_snapshot(vol, ROOT_INO, b"s1", true).unwrap();
    // A reflink copy of a, and a file that mixes a's blocks with new ones.
    let b = file(&fs, vol, "b", b"");
    fs.copy_range(a, 0, b, 0, data.len() as u64).unwrap();
    let m = file(&fs, vol, "m", &pattern(100_000, 4));
    fs.copy_range(a, MIB as u64, m, 40_960, 200_704).unwrap();
    let s2 = fs.subvol_snapshot(vol, ROOT_INO, b"s2", true).unwrap();
    for version in [1, 2] {
        let (dst, inc, stats) = received_s1_and_s2_from(&fs, s1.root, s2.root, version);
        assert!(dump(&inc).contains("clone "), "v{version}");
        assert!(stats.data_bytes < 100_000 + 8192, "{stats:?}");
        let got = receive(&dst, ROOT_INO, &inc[..]).unwrap().subvolumes[0];
        assert_eq!(describe(&dst, got, true), describe(&fs, s2.root, true));
        let parent_a = lookup(&dst, ROOT_INO, "s1/a");
        for f in ["b", "m"] {
            assert!(
                shares(&dst, parent_a, lookup(&dst, got, f)),
                "{f} v{version}"
            );
        }
    }
}

/// An unrelated subvolume y holding a reflink of a file of snapshot x; x is a clone
/// source of y's send.
fn with_clone_source() -> (Fs, u64, u64) {
    let fs = fresh();
    let xv = fs.subvol_create(ROOT_INO, b"xv", who()).unwrap().root;
    let data = pattern(MIB, 5);
    file(&fs, xv, "big", &data);
    let x = fs.subvol_snapshot(xv, ROOT_INO, b"x", true).unwrap();
    let yv = fs.subvol_create(ROOT_INO, b"yv", who()).unwrap().root;
    let y_file = file(&fs, yv, "copy", b"");
    fs.copy_range(lookup(&fs, x.root, "big"), 0, y_file, 0, MIB as u64)
        .unwrap();
    let y = fs.subvol_snapshot(yv, ROOT_INO, b"y", true).unwrap();
    (fs, x.root, y.root)
}

#[test]
fn a_clone_source_given_with_c_is_cloned_from() {
    let (fs, x, y) = with_clone_source();
    let (xs, _) = full(&fs, x, b"x", opts(2, vec![]));
    let (ys, stats) = full(&fs, y, b"y", opts(2, vec![x]));
    assert_eq!(stats.cloned_bytes, MIB as u64, "{stats:?}");
    assert!(stats.data_bytes < 4096, "{stats:?}");
    let dst = fresh();
    receive(&dst, ROOT_INO, &xs[..]).unwrap();
    let got = receive(&dst, ROOT_INO, &ys[..]).unwrap().subvolumes[0];
    assert_eq!(describe(&dst, got, true), describe(&fs, y, true));
    assert!(shares(
        &dst,
        lookup(&dst, ROOT_INO, "x/big"),
        lookup(&dst, got, "copy")
    ));
    // Without -c the data goes in full.
    let (_, plain) = full(&fs, y, b"y", opts(2, vec![]));
    assert!(
        plain.data_bytes >= MIB as u64 && plain.cloned_bytes == 0,
        "{plain:?}"
    );
}

#[test]
fn a_clone_from_a_snapshot_outside_the_destination_is_refused() {
    let (fs, x, y) = with_clone_source();
    let (xs, _) = full(&fs, x, b"x", opts(2, vec![]));
    let (ys, _) = full(&fs, y, b"y", opts(2, vec![x]));
    // The clone source is missing.
    let dst = fresh();
    let e = receive(&dst, ROOT_INO, &ys[..]).unwrap_err().to_string();
    assert!(
        e.contains("clone source") && e.contains("receive it first"),
        "{e}"
    );
    // The clone source is here, but not in the directory received into.
    receive(&dst, ROOT_INO, &xs[..]).unwrap();
    let elsewhere = dst
        .create(ROOT_INO, b"elsewhere", 0o040755, 0, who(), None)
        .unwrap()
        .ino;
    let e = receive(&dst, elsewhere, &ys[..]).unwrap_err().to_string();
    assert!(
        e.contains("not a read-only snapshot in the destination directory"),
        "{e}"
    );
    assert!(e.contains("command #") && e.contains("(clone)"), "{e}");
    // Nor may it be a writable subvolume there.
    let (ys2, _) = full(&fs, y, b"y2", opts(2, vec![x]));
    let xinfo = dst
        .subvol_info(Loc::of(lookup(&dst, ROOT_INO, "x")).unwrap().subvol)
        .unwrap();
    dst.subvol_set_read_only(xinfo.id, false).unwrap();
    let e = receive(&dst, ROOT_INO, &ys2[..]).unwrap_err().to_string();
    assert!(e.contains("not a read-only snapshot"), "{e}");
}

#[test]
fn an_append_or_a_punch_sends_only_the_bytes_that_changed() {
    let fs = fresh();
    let vol = fs.subvol_create(ROOT_INO, b"vol", who()).unwrap().root;
    let log = file(&fs, vol, "log", &pattern(MIB - 1000, 6));
    let img = file(&fs, vol, "img", &pattern(MIB, 7));
    let s1 = fs.subvol_snapshot(vol, ROOT_INO, b"s1", true).unwrap();
    fs.write_file(log, (MIB - 1000) as u64, &pattern(3000, 8), false)
        .unwrap();
    let punch = arbor_fs::FallocMode {
        keep_size: true,
        punch_hole: true,
        zero_range: false,
    };
    fs.fallocate(img, 65_536, 8192, punch).unwrap();
    let s2 = fs.subvol_snapshot(vol, ROOT_INO, b"s2", true).unwrap();
    for version in [1, 2] {
        let (dst, inc, stats) = received_s1_and_s2_from(&fs, s1.root, s2.root, version);
        // The appended bytes and the block they share with the old end; v1 sends the
        // punched hole as zeros.
        let hole = if version == 1 { 8192 } else { 0 };
        assert!(
            stats.data_bytes <= 3000 + 4096 + hole,
            "v{version}: {stats:?}"
        );
        assert_eq!(stats.cloned_bytes, 0, "{stats:?}");
        let got = receive(&dst, ROOT_INO, &inc[..]).unwrap().subvolumes[0];
        assert_eq!(
            describe(&dst, got, version >= 2),
            describe(&fs, s2.root, version >= 2)
        );
    }
}
