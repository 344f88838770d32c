//! The data path against a model: random writes, truncates, punches, zero ranges and
//! preallocations on one file, compared byte for byte with a `Vec<u8>` after every
//! step, across commits and reopens, with the checker run at the end.

use arbor_engine::storage::MemStorage;
use arbor_engine::{MkfsOptions, check_with};
use arbor_fs::{Caller, FallocMode, Fs, FsDataRefs, FsOptions, ROOT_INO, SetAttr};
use proptest::prelude::*;
use std::sync::Arc;

#[derive(Clone, Debug)]
enum Op {
    Write { off: u64, len: usize, seed: u8 },
    Truncate(u64),
    Punch { off: u64, len: u64 },
    Zero { off: u64, len: u64, keep: bool },
    Alloc { off: u64, len: u64, keep: bool },
    Commit,
    Reopen,
}

/// Offsets cluster around block and extent boundaries, where the bugs live.
fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..10_000,
        (0u64..40).prop_map(|b| b * 4096),
        (0u64..40, 0u64..4096).prop_map(|(b, o)| b * 4096 + o),
        (1u64..4, -3i64..3).prop_map(|(m, d)| ((m << 20) as i64 + d) as u64),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (offset(), 1usize..20_000, any::<u8>()).prop_map(|(off, len, seed)| Op::Write { off, len, seed }),
        1 => (offset(), 1usize..1_200_000, any::<u8>()).prop_map(|(off, len, seed)| Op::Write { off, len, seed }),
        2 => offset().prop_map(Op::Truncate),
        2 => (offset(), 1u64..100_000).prop_map(|(off, len)| Op::Punch { off, len }),
        1 => (offset(), 1u64..100_000, any::<bool>()).prop_map(|(off, len, keep)| Op::Zero { off, len, keep }),
        1 => (offset(), 1u64..100_000, any::<bool>()).prop_map(|(off, len, keep)| Op::Alloc { off, len, keep }),
        1 => Just(Op::Commit),
        1 => Just(Op::Reopen),
    ]
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

fn new_fs(dev: &Arc<MemStorage>, nodesize: u32) -> Fs {
    let opts = MkfsOptions {
        nodesize: Some(nodesize),
        ..Default::default()
    };
    Fs::mkfs(dev.clone(), &opts).expect("mkfs");
    Fs::open(dev.clone(), &FsOptions::default()).expect("open")
}

/// A fresh 64 MiB filesystem with one empty file.
fn one_file() -> (Arc<MemStorage>, Fs, u64) {
    let dev = Arc::new(MemStorage::new(64 << 20));
    let fs = new_fs(&dev, 16384);
    let ino = fs
        .create(ROOT_INO, b"f", 0o100644, 0, Caller::default(), None)
        .unwrap()
        .ino;
    (dev, fs, ino)
}

fn run(ops: Vec<Op>, nodesize: u32) -> Result<(), TestCaseError> {
    let dev = Arc::new(MemStorage::new(128 << 20));
    let mut fs = new_fs(&dev, nodesize);
    let who = Caller::default();
    let ino = fs
        .create(ROOT_INO, b"f", 0o100644, 0, who, None)
        .expect("create")
        .ino;
    let mut model: Vec<u8> = Vec::new();
    for op in ops {
        match op {
            Op::Write { off, len, seed } => {
                let data = pattern(len, seed);
                fs.write_file(ino, off, &data, false).expect("write");
                let end = off as usize + len;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[off as usize..end].copy_from_slice(&data);
            }
            Op::Truncate(size) => {
                let set = SetAttr {
                    size: Some(size),
                    ..Default::default()
                };
                fs.setattr(ino, &set).expect("truncate");
                model.resize(size as usize, 0);
            }
            Op::Punch { off, len } => {
                let m = FallocMode {
                    keep_size: true,
                    punch_hole: true,
                    zero_range: false,
                };
                fs.fallocate(ino, off, len, m).expect("punch");
                let end = ((off + len) as usize).min(model.len());
                if (off as usize) < end {
                    model[off as usize..end].fill(0);
                }
            }
            Op::Zero { off, len, keep } => {
                let m = FallocMode {
                    keep_size: keep,
                    punch_hole: false,
                    zero_range: true,
                };
                fs.fallocate(ino, off, len, m).expect("zero range");
                zero_model(&mut model, off, len, keep);
            }
            Op::Alloc { off, len, keep } => {
                let m = FallocMode {
                    keep_size: keep,
                    ..Default::default()
                };
                fs.fallocate(ino, off, len, m).expect("fallocate");
                if !keep && model.len() < (off + len) as usize {
                    model.resize((off + len) as usize, 0);
                }
            }
            Op::Commit => fs.sync().expect("commit"),
            Op::Reopen => {
                fs.sync().expect("commit");
                drop(fs);
                fs = Fs::open(dev.clone(), &FsOptions::default()).expect("reopen");
            }
        }
        let attr = fs.getattr(ino).expect("getattr");
        prop_assert_eq!(attr.size, model.len() as u64);
        let got = fs.read_file(ino, 0, u32::MAX).expect("read");
        if got != model {
            let at = got.iter().zip(&model).position(|(a, b)| a != b);
            return Err(TestCaseError::fail(format!(
                "content differs at {at:?} (len {} vs {})",
                got.len(),
                model.len()
            )));
        }
    }
    fs.sync().expect("commit");
    let problems = fs.fsck().expect("fsck");
    prop_assert!(problems.is_empty(), "fsck: {:?}", problems);
    drop(fs);
    let r = check_with(&*dev, Some(&FsDataRefs));
    prop_assert!(r.is_clean(), "checker:\n{}", r);
    Ok(())
}

