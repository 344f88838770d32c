//! Reads of file data do not hold the engine's lock across disk I/O: while one thread
//! waits on a slow device read, other threads create files and commit. And blocks
//! freed by a commit are not reused while a read that looked them up is in flight.

use arbor_engine::MkfsOptions;
use arbor_engine::storage::{MemStorage, Storage};
use arbor_fs::{Caller, Fs, FsOptions, ROOT_INO};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Which device operation is slow once armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlowOp {
    /// Reads longer than 64 KiB (file data, not nodes).
    DataRead,
    /// Reads of exactly one 16 KiB node.
    NodeRead,
    Flush,
}

/// A memory device on which the next `op` after arming takes 600 ms, and signals
/// through `started` when it begins.
#[derive(Debug)]
struct Slow {
    inner: MemStorage,
    op: SlowOp,
    armed: AtomicBool,
    started: Barrier,
}

impl Slow {
    fn new(size: u64, op: SlowOp) -> Arc<Self> {
        Arc::new(Slow {
            inner: MemStorage::new(size),
            op,
            armed: AtomicBool::new(false),
            started: Barrier::new(2),
        })
    }

    fn maybe_wait(&self, op: SlowOp) {
        if op == self.op && self.armed.swap(false, Ordering::SeqCst) {
            self.started.wait();
            std::thread::sleep(Duration::from_millis(600));
        }
    }
}

impl Storage for Slow {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if buf.len() > 64 << 10 {
            self.maybe_wait(SlowOp::DataRead);
        } else if buf.len() == 16 << 10 {
            self.maybe_wait(SlowOp::NodeRead);
        }
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.inner.write_at(offset, buf)
    }
    fn flush(&self) -> io::Result<()> {
        self.maybe_wait(SlowOp::Flush);
        self.inner.flush()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

#[test]
fn a_slow_data_read_does_not_block_writers_or_commits() {
    let dev = Slow::new(64 << 20, SlowOp::DataRead);
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Arc::new(Fs::open(dev.clone(), &FsOptions::default()).unwrap());
    let who = Caller::default();
    let f = fs
        .create(ROOT_INO, b"big", 0o100644, 0, who, None)
        .unwrap()
        .ino;
    let data = vec![0x5au8; 1 << 20];
    fs.write_file(f, 0, &data, false).unwrap();
    // Fill the device, then free one MiB: later allocations have nowhere to go but
    // the blocks that get freed.
    let mut fillers = 0;
    loop {
        let name = format!("fill{fillers}");
        let Ok(g) = fs.create(ROOT_INO, name.as_bytes(), 0o100644, 0, who, None) else {
            break;
        };
        if fs
            .write_file(g.ino, 0, &vec![0xeeu8; 1 << 20], false)
            .is_err()
        {
            break;
        }
        fillers += 1;
    }
    assert!(fillers > 40, "{fillers} fillers");
    for i in 0..3 {
        fs.unlink(ROOT_INO, format!("fill{i}").as_bytes()).unwrap();
    }
    fs.sync().unwrap();
    fs.sync().unwrap();

    dev.armed.store(true, Ordering::SeqCst);
    let reader = {
        let fs = Arc::clone(&fs);
        std::thread::spawn(move || fs.read_file(f, 0, 1 << 20))
    };
    dev.started.wait();
    // The read is now inside the device. Changes and a commit go ahead meanwhile.
    let t = Instant::now();
    for i in 0..20 {
        fs.create(ROOT_INO, format!("f{i}").as_bytes(), 0o100644, 0, who, None)
            .unwrap();
    }
    // Overwrite the very blocks being read: the old ones are freed by this commit,
    // and must not be reused before the read is done.
    fs.write_file(f, 0, &vec![0x11u8; 1 << 20], false).unwrap();
    fs.sync().unwrap();
    // This may only take the old blocks if they were released too early.
    if let Ok(g) = fs.create(ROOT_INO, b"late", 0o100644, 0, who, None) {
        let _ = fs.write_file(g.ino, 0, &vec![0x22u8; 1 << 20], false);
        let _ = fs.write_file(g.ino, 1 << 20, &vec![0x22u8; 1 << 20], false);
    }
    let busy = t.elapsed();
    let got = reader.join().unwrap().unwrap();
    assert!(
        busy < Duration::from_millis(400),
        "writers waited for the reader's I/O: {busy:?}"
    );
    assert_eq!(got, data, "the read saw the data of its own moment");
    assert_eq!(fs.read_file(f, 0, 16).unwrap(), vec![0x11u8; 16]);
}

#[test]
fn lookups_and_reads_go_on_while_a_commit_flushes() {
    let dev = Slow::new(64 << 20, SlowOp::Flush);
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Arc::new(Fs::open(dev.clone(), &FsOptions::default()).unwrap());
    let who = Caller::default();
    let f = fs
        .create(ROOT_INO, b"f", 0o100644, 0, who, None)
        .unwrap()
        .ino;
    fs.write_file(f, 0, &vec![7u8; 100_000], false).unwrap();
    fs.sync().unwrap();
    fs.write_file(f, 0, b"changed", false).unwrap();
    dev.armed.store(true, Ordering::SeqCst);
    let committer = {
        let fs = Arc::clone(&fs);
        std::thread::spawn(move || fs.sync())
    };
    dev.started.wait();
    // The commit is inside its first flush.
    let t = Instant::now();
    for _ in 0..100 {
        assert_eq!(fs.lookup(ROOT_INO, b"f").unwrap().ino, f);
        assert_eq!(fs.read_file(f, 0, 7).unwrap(), b"changed");
        fs.getattr(f).unwrap();
        fs.readdir(ROOT_INO, 0, 10).unwrap();
    }
    let reads = t.elapsed();
    committer.join().unwrap().unwrap();
    assert!(
        reads < Duration::from_millis(300),
        "readers waited for the commit's flush: {reads:?}"
    );
    assert!(!fs.has_changes());
}

#[test]
fn a_lookup_waiting_for_a_cold_node_does_not_block_changes() {
    let dev = Slow::new(64 << 20, SlowOp::NodeRead);
    Fs::mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Fs::open(dev.clone(), &FsOptions::default()).unwrap();
    let who = Caller::default();
    let d = fs
        .create(ROOT_INO, b"d", 0o040755, 0, who, None)
        .unwrap()
        .ino;
    for i in 0..3000 {
        fs.create(d, format!("file-{i:05}").as_bytes(), 0o100644, 0, who, None)
            .unwrap();
    }
    fs.sync().unwrap();
    drop(fs);
    // A fresh mount: nothing cached. Warm the path to the root directory only.
    let fs = Arc::new(Fs::open(dev.clone(), &FsOptions::default()).unwrap());
    fs.getattr(ROOT_INO).unwrap();
    dev.armed.store(true, Ordering::SeqCst);
    let reader = {
        let fs = Arc::clone(&fs);
        std::thread::spawn(move || fs.lookup(d, b"file-02999"))
    };
    dev.started.wait();
    // The lookup is waiting for the device. A change goes ahead meanwhile.
    let t = Instant::now();
    fs.create(ROOT_INO, b"new", 0o100644, 0, who, None).unwrap();
    let took = t.elapsed();
    assert!(reader.join().unwrap().is_ok());
    assert!(
        took < Duration::from_millis(300),
        "the change waited for the lookup's disk read: {took:?}"
    );
}
