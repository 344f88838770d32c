//! For the plain receive tests: directories on real filesystems to receive into
//! (tmpfs, ext4 on a loop device, ramfs, btrfs), and a description of a directory tree
//! in the format `common::describe` gives for an arbor one.
#![allow(dead_code)]

use rustix::fs::SeekFrom;
use rustix::io::Errno;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
}

pub fn gid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.gid())
        .unwrap_or(1)
}

pub fn is_root() -> bool {
    uid() == 0
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
        || Command::new(tool).arg("-V").output().is_ok()
}

pub fn run(c: &mut Command) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What mounts a filesystem on a directory (given a scratch directory for images).
type Mounter<'a> = &'a dyn Fn(&Path, &Path);

/// A directory to receive into, on some filesystem; unmounted and removed on drop.
pub struct Place {
    pub what: &'static str,
    pub dir: PathBuf,
    mounted: bool,
    _tmp: tempfile::TempDir,
}

impl Place {
    fn new(what: &'static str, mount: Option<Mounter<'_>>) -> Place {
        let tmp = tempfile::Builder::new()
            .prefix("arbor-plain-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let dir = tmp.path().join("dest");
        std::fs::create_dir(&dir).unwrap();
        if let Some(mount) = mount {
            mount(tmp.path(), &dir);
        }
        Place {
            what,
            dir,
            mounted: mount.is_some(),
            _tmp: tmp,
        }
    }

    /// A small tmpfs when root, else a plain temporary directory.
    pub fn tmp() -> Place {
        if !is_root() {
            return Place::new("tempdir", None);
        }
        Place::new(
            "tmpfs",
            Some(&|_, dir| {
                run(Command::new("mount")
                    .args(["-t", "tmpfs", "-o", "size=256m", "tmpfs"])
                    .arg(dir));
            }),
        )
    }

    /// ext4 on a loop device (root and mkfs.ext4 needed).
    pub fn ext4() -> Option<Place> {
        Place::image("ext4", "mkfs.ext4", &["-q", "-F"])
    }

    /// btrfs on a loop device (root and btrfs-progs needed).
    pub fn btrfs() -> Option<Place> {
        Place::image("btrfs", "mkfs.btrfs", &["-q", "-f"])
    }

    fn image(what: &'static str, mkfs: &str, args: &[&str]) -> Option<Place> {
        if !is_root() || !have(mkfs) {
            eprintln!("note: no {what} case: needs root and {mkfs}");
            return None;
        }
        Some(Place::new(
            what,
            Some(&|tmp, dir| {
                let img = tmp.join("fs.img");
                std::fs::File::create(&img)
                    .unwrap()
                    .set_len(512 << 20)
                    .unwrap();
                run(Command::new(mkfs).args(args).arg(&img));
                run(Command::new("mount")
                    .args(["-o", "loop"])
                    .arg(&img)
                    .arg(dir));
            }),
        ))
    }

    /// ramfs: a filesystem without user xattrs (root needed).
    pub fn ramfs() -> Option<Place> {
        if !is_root() {
            eprintln!("note: no ramfs case: needs root");
            return None;
        }
        Some(Place::new(
            "ramfs",
            Some(&|_, dir| {
                run(Command::new("mount")
                    .args(["-t", "ramfs", "ramfs"])
                    .arg(dir));
            }),
        ))
    }

    /// Where to receive: a tmpfs (or temporary directory), and ext4 when possible.
    pub fn all() -> Vec<Place> {
        let mut v = vec![Place::tmp()];
        v.extend(Place::ext4());
        v
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.dir).status();
        }
    }
}

pub fn fnv(d: &[u8]) -> u32 {
    d.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The holes of a regular file as (start, end) pairs, the one at its end left out.
pub fn holes(path: &Path, size: u64) -> Vec<(u64, u64)> {
    let f = std::fs::File::open(path).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at < size {
        let h = rustix::fs::seek(&f, SeekFrom::Hole(at)).unwrap();
        if h >= size {
            break;
        }
        let next = match rustix::fs::seek(&f, SeekFrom::Data(h)) {
            Ok(d) => d,
            Err(Errno::NXIO) => size,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        out.push((h, next));
        at = next;
    }
    out
}

/// Every path below `top` with what it is, as `common::describe` says it of an arbor
/// tree (its root's marker xattr left out). Nothing is followed.
pub fn describe(top: &Path, holes_too: bool) -> Vec<String> {
    let r = std::fs::symlink_metadata(top).unwrap();
    let mut out = vec![format!(
        "/ mode {:o} {}:{} mtime {}.{}",
        r.mode(),
        r.uid(),
        r.gid(),
        r.mtime(),
        r.mtime_nsec()
    )];
    let mut todo = vec![(top.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let path = format!("{prefix}{}", e.file_name().to_string_lossy());
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let mut d = format!(
                "{path} mode {:o} {}:{} nlink {} mtime {}.{} size {}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.nlink(),
                m.mtime(),
                m.mtime_nsec(),
                m.size()
            );
            let ft = m.file_type();
            if ft.is_dir() {
                todo.push((e.path(), format!("{path}/")));
            } else if ft.is_block_device() || ft.is_char_device() {
                d += &format!(" rdev {:x}", m.rdev());
            } else if ft.is_file() {
                d += &format!(" data {:x}", fnv(&std::fs::read(e.path()).unwrap()));
                if holes_too {
                    d += &format!(" holes {:?}", holes(&e.path(), m.size()));
                }
            } else if ft.is_symlink() {
                let target = std::fs::read_link(e.path()).unwrap();
                d += &format!(" data {:x}", fnv(target.as_os_str().as_bytes()));
            }
            let mut names: Vec<_> = xattr::list(e.path()).unwrap().collect();
            names.sort();
            for n in names {
                let v = xattr::get(e.path(), &n).unwrap().unwrap_or_default();
                d += &format!(" {}={:x}", n.to_string_lossy(), fnv(&v));
            }
            out.push(d);
        }
    }
    out.sort();
    out
}

/// A description with what differs between filesystems by nature left out: the size
/// and link count of directories (btrfs counts no `..` links, sizes are the
/// filesystem's own).
pub fn normalize(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let t: Vec<&str> = l.split(' ').collect();
            let dir = t
                .get(2)
                .and_then(|m| u32::from_str_radix(m, 8).ok())
                .is_some_and(|m| m & 0o170000 == 0o040000);
            if !dir {
                return l.clone();
            }
            let mut keep = Vec::new();
            let mut i = 0;
            while i < t.len() {
                if i > 0 && (t[i] == "nlink" || t[i] == "size") {
                    i += 2;
                    continue;
                }
                keep.push(t[i]);
                i += 1;
            }
            keep.join(" ")
        })
        .collect()
}

/// The marker on a received directory's root, if any: (xattr, sidecar).
pub fn marker(dest: &Path, name: &str) -> (Option<String>, Option<String>) {
    let x = xattr::get(dest.join(name), "user.arbor.received")
        .ok()
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    let side = std::fs::read_to_string(dest.join(format!(".{name}.arbor-received"))).ok();
    (x, side)
}
