//! `arbor demo`: the engine end to end on a scratch image, as a list of steps.
//!
//! Each step is a function over one [`Demo`] state; a step that finds something wrong
//! returns an error, which stops the demo with a non-zero exit. New features add steps
//! to [`STEPS`].

use crate::size::human;
use anyhow::{Context, Result, bail, ensure};
use arbor_engine::storage::FileStorage;
use arbor_engine::{Config, Engine, Key, MkfsOptions, SpaceInfo};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

/// Arguments of `arbor demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Put the image, arbor-demo.img (overwritten if present), in this directory
    /// instead of a temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the image afterwards (and print where it is).
    #[arg(long)]
    pub keep: bool,
    /// Items to insert into the first tree.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub items: u64,
    /// Items to change in the snapshot (at most --items).
    #[arg(long, default_value_t = 1000)]
    pub modify: u64,
}

/// Size of the demo image.
pub const IMAGE_SIZE: u64 = 256 << 20;
/// Nodes by which space used after dropping the snapshot may exceed the space used
/// before taking it.
const SLACK_NODES: u64 = 8;
/// The tree the items go into.
const ORIGINAL: u64 = 1000;
/// The snapshot of it.
const SNAPSHOT: u64 = 1001;

/// The state the steps share.
struct Demo {
    image: PathBuf,
    items: u64,
    modify: u64,
    engine: Option<Engine>,
    /// Space after the original tree was committed, before the snapshot.
    before_snapshot: Option<SpaceInfo>,
    progress: bool,
}

type Step = (&'static str, fn(&mut Demo) -> Result<()>);

/// What the demo does, in order.
const STEPS: &[Step] = &[
    ("mkfs a 256 MiB image", mkfs),
    ("create tree 1000 and fill it", fill),
    ("snapshot tree 1000 as tree 1001", snapshot),
    ("change items in the snapshot", modify),
    ("compare the two trees", compare),
    ("drop the snapshot", drop_snapshot),
    ("reopen the image and check it", reopen_and_check),
];

fn key(i: u64) -> Key {
    Key::new(256 + i / 16, 1, i % 16)
}

fn original_value(i: u64) -> Vec<u8> {
    format!("item {i:08} of the original tree").into_bytes()
}

fn changed_value(i: u64) -> Vec<u8> {
    format!("item {i:08} changed in the snapshot").into_bytes()
}

impl Demo {
    fn engine(&mut self) -> Result<&mut Engine> {
        self.engine.as_mut().context("no open engine")
    }

    /// The items changed in the snapshot: `modify` of them, spread evenly.
    /// The items changed in the snapshot: `modify` neighbours in the middle of the
    /// tree, as when one file of a snapshotted filesystem is rewritten.
    fn is_modified(&self, i: u64) -> bool {
        let first = (self.items - self.modify) / 2;
        (first..first + self.modify).contains(&i)
    }

    fn tick(&self, done: u64, total: u64) {
        if self.progress && (done.is_multiple_of(8192) || done == total) {
            print!("\r      {done}/{total}");
            let _ = std::io::stdout().flush();
            if done == total {
                println!();
            }
        }
    }
}

fn show_space(what: &str, s: &SpaceInfo) {
    println!(
        "      {what}: {} used, {} free of {}",
        human(s.used_bytes),
        human(s.free_bytes),
        human(s.total_bytes)
    );
}

fn mkfs(d: &mut Demo) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&d.image)
        .with_context(|| format!("cannot create {}", d.image.display()))?;
    file.set_len(IMAGE_SIZE)?;
    let dev = FileStorage::from_file(file)?;
    let opts = MkfsOptions {
        label: "arbor-demo".into(),
        ..Default::default()
    };
    let e = Engine::create(Arc::new(dev), &opts, Config::default())?;
    println!(
        "      {} ({}), UUID {}, node size {}",
        d.image.display(),
        human(IMAGE_SIZE),
        e.fsid(),
        e.nodesize()
    );
    d.engine = Some(e);
    Ok(())
}

fn fill(d: &mut Demo) -> Result<()> {
    let n = d.items;
    let e = d.engine()?;
    e.create_tree(ORIGINAL)?;
    for i in 0..n {
        d.engine()?.insert(ORIGINAL, key(i), &original_value(i))?;
        d.tick(i + 1, n);
    }
    let e = d.engine()?;
    e.commit()?;
    let s = e.space();
    println!(
        "      {n} items committed at generation {}",
        e.committed_generation()
    );
    show_space("space", &s);
    d.before_snapshot = Some(s);
    Ok(())
}

fn snapshot(d: &mut Demo) -> Result<()> {
    let e = d.engine()?;
    let before = e.space().used_bytes;
    e.clone_tree(ORIGINAL, SNAPSHOT)?;
    e.commit()?;
    let after = e.space().used_bytes;
    println!(
        "      snapshot committed; it cost {} ({} before, {} after)",
        human(after.saturating_sub(before)),
        human(before),
        human(after)
    );
    Ok(())
}

