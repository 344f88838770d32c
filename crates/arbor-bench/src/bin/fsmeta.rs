//! `fsmeta`: the metadata workload of `scripts/bench-fs.sh`. One phase per call, so
//! that the script can time each phase on its own (adding its own sync) and remount the
//! filesystem between them:
//!
//! ```text
//! fsmeta create --dir MNT/meta --files 100000 --dirs 10 --size 1024
//! fsmeta stat   --dir MNT/meta --files 100000 --dirs 10 --size 1024
//! fsmeta unlink --dir MNT/meta --files 100000 --dirs 10
//! fsmeta roundtrip --dir MNT/rtt --files 50000
//! ```
//!
//! The files are `d{k}/f{i}` under `--dir`, spread evenly over `--dirs` directories,
//! visited in the same order by every phase. Single-threaded: one syscall after the
//! other, as a program walking a tree would issue them. Prints the phase, the file
//! count and its own elapsed time on stdout (`Create 100000 files 1.234567 s`).
//!
//! `roundtrip` measures the cost of one synchronous request instead: it creates (or
//! reuses) the file `--dir/rtt.probe`, opens it read-only and calls `fstat` on it
//! `--files` times. On a FUSE mount with `-o attr_timeout=0` every call is one GETATTR
//! request, a round trip to a daemon that has next to nothing to do. It prints the
//! call count, the time of the `fstat` loop alone and the mean per call
//! (`Roundtrip 50000 calls 1.234567 s mean 24.691 us/call, fastest of 10 batches 9.876 us/call`).

use anyhow::{Context, Result, ensure};
use clap::{Parser, ValueEnum};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Creates, stats or unlinks many small files, for timing a filesystem's metadata path;
/// or times `fstat` of one open file (`roundtrip`).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// What to do with the files.
    phase: Phase,
    /// The directory that holds the file tree (created by `create`, removed by `unlink`;
    /// for `roundtrip`, where `rtt.probe` is made, the directory created if needed).
    #[arg(long)]
    dir: PathBuf,
    /// Number of files (for `roundtrip`: of `fstat` calls).
    #[arg(long, default_value_t = 100_000)]
    files: u64,
    /// Number of directories the files are spread over.
    #[arg(long, default_value_t = 10)]
    dirs: u64,
    /// Bytes written into every file by `create` (and checked by `stat`).
    #[arg(long, default_value_t = 1024)]
    size: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// Make the directories, then create every file and write `--size` bytes into it.
    Create,
    /// `lstat` every file and check its size.
    Stat,
    /// Unlink every file, then remove the directories and `--dir` itself.
    Unlink,
    /// Create (or reuse) `--dir/rtt.probe`, open it read-only and `fstat` it `--files`
    /// times: the cost of one synchronous request.
    Roundtrip,
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.dirs >= 1, "--dirs must be at least 1");
    if args.phase == Phase::Roundtrip {
        ensure!(args.files >= 1, "--files must be at least 1");
        let (total, best_us) = roundtrip(&args)?;
        let secs = total.as_secs_f64();
        // u64 -> f64 is exact up to 2^53 calls, far beyond any run.
        #[allow(clippy::cast_precision_loss)]
        let mean_us = secs * 1e6 / args.files as f64;
        println!(
            "{:?} {} calls {secs:.6} s mean {mean_us:.3} us/call, fastest of {ROUNDTRIP_BATCHES} batches {best_us:.3} us/call",
            args.phase, args.files
        );
        return Ok(());
    }
    let start = Instant::now();
    match args.phase {
        Phase::Create => create(&args)?,
        Phase::Stat => stat(&args)?,
        Phase::Unlink => unlink(&args)?,
        Phase::Roundtrip => unreachable!("handled above"),
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{:?} {} files {secs:.6} s", args.phase, args.files);
    Ok(())
}

/// Directory number `k`; files `0..per` live in `d0`, the next `per` in `d1`, and so on.
fn dir_of(args: &Args, k: u64) -> PathBuf {
    args.dir.join(format!("d{k}"))
}

