//! `arbor receive -f STREAM DIR` with DIR on an ordinary filesystem: the tree is
//! re-created there (the kernel's own streams, full then incremental), marked finished,
//! and an incremental stream without its parent is refused.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../arbor-send/tests/fixtures")
        .join(name)
}

/// Runs `arbor receive -q -f stream dir`; returns its exit code and stderr.
fn receive(stream: &Path, dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_arbor"))
        .args(["receive", "-q", "-f"])
        .arg(stream)
        .arg(dir)
        .output()
        .expect("run arbor");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn receive_into_a_plain_directory_recreates_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = receive(&fixture("kernel618_inc_v2.stream"), dir.path());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is not here: receive it first"), "{err}");
    if std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        != 0
    {
        eprintln!("note: the kernel's streams hold root-owned files and a device: needs root");
        return;
    }
    for s in ["kernel618_full_v2.stream", "kernel618_inc_v2.stream"] {
        let (code, err) = receive(&fixture(s), dir.path());
        assert_eq!(code, Some(0), "{s}: {err}");
        assert!(err.starts_with("received 1 subvolume(s), "), "{s}: {err}");
        assert_eq!(err.lines().count(), 1, "{s}: {err}");
    }
    let snap2 = dir.path().join("snap2");
    assert_eq!(std::fs::read(snap2.join("d/newfile")).unwrap(), b"new\n");
    assert_eq!(std::fs::metadata(snap2.join("hl")).unwrap().nlink(), 2);
    let mark = xattr::get(&snap2, "user.arbor.received").unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&mark).starts_with("766cf3a71f15bc48b73d1f37c2b6f7dd "),
        "{mark:?}"
    );
}
