//! /proc/self/mountinfo, read once per call: what is mounted where.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// One mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The device number (`st_dev` of files on it).
    pub dev: u64,
    pub point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Every mount, in mount order (a later one hides an earlier one on the same point).
pub fn mounts() -> Result<Vec<Mount>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .context("cannot read /proc/self/mountinfo")?;
    Ok(info.lines().filter_map(parse).collect())
}

/// The mount on `point` that is on top, if any.
pub fn mount_at(point: &Path) -> Result<Option<Mount>> {
    let want = std::fs::canonicalize(point).unwrap_or_else(|_| point.to_path_buf());
    Ok(mounts()?.into_iter().rev().find(|m| m.point == want))
}

fn parse(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields.iter().position(|f| *f == "-")?;
    let (major, minor) = fields.get(2)?.split_once(':')?;
    Some(Mount {
        dev: nix::sys::stat::makedev(major.parse().ok()?, minor.parse().ok()?),
        point: PathBuf::from(unescape(fields.get(4)?)),
        fstype: (*fields.get(sep + 1)?).to_string(),
        source: unescape(fields.get(sep + 2)?),
    })
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo` octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let digit = |c: u8| u16::from(c - b'0');
            let v = digit(b[i + 1]) * 64 + digit(b[i + 2]) * 8 + digit(b[i + 3]);
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_escaped_paths_parse() {
        let m = parse(
            "36 35 0:52 / /mnt/with\\040space rw,relatime shared:1 - fuse.arbor /tmp/a\\134b.img rw",
        )
        .unwrap();
        assert_eq!(m.point, PathBuf::from("/mnt/with space"));
        assert_eq!(m.fstype, "fuse.arbor");
        assert_eq!(m.source, "/tmp/a\\b.img");
        assert_eq!(m.dev, nix::sys::stat::makedev(0, 52));
        assert_eq!(
            unescape("\\777x"),
            "?x",
            "out-of-range octal does not panic"
        );
        assert!(parse("garbage").is_none());
    }
}
