//! `arbor check`: the offline checker.

use anyhow::{Context, Result};
use arbor_engine::storage::FileStorage;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `arbor check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image file or block device; it is opened read-only.
    pub image: PathBuf,
}

/// `arbor check`: prints the report; exit 0 when clean, 1 when problems were found.
/// Errors (a missing or unreadable image) are for the caller to turn into status 2.
pub fn run(args: &Args) -> Result<ExitCode> {
    let dev = FileStorage::open_read_only(&args.image)
        .with_context(|| format!("cannot open {}", args.image.display()))?;
    let report = arbor_engine::check_with(&dev, Some(&arbor_fs::FsDataRefs));
    println!("checking {}", args.image.display());
    print!("{report}");
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_FAILURE)
    })
}
