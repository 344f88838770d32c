//! Crash consistency of the filesystem: a workload of creates, writes, overwrites,
//! truncates, renames, unlinks (some of open files), mkdirs, and snapshots made and
//! deleted runs on a recording device, committing now and then (a deleted snapshot's
//! blocks are freed over several commits). Every sampled state a power cut could leave must
//! check clean (blocks, references, and the filesystem's own items), mount, free its
//! orphans, and hold exactly the files of the last commit or of the one in flight,
//! every byte readable through its checksums.

use arbor_engine::MkfsOptions;
use arbor_engine::storage::{CrashRecorder, MemStorage};
use arbor_fs::{Caller, Fs, FsOptions, ROOT_INO, RenameFlags, SetAttr};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Path (in the root or one subdirectory) to content.
type Model = BTreeMap<String, Vec<u8>>;

fn snapshot(fs: &Fs) -> Model {
    let mut m = Model::new();
    let mut dirs = vec![(ROOT_INO, String::new())];
    while let Some((dir, prefix)) = dirs.pop() {
        for d in fs.readdir(dir, 2, usize::MAX).expect("readdir") {
            let name = format!("{prefix}{}", String::from_utf8_lossy(&d.name));
            let inode = fs.getattr(d.ino).expect("getattr");
            if inode.is_dir() {
                m.insert(format!("{name}/"), Vec::new());
                dirs.push((d.ino, format!("{name}/")));
            } else {
                let data = fs
                    .read_file(d.ino, 0, inode.size as u32)
                    .unwrap_or_else(|e| panic!("reading {name}: {e}"));
                m.insert(name, data);
            }
        }
    }
    m
}

/// Snapshots made and deleted by a recorded workload.
#[derive(Default)]
struct SnapshotOps {
    made: usize,
    deleted: usize,
}

