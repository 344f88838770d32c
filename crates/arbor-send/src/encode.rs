//! The encoder: [`StreamWriter`] writes a stream header and commands exactly as the Linux
//! kernel lays them out (same attribute order, same framing, same CRC), so that a stream
//! decoded from the kernel re-encodes to the same bytes.

use std::io::{self, Write};

use crate::command::{Attr, Command, CommandKind, InvalidField, TIMESPEC_SIZE, Value};
use crate::wire::{
    self, COMMAND_HEADER_SIZE, CRC_OFFSET, LEN_OFFSET, MAX_COMMAND_SIZE_V1, MAX_VERSION,
    MIN_VERSION,
};

/// Why a command could not be encoded. Nothing of it was written, except for
/// [`EncodeError::Io`], after which the output may hold part of the command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Only versions [`MIN_VERSION`]..=[`MAX_VERSION`] exist.
    #[error("send stream version {0} is not supported (only {MIN_VERSION} to {MAX_VERSION})")]
    UnsupportedVersion(u32),
    /// The command is newer than the stream version (FALLOCATE in v1, for example).
    #[error(
        "command {kind} needs send stream version {}, this stream is version {version}",
        kind.min_version()
    )]
    CommandNotInVersion {
        /// The command.
        kind: CommandKind,
        /// The stream's version.
        version: u32,
    },
    /// A field breaks a rule of [`Command::validate`].
    #[error("command {kind}: {field}")]
    InvalidField {
        /// The command.
        kind: CommandKind,
        /// The field and its problem.
        field: InvalidField,
    },
    /// A value too long for the 16-bit length of a TLV.
    #[error("command {kind}: attribute {attr} is {len} bytes, more than a TLV holds (65535)")]
    AttributeTooLong {
        /// The command.
        kind: CommandKind,
        /// The attribute.
        attr: Attr,
        /// Its length.
        len: usize,
    },
    /// The whole command, header included, is larger than the version allows.
    #[error(
        "command {kind} would be {size} bytes, more than the {max} a version {version} stream allows"
    )]
    CommandTooLarge {
        /// The command.
        kind: CommandKind,
        /// Its size with the header.
        size: usize,
        /// The limit, [`max_encoded_command_size`].
        max: usize,
        /// The stream's version.
        version: u32,
    },
    /// The output failed.
    #[error("writing the send stream failed: {0}")]
    Io(#[from] io::Error),
}

/// Largest command, header included, the encoder writes for a stream version. For v1 it is
/// one byte under the kernel's 64 KiB buffer: btrfs-progs before 5.19 read v1 commands into
/// a 64 KiB buffer and refuse `10 + len >= 64 KiB`. For v2 and v3 it is
/// [`wire::MAX_COMMAND_SIZE_V2`], so that everything written can be read back.
pub const fn max_encoded_command_size(version: u32) -> usize {
    if version <= 1 {
        MAX_COMMAND_SIZE_V1 - 1
    } else {
        wire::max_command_size(version)
    }
}

/// Writes a send stream: the header on creation, then one command per
/// [`write_command`](Self::write_command). The caller writes [`Command::End`] last.
#[derive(Debug)]
pub struct StreamWriter<W: Write> {
    inner: W,
    version: u32,
    buf: Vec<u8>,
}

impl<W: Write> StreamWriter<W> {
    /// Writes the stream header of `version` (1, 2 or 3) to `inner`.
    pub fn new(mut inner: W, version: u32) -> Result<Self, EncodeError> {
        check_version(version)?;
        inner.write_all(&wire::header(version))?;
        Ok(Self::without_header(inner, version))
    }

    /// Writes the header of a stream of `version` that resumes an interrupted receive
    /// (see [`wire::RESUMED_FLAG`]); it carries an `arbor_resume` command after its
    /// subvol or snapshot command.
    pub fn new_resumed(mut inner: W, version: u32) -> Result<Self, EncodeError> {
        check_version(version)?;
        inner.write_all(&wire::header(version | wire::RESUMED_FLAG))?;
        Ok(Self::without_header(inner, version))
    }

