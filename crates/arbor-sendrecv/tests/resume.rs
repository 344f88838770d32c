//! An interrupted receive resumes where it stopped: a stream cut anywhere, or a
//! crash with commits going on meanwhile, leaves an unfinished subvolume with a resume
//! token; `send` with that token makes only the rest of the stream, and receiving it
//! finishes the subvolume exactly as an uninterrupted receive would have. A resume
//! that does not fit (another snapshot, other options, a changed partial subvolume)
//! is refused, and the partial result is never taken for a finished snapshot.

mod common;

use arbor_engine::MkfsOptions;
use arbor_engine::storage::MemStorage;
use arbor_fs::ino::Loc;
use arbor_fs::{Fs, FsOptions, ROOT_INO};
use arbor_sendrecv::{ResumeToken, SendOptions, receive, send_full, send_incremental};
use common::{describe, pattern, who};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn new_fs() -> (Arc<MemStorage>, Fs) {
    let dev = Arc::new(MemStorage::new(256 << 20));
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Fs::open(dev.clone(), &FsOptions::default()).unwrap();
    (dev, fs)
}

/// A subvolume with directories, files big and small, links and xattrs; snapshots
/// s1, then (after changes) s2.
fn source() -> (Fs, u64, u64) {
    let (_, fs) = new_fs();
    let vol = fs.subvol_create(ROOT_INO, b"vol", who()).unwrap().root;
    for d in 0..8 {
        let dir = fs
            .create(vol, format!("d{d}").as_bytes(), 0o040755, 0, who(), None)
            .unwrap()
            .ino;
        for f in 0..12 {
            let ino = fs
                .create(dir, format!("f{f}").as_bytes(), 0o100644, 0, who(), None)
                .unwrap()
                .ino;
            let len = if f == 0 { 300_000 } else { 100 + f * 500 };
            fs.write_file(ino, 0, &pattern(len, d * 100 + f as u32), false)
                .unwrap();
            if f == 3 {
                fs.setxattr(ino, b"user.k", b"v", Default::default())
                    .unwrap();
                fs.link(ino, vol, format!("hl{d}").as_bytes()).unwrap();
            }
        }
    }
    let s1 = fs.subvol_snapshot(vol, ROOT_INO, b"s1", true).unwrap().root;
    let d0 = fs.lookup(vol, b"d0").unwrap().ino;
    fs.rename(vol, b"d1", d0, b"moved", Default::default())
        .unwrap();
    let f = fs.lookup(d0, b"f0").unwrap().ino;
    fs.write_file(f, 100_000, &pattern(200_000, 77), false)
        .unwrap();
    for i in 0..20 {
        let ino = fs
            .create(d0, format!("new{i}").as_bytes(), 0o100600, 0, who(), None)
            .unwrap()
            .ino;
        fs.write_file(ino, 0, &pattern(5000, i), false).unwrap();
    }
    let s2 = fs.subvol_snapshot(vol, ROOT_INO, b"s2", true).unwrap().root;
    (fs, s1, s2)
}

fn opts(version: u32, resume: Option<ResumeToken>) -> SendOptions {
    SendOptions {
        version,
        resume,
        ..Default::default()
    }
}

fn full(fs: &Fs, root: u64, name: &[u8], o: SendOptions) -> Vec<u8> {
    let mut out = Vec::new();
    send_full(fs, root, name, &mut out, o).unwrap();
    out
}

fn inc(fs: &Fs, parent: u64, root: u64, name: &[u8], o: SendOptions) -> Vec<u8> {
    let mut out = Vec::new();
    send_incremental(fs, parent, root, name, &mut out, o).unwrap();
    out
}

/// The token of the unfinished receive `name` in the top level of `fs`.
fn token(fs: &Fs, name: &[u8]) -> ResumeToken {
    let ino = fs.lookup(ROOT_INO, name).unwrap().ino;
    let id = Loc::of(ino).unwrap().subvol;
    let info = fs.subvol_info(id).unwrap();
    assert!(!info.item.read_only() && info.item.received_uuid == [0; 16]);
    let p = fs
        .receive_progress(id)
        .unwrap()
        .expect("an unfinished receive has a resume token");
    ResumeToken::from_progress(&p)
}

fn is_finished(fs: &Fs, name: &[u8]) -> bool {
    let ino = fs.lookup(ROOT_INO, name).unwrap().ino;
    let id = Loc::of(ino).unwrap().subvol;
    fs.subvol_info(id).unwrap().item.read_only() && fs.receive_progress(id).unwrap().is_none()
}

#[test]
fn a_cut_stream_resumes_where_it_stopped_and_sends_only_the_rest() {
    let (src, s1, s2) = source();
    for version in [1, 2] {
        let stream = full(&src, s1, b"s1", opts(version, None));
        for cut in [200, stream.len() / 3, stream.len() / 2, stream.len() - 10] {
            let (_, dst) = new_fs();
            assert!(receive(&dst, ROOT_INO, &stream[..cut]).is_err());
            dst.sync().unwrap();
            assert!(!is_finished(&dst, b"s1"));
            let t = token(&dst, b"s1");
            let again = ResumeToken::parse(&t.to_string()).unwrap();
            assert_eq!(again, t);
            let rest = full(&src, s1, b"s1", opts(version, Some(again)));
            // Only what had not arrived goes again: at most the command that was
            // cut, and a few headers.
            let chunk = if version == 1 { 48 << 10 } else { 128 << 10 };
            assert!(
                rest.len() < stream.len() - cut + chunk + 4096,
                "cut {cut}: {} of {}",
                rest.len(),
                stream.len()
            );
            let got =
                receive(&dst, ROOT_INO, &rest[..]).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            assert_eq!(
                describe(&dst, got.subvolumes[0], true),
                describe(&src, s1, true)
            );
            assert!(is_finished(&dst, b"s1"));
            assert!(dst.fsck().unwrap().is_empty());
            // The finished subvolume is a parent for the next incremental stream.
            let next = inc(&src, s1, s2, b"s2", opts(version, None));
            let got = receive(&dst, ROOT_INO, &next[..]).unwrap();
            assert_eq!(
                describe(&dst, got.subvolumes[0], true),
                describe(&src, s2, true)
            );
        }
    }
}

