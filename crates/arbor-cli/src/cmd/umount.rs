//! `arbor umount`: unmount, then wait until the daemon has made its final commit and
//! let go of the image.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Arguments of `arbor umount`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds to wait for the daemon's final commit.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// The mount point.
    pub mountpoint: PathBuf,
}

/// The source (image path) of the FUSE mount at `mnt`, from /proc/self/mountinfo.
pub fn mount_source(mnt: &Path) -> Result<Option<PathBuf>> {
    Ok(crate::mountinfo::mount_at(mnt)?
        .filter(|m| m.fstype.starts_with("fuse"))
        .map(|m| PathBuf::from(m.source)))
}

/// `arbor umount`.
pub fn run(args: &Args) -> Result<ExitCode> {
    let source = mount_source(&args.mountpoint)?;
    let Some(image) = source else {
        bail!("{} is not a FUSE mount", args.mountpoint.display());
    };
    // A file closed just before may still have its release in flight to the daemon,
    // which keeps the mount busy for a moment: retry briefly on EBUSY.
    let busy_until = Instant::now() + Duration::from_secs(3);
    loop {
        match nix::mount::umount(&args.mountpoint) {
            Ok(()) => break,
            Err(nix::errno::Errno::EBUSY) if Instant::now() < busy_until => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot unmount {}", args.mountpoint.display()));
            }
        }
    }
    // The daemon holds the image's lock until its final commit is done.
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    if image.exists() {
        loop {
            let file = std::fs::File::open(&image)
                .with_context(|| format!("cannot open {}", image.display()))?;
            if file.try_lock_shared().is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "unmounted, but the daemon still holds {} after {} s",
                    image.display(),
                    args.timeout
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(ExitCode::SUCCESS)
}
