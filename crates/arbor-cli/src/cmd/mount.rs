//! `arbor mount`: open an image and serve it through FUSE. Without `-f` the command
//! starts a daemon (itself, again, in the foreground mode) and returns once the
//! daemon reports that the mount is ready, or with the daemon's error.

use anyhow::{Context, Result, bail};
use arbor_engine::storage::FileStorage;
use arbor_fs::{Fs, FsOptions};
use arbor_fuse::MountConfig;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tracing::level_filters::LevelFilter;

/// Arguments of `arbor mount`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Mount options, comma-separated: ro, rw, commit=SECONDS (default 5),
    /// allow_other (default when root), noallow_other, threads=N, attr_timeout=SECONDS, nowriteback, log=FILE. Options of mount(8)
    /// such as defaults, noauto, nofail, dev or suid are accepted and ignored.
    #[arg(short = 'o', long = "options", value_delimiter = ',')]
    pub options: Vec<String>,
    /// Stay in the foreground instead of starting a daemon.
    #[arg(short, long)]
    pub foreground: bool,
    /// (internal) Print "ready" on stdout once mounted; used by the daemon.
    #[arg(long, hide = true)]
    pub notify_ready: bool,
    /// The image file or block device.
    pub image: PathBuf,
    /// Where to mount it.
    pub mountpoint: PathBuf,
}

/// Parsed mount options.
#[derive(Debug)]
pub struct Options {
    pub config: MountConfig,
    pub log: Option<PathBuf>,
}

/// Parses `-o` options; unknown ones are reported and ignored, so that mount(8) and
/// fstab can pass theirs.
pub fn parse_options(opts: &[String]) -> Result<Options> {
    let mut config = MountConfig {
        // Like a kernel filesystem mounted by root, every user may use the mount; the
        // kernel checks permissions (default_permissions).
        allow_other: nix::unistd::geteuid().is_root(),
        ..MountConfig::default()
    };
    let mut log = None;
    let secs = |v: &str, name: &str| -> Result<Duration> {
        let s: f64 = v
            .parse()
            .with_context(|| format!("{name}={v}: not a number of seconds"))?;
        if !(0.0..=86_400.0).contains(&s) {
            bail!("{name}={v}: out of range");
        }
        Ok(Duration::from_secs_f64(s))
    };
    for o in opts.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let (k, v) = o.split_once('=').unwrap_or((o, ""));
        match k {
            "ro" => config.read_only = true,
            "rw" => config.read_only = false,
            "commit" => {
                config.commit_interval = secs(v, k)?;
                if config.commit_interval.is_zero() {
                    bail!("commit=0: the interval must be positive");
                }
            }
            "writeback" => config.writeback_cache = true,
            "nowriteback" => config.writeback_cache = false,
            "allow_other" => config.allow_other = true,
            "noallow_other" => config.allow_other = false,
            "threads" => {
                config.threads = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .with_context(|| format!("threads={v}: expected 1 to 64"))?;
            }
            "attr_timeout" => config.ttl = secs(v, k)?,
            "log" => log = Some(PathBuf::from(v)),
            "defaults"
            | "dev"
            | "nodev"
            | "suid"
            | "nosuid"
            | "exec"
            | "noexec"
            | "auto"
            | "noauto"
            | "user"
            | "nouser"
            | "users"
            | "nofail"
            | "_netdev"
            | "atime"
            | "noatime"
            | "relatime"
            | "strictatime"
            | "sync"
            | "async"
            | "default_permissions"
            | "x-systemd.automount" => {}
            _ => tracing::warn!("ignoring unknown mount option {o:?}"),
        }
    }
    Ok(Options { config, log })
}

/// Opens the image, locked against a second opener.
pub fn open_image(image: &Path, read_only: bool) -> Result<Arc<Fs>> {
    let shown = image.display();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(image)
        .with_context(|| format!("cannot open {shown}"))?;
    file.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => {
            anyhow::anyhow!("{shown} is in use: another arbor process has it open")
        }
        std::fs::TryLockError::Error(e) => {
            anyhow::Error::new(e).context(format!("cannot lock {shown}"))
        }
    })?;
    let dev = FileStorage::from_file(file).with_context(|| format!("cannot open {shown}"))?;
    let fs = Fs::open(Arc::new(dev), &FsOptions { read_only })
        .with_context(|| format!("cannot open the filesystem on {shown}"))?;
    Ok(Arc::new(fs))
}

