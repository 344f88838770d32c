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
    // A mounted image changes under the checker: refuse it.
    let lock = std::fs::File::open(&args.image)
        .with_context(|| format!("cannot open {}", args.image.display()))?;
    if let Err(std::fs::TryLockError::WouldBlock) = lock.try_lock_shared() {
        anyhow::bail!(
            "{} is in use: an arbor daemon has it mounted",
            args.image.display()
        );
    }
    let dev = FileStorage::open_read_only(&args.image)
        .with_context(|| format!("cannot open {}", args.image.display()))?;
    let report = arbor_fs::Fs::check_image(std::sync::Arc::new(dev));
    println!("checking {}", args.image.display());
    print!("{report}");
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_FAILURE)
    })
}
