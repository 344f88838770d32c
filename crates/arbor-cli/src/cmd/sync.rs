//! `arbor sync`: make everything on a mounted filesystem durable now.
//!
//! syncfs(2) and sync(1) do not reach a FUSE daemon (the kernel sends FUSE_SYNCFS to
//! virtiofs only), but fsync of any file or directory commits the whole filesystem;
//! this command fsyncs the mount's root directory.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `arbor sync`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The mount point (or any directory or file on the mount).
    pub path: PathBuf,
}

/// `arbor sync`.
pub fn run(args: &Args) -> Result<ExitCode> {
    let f = std::fs::File::open(&args.path)
        .with_context(|| format!("cannot open {}", args.path.display()))?;
    f.sync_all()
        .with_context(|| format!("commit through {} failed", args.path.display()))?;
    Ok(ExitCode::SUCCESS)
}
