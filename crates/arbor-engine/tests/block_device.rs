//! The file backend works unchanged on a block device: a loop device over a sparse
//! file gets mkfs, a workload with a clone, a reopen and a clean check.

mod common;
use arbor_engine::storage::FileStorage;
use arbor_engine::{Config, Engine, MkfsOptions, check};
use common::*;
use std::process::Command;
use std::sync::Arc;

/// A loop device that is detached when dropped.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

#[test]
fn engine_runs_on_a_loop_block_device() {
    if !is_root() {
        eprintln!("skipped: attaching a loop device needs root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dev.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(96 << 20)
        .unwrap();
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "losetup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = Loop(String::from_utf8_lossy(&out.stdout).trim().to_string());
    let path = std::path::Path::new(&dev.0);

    let storage = Arc::new(FileStorage::open(path).unwrap());
    assert_eq!(
        arbor_engine::storage::Storage::len(&*storage).unwrap(),
        96 << 20
    );
    let mut e =
        Engine::create(storage.clone(), &MkfsOptions::default(), Config::default()).unwrap();
    e.create_tree(5).unwrap();
    for i in 0..20_000 {
        e.insert(5, key(i), &i.to_le_bytes()).unwrap();
    }
    e.clone_tree(5, 6).unwrap();
    e.insert(6, key(3), b"changed").unwrap();
    e.commit().unwrap();
    let want = snapshot(&e);
    drop(e);

    let storage = Arc::new(FileStorage::open(path).unwrap());
    let report = check(&*storage);
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.trees, 2);
    let e = Engine::open(storage, Config::default()).unwrap();
    assert_same(&snapshot(&e), &want, "after reopening the block device");
}
