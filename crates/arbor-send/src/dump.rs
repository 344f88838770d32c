//! The text `btrfs receive --dump` prints, as btrfs-progs **6.2** prints it, with the
//! timestamps of `TZ=UTC`. One line per command:
//!
//! ```text
//! <name padded to 16><escaped path>[<spaces to column 32 of the path, at least one><parameters>]
//! ```
//!
//! The path is the command's PATH joined to the current subvolume (`./<name>`, set by
//! SUBVOL and SNAPSHOT; `.` before them) the way btrfs-progs joins paths: one trailing `/`
//! of each part dropped, so the subvolume root prints as `./<name>/`. Paths and the
//! `dest=` of symlink, rename and link are escaped (`\a \b \e \f \n \r \t \v`, `\ ` for a
//! space, `\\`, other bytes outside 0x21..=0x7e as `\ooo`); every other string is printed
//! raw, as 6.2 does: the `from=` of clone, xattr names, and xattr values (which stop at
//! their first NUL byte, since 6.2 prints them with `%.*s`).
//!
//! Other 6.2 quirks kept on purpose: `chown` prints the gid first; `fileattr=0x` is
//! followed by the value in decimal; `encoded_write` puts a comma after `len` and after
//! each following field but the last; clone's `len` went through a C `int`, so lengths of
//! 2^31 and more print as the sign-extended 32-bit value; utimes prints seconds only
//! (no nanoseconds, no otime). Joining a subvolume path and a path whose lengths add up to
//! 4094 bytes or more fails in 6.2 (ENAMETOOLONG), an error here; except that for
//! symlink, link and rename a PATH too long to join makes 6.2 print just the escaped
//! `dest` and a newline and go on, and so does this.

use std::fmt::Write as _;
use std::io::{self, Read, Write};

use crate::command::{Command, Timespec, Uuid};
use crate::decode::{DecodeError, StreamReader};

/// PATH_MAX of btrfs-progs' `path_cat_out`, which refuses to join two parts whose
/// lengths add up to `PATH_MAX - 2` or more.
const PATH_MAX: usize = 4096;
/// Width of the command name column.
const NAME_WIDTH: usize = 16;
/// Width the escaped path is padded to when parameters follow.
const PATH_WIDTH: usize = 32;

/// Prints commands like `btrfs receive --dump`, keeping the current subvolume path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dumper {
    subvol: Vec<u8>,
}

impl Default for Dumper {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a stream could not be dumped.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The stream is invalid.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A command cannot be printed (a path too long, a time out of range), or the output
    /// failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Decodes a stream and dumps it up to and including its first END, as
/// `TZ=UTC btrfs receive --dump` (btrfs-progs 6.2) does. What was printed before an
/// error stays printed.
pub fn dump_stream<R: Read, W: Write + ?Sized>(input: R, out: &mut W) -> Result<(), DumpError> {
    let mut dumper = Dumper::new();
    for item in StreamReader::new(input)? {
        let (_, cmd) = item?;
        dumper.dump(&cmd, out)?;
        if cmd == Command::End {
            break;
        }
    }
    Ok(())
}

impl Dumper {
    /// A dumper before any SUBVOL or SNAPSHOT: paths print as `./<PATH>`.
    pub fn new() -> Self {
        Self {
            subvol: b".".to_vec(),
        }
    }

    /// The current subvolume path: `.`, then `./<name>` of the last SUBVOL or SNAPSHOT.
    pub fn subvol_path(&self) -> &[u8] {
        &self.subvol
    }

    /// Prints the line of one command (nothing for END). A command that btrfs-progs 6.2
    /// fails to print (see the module documentation) is an [`io::ErrorKind::InvalidInput`]
    /// error and prints nothing. The line is written with a single `write_all`.
    pub fn dump<W: Write + ?Sized>(&mut self, cmd: &Command, out: &mut W) -> io::Result<()> {
        let line = self.line(cmd)?;
        out.write_all(&line)
    }