    /// A writer that continues a stream whose header is already written (or, like
    /// `btrfs send -e`, a later subvolume of one stream). `version` is assumed valid;
    /// [`write_command`](Self::write_command) refuses commands if it is not.
    pub fn without_header(inner: W, version: u32) -> Self {
        Self {
            inner,
            version,
            buf: Vec::new(),
        }
    }

    /// The stream version commands are encoded for.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Encodes and writes one command.
    pub fn write_command(&mut self, cmd: &Command) -> Result<(), EncodeError> {
        self.buf.clear();
        encode_command(cmd, self.version, &mut self.buf)?;
        self.inner.write_all(&self.buf)?;
        Ok(())
    }

    /// The output.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The output, mutably. Writing to it directly corrupts the stream.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Ends the writer and returns the output (not flushed).
    pub fn into_inner(self) -> W {
        self.inner
    }
}

fn check_version(version: u32) -> Result<(), EncodeError> {
    if (MIN_VERSION..=MAX_VERSION).contains(&version) {
        Ok(())
    } else {
        Err(EncodeError::UnsupportedVersion(version))
    }
}

/// Appends one framed command (header with length and CRC, then its TLVs in the
/// kernel's order) to `out`. On error `out` is left as it was.
pub fn encode_command(cmd: &Command, version: u32, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    check_version(version)?;
    let kind = cmd.kind();
    if kind.min_version() > version {
        return Err(EncodeError::CommandNotInVersion { kind, version });
    }
    cmd.validate()
        .map_err(|field| EncodeError::InvalidField { kind, field })?;

    let start = out.len();
    let r = put_command(cmd, kind, version, out);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

fn put_command(
    cmd: &Command,
    kind: CommandKind,
    version: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    let mut header = [0u8; COMMAND_HEADER_SIZE];
    header[wire::CMD_OFFSET..CRC_OFFSET].copy_from_slice(&kind.number().to_le_bytes());
    out.extend_from_slice(&header);

    for &attr in kind.attrs() {
        let Some(value) = cmd.value(attr) else {
            continue; // an absent optional attribute
        };
        let mut fixed = [0u8; TIMESPEC_SIZE];
        let bytes: &[u8] = match value {
            Value::U8(v) => {
                fixed[0] = v;
                &fixed[..1]
            }
            Value::U32(v) => {
                fixed[..4].copy_from_slice(&v.to_le_bytes());
                &fixed[..4]
            }
            Value::U64(v) => {
                fixed[..8].copy_from_slice(&v.to_le_bytes());
                &fixed[..8]
            }
            Value::Time(t) => {
                fixed[..8].copy_from_slice(&t.sec.to_le_bytes());
                fixed[8..].copy_from_slice(&t.nsec.to_le_bytes());
                &fixed
            }
            Value::Uuid(u) => u,
            Value::Bytes(b) => b,
        };
        out.extend_from_slice(&attr.number().to_le_bytes());
        if attr == Attr::Data && version >= 2 {
            // v2+: no length; the value runs to the end of the command (DATA is last in
            // every command's attribute list).
        } else {
            let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::AttributeTooLong {
                kind,
                attr,
                len: bytes.len(),
            })?;
            out.extend_from_slice(&len.to_le_bytes());
        }
        out.extend_from_slice(bytes);
    }

    let size = out.len() - start;
    let max = max_encoded_command_size(version);
    if size > max {
        return Err(EncodeError::CommandTooLarge {
            kind,
            size,
            max,
            version,
        });
    }
    let cmd_bytes = &mut out[start..];
    let len = u32::try_from(size - COMMAND_HEADER_SIZE).unwrap_or(u32::MAX); // size <= max
    cmd_bytes[LEN_OFFSET..wire::CMD_OFFSET].copy_from_slice(&len.to_le_bytes());
    let (head, payload) = cmd_bytes.split_at_mut(COMMAND_HEADER_SIZE);
    let mut h = [0u8; COMMAND_HEADER_SIZE];
    h.copy_from_slice(head);
    let crc = wire::command_crc(&h, payload);
    head[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn enc(cmd: &Command, version: u32) -> Vec<u8> {
        let mut out = Vec::new();
        encode_command(cmd, version, &mut out).unwrap();
        out
    }

    #[test]
    fn end_mkfile_and_write_match_the_reference_bytes() {
        assert_eq!(enc(&Command::End, 1), hex("00000000 1500 506cc99d"));
        let mkfile = Command::Mkfile {
            path: b"o257-7-0".to_vec(),
            ino: 257,
        };
        assert_eq!(
            enc(&mkfile, 1),
            hex("18000000 0300 6c6edb03 0f00 0800 6f3235372d372d30 0300 0800 0101000000000000")
        );
        let write = Command::Write {
            path: b"f".to_vec(),
            offset: 0,
            data: b"hi".to_vec(),
        };
        assert_eq!(
            enc(&write, 1),
            hex("17000000 0f00 e46725ae 0f000100 66 12000800 0000000000000000 13000200 6869")
        );
        assert_eq!(
            enc(&write, 2),
            hex("15000000 0f00 0b4986ee 0f000100 66 12000800 0000000000000000 1300 6869")
        );
    }

    #[test]
    fn commands_newer_than_the_stream_version_are_refused() {
        let falloc = Command::Fallocate {
            path: b"f".to_vec(),
            mode: 3,
            offset: 0,
            len: 4096,
        };
        let mut out = Vec::new();
        assert!(matches!(
            encode_command(&falloc, 1, &mut out),
            Err(EncodeError::CommandNotInVersion {
                kind: CommandKind::Fallocate,
                version: 1
            })
        ));
        assert!(out.is_empty());
        let verity = Command::EnableVerity {
            path: b"f".to_vec(),
            algorithm: 1,
            block_size: 4096,
            salt: Vec::new(),
            sig: Vec::new(),
        };
        assert!(matches!(
            encode_command(&verity, 2, &mut out),
            Err(EncodeError::CommandNotInVersion { .. })
        ));
        assert!(encode_command(&verity, 3, &mut out).is_ok());
    }

    #[test]
    fn versions_outside_one_to_three_are_refused() {
        for v in [0, 4, u32::MAX] {
            assert!(matches!(
                StreamWriter::new(Vec::new(), v),
                Err(EncodeError::UnsupportedVersion(_))
            ));
        }
    }

    #[test]
    fn v1_commands_stay_below_64_kib_and_v1_data_below_65536() {
        let write = |n: usize| Command::Write {
            path: b"f".to_vec(),
            offset: 0,
            data: vec![0; n],
        };
        // 10 header + 5 path TLV + 12 offset TLV + 4 data header = 31 bytes of overhead.
        let mut out = Vec::new();
        assert!(encode_command(&write(65535 - 31), 1, &mut out).is_ok());
        assert_eq!(out.len(), 65535);
        out.clear();
        assert!(matches!(
            encode_command(&write(65536 - 31), 1, &mut out),
            Err(EncodeError::CommandTooLarge { size: 65536, .. })
        ));
        assert!(out.is_empty());
        // v2 has no per-TLV limit on DATA.
        assert!(encode_command(&write(128 << 10), 2, &mut out).is_ok());
        let xattr = Command::SetXattr {
            path: b"f".to_vec(),
            name: b"user.x".to_vec(),
            data: vec![0; 70000],
        };
        assert!(matches!(
            encode_command(&xattr, 2, &mut Vec::new()),
            Err(EncodeError::AttributeTooLong {
                attr: Attr::XattrData,
                ..
            })
        ));
    }

    #[test]
    fn invalid_fields_are_refused_before_anything_is_written() {
        let mut out = Vec::new();
        let mkdir = Command::Mkdir {
            path: Vec::new(),
            ino: 300,
        };
        assert!(matches!(
            encode_command(&mkdir, 1, &mut out),
            Err(EncodeError::InvalidField { .. })
        ));
        assert!(out.is_empty());
    }
}