#[test]
fn a_cut_incremental_stream_resumes_too() {
    let (src, s1, s2) = source();
    let base = full(&src, s1, b"s1", opts(2, None));
    let stream = inc(&src, s1, s2, b"s2", opts(2, None));
    for cut in [stream.len() / 4, stream.len() / 2, stream.len() - 20] {
        let (_, dst) = new_fs();
        receive(&dst, ROOT_INO, &base[..]).unwrap();
        assert!(receive(&dst, ROOT_INO, &stream[..cut]).is_err());
        dst.sync().unwrap();
        let t = token(&dst, b"s2");
        // Resuming needs the same parent.
        let mut out = Vec::new();
        let e = send_full(&src, s2, b"s2", &mut out, opts(2, Some(t))).unwrap_err();
        assert!(e.to_string().contains("another parent"), "{e}");
        let rest = inc(&src, s1, s2, b"s2", opts(2, Some(t)));
        let got = receive(&dst, ROOT_INO, &rest[..]).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert_eq!(
            describe(&dst, got.subvolumes[0], true),
            describe(&src, s2, true)
        );
    }
}

/// A stream that arrives in small pieces, slowly, as from a network.
struct Slow<'a>(&'a [u8]);

impl std::io::Read for Slow<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(std::time::Duration::from_micros(50));
        let n = buf.len().min(8192).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn a_crash_during_a_receive_with_commits_going_on_resumes_from_the_last_commit() {
    let (src, s1, _) = source();
    let stream = full(&src, s1, b"s1", opts(2, None));
    let mut resumed = 0;
    for cut in [stream.len() / 3, stream.len() * 2 / 3, stream.len() - 1] {
        let (dev, dst) = new_fs();
        // Commits race the receive, as a mounted filesystem's periodic commit does.
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    dst.sync().unwrap();
                    std::thread::yield_now();
                }
            });
            let _ = receive(&dst, ROOT_INO, Slow(&stream[..cut]));
            stop.store(true, Ordering::Relaxed);
        });
        // The power goes: only what the last commit made durable is there.
        drop(dst);
        let dst = Fs::open(dev, &FsOptions::default()).unwrap();
        assert!(dst.fsck().unwrap().is_empty());
        let Ok(entry) = dst.lookup(ROOT_INO, b"s1") else {
            // Nothing was committed yet: receive from the start.
            continue;
        };
        let _ = entry;
        let t = token(&dst, b"s1");
        let rest = full(&src, s1, b"s1", opts(2, Some(t)));
        let got = receive(&dst, ROOT_INO, &rest[..]).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert_eq!(
            describe(&dst, got.subvolumes[0], true),
            describe(&src, s1, true)
        );
        resumed += 1;
    }
    assert_eq!(resumed, 3, "a commit happened during every receive");
}

#[test]
fn a_resume_that_does_not_fit_is_refused() {
    let (src, s1, s2) = source();
    let stream = full(&src, s1, b"s1", opts(2, None));
    let (_, dst) = new_fs();
    assert!(receive(&dst, ROOT_INO, &stream[..stream.len() / 2]).is_err());
    dst.sync().unwrap();
    let t = token(&dst, b"s1");
    // Another snapshot.
    let mut out = Vec::new();
    let e = send_full(&src, s2, b"s1", &mut out, opts(2, Some(t))).unwrap_err();
    assert!(e.to_string().contains("another snapshot"), "{e}");
    // Another stream version.
    let e = send_full(&src, s1, b"s1", Vec::new(), opts(1, Some(t))).unwrap_err();
    assert!(e.to_string().contains("--proto 2"), "{e}");
    // A token that claims other commands were applied.
    let mut forged = t;
    forged.digest ^= 1;
    let e = send_full(&src, s1, b"s1", Vec::new(), opts(2, Some(forged))).unwrap_err();
    assert!(e.to_string().contains("not those this send makes"), "{e}");
    // A stream that resumes at another point than the receive stopped.
    let mut early = t;
    early.applied -= 1;
    let mut out = Vec::new();
    // (the sender cannot check this digest; the receiver refuses the count)
    let _ = send_full(&src, s1, b"s1", &mut out, opts(2, Some(early)));
    if !out.is_empty() {
        let e = receive(&dst, ROOT_INO, &out[..]).unwrap_err().to_string();
        assert!(
            e.contains("stopped after") || e.contains("ended before"),
            "{e}"
        );
    }
    // A full stream of the same snapshot does not resume: the name is taken.
    let e = receive(&dst, ROOT_INO, &stream[..])
        .unwrap_err()
        .to_string();
    assert!(e.contains("command #0 (subvol)"), "{e}");
    // A partial subvolume changed since it stopped is not resumed.
    let partial = dst.lookup(ROOT_INO, b"s1").unwrap().ino;
    dst.create(partial, b"intruder", 0o100644, 0, who(), None)
        .unwrap();
    dst.sync().unwrap();
    let rest = full(&src, s1, b"s1", opts(2, Some(t)));
    let e = receive(&dst, ROOT_INO, &rest[..]).unwrap_err().to_string();
    assert!(e.contains("changed since its receive stopped"), "{e}");
    assert!(!is_finished(&dst, b"s1"));
}
