//! `arbor receive -f STREAM DIR` with DIR on an ordinary filesystem: the tree is
//! re-created there (the kernel's own streams, full then incremental), marked finished,
//! and an incremental stream without its parent is refused; a cut receive resumes.

use arbor_engine::storage::FileStorage;
use arbor_fs::{Caller, Fs, FsOptions, ROOT_INO};
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

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

/// Runs arbor with `args`; returns its exit code, stdout and stderr.
fn arbor(args: &[&OsStr]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_arbor"))
        .args(args)
        .output()
        .expect("run arbor");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&OsStr]) -> String {
    let (code, out, err) = arbor(args);
    assert_eq!(code, Some(0), "{args:?}: {err}");
    out
}

fn data(i: u32) -> Vec<u8> {
    (0..20_000u32)
        .map(|n| (n.wrapping_mul(31) ^ i.wrapping_mul(7919)) as u8)
        .collect()
}

/// An image with the read-only snapshot /snap of 30 files.
fn image(img: &Path) {
    ok(&[
        "mkfs".as_ref(),
        "--size".as_ref(),
        "64M".as_ref(),
        img.as_os_str(),
    ]);
    let dev = Arc::new(FileStorage::open(img).expect("open image"));
    let fs = Fs::open(dev, &FsOptions::default()).expect("open fs");
    let root = Caller {
        uid: 0,
        gid: 0,
        umask: 0o022,
    };
    let vol = fs.subvol_create(ROOT_INO, b"vol", root).unwrap();
    for i in 0..30 {
        let name = format!("f{i}");
        let f = fs
            .create(vol.root, name.as_bytes(), 0o100644, 0, root, None)
            .unwrap();
        fs.write_file(f.ino, 0, &data(i), false).unwrap();
    }
    fs.subvol_snapshot(vol.root, ROOT_INO, b"snap", true)
        .unwrap();
    fs.sync().unwrap();
}

/// A receive cut short prints how to resume it; `--resume-token` finds the token
/// (for DEST and for the partial directory), `send --resume` makes the rest, and
/// receiving it finishes the directory.
#[test]
fn a_cut_receive_into_a_plain_directory_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let (img, dest, whole, cut, rest) = (p("a.img"), p("dest"), p("whole"), p("cut"), p("rest"));
    image(&img);
    std::fs::create_dir(&dest).unwrap();
    let send = |extra: &[&OsStr], to: &Path| {
        let mut args: Vec<&OsStr> = vec!["send".as_ref(), "-q".as_ref(), "--image".as_ref()];
        args.extend([img.as_os_str(), "-f".as_ref(), to.as_os_str()]);
        args.extend(extra);
        args.push("/snap".as_ref());
        ok(&args);
    };
    send(&[], &whole);
    let bytes = std::fs::read(&whole).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (code, err) = receive(&cut, &dest);
    assert_eq!(code, Some(1), "{err}");
    let partial = dest.join("snap");
    assert!(
        err.contains(&format!(
            "what arrived is kept in the unfinished directory {}: resume with `arbor send --resume $(arbor receive --resume-token {}) SNAPSHOT",
            partial.display(),
            partial.display()
        )),
        "{err}"
    );
    let token = |at: &Path| {
        ok(&[
            "receive".as_ref(),
            "--resume-token".as_ref(),
            at.as_os_str(),
        ])
        .trim()
        .to_string()
    };
    let t = token(&dest);
    assert!(
        t.len() > 64 && t.bytes().all(|c| c.is_ascii_hexdigit()),
        "{t}"
    );
    assert_eq!(token(&partial), t);
    send(&["--resume".as_ref(), t.as_ref()], &rest);
    assert!(std::fs::metadata(&rest).unwrap().len() < bytes.len() as u64);
    let (code, err) = receive(&rest, &dest);
    assert_eq!(code, Some(0), "{err}");
    for i in 0..30 {
        let f = partial.join(format!("f{i}"));
        assert_eq!(std::fs::read(&f).unwrap(), data(i), "{}", f.display());
    }
    assert!(
        xattr::get(&partial, "user.arbor.received")
            .unwrap()
            .is_some()
    );
    assert!(!dest.join(".snap.arbor-partial").exists());
    let (code, _, err) = arbor(&[
        "receive".as_ref(),
        "--resume-token".as_ref(),
        dest.as_os_str(),
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no unfinished receive here"), "{err}");
}
