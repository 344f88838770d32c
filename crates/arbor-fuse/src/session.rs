//! Mounting: the FUSE session, the periodic commit, and the final commit at unmount.

use crate::adapter::Adapter;
use crate::attr::to_node;
use arbor_fs::Fs;
use fuser::{MountOption, SessionACL};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

/// How to serve a mount.
#[derive(Clone, Debug)]
pub struct MountConfig {
    pub read_only: bool,
    /// Everything is committed at least this often.
    pub commit_interval: Duration,
    pub threads: usize,
    pub allow_other: bool,
    /// How long the kernel caches attributes and names.
    pub ttl: Duration,
    /// The source shown in /proc/mounts (the image path).
    pub fsname: String,
    /// Let the kernel gather writes in its page cache and send them in large pieces
    /// (`-o writeback`, the default). Without it every write(2) is a request, but
    /// a close and an unlink cost one round trip fewer (`-o nowriteback`).
    pub writeback_cache: bool,
}

impl Default for MountConfig {
    fn default() -> Self {
        Self {
            read_only: false,
            commit_interval: Duration::from_secs(5),
            threads: 4,
            allow_other: false,
            ttl: Duration::from_secs(60),
            fsname: "arbor".into(),
            writeback_cache: true,
        }
    }
}

/// A mounted filesystem whose requests are not yet being served.
pub struct Mounted {
    session: fuser::Session<Adapter>,
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    fs: Arc<Fs>,
    interval: Duration,
    mountpoint: std::path::PathBuf,
}

/// Mounts `fs` on `mountpoint`. Returns once the kernel has the mount and the FUSE
/// handshake is done; call [`Mounted::run`] to serve it.
pub fn mount(fs: Arc<Fs>, mountpoint: &Path, cfg: &MountConfig) -> std::io::Result<Mounted> {
    let mut c = fuser::Config::default();
    c.mount_options = vec![
        MountOption::FSName(cfg.fsname.clone()),
        MountOption::Subtype("arbor".into()),
        MountOption::DefaultPermissions,
        if cfg.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    if cfg.allow_other {
        c.acl = SessionACL::All;
    }
    c.n_threads = Some(cfg.threads.max(1));
    c.clone_fd = cfg.threads > 1;
    let notifier = Arc::new(std::sync::OnceLock::new());
    let adapter = Adapter {
        fs: Arc::clone(&fs),
        ttl: cfg.ttl,
        read_only: cfg.read_only,
        writeback_cache: cfg.writeback_cache && !cfg.read_only,
        notifier: Arc::clone(&notifier),
        stats: crate::stats::Stats::default(),
    };
    let session = fuser::Session::new(adapter, mountpoint, &c)?;
    let _ = notifier.set(session.notifier());
    Ok(Mounted {
        session,
        notifier,
        fs,
        interval: cfg.commit_interval,
        mountpoint: mountpoint.to_path_buf(),
    })
}

/// The kernel gives a FUSE mount a 128 KiB readahead window whatever max_readahead
/// says; sequential reads of large files go twice as fast with 1 MiB (the size of our
/// requests). Setting it needs root; without it the default stays.
fn raise_readahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::metadata(mountpoint) else {
        return;
    };
    let dev = md.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    if let Err(e) = std::fs::write(&knob, "1024") {
        tracing::info!("cannot raise readahead through {knob}: {e}");
    }
}

/// Tells the kernel to forget names and attributes that the daemon changed behind its
/// back (subvolume operations through the control channel).
#[derive(Clone)]
pub struct KernelNotifier {
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
}

impl KernelNotifier {
    /// The name `name` in directory `parent` (a global inode number) changed.
    pub fn entry_changed(&self, parent: u64, name: &[u8]) {
        use std::os::unix::ffi::OsStrExt;
        if let Some(n) = self.notifier.get()
            && let Err(e) = n.inval_entry(to_node(parent), std::ffi::OsStr::from_bytes(name))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::debug!("entry invalidation for {parent} failed: {e}");
        }
    }

    /// The attributes of `ino` changed.
    pub fn inode_changed(&self, ino: u64) {
        if let Some(n) = self.notifier.get()
            && let Err(e) = n.inval_inode(to_node(ino), -1, 0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::debug!("attribute invalidation for {ino} failed: {e}");
        }
    }
}

impl Mounted {
    /// A handle that tells the kernel what changed behind its back.
    pub fn kernel_notifier(&self) -> KernelNotifier {
        KernelNotifier {
            notifier: Arc::clone(&self.notifier),
        }
    }

    /// The filesystem being served.
    pub fn fs(&self) -> &Arc<Fs> {
        &self.fs
    }

    /// Serves requests until the filesystem is unmounted, committing every
    /// `commit_interval` and once more at the end.
    pub fn run(self) -> std::io::Result<()> {
        let (stop, stopped) = mpsc::channel::<()>();
        let fs = Arc::clone(&self.fs);
        let interval = self.interval;
        let committer = std::thread::Builder::new()
            .name("arbor-commit".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    if let Err(e) = fs.periodic() {
                        tracing::error!("periodic commit failed: {e}");
                    }
                }
            })?;
        // stat(2) of the mount point is served by this session: ask once it runs.
        let mountpoint = self.mountpoint.clone();
        let _ = std::thread::Builder::new()
            .name("arbor-readahead".into())
            .spawn(move || raise_readahead(&mountpoint));
        let served = self.session.run();
        drop(stop);
        let _ = committer.join();
        let synced = self.fs.sync();
        served?;
        synced.map_err(|e| std::io::Error::other(format!("final commit failed: {e}")))
    }
}