fn zero_model(model: &mut Vec<u8>, off: u64, len: u64, keep: bool) {
    let end = (off + len) as usize;
    if !keep && model.len() < end {
        model.resize(end, 0);
    }
    let e = end.min(model.len());
    if (off as usize) < e {
        model[off as usize..e].fill(0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if std::env::var("ARBOR_LONG").is_ok() { 2000 } else { 64 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn file_content_matches_a_model_through_every_operation(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops, 16384)?;
    }

    #[test]
    fn file_content_matches_a_model_with_small_nodes(ops in proptest::collection::vec(op(), 1..30)) {
        run(ops, 4096)?;
    }
}

#[test]
fn a_flipped_data_bit_is_an_io_error_not_wrong_bytes() {
    let (dev, fs, ino) = one_file();
    // Every block distinct, so that the one to damage can be found on the device.
    let data: Vec<u8> = (0..64u32 << 10)
        .map(|i| (i / 4096) as u8 ^ (i as u8).wrapping_mul(7))
        .collect();
    fs.write_file(ino, 0, &data, false).unwrap();
    fs.sync().unwrap();
    drop(fs);
    // Find the data on the device and flip one bit in its third block.
    let image = dev.to_bytes();
    let at = image
        .windows(4096)
        .step_by(4096)
        .position(|w| w == &data[8192..12288])
        .expect("data block on the device")
        * 4096;
    let mut bad = image.clone();
    bad[at + 100] ^= 0x10;
    let dev = Arc::new(MemStorage::from_bytes(bad));
    let fs = Fs::open(dev, &FsOptions::default()).unwrap();
    let err = fs.read_file(ino, 0, 1 << 20).unwrap_err();
    assert!(
        matches!(err, arbor_fs::FsError::Checksum { offset: 8192, .. }),
        "{err}"
    );
    // Blocks before the damage still read.
    assert_eq!(fs.read_file(ino, 0, 8192).unwrap(), &data[..8192]);
}

#[test]
fn seek_data_and_hole_follow_the_extents() {
    let (_dev, fs, ino) = one_file();
    fs.write_file(ino, 1 << 20, &pattern(8192, 1), false)
        .unwrap();
    let m = FallocMode {
        keep_size: false,
        ..Default::default()
    };
    fs.fallocate(ino, 2 << 20, 4096, m).unwrap();
    assert_eq!(fs.seek(ino, 0, true).unwrap(), 1 << 20);
    assert_eq!(fs.seek(ino, 0, false).unwrap(), 0);
    assert_eq!(
        fs.seek(ino, (1 << 20) + 5, false).unwrap(),
        (1 << 20) + 8192
    );
    // A preallocated extent reads as a hole, up to the end of the file.
    assert_eq!(
        fs.seek(ino, (1 << 20) + 8192, false).unwrap(),
        (1 << 20) + 8192
    );
    assert!(fs.seek(ino, (1 << 20) + 8192, true).is_err());
    assert!(fs.seek(ino, 3 << 20, true).is_err());
}