    fn line(&mut self, cmd: &Command) -> io::Result<Vec<u8>> {
        let name = cmd.kind().name();
        let plain = |this: &Self, path: &[u8]| -> io::Result<Vec<u8>> {
            Ok(line(name, &this.join(name, path)?, None))
        };
        let with = |this: &Self, path: &[u8], params: String| -> io::Result<Vec<u8>> {
            Ok(line(name, &this.join(name, path)?, Some(params.as_bytes())))
        };
        match cmd {
            Command::Subvol {
                path,
                uuid,
                ctransid,
            } => {
                let full = join(b".", path).ok_or_else(|| path_error(name, path))?;
                let params = format!("uuid={} transid={ctransid}", uuid_text(uuid));
                self.subvol = full;
                Ok(line(name, &self.subvol, Some(params.as_bytes())))
            }
            Command::Snapshot {
                path,
                uuid,
                ctransid,
                clone_uuid,
                clone_ctransid,
            } => {
                let full = join(b".", path).ok_or_else(|| path_error(name, path))?;
                let params = format!(
                    "uuid={} transid={ctransid} parent_uuid={} parent_transid={clone_ctransid}",
                    uuid_text(uuid),
                    uuid_text(clone_uuid)
                );
                self.subvol = full;
                Ok(line(name, &self.subvol, Some(params.as_bytes())))
            }
            Command::Mkfile { path, .. }
            | Command::Mkdir { path, .. }
            | Command::Mkfifo { path, .. }
            | Command::Mksock { path, .. }
            | Command::Unlink { path }
            | Command::Rmdir { path } => plain(self, path),
            Command::Mknod {
                path, rdev, mode, ..
            } => with(self, path, format!("mode={mode:o} dev=0x{rdev:x}")),
            Command::Symlink {
                path, path_link, ..
            }
            | Command::Link { path, path_link } => Ok(self.with_dest(name, path, path_link)),
            Command::Rename { path, path_to } => {
                let to = self.join(name, path_to)?;
                Ok(self.with_dest(name, path, &to))
            }
            Command::SetXattr {
                path,
                name: x,
                data,
            } => {
                let full = self.join(name, path)?;
                let mut params = b"name=".to_vec();
                params.extend_from_slice(c_str(x));
                params.extend_from_slice(b" data=");
                params.extend_from_slice(c_str(data));
                params.extend_from_slice(format!(" len={}", c_int(data.len())).as_bytes());
                Ok(line(name, &full, Some(&params)))
            }
            Command::RemoveXattr { path, name: x } => {
                let full = self.join(name, path)?;
                let mut params = b"name=".to_vec();
                params.extend_from_slice(c_str(x));
                Ok(line(name, &full, Some(&params)))
            }
            Command::Write { path, offset, data } => {
                with(self, path, format!("offset={offset} len={}", data.len()))
            }
            Command::Clone {
                path,
                offset,
                len,
                clone_path,
                clone_offset,
                ..
            } => {
                let from = self.join(name, clone_path)?;
                let full = self.join(name, path)?;
                // 6.2 reads CLONE_LEN into an `int` and passes it on as u64.
                let len = i64::from(*len as u32 as i32) as u64;
                let mut params = format!("offset={offset} len={len} from=").into_bytes();
                params.extend_from_slice(&from);
                params.extend_from_slice(format!(" clone_offset={clone_offset}").as_bytes());
                Ok(line(name, &full, Some(&params)))
            }
            Command::Truncate { path, size } => with(self, path, format!("size={size}")),
            Command::Chmod { path, mode } => with(self, path, format!("mode={mode:o}")),
            Command::Chown { path, uid, gid } => with(self, path, format!("gid={gid} uid={uid}")),
            Command::Utimes {
                path,
                atime,
                mtime,
                ctime,
                ..
            } => {
                let params = format!(
                    "atime={} mtime={} ctime={}",
                    time_text(atime)?,
                    time_text(mtime)?,
                    time_text(ctime)?
                );
                with(self, path, params)
            }
            Command::End => Ok(Vec::new()),
            Command::ArborResume {
                uuid,
                ctransid,
                skip,
            } => {
                let params = format!("uuid={} transid={ctransid} skip={skip}", uuid_text(uuid));
                Ok(line(name, &self.subvol, Some(params.as_bytes())))
            }
            Command::UpdateExtent { path, offset, len } => {
                with(self, path, format!("offset={offset} len={len}"))
            }
            Command::Fallocate {
                path,
                mode,
                offset,
                len,
            } => with(
                self,
                path,
                format!("mode={} offset={offset} len={len}", *mode as i32),
            ),
            Command::Fileattr { path, attr } => with(self, path, format!("fileattr=0x{attr}")),
            Command::EncodedWrite {
                path,
                offset,
                unencoded_file_len,
                unencoded_len,
                unencoded_offset,
                compression,
                encryption,
                data,
            } => with(
                self,
                path,
                format!(
                    "offset={offset} len={}, unencoded_file_len={unencoded_file_len}, \
                     unencoded_len={unencoded_len}, unencoded_offset={unencoded_offset}, \
                     compression={}, encryption={}",
                    data.len(),
                    compression.unwrap_or(0),
                    encryption.unwrap_or(0)
                ),
            ),
            Command::EnableVerity {
                path,
                algorithm,
                block_size,
                salt,
                sig,
            } => with(
                self,
                path,
                format!(
                    "algorithm={algorithm} block_size={block_size} salt_len={} sig_len={}",
                    c_int(salt.len()),
                    c_int(sig.len())
                ),
            ),
        }
    }

