//! Durability: fsync and syncfs are durable when they return, everything else within
//! the commit interval, and a kill -9 of the daemon never damages the image.

use crate::harness::Mount;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

#[test]
fn fsync_of_a_file_or_directory_is_durable_and_unsynced_changes_wait_for_the_commit() {
    // A commit interval of an hour: only fsync, fdatasync and syncfs commit.
    let mut m = Mount::new("256M", "commit=3600");
    let mut a = File::create(m.path("fsynced")).unwrap();
    a.write_all(&vec![1u8; 3 << 20]).unwrap();
    a.sync_all().unwrap();
    let mut b = File::create(m.path("fdatasynced")).unwrap();
    b.write_all(b"fdatasync").unwrap();
    b.sync_data().unwrap();
    std::fs::create_dir(m.path("dir")).unwrap();
    // `arbor sync` commits everything (it fsyncs the mount's root directory).
    crate::harness::ok(
        crate::harness::arbor()
            .arg("sync")
            .arg(&m.mnt)
            .output()
            .unwrap(),
        "arbor sync",
    );
    std::fs::write(m.path("unsynced"), b"lost").unwrap();
    m.kill9();
    assert!(m.check().contains("no problems found"));
    m.mount("");
    assert_eq!(
        std::fs::read(m.path("fsynced")).unwrap(),
        vec![1u8; 3 << 20]
    );
    assert_eq!(std::fs::read(m.path("fdatasynced")).unwrap(), b"fdatasync");
    assert!(m.path("dir").is_dir());
    // Nothing committed it: it is gone, and that is the promised window.
    assert!(!m.path("unsynced").exists());
}

#[test]
fn the_periodic_commit_bounds_what_a_crash_loses() {
    let mut m = Mount::new("256M", "commit=1");
    std::fs::write(m.path("a"), b"committed by the timer").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    m.kill9();
    m.mount("");
    assert_eq!(
        std::fs::read(m.path("a")).unwrap(),
        b"committed by the timer"
    );
}

/// Writers create, append, rename and delete files; the daemon dies mid-way. The
/// image must check clean, mount, and hold every file that was fsynced.
#[test]
fn kill_9_during_a_write_workload_leaves_a_clean_image() {
    let rounds = if std::env::var("ARBOR_LONG").is_ok() {
        20
    } else {
        3
    };
    for round in 0..rounds {
        let mut m = Mount::new("512M", "commit=1");
        let stop = Arc::new(AtomicBool::new(false));
        let synced = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::new();
        for w in 0..2u64 {
            let (stop, synced) = (Arc::clone(&stop), Arc::clone(&synced));
            let dir = m.path(&format!("w{w}"));
            workers.push(std::thread::spawn(move || {
                let _ = std::fs::create_dir(&dir);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let r = (|| -> std::io::Result<()> {
                        let p = dir.join(format!("f{i}"));
                        let mut f = File::create(&p)?;
                        f.write_all(&vec![(i % 251) as u8; 1000 + (i as usize * 7919) % 300_000])?;
                        if i.is_multiple_of(5) {
                            f.sync_all()?;
                            synced.fetch_max(w << 32 | i, Ordering::Relaxed);
                        }
                        if i % 7 == 3 {
                            std::fs::rename(&p, dir.join(format!("r{i}")))?;
                        }
                        if i % 11 == 4 && i > 20 {
                            let _ = std::fs::remove_file(dir.join(format!("f{}", i - 20)));
                        }
                        let mut log = OpenOptions::new()
                            .append(true)
                            .create(true)
                            .open(dir.join("log"))?;
                        writeln!(log, "entry {i}")?;
                        Ok(())
                    })();
                    if r.is_err() {
                        break;
                    }
                    i += 1;
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(700 + (round % 4) * 600));
        m.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        let report = m.check();
        assert!(
            report.contains("no problems found"),
            "round {round}: {report}"
        );
        m.mount("");
        let last = synced.load(Ordering::Relaxed);
        if last > 0 {
            let (w, i) = (last >> 32, last & 0xffff_ffff);
            let dir = m.path(&format!("w{w}"));
            let f = if i % 7 == 3 {
                format!("r{i}")
            } else {
                format!("f{i}")
            };
            let got = std::fs::read(dir.join(&f));
            // A later rename or delete may have been committed too.
            if let Ok(got) = got {
                assert_eq!(got.len(), 1000 + (i as usize * 7919) % 300_000, "{f}");
                assert!(got.iter().all(|&b| b == (i % 251) as u8), "{f}");
            }
        }
        // The tree is usable after the crash.
        std::fs::write(m.path("after"), b"ok").unwrap();
        m.umount();
        assert!(m.check().contains("no problems found"));
    }
}
