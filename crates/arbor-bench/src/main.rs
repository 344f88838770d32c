//! `arbor-bench`: arbor's engine and redb side by side, in one run, on the same
//! workloads and the same filesystem. Prints a markdown table of ratios (arbor / redb)
//! and, with `--markdown`, writes it into `BENCHMARKS.md`.

mod arbor_db;
mod machine;
mod markdown;
mod phases;
mod redb_db;
mod report;
mod revision;
mod workloads;

use anyhow::{Context, Result};
use arbor_db::ArborDb;
use clap::Parser;
use machine::Machine;
use phases::Phase;
use redb_db::RedbDb;
use report::{Results, Side};
use std::path::{Path, PathBuf};
use std::time::Duration;
use workloads::{Sizes, Subject, Workload};

/// Benchmarks arbor's engine against redb: bulk insert, point lookup, range scans,
/// small durable commits, and clone (redb: savepoint) then modify.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Node size of arbor's image, in bytes (mkfs's default is 16384; redb's pages are 4096).
    #[arg(long, default_value_t = 16384)]
    nodesize: u32,
    /// Items in the bulk load (and point lookups). Default 1000000; 20000 with --quick.
    #[arg(long)]
    n: Option<u64>,
    /// Repetitions of every workload; medians are reported. Default 3; 1 with --quick.
    #[arg(long)]
    reps: Option<usize>,
    /// Small durable transactions in the commit workload. Default 1000; 100 with --quick.
    #[arg(long)]
    commits: Option<usize>,
    /// Items inserted by each small transaction.
    #[arg(long, default_value_t = 10)]
    commit_items: usize,
    /// Items updated after the clone / savepoint.
    #[arg(long, default_value_t = 1000)]
    modifications: usize,
    /// Number of short range scans.
    #[arg(long, default_value_t = 1000)]
    short_scans: usize,
    /// Items read by each short range scan.
    #[arg(long, default_value_t = 100)]
    short_scan_len: usize,
    /// Seed of the key order.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Directory for the database files (a fresh subdirectory is made and removed).
    /// Default: the system temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also write the results into this markdown file, between the engine-bench markers.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// A small, single-repetition run for CI smoke tests.
    #[arg(long)]
    quick: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let q = args.quick;
    let sizes = Sizes {
        items: args.n.unwrap_or(if q { 20_000 } else { 1_000_000 }),
        short_scans: args.short_scans,
        short_scan_len: args.short_scan_len,
        commits: args.commits.unwrap_or(if q { 100 } else { 1000 }),
        items_per_commit: args.commit_items,
        modifications: args.modifications,
    };
    let reps = args.reps.unwrap_or(if q { 1 } else { 3 }).max(1);
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let w = Workload::generate(sizes, args.seed)?;
    let mut results = Results::default();
    for rep in 0..reps {
        run_once(&w, &base, rep, args.nodesize, &mut results)
            .with_context(|| format!("run {}", rep + 1))?;
    }
    let table = results.table(&w);
    println!("{table}");
    if let Some(path) = &args.markdown {
        let machine = Machine::describe(&base);
        let info = markdown::RunInfo {
            machine: &machine,
            command: reproduce_command(),
            revision: revision::engine_revision(),
            reps,
            seed: args.seed,
        };
        markdown::write_section(path, &markdown::section(&info, &w, &results))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// One repetition: fresh stores for both engines, every phase (or slice of a phase) on
/// each in turn. The engine that goes first alternates between repetitions.
fn run_once(
    w: &Workload,
    base: &Path,
    rep: usize,
    nodesize: u32,
    results: &mut Results,
) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("arbor-bench.")
        .tempdir_in(base)
        .with_context(|| format!("making a directory in {}", base.display()))?;
    let image_bytes = (4u64 << 30).max(w.sizes.items * 4096);
    let mut arbor = ArborDb::create(&dir.path().join("arbor.img"), image_bytes, nodesize)?;
    let mut redb = RedbDb::create(&dir.path().join("bench.redb"))?;
    let mut subjects: [(Side, &mut dyn Subject); 2] =
        [(Side::Arbor, &mut arbor), (Side::Redb, &mut redb)];
    if rep % 2 == 1 {
        subjects.reverse();
    }
    for phase in Phase::ALL {
        let mut took = [Duration::ZERO; 2];
        for slice in 0..phase.slices(w) {
            for (i, (side, subject)) in subjects.iter_mut().enumerate() {
                let space = phase == Phase::SnapshotModify;
                let before = if space { subject.used_bytes()? } else { 0 };
                took[i] += phase
                    .run(&mut **subject, w, slice)
                    .with_context(|| format!("{side:?}: {phase:?}"))?;
                if space {
                    results.space(*side, subject.used_bytes()?.saturating_sub(before));
                }
            }
        }
        for ((side, _), took) in subjects.iter().zip(took) {
            eprintln!("run {}: {side:?} {phase:?}: {took:.3?}", rep + 1);
            results.time(phase, *side, took);
        }
    }
    for (side, subject) in subjects.iter_mut() {
        for note in subject.notes() {
            eprintln!("run {}: {note}", rep + 1);
            results.note(note);
        }
        let items = subject.full_scan()?;
        anyhow::ensure!(
            items == w.items_after_commits(),
            "{side:?}: {items} items at the end, expected {}",
            w.items_after_commits()
        );
    }
    drop((arbor, redb));
    dir.close().context("removing the benchmark files")
}

/// The command that reproduces this run: the script, with this run's arguments except
/// `--markdown`, which the script supplies.
fn reproduce_command() -> String {
    let mut parts = vec!["scripts/bench-engine.sh".to_string()];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--markdown" {
            args.next();
        } else if !a.starts_with("--markdown=") {
            parts.push(shell_quote(&a));
        }
    }
    parts.join(" ")
}

fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_=./,:+".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