/// Calls `f` with the path of every file, directory by directory, in creation order.
fn each_file(args: &Args, mut f: impl FnMut(&Path) -> Result<()>) -> Result<()> {
    let per = args.files.div_ceil(args.dirs);
    let mut path = PathBuf::new();
    for k in 0..args.dirs {
        let dir = dir_of(args, k);
        for i in (k * per)..((k + 1) * per).min(args.files) {
            path.clone_from(&dir);
            path.push(format!("f{i}"));
            f(&path)?;
        }
    }
    Ok(())
}

/// Bytes that no filesystem can special-case as zeros, the same for every file.
fn content(size: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn create(args: &Args) -> Result<()> {
    fs::create_dir(&args.dir).with_context(|| format!("mkdir {}", args.dir.display()))?;
    for k in 0..args.dirs {
        let d = dir_of(args, k);
        fs::create_dir(&d).with_context(|| format!("mkdir {}", d.display()))?;
    }
    let data = content(args.size);
    each_file(args, |p| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(p)
            .with_context(|| format!("create {}", p.display()))?;
        if !data.is_empty() {
            f.write_all(&data)
                .with_context(|| format!("write {}", p.display()))?;
        }
        Ok(())
    })
}

fn stat(args: &Args) -> Result<()> {
    let want = args.size as u64;
    each_file(args, |p| {
        let m = fs::symlink_metadata(p).with_context(|| format!("stat {}", p.display()))?;
        ensure!(
            m.is_file() && m.len() == want,
            "{}: expected a {want}-byte file, found {:?} of {} bytes",
            p.display(),
            m.file_type(),
            m.len()
        );
        Ok(())
    })
}

fn unlink(args: &Args) -> Result<()> {
    each_file(args, |p| {
        fs::remove_file(p).with_context(|| format!("unlink {}", p.display()))
    })?;
    for k in 0..args.dirs {
        let d = dir_of(args, k);
        fs::remove_dir(&d).with_context(|| format!("rmdir {} (not empty?)", d.display()))?;
    }
    fs::remove_dir(&args.dir).with_context(|| format!("rmdir {}", args.dir.display()))
}

/// Times `--files` calls of `fstat` on an open descriptor of `--dir/rtt.probe`; returns
/// the time of those calls alone (not of making and opening the file).
/// The round trip depends on where the scheduler puts the caller and the daemon (the
/// same vCPU or two), which changes from moment to moment; the fastest batch is the
/// nearest thing to what FUSE itself costs.
const ROUNDTRIP_BATCHES: u64 = 10;

/// Times `--files` fstat calls in [`ROUNDTRIP_BATCHES`] batches; returns the total
/// time and the fastest batch's mean µs per call.
fn roundtrip(args: &Args) -> Result<(Duration, f64)> {
    fs::create_dir_all(&args.dir).with_context(|| format!("mkdir {}", args.dir.display()))?;
    let p = args.dir.join("rtt.probe");
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&p)
        .with_context(|| format!("create {}", p.display()))?;
    let f = fs::File::open(&p).with_context(|| format!("open {}", p.display()))?;
    let mut files = 0u64;
    let mut took = Duration::ZERO;
    let mut best = f64::INFINITY;
    let per = args.files.div_ceil(ROUNDTRIP_BATCHES);
    let mut left = args.files;
    while left > 0 {
        let n = per.min(left);
        left -= n;
        let start = Instant::now();
        for _ in 0..n {
            let m = f
                .metadata()
                .with_context(|| format!("fstat {}", p.display()))?;
            files += u64::from(m.is_file());
        }
        let t = start.elapsed();
        took += t;
        #[allow(clippy::cast_precision_loss)]
        let us = t.as_secs_f64() * 1e6 / n as f64;
        best = best.min(us);
    }
    ensure!(
        files == args.files,
        "{}: fstat says it is not a regular file",
        p.display()
    );
    Ok((took, best))
}