    /// The current subvolume path joined with `path`.
    fn join(&self, name: &str, path: &[u8]) -> io::Result<Vec<u8>> {
        join(&self.subvol, path).ok_or_else(|| path_error(name, path))
    }

    /// A line ending in `dest=<escaped dest>` (symlink, link, rename). If PATH cannot be
    /// joined, 6.2 prints the error, ignores it, and still prints the escaped dest.
    fn with_dest(&self, name: &str, path: &[u8], dest: &[u8]) -> Vec<u8> {
        let mut tail = Vec::new();
        escape(&mut tail, dest);
        match join(&self.subvol, path) {
            Some(full) => {
                let mut params = b"dest=".to_vec();
                params.extend_from_slice(&tail);
                line(name, &full, Some(&params))
            }
            None => {
                tail.push(b'\n');
                tail
            }
        }
    }
}

/// One output line: the name column, the escaped path, then the parameters if any.
fn line(name: &str, path: &[u8], params: Option<&[u8]>) -> Vec<u8> {
    let mut l = format!("{name:<NAME_WIDTH$}").into_bytes();
    let mut width = escape(&mut l, path);
    if let Some(params) = params {
        loop {
            l.push(b' ');
            width += 1;
            if width >= PATH_WIDTH {
                break;
            }
        }
        l.extend_from_slice(params);
    }
    l.push(b'\n');
    l
}

/// The bytes up to the first NUL: what C string functions see.
fn c_str(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => b.get(..i).unwrap_or(b),
        None => b,
    }
}

/// A length as btrfs-progs' `int` holds it.
fn c_int(n: usize) -> i32 {
    n as i32
}

/// btrfs-progs' `path_cat_out`: `p1/p2` with one trailing `/` dropped from each, `None`
/// (ENAMETOOLONG) if `len(p1) + len(p2) + 2 >= PATH_MAX`.
fn join(p1: &[u8], p2: &[u8]) -> Option<Vec<u8>> {
    let (p1, p2) = (c_str(p1), c_str(p2));
    if p1.len() + p2.len() + 2 >= PATH_MAX {
        return None;
    }
    let p1 = p1.strip_suffix(b"/").unwrap_or(p1);
    let p2 = p2.strip_suffix(b"/").unwrap_or(p2);
    let mut out = Vec::with_capacity(p1.len() + 1 + p2.len());
    out.extend_from_slice(p1);
    out.push(b'/');
    out.extend_from_slice(p2);
    Some(out)
}

fn path_error(name: &str, path: &[u8]) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{name}: path invalid: {} (ENAMETOOLONG)",
            String::from_utf8_lossy(c_str(path))
        ),
    )
}

/// Appends `s` (up to its first NUL) escaped as btrfs-progs' `print_path_escaped` does;
/// returns the number of characters written.
fn escape(out: &mut Vec<u8>, s: &[u8]) -> usize {
    let start = out.len();
    for &c in c_str(s) {
        let letter = match c {
            0x07 => Some(b'a'),
            0x08 => Some(b'b'),
            0x1b => Some(b'e'),
            0x0c => Some(b'f'),
            b'\n' => Some(b'n'),
            b'\r' => Some(b'r'),
            b'\t' => Some(b't'),
            0x0b => Some(b'v'),
            b' ' => Some(b' '),
            b'\\' => Some(b'\\'),
            _ => None,
        };
        if let Some(l) = letter {
            out.extend_from_slice(&[b'\\', l]);
        } else if (0x21..=0x7e).contains(&c) {
            out.push(c);
        } else {
            out.extend_from_slice(&[
                b'\\',
                b'0' + (c >> 6),
                b'0' + ((c >> 3) & 7),
                b'0' + (c & 7),
            ]);
        }
    }
    out.len() - start
}

