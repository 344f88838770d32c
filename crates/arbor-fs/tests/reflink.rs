//! `copy_range` (copy_file_range, reflinks): aligned copies share data extents and
//! take no new space; copies stay independent after writes; unaligned copies are
//! byte-exact; copies cross subvolumes but not into read-only ones.

mod common;

use common::{REG, assert_consistent, fs_on, who};

use arbor_fs::{Fs, FsError, ROOT_INO};
use proptest::prelude::*;

fn file(fs: &Fs, parent: u64, name: &str, data: &[u8]) -> u64 {
    let ino = fs
        .create(parent, name.as_bytes(), REG, 0, who(), None)
        .unwrap()
        .ino;
    if !data.is_empty() {
        fs.write_file(ino, 0, data, false).unwrap();
    }
    ino
}

fn all(fs: &Fs, ino: u64) -> Vec<u8> {
    fs.read_file(ino, 0, u32::MAX).unwrap()
}

fn pattern(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

#[test]
fn an_aligned_copy_shares_every_block_and_writes_stay_apart() {
    let (dev, fs) = fs_on(256 << 20);
    let data = pattern((16 << 20) + 1000, 1);
    let src = file(&fs, ROOT_INO, "src", &data);
    let dst = file(&fs, ROOT_INO, "dst", b"");
    fs.sync().unwrap();
    let free = fs.statfs().unwrap().blocks_free;
    assert_eq!(
        fs.copy_range(src, 0, dst, 0, u64::MAX).unwrap(),
        data.len() as u64
    );
    fs.sync().unwrap();
    let used = free - fs.statfs().unwrap().blocks_free;
    assert!(used < 16, "a 16 MiB reflink took {used} blocks");
    assert!(all(&fs, dst) == data);
    assert_eq!(
        fs.getattr(dst).unwrap().nbytes,
        fs.getattr(src).unwrap().nbytes
    );

    fs.write_file(dst, 4096 * 3 + 5, b"copy only", false)
        .unwrap();
    fs.write_file(src, 1 << 20, b"source only", false).unwrap();
    let (mut want_src, mut want_dst) = (data.clone(), data.clone());
    want_dst[4096 * 3 + 5..4096 * 3 + 14].copy_from_slice(b"copy only");
    want_src[1 << 20..(1 << 20) + 11].copy_from_slice(b"source only");
    assert!(all(&fs, src) == want_src);
    assert!(all(&fs, dst) == want_dst);
    fs.unlink(ROOT_INO, b"src").unwrap();
    assert!(all(&fs, dst) == want_dst, "the copy outlives its source");
    assert_consistent(&dev, &fs);
}

#[test]
fn copies_cross_subvolumes_but_not_into_read_only_ones() {
    let (dev, fs) = fs_on(64 << 20);
    let data = pattern(300_000, 2);
    let src = file(&fs, ROOT_INO, "src", &data);
    let snap = fs.subvol_snapshot(ROOT_INO, ROOT_INO, b"ro", true).unwrap();
    let vol = fs.subvol_create(ROOT_INO, b"vol", who()).unwrap();
    let in_snap = fs.lookup(snap.root, b"src").unwrap().ino;
    let dst = file(&fs, vol.root, "dst", b"");
    assert_eq!(fs.copy_range(in_snap, 0, dst, 0, 1 << 30).unwrap(), 300_000);
    assert!(all(&fs, dst) == data);
    assert!(matches!(
        fs.copy_range(src, 0, in_snap, 0, 10),
        Err(FsError::ReadOnly(_))
    ));
    assert_consistent(&dev, &fs);
}

#[derive(Debug, Clone)]
struct Case {
    src_len: usize,
    dst_len: usize,
    src_off: u64,
    dst_off: u64,
    len: u64,
    same_file: bool,
}

fn case() -> impl Strategy<Value = Case> {
    let off = prop_oneof![(0u64..64).prop_map(|b| b * 4096), 0u64..300_000,];
    (
        0usize..300_000,
        0usize..300_000,
        off.clone(),
        off,
        prop_oneof![
            (1u64..40).prop_map(|b| b * 4096),
            1u64..200_000,
            Just(u64::MAX)
        ],
        any::<bool>(),
    )
        .prop_map(
            |(src_len, dst_len, src_off, dst_off, len, same_file)| Case {
                src_len,
                dst_len,
                src_off,
                dst_off,
                len,
                same_file,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if std::env::var_os("ARBOR_LONG").is_some() { 1000 } else { 64 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn copies_match_a_byte_model_at_any_offsets(c in case()) {
        let (dev, fs) = fs_on(64 << 20);
        let src_data = pattern(c.src_len, 3);
        let src = file(&fs, ROOT_INO, "src", &src_data);
        let (dst, mut model) = if c.same_file {
            (src, src_data.clone())
        } else {
            let d = pattern(c.dst_len, 4);
            (file(&fs, ROOT_INO, "dst", &d), d)
        };
        let n = c.len.min((c.src_len as u64).saturating_sub(c.src_off));
        let overlap = c.same_file && n > 0
            && c.src_off < c.dst_off + n && c.dst_off < c.src_off + n;
        let r = fs.copy_range(src, c.src_off, dst, c.dst_off, c.len);
        if overlap {
            prop_assert!(matches!(r, Err(FsError::Invalid(_))), "{r:?}");
        } else {
            prop_assert_eq!(r.unwrap(), n);
            let (so, dof, n) = (c.src_off as usize, c.dst_off as usize, n as usize);
            if n > 0 {
                if model.len() < dof + n {
                    model.resize(dof + n, 0);
                }
                model[dof..dof + n].copy_from_slice(&src_data[so..so + n]);
            }
        }
        prop_assert!(all(&fs, dst) == model);
        if !c.same_file {
            prop_assert!(all(&fs, src) == src_data);
        }
        // Later writes do not leak from one file to the other.
        fs.write_file(dst, 0, b"XYZ", false).unwrap();
        if model.len() < 3 { model.resize(3, 0); }
        model[..3].copy_from_slice(b"XYZ");
        prop_assert!(all(&fs, dst) == model);
        if !c.same_file {
            prop_assert!(all(&fs, src) == src_data);
        }
        assert_consistent(&dev, &fs);
    }
}