fn record(seed: u64, commits: usize) -> (Arc<CrashRecorder>, Vec<Model>, SnapshotOps) {
    let base = Arc::new(MemStorage::new(24 << 20));
    let opts = MkfsOptions {
        nodesize: Some(4096),
        ..Default::default()
    };
    Fs::mkfs(base.clone(), &opts).unwrap();
    let rec = Arc::new(CrashRecorder::new(base.to_bytes()));
    rec.mark("commit 0");
    let fs = Fs::open(rec.clone(), &FsOptions::default()).unwrap();
    let who = Caller::default();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut models = vec![snapshot(&fs)];
    let mut open_orphans = Vec::new();
    let mut snapshots: Vec<String> = Vec::new();
    let mut ops = SnapshotOps::default();
    let sub = fs
        .create(ROOT_INO, b"sub", 0o040755, 0, who, None)
        .unwrap()
        .ino;
    for c in 1..=commits {
        for _ in 0..rng.gen_range(1..12) {
            let (dir, dname) = if rng.gen_bool(0.3) {
                (sub, "sub/")
            } else {
                (ROOT_INO, "")
            };
            let name = format!("f{}", rng.gen_range(0..12));
            let existing = fs.lookup(dir, name.as_bytes()).ok();
            match rng.gen_range(0..100) {
                0..=39 => {
                    let ino = match &existing {
                        Some(i) => i.ino,
                        None => {
                            fs.create(dir, name.as_bytes(), 0o100644, 0, who, None)
                                .unwrap()
                                .ino
                        }
                    };
                    let size = fs.getattr(ino).unwrap().size;
                    let off = rng.gen_range(0..=size + 5000);
                    let len = [10usize, 3000, 5000, 70_000, 150_000][rng.gen_range(0..5)];
                    let data = vec![rng.r#gen::<u8>() | 1; len];
                    fs.write_file(ino, off, &data, false).unwrap();
                }
                40..=54 if existing.is_some() => {
                    let ino = existing.as_ref().unwrap().ino;
                    let set = SetAttr {
                        size: Some(rng.gen_range(0..200_000)),
                        ..Default::default()
                    };
                    fs.setattr(ino, &set).unwrap();
                }
                55..=69 if existing.is_some() => {
                    let ino = existing.as_ref().unwrap().ino;
                    if rng.gen_bool(0.3) {
                        fs.open_inode(ino).unwrap();
                        open_orphans.push(ino);
                    }
                    fs.unlink(dir, name.as_bytes()).unwrap();
                }
                70..=84 if existing.is_some() => {
                    let to = format!("f{}", rng.gen_range(0..12));
                    let new_dir = if rng.gen_bool(0.5) { sub } else { ROOT_INO };
                    let _ = fs.rename(
                        dir,
                        name.as_bytes(),
                        new_dir,
                        to.as_bytes(),
                        RenameFlags::default(),
                    );
                }
                85..=89 => {
                    let ino = open_orphans.pop();
                    if let Some(ino) = ino {
                        fs.release_inode(ino).unwrap();
                    }
                }
                90..=93 => {
                    let name = format!("snap{c}.{}", rng.gen_range(0..1000));
                    if fs.lookup(ROOT_INO, name.as_bytes()).is_err() {
                        fs.subvol_snapshot(ROOT_INO, ROOT_INO, name.as_bytes(), rng.gen_bool(0.5))
                            .unwrap();
                        snapshots.push(name);
                        ops.made += 1;
                    }
                }
                94..=96 if !snapshots.is_empty() => {
                    let name = snapshots.remove(rng.gen_range(0..snapshots.len()));
                    fs.subvol_delete(ROOT_INO, name.as_bytes()).unwrap();
                    ops.deleted += 1;
                }
                _ => {
                    let _ = dname;
                }
            }
        }
        fs.sync().unwrap();
        rec.mark(&format!("commit {c}"));
        models.push(snapshot(&fs));
    }
    (rec, models, ops)
}

fn verify(seed: u64, commits: usize, samples: usize) -> (usize, SnapshotOps) {
    let (rec, models, ops) = record(seed, commits);
    let done_at: Vec<usize> = rec.marks().into_iter().map(|(_, f)| f).collect();
    let mut states = 0;
    for state in rec.crash_states(seed, samples) {
        states += 1;
        let last = done_at
            .iter()
            .rposition(|&f| f <= state.flushes_done)
            .unwrap_or(0);
        let dev = Arc::new(MemStorage::from_bytes(state.image));
        let report = Fs::check_image(dev.clone());
        assert!(report.is_clean(), "{}: {report}", state.description);
        let fs = Fs::open(dev.clone(), &FsOptions::default())
            .unwrap_or_else(|e| panic!("{}: mount failed: {e}", state.description));
        let got = snapshot(&fs);
        let matches_old = got == models[last];
        let matches_new = models.get(last + 1) == Some(&got);
        assert!(
            matches_old || matches_new,
            "{}: files are neither commit {last} nor commit {}",
            state.description,
            last + 1
        );
        // Orphans were freed at mount; the result checks clean too.
        fs.sync().unwrap();
        let problems = fs.fsck().unwrap();
        assert!(problems.is_empty(), "{}: {problems:?}", state.description);
        drop(fs);
        let report = Fs::check_image(dev);
        assert!(
            report.is_clean(),
            "{} after mount: {report}",
            state.description
        );
    }
    (states, ops)
}

#[test]
fn every_crash_state_mounts_clean_with_the_old_or_the_new_files() {
    let seeds = if std::env::var("ARBOR_LONG").is_ok() {
        1..=30
    } else {
        1..=3
    };
    let (mut total, mut made, mut deleted) = (0, 0, 0);
    for seed in seeds {
        let (states, ops) = verify(seed, 12, 6);
        total += states;
        made += ops.made;
        deleted += ops.deleted;
    }
    eprintln!("{total} crash states verified; {made} snapshots made, {deleted} deleted");
    assert!(total >= 300, "only {total} crash states");
    assert!(
        made >= 2 && deleted >= 1,
        "{made} snapshots made, {deleted} deleted"
    );
}