/// `arbor mount`.
pub fn run(args: &Args) -> Result<ExitCode> {
    let opts = parse_options(&args.options)?;
    if !args.mountpoint.is_dir() {
        bail!(
            "mount point {} is not a directory",
            args.mountpoint.display()
        );
    }
    if !args.foreground {
        return daemonize(args, &opts);
    }
    let image = std::fs::canonicalize(&args.image)
        .with_context(|| format!("cannot find {}", args.image.display()))?;
    let mut config = opts.config.clone();
    config.fsname = image.display().to_string();
    let report_ready = |msg: &str| {
        if args.notify_ready {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "{msg}");
            let _ = out.flush();
        }
    };
    let mounted = (|| -> Result<arbor_fuse::Mounted> {
        let fs = open_image(&image, config.read_only)?;
        arbor_fuse::mount(fs, &args.mountpoint, &config)
            .with_context(|| format!("cannot mount on {}", args.mountpoint.display()))
    })();
    let mounted = match mounted {
        Ok(m) => m,
        Err(e) => {
            report_ready(&format!("error: {e:#}"));
            return Err(e);
        }
    };
    let control = start_control(&mounted, &args.mountpoint);
    report_ready("ready");
    let served = mounted.run().context("serving the mount failed");
    drop(control);
    served?;
    Ok(ExitCode::SUCCESS)
}

/// Tells the kernel what control requests changed (see arbor_ctl::KernelCache).
struct Notify(arbor_fuse::KernelNotifier);

impl arbor_ctl::KernelCache for Notify {
    fn entry_changed(&self, parent: u64, name: &[u8]) {
        self.0.entry_changed(parent, name);
    }
    fn inode_changed(&self, ino: u64) {
        self.0.inode_changed(ino);
    }
}

/// Starts the control socket for `arbor subvolume` and friends; a mount without it
/// still works (those commands then say the path is not on a mounted filesystem).
fn start_control(mounted: &arbor_fuse::Mounted, mountpoint: &Path) -> Option<arbor_ctl::Server> {
    let dev = match mount_device(mountpoint) {
        Ok(dev) => dev,
        Err(e) => {
            tracing::warn!("no control socket: {e:#}");
            return None;
        }
    };
    let socket = arbor_ctl::socket_for_dev(dev);
    let cache = Arc::new(Notify(mounted.kernel_notifier()));
    match arbor_ctl::serve(Arc::clone(mounted.fs()), &socket, arbor_errno, cache) {
        Ok(server) => {
            tracing::info!("control socket {}", socket.display());
            Some(server)
        }
        Err(e) => {
            tracing::warn!("no control socket at {}: {e}", socket.display());
            None
        }
    }
}

/// The errno of a filesystem error: the FUSE adapter's table.
pub fn arbor_errno(e: &arbor_fs::FsError) -> i32 {
    arbor_fuse::errno(e).code()
}

/// The device number of the filesystem mounted on `mountpoint`, from
/// /proc/self/mountinfo: stat(2) of the mount point would wait for this very daemon.
fn mount_device(mountpoint: &Path) -> Result<u64> {
    crate::mountinfo::mount_at(mountpoint)?
        .map(|m| m.dev)
        .with_context(|| format!("{} is not in mountinfo", mountpoint.display()))
}

/// Starts `arbor mount -f` as a daemon and waits for it to say the mount is ready.
fn daemonize(args: &Args, opts: &Options) -> Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find the arbor executable")?;
    let stderr = match &opts.log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?,
        ),
        None => Stdio::null(),
    };
    // The daemon logs at the level this process was given (-v, -vv, -vvv).
    let verbosity = match tracing::level_filters::LevelFilter::current() {
        LevelFilter::TRACE => 3,
        LevelFilter::DEBUG => 2,
        LevelFilter::INFO => 1,
        _ => 0,
    };
    let mut child = Command::new(exe)
        .args(std::iter::repeat_n("-v", verbosity))
        .arg("mount")
        .arg("-f")
        .arg("--notify-ready")
        .arg("-o")
        .arg(args.options.join(","))
        .arg(&args.image)
        .arg(&args.mountpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .context("cannot start the arbor daemon")?;
    let out = child.stdout.take().context("no pipe to the daemon")?;
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .context("reading from the daemon")?;
    match line.trim_end() {
        "ready" => Ok(ExitCode::SUCCESS),
        msg => {
            let status = child.wait().ok();
            match msg.strip_prefix("error: ") {
                Some(why) => bail!("{why}"),
                None => bail!("the arbor daemon exited before the mount was ready ({status:?})"),
            }
        }
    }
}
