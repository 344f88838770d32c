//! `fsmeta`: the metadata workload of `scripts/bench-fs.sh`. One phase per call, so
//! that the script can time each phase on its own (adding its own sync) and remount the
//! filesystem between them:
//!
//! ```text
//! fsmeta create --dir MNT/meta --files 100000 --dirs 10 --size 1024
//! fsmeta stat   --dir MNT/meta --files 100000 --dirs 10 --size 1024
//! fsmeta unlink --dir MNT/meta --files 100000 --dirs 10
//! ```
//!
//! The files are `d{k}/f{i}` under `--dir`, spread evenly over `--dirs` directories,
//! visited in the same order by every phase. Single-threaded: one syscall after the
//! other, as a program walking a tree would issue them. Prints the phase, the file
//! count and its own elapsed time on stdout.

use anyhow::{Context, Result, ensure};
use clap::{Parser, ValueEnum};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Creates, stats or unlinks many small files, for timing a filesystem's metadata path.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// What to do with the files.
    phase: Phase,
    /// The directory that holds the file tree (created by `create`, removed by `unlink`).
    #[arg(long)]
    dir: PathBuf,
    /// Number of files.
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
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.dirs >= 1, "--dirs must be at least 1");
    let start = Instant::now();
    match args.phase {
        Phase::Create => create(&args)?,
        Phase::Stat => stat(&args)?,
        Phase::Unlink => unlink(&args)?,
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
