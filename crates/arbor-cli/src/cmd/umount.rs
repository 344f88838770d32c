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

/// The source (image path) of the arbor mount at `mnt`, from /proc/self/mountinfo.
pub fn mount_source(mnt: &Path) -> Result<Option<PathBuf>> {
    let mnt = std::fs::canonicalize(mnt).unwrap_or_else(|_| mnt.to_path_buf());
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(point), Some(fstype), Some(source)) =
            (fields.get(4), fields.get(sep + 1), fields.get(sep + 2))
        else {
            continue;
        };
        if Path::new(&unescape(point)) == mnt && fstype.starts_with("fuse") {
            return Ok(Some(PathBuf::from(unescape(source))));
        }
    }
    Ok(None)
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