/// `uuid_unparse`: lower-case hex in groups 8-4-4-4-12.
fn uuid_text(u: &Uuid) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `strftime("%FT%T%z")` of `localtime_r` with `TZ=UTC`, as glibc does it: the year
/// unpadded and, like glibc, computed in a C `int`; `localtime_r` fails when the year
/// minus 1900 does not fit an `int`, and so does this.
fn time_text(t: &Timespec) -> io::Result<String> {
    let days = t.sec.div_euclid(86_400);
    let secs = t.sec.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let tm_year = i32::try_from(year - 1900).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "failed to convert time {}.{:09} to local time",
                t.sec, t.nsec
            ),
        )
    })?;
    Ok(format!(
        "{}-{month:02}-{day:02}T{:02}:{:02}:{:02}+0000",
        tm_year.wrapping_add(1900),
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    ))
}

/// Proleptic Gregorian (year, month, day) of a day count from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`), for the whole i64 range of seconds.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(sec: i64) -> String {
        time_text(&Timespec { sec, nsec: 0 }).unwrap_or_else(|_| "FAIL".into())
    }

    #[test]
    fn times_print_like_glibc_strftime_in_utc() {
        // Values checked against glibc 2.36 (`TZ=UTC`, localtime_r + strftime "%FT%T%z").
        assert_eq!(ts(0), "1970-01-01T00:00:00+0000");
        assert_eq!(ts(-1), "1969-12-31T23:59:59+0000");
        assert_eq!(ts(1_577_934_245), "2020-01-02T03:04:05+0000");
        assert_eq!(ts(-62_135_596_800), "1-01-01T00:00:00+0000");
        assert_eq!(ts(-62_135_596_801), "0-12-31T23:59:59+0000");
        assert_eq!(ts(-100_000_000_000), "-1199-02-15T14:13:20+0000");
        assert_eq!(ts(253_402_300_800), "10000-01-01T00:00:00+0000");
        assert_eq!(ts(67_767_976_233_316_800), "2147483647-12-29T12:00:00+0000");
        assert_eq!(
            ts(67_768_036_191_676_799),
            "-2147481749-12-31T23:59:59+0000"
        );
        assert_eq!(ts(67_768_036_191_676_800), "FAIL");
        assert_eq!(
            ts(-67_768_040_609_740_800),
            "-2147481748-01-01T00:00:00+0000"
        );
        assert_eq!(ts(-67_768_040_609_740_801), "FAIL");
        assert_eq!(ts(i64::MIN), "FAIL");
        assert_eq!(ts(i64::MAX), "FAIL");
    }

    #[test]
    fn escaping_follows_print_path_escaped() {
        let mut out = Vec::new();
        let n = escape(&mut out, b"a b\\c\n\x07\x1b\x7f\xe9~!");
        assert_eq!(out, b"a\\ b\\\\c\\n\\a\\e\\177\\351~!".to_vec());
        assert_eq!(n, out.len());
    }

    #[test]
    fn join_drops_one_trailing_slash_and_refuses_path_max() {
        assert_eq!(join(b"./s", b""), Some(b"./s/".to_vec()));
        assert_eq!(join(b"./s/", b"a//"), Some(b"./s/a/".to_vec()));
        assert_eq!(join(b".", b"snap"), Some(b"./snap".to_vec()));
        let long = vec![b'x'; 4096 - 2 - 3];
        assert_eq!(join(b"./s", &long), None);
        assert!(join(b"./s", &long[1..]).is_some());
    }

    #[test]
    fn uuid_prints_in_groups() {
        let u = [
            0x6c, 0x53, 0x59, 0xd7, 0x0f, 0x7d, 0x96, 0x49, 0x83, 0x4f, 0xeb, 0xb2, 0x67, 0xeb,
            0xee, 0x55,
        ];
        assert_eq!(uuid_text(&u), "6c5359d7-0f7d-9649-834f-ebb267ebee55");
    }
}
