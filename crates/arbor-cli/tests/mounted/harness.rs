//! Making, mounting, killing and checking images.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn arbor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_arbor"))
}

pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A scratch image and mount point, unmounted (and the daemon killed) on drop.
pub struct Mount {
    pub dir: tempfile::TempDir,
    pub image: PathBuf,
    pub mnt: PathBuf,
    pub mounted: bool,
}

impl Mount {
    /// Makes an image of `size` bytes (not mounted).
    pub fn image(size: &str) -> Mount {
        let dir = tempfile::Builder::new()
            .prefix("arbor-mount-")
            .tempdir_in("/var/tmp")
            .expect("temp dir");
        let image = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        ok(
            arbor()
                .args(["mkfs", "-s", size])
                .arg(&image)
                .output()
                .unwrap(),
            "mkfs",
        );
        Mount {
            dir,
            image,
            mnt,
            mounted: false,
        }
    }

    /// Makes and mounts an image with `options`.
    pub fn new(size: &str, options: &str) -> Mount {
        let mut m = Mount::image(size);
        m.mount(options);
        m
    }

    pub fn mount(&mut self, options: &str) {
        let mut c = arbor();
        c.arg("mount");
        if !options.is_empty() {
            c.args(["-o", options]);
        }
        ok(c.arg(&self.image).arg(&self.mnt).output().unwrap(), "mount");
        self.mounted = true;
    }

    pub fn umount(&mut self) {
        ok(
            arbor().arg("umount").arg(&self.mnt).output().unwrap(),
            "arbor umount",
        );
        self.mounted = false;
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.mnt.join(p)
    }

    /// The daemon serving this image.
    pub fn daemon_pid(&self) -> Option<i32> {
        let image = self.image.to_string_lossy().into_owned();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("--notify-ready") && cmd.contains(&image) {
                return Some(pid);
            }
        }
        None
    }

    /// kill -9 of the daemon, then the dead mount is detached.
    pub fn kill9(&mut self) {
        let pid = self.daemon_pid().expect("daemon running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
        self.mounted = false;
    }

    /// `arbor check` on the unmounted image; returns its output.
    pub fn check(&self) -> String {
        let out = arbor().arg("check").arg(&self.image).output().unwrap();
        ok(out, "arbor check")
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = arbor().arg("umount").arg(&self.mnt).output();
            if let Some(pid) = self.daemon_pid() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Runs a shell command as user and group 65534 (nobody).
pub fn as_nobody(script: &str) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("setpriv (util-linux)")
}
