//! Mounting: the FUSE session, the periodic commit, and the final commit at unmount.

use crate::adapter::Adapter;
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
        }
    }
}

/// A mounted filesystem whose requests are not yet being served.
pub struct Mounted {
    session: fuser::Session<Adapter>,
    fs: Arc<Fs>,
    interval: Duration,
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
        notifier: Arc::clone(&notifier),
    };
    let session = fuser::Session::new(adapter, mountpoint, &c)?;
    let _ = notifier.set(session.notifier());
    Ok(Mounted {
        session,
        fs,
        interval: cfg.commit_interval,
    })
}

impl Mounted {
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
        let served = self.session.run();
        drop(stop);
        let _ = committer.join();
        let synced = self.fs.sync();
        served?;
        synced.map_err(|e| std::io::Error::other(format!("final commit failed: {e}")))
    }
}