fn modify(d: &mut Demo) -> Result<()> {
    let mut changed = 0;
    for i in 0..d.items {
        if d.is_modified(i) {
            d.engine()?.insert(SNAPSHOT, key(i), &changed_value(i))?;
            changed += 1;
        }
    }
    let base = d.before_snapshot.context("no space figures")?;
    let (d_items, d_modify) = (d.items, d.modify);
    let e = d.engine()?;
    e.commit()?;
    let s = e.space();
    let cost = s.used_bytes.saturating_sub(base.used_bytes);
    println!(
        "      {changed} items changed; the snapshot now costs {} ({:.1}% of the original tree's {})",
        human(cost),
        100.0 * cost as f64 / base.used_bytes.max(1) as f64,
        human(base.used_bytes)
    );
    let fair = base.used_bytes as u128 * 2 * u128::from(d_modify) / u128::from(d_items);
    ensure!(
        u128::from(cost) <= fair + 64 * u128::from(e.nodesize()),
        "changing {changed} neighbouring items in the snapshot copied too much of the tree"
    );
    Ok(())
}

/// Scans `tree` and counts items that differ from what `want(i)` says.
fn verify(d: &Demo, tree: u64, want: impl Fn(u64) -> Vec<u8>) -> Result<()> {
    let e = d.engine.as_ref().context("no open engine")?;
    let mut count = 0u64;
    for item in e.range(tree, ..)? {
        let (k, v) = item?;
        ensure!(
            count < d.items,
            "tree {tree} holds more than {} items",
            d.items
        );
        ensure!(
            k == key(count),
            "tree {tree}: item {count} has key {k}, expected {}",
            key(count)
        );
        ensure!(
            v == want(count),
            "tree {tree}: item {k} holds {:?}",
            String::from_utf8_lossy(&v)
        );
        count += 1;
    }
    ensure!(
        count == d.items,
        "tree {tree} holds {count} items, expected {}",
        d.items
    );
    Ok(())
}

fn compare(d: &mut Demo) -> Result<()> {
    verify(d, ORIGINAL, original_value)?;
    println!(
        "      tree 1000 is unchanged: all {} items as first written",
        d.items
    );
    verify(d, SNAPSHOT, |i| {
        if d.is_modified(i) {
            changed_value(i)
        } else {
            original_value(i)
        }
    })?;
    println!("      tree 1001 has the changes and shares the rest");
    Ok(())
}

fn drop_snapshot(d: &mut Demo) -> Result<()> {
    let base = d.before_snapshot.context("no space figures")?;
    let e = d.engine()?;
    let before = e.space().used_bytes;
    e.drop_tree(SNAPSHOT)?;
    e.commit()?;
    println!(
        "      dropped; {} drop queue entries left after the first commit",
        e.pending_drops()
    );
    e.finish_drops()?;
    let s = e.space();
    println!(
        "      {} returned ({} used before the drop, {} now)",
        human(before.saturating_sub(s.used_bytes)),
        human(before),
        human(s.used_bytes)
    );
    ensure!(!e.tree_exists(SNAPSHOT), "tree 1001 still exists");
    // Trees are not canonical: the extent tree, which grew while the snapshot lived,
    // may keep a node or two more than before it.
    let slack = SLACK_NODES * u64::from(e.nodesize());
    ensure!(
        s.used_bytes <= base.used_bytes + slack,
        "space used is {} after the drop, {} before the snapshot: the drop leaked",
        s.used_bytes,
        base.used_bytes
    );
    Ok(())
}

fn reopen_and_check(d: &mut Demo) -> Result<()> {
    let used = d.engine()?.space().used_bytes;
    d.engine = None;
    let dev = FileStorage::open_read_only(&d.image)
        .with_context(|| format!("cannot reopen {}", d.image.display()))?;
    let report = arbor_engine::check(&dev);
    for line in report.to_string().lines() {
        println!("      check: {line}");
    }
    if !report.is_clean() {
        bail!("the checker found {} problems", report.problems.len());
    }
    let cfg = Config {
        read_only: true,
        ..Config::default()
    };
    d.engine = Some(Engine::open(Arc::new(dev), cfg)?);
    verify(d, ORIGINAL, original_value)?;
    let e = d.engine()?;
    ensure!(
        !e.tree_exists(SNAPSHOT),
        "tree 1001 came back after reopening"
    );
    ensure!(
        e.space().used_bytes == used,
        "space used changed across reopening"
    );
    println!("      reopened: tree 1000 intact, tree 1001 gone, space as before");
    Ok(())
}

/// `arbor demo`.
pub fn run(args: &Args) -> Result<ExitCode> {
    ensure!(
        args.modify <= args.items,
        "--modify {} is more than --items {}",
        args.modify,
        args.items
    );
    let temp;
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            temp = None;
            dir.clone()
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("arbor-demo-")
                .tempdir()
                .context("cannot create a temporary directory")?;
            let p = t.path().to_owned();
            temp = Some(t);
            p
        }
    };
    let mut demo = Demo {
        image: dir.join("arbor-demo.img"),
        items: args.items,
        modify: args.modify,
        engine: None,
        before_snapshot: None,
        progress: std::io::stdout().is_terminal(),
    };
    let started = Instant::now();
    let mut result = Ok(());
    for (i, (name, step)) in STEPS.iter().enumerate() {
        println!("[{}/{}] {name}", i + 1, STEPS.len());
        let t = Instant::now();
        result = step(&mut demo).with_context(|| format!("step {:?} failed", name));
        if result.is_err() {
            break;
        }
        println!("      ({:.2} s)", t.elapsed().as_secs_f64());
    }
    demo.engine = None;
    if args.keep {
        if let Some(t) = temp {
            let _ = t.keep();
        }
        println!("image kept at {}", demo.image.display());
    } else if args.dir.is_some() {
        let _ = std::fs::remove_file(&demo.image);
    }
    result?;
    println!(
        "demo OK ({} steps in {:.2} s)",
        STEPS.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
