//! The decoder: [`StreamReader`] turns bytes into [`Command`]s, refusing anything a
//! kernel would not have written.
//!
//! Order of the checks for each command, so that nothing of a damaged command is
//! interpreted: the 10-byte header is read; its length is checked against
//! [`max_command_size`] (a forged length costs nothing); the payload is read; the CRC is
//! checked over header and payload; only then are the command number (known, and not
//! newer than the stream version) and the TLVs looked at: every attribute known, allowed
//! for this command, not repeated, inside the command, of the exact size for fixed-size
//! ones; every required attribute present; and the value rules of
//! [`Command::validate`]. Memory for one command is the payload buffer, at most
//! [`max_command_size`] bytes, whose DATA part becomes the command's data without a copy.

use std::io::{self, Read};
use std::ops::Range;

use crate::command::{Attr, Command, CommandKind, InvalidField, TIMESPEC_SIZE, Timespec, Uuid};
use crate::wire::{
    self, COMMAND_HEADER_SIZE, CRC_OFFSET, DATA_HEADER_SIZE_V2, HEADER_SIZE, MAGIC, MAX_VERSION,
    MIN_VERSION, TLV_HEADER_SIZE, max_command_size,
};

/// Where a decoded command was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CommandInfo {
    /// Its position among the commands of the input, from 0 (counting on across
    /// concatenated streams).
    pub index: u64,
    /// Byte offset of its header in the input.
    pub offset: u64,
}

/// A stream the decoder refuses, and where.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.describe())]
pub struct DecodeError {
    /// Index of the command being read (for an error in a stream header: the index the
    /// next command would have had).
    pub index: u64,
    /// Byte offset in the input where that command (or stream header) starts.
    pub offset: u64,
    /// The command, once its number was read and its CRC checked.
    pub command: Option<CommandKind>,
    /// What is wrong (part of the message, so not also a `source`).
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    fn describe(&self) -> String {
        let what = if self.kind.is_header() {
            "stream header".to_string()
        } else {
            match self.command {
                Some(k) => format!("command #{} ({})", self.index, k.name()),
                None => format!("command #{}", self.index),
            }
        };
        format!(
            "invalid send stream: {what} at byte {}: {}",
            self.offset, self.kind
        )
    }
}

/// What is wrong with a stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// Reading the input failed.
    #[error("read failed: {0}")]
    Io(io::Error),
    /// Not a single byte.
    #[error("the input is empty")]
    Empty,
    /// The input ends inside a stream header.
    #[error("the stream header is truncated ({got} of {HEADER_SIZE} bytes)")]
    TruncatedHeader {
        /// Bytes there were.
        got: usize,
    },
    /// The stream header does not start with `btrfs-stream\0`.
    #[error("bad magic {found:02x?}, expected \"btrfs-stream\\0\"")]
    BadMagic {
        /// The first 13 bytes.
        found: [u8; 13],
    },
    /// A version other than 1, 2 or 3.
    #[error("stream version {0} is not supported (only {MIN_VERSION} to {MAX_VERSION})")]
    UnsupportedVersion(u32),
    /// The input ends between two commands without an END command (btrfs receive fails
    /// such a stream too).
    #[error("the input ends without an END command")]
    MissingEnd,
    /// The input ends inside a command.
    #[error("the command is truncated ({got} of {needed} bytes)")]
    TruncatedCommand {
        /// Bytes the command has, header included.
        needed: u64,
        /// Bytes there were.
        got: u64,
    },
    /// The length field asks for more than the protocol allows.
    #[error(
        "command length {len} plus the {COMMAND_HEADER_SIZE}-byte header exceeds the {max}-byte limit"
    )]
    CommandTooLarge {
        /// The length field (payload bytes).
        len: u32,
        /// The limit, header included.
        max: usize,
    },
    /// The CRC does not match: the command is damaged.
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// The header's crc field.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// A command number this protocol does not have.
    #[error("unknown command number {0}")]
    UnknownCommand(u16),
    /// A command newer than the stream's version.
    #[error("the command needs stream version {}, the stream is version {version}", kind.min_version())]
    CommandNotInVersion {
        /// The command.
        kind: CommandKind,
        /// The stream's version.
        version: u32,
    },
    /// A TLV header or value runs past the end of the command.
    #[error("the attribute at byte {at} runs past the end of the command")]
    TruncatedAttribute {
        /// Byte offset of the TLV in the input.
        at: u64,
    },
    /// An attribute number the protocol does not have (0 or above 35).
    #[error("unknown attribute number {number} at byte {at}")]
    UnknownAttribute {
        /// Byte offset of the TLV.
        at: u64,
        /// Its type field.
        number: u16,
    },
    /// A known attribute that this command does not carry.
    #[error("attribute {attr} at byte {at} does not belong to this command")]
    UnexpectedAttribute {
        /// Byte offset of the TLV.
        at: u64,
        /// The attribute.
        attr: Attr,
    },
    /// The same attribute twice.
    #[error("attribute {attr} repeated at byte {at}")]
    DuplicateAttribute {
        /// Byte offset of the second one.
        at: u64,
        /// The attribute.
        attr: Attr,
    },
    /// A fixed-size attribute of another size.
    #[error("attribute {attr} at byte {at} has {len} bytes, expected {expected}")]
    AttributeSize {
        /// Byte offset of the TLV.
        at: u64,
        /// The attribute.
        attr: Attr,
        /// Its length.
        len: usize,
        /// The size of its type.
        expected: usize,
    },
    /// A required attribute is absent.
    #[error("required attribute {0} is missing")]
    MissingAttribute(Attr),
    /// An attribute's value breaks a rule of [`Command::validate`].
    #[error("{field} (at byte {at})")]
    InvalidValue {
        /// Byte offset of the TLV.
        at: u64,
        /// The attribute and the problem.
        field: InvalidField,
    },
}

impl DecodeErrorKind {
    /// Whether the error is in a stream header rather than a command.
    pub fn is_header(&self) -> bool {
        matches!(
            self,
            DecodeErrorKind::Empty
                | DecodeErrorKind::TruncatedHeader { .. }
                | DecodeErrorKind::BadMagic { .. }
                | DecodeErrorKind::UnsupportedVersion(_)
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading commands.
    Commands,
    /// After END: either the input ends or another stream header follows.
    AfterEnd,
    /// The input ended, or an error was returned.
    Done,
}

/// Reads a send stream: the header when created, then one `(CommandInfo, Command)` per
/// iteration. After END, the input may end or another stream (with its own header)
/// follow, as `btrfs send` writes when sending several subvolumes. After an error the
/// iterator yields nothing more.
#[derive(Debug)]
pub struct StreamReader<R: Read> {
    inner: R,
    version: u32,
    resumed: bool,
    pos: u64,
    index: u64,
    state: State,
}

impl<R: Read> StreamReader<R> {
    /// Reads and checks the stream header.
    pub fn new(mut inner: R) -> Result<Self, DecodeError> {
        let ((version, resumed), pos) = match read_header(&mut inner, 0, 0) {
            Ok((Some(v), pos)) => (v, pos),
            Ok((None, _)) => {
                return Err(DecodeError {
                    index: 0,
                    offset: 0,
                    command: None,
                    kind: DecodeErrorKind::Empty,
                });
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            inner,
            version,
            resumed,
            pos,
            index: 0,
            state: State::Commands,
        })
    }

    /// The version in the header of the stream being read.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Whether the stream being read resumes an interrupted receive (its header says
    /// so; see [`crate::wire::RESUMED_FLAG`]).
    pub fn is_resumed(&self) -> bool {
        self.resumed
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The input.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn next_item(&mut self) -> Option<Result<(CommandInfo, Command), DecodeError>> {
        if self.state == State::AfterEnd {
            match read_header(&mut self.inner, self.pos, self.index) {
                Ok((None, _)) => {
                    self.state = State::Done;
                    return None;
                }
                Ok((Some((v, resumed)), pos)) => {
                    self.version = v;
                    self.resumed = resumed;
                    self.pos = pos;
                    self.state = State::Commands;
                }
                Err(e) => {
                    self.state = State::Done;
                    return Some(Err(e));
                }
            }
        }
        if self.state == State::Done {
            return None;
        }
        let offset = self.pos;
        let index = self.index;
        let r = self.read_command();
        match &r {
            Ok(cmd) => {
                self.index += 1;
                if *cmd == Command::End {
                    self.state = State::AfterEnd;
                }
            }
            Err(_) => self.state = State::Done,
        }
        Some(r.map(|cmd| (CommandInfo { index, offset }, cmd)))
    }

    fn read_command(&mut self) -> Result<Command, DecodeError> {
        let offset = self.pos;
        let index = self.index;
        let fail = |command: Option<CommandKind>, kind: DecodeErrorKind| {
            Err(DecodeError {
                index,
                offset,
                command,
                kind,
            })
        };

        let mut head = [0u8; COMMAND_HEADER_SIZE];
        let got = match read_full(&mut self.inner, &mut head) {
            Ok(n) => n,
            Err(e) => return fail(None, DecodeErrorKind::Io(e)),
        };
        self.pos += got as u64;
        if got == 0 {
            return fail(None, DecodeErrorKind::MissingEnd);
        }
        if got < COMMAND_HEADER_SIZE {
            return fail(
                None,
                DecodeErrorKind::TruncatedCommand {
                    needed: COMMAND_HEADER_SIZE as u64,
                    got: got as u64,
                },
            );
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let number = u16::from_le_bytes([head[wire::CMD_OFFSET], head[wire::CMD_OFFSET + 1]]);
        let stored = u32::from_le_bytes([
            head[CRC_OFFSET],
            head[CRC_OFFSET + 1],
            head[CRC_OFFSET + 2],
            head[CRC_OFFSET + 3],
        ]);

        let max = max_command_size(self.version);
        let len_usize = len as usize;
        if len_usize > max - COMMAND_HEADER_SIZE {
            return fail(None, DecodeErrorKind::CommandTooLarge { len, max });
        }
        // Bounded by `max` just above.
        let mut payload = Vec::with_capacity(len_usize);
        let read = (&mut self.inner)
            .take(u64::from(len))
            .read_to_end(&mut payload);
        self.pos += payload.len() as u64;
        if let Err(e) = read {
            return fail(None, DecodeErrorKind::Io(e));
        }
        if payload.len() < len_usize {
            return fail(
                None,
                DecodeErrorKind::TruncatedCommand {
                    needed: (COMMAND_HEADER_SIZE + len_usize) as u64,
                    got: (COMMAND_HEADER_SIZE + payload.len()) as u64,
                },
            );
        }
        let computed = wire::command_crc(&head, &payload);
        if computed != stored {
            return fail(None, DecodeErrorKind::CrcMismatch { stored, computed });
        }

        let Some(kind) = CommandKind::from_number(number) else {
            return fail(None, DecodeErrorKind::UnknownCommand(number));
        };
        if kind.min_version() > self.version {
            return fail(
                Some(kind),
                DecodeErrorKind::CommandNotInVersion {
                    kind,
                    version: self.version,
                },
            );
        }
        let payload_offset = offset + COMMAND_HEADER_SIZE as u64;
        match parse_command(kind, self.version, payload, payload_offset) {
            Ok(cmd) => Ok(cmd),
            Err(k) => fail(Some(kind), k),
        }
    }
}

impl<R: Read> Iterator for StreamReader<R> {
    type Item = Result<(CommandInfo, Command), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_item()
    }
}

/// Reads a stream header at byte `pos`: `(None, pos)` at a clean end of the input.
fn read_header<R: Read>(
    r: &mut R,
    pos: u64,
    index: u64,
) -> Result<(Option<(u32, bool)>, u64), DecodeError> {
    let err = |kind| DecodeError {
        index,
        offset: pos,
        command: None,
        kind,
    };
    let mut h = [0u8; HEADER_SIZE];
    let got = read_full(r, &mut h).map_err(|e| err(DecodeErrorKind::Io(e)))?;
    if got == 0 {
        return Ok((None, pos));
    }
    if got < HEADER_SIZE {
        return Err(err(DecodeErrorKind::TruncatedHeader { got }));
    }
    let mut found = [0u8; 13];
    found.copy_from_slice(&h[..MAGIC.len()]);
    if found != MAGIC {
        return Err(err(DecodeErrorKind::BadMagic { found }));
    }
    let raw = u32::from_le_bytes([h[13], h[14], h[15], h[16]]);
    let resumed = raw & 0xffff_0000 == crate::wire::RESUMED_FLAG;
    let version = if resumed { raw & 0xffff } else { raw };
    if !(MIN_VERSION..=MAX_VERSION).contains(&version) {
        return Err(err(DecodeErrorKind::UnsupportedVersion(raw)));
    }
    Ok((Some((version, resumed)), pos + HEADER_SIZE as u64))
}

/// Fills `buf` as far as the input goes; returns the bytes read (less only at its end).
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let Some(rest) = buf.get_mut(n..) else { break };
        match r.read(rest) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Where an attribute was found: the TLV's offset in the input and the value's range in
/// the payload.
#[derive(Clone, Debug)]
struct Slot {
    at: u64,
    value: Range<usize>,
}

const SLOTS: usize = 36; // attribute numbers 0..=35

/// The attributes of one command, parsed and size-checked.
struct Attrs<'a> {
    payload: &'a [u8],
    slots: [Option<Slot>; SLOTS],
}

impl<'a> Attrs<'a> {
    fn slot(&self, a: Attr) -> Option<&Slot> {
        self.slots.get(usize::from(a.number()))?.as_ref()
    }

    fn opt(&self, a: Attr) -> Option<&'a [u8]> {
        let s = self.slot(a)?;
        self.payload.get(s.value.clone())
    }

    fn get(&self, a: Attr) -> Result<&'a [u8], DecodeErrorKind> {
        self.opt(a).ok_or(DecodeErrorKind::MissingAttribute(a))
    }

    fn fixed<const N: usize>(&self, a: Attr, b: &[u8]) -> Result<[u8; N], DecodeErrorKind> {
        b.try_into().map_err(|_| DecodeErrorKind::AttributeSize {
            at: self.slot(a).map_or(0, |s| s.at),
            attr: a,
            len: b.len(),
            expected: N,
        })
    }

    fn bytes(&self, a: Attr) -> Result<Vec<u8>, DecodeErrorKind> {
        Ok(self.get(a)?.to_vec())
    }

    fn u8(&self, a: Attr) -> Result<u8, DecodeErrorKind> {
        Ok(u8::from_le_bytes(self.fixed(a, self.get(a)?)?))
    }

    fn u32(&self, a: Attr) -> Result<u32, DecodeErrorKind> {
        Ok(u32::from_le_bytes(self.fixed(a, self.get(a)?)?))
    }

    fn opt_u32(&self, a: Attr) -> Result<Option<u32>, DecodeErrorKind> {
        match self.opt(a) {
            Some(b) => Ok(Some(u32::from_le_bytes(self.fixed(a, b)?))),
            None => Ok(None),
        }
    }

    fn u64(&self, a: Attr) -> Result<u64, DecodeErrorKind> {
        Ok(u64::from_le_bytes(self.fixed(a, self.get(a)?)?))
    }

    fn uuid(&self, a: Attr) -> Result<Uuid, DecodeErrorKind> {
        self.fixed(a, self.get(a)?)
    }

    fn time_from(&self, a: Attr, b: &[u8]) -> Result<Timespec, DecodeErrorKind> {
        let t: [u8; TIMESPEC_SIZE] = self.fixed(a, b)?;
        let [s0, s1, s2, s3, s4, s5, s6, s7, n0, n1, n2, n3] = t;
        Ok(Timespec {
            sec: i64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]),
            nsec: u32::from_le_bytes([n0, n1, n2, n3]),
        })
    }

    fn time(&self, a: Attr) -> Result<Timespec, DecodeErrorKind> {
        self.time_from(a, self.get(a)?)
    }

    fn opt_time(&self, a: Attr) -> Result<Option<Timespec>, DecodeErrorKind> {
        match self.opt(a) {
            Some(b) => Ok(Some(self.time_from(a, b)?)),
            None => Ok(None),
        }
    }
}

/// Splits the payload into TLVs and checks each one's type, placement, uniqueness and size.
fn parse_attrs(
    kind: CommandKind,
    version: u32,
    payload: &[u8],
    payload_offset: u64,
) -> Result<[Option<Slot>; SLOTS], DecodeErrorKind> {
    let mut slots: [Option<Slot>; SLOTS] = std::array::from_fn(|_| None);
    let allowed = kind.attrs();
    let mut pos = 0usize;
    while pos < payload.len() {
        let at = payload_offset + pos as u64;
        let truncated = DecodeErrorKind::TruncatedAttribute { at };
        let Some(&[t0, t1]) = payload.get(pos..pos + 2) else {
            return Err(truncated);
        };
        let number = u16::from_le_bytes([t0, t1]);
        let Some(attr) = Attr::from_number(number) else {
            return Err(DecodeErrorKind::UnknownAttribute { at, number });
        };
        if !allowed.contains(&attr) {
            return Err(DecodeErrorKind::UnexpectedAttribute { at, attr });
        }
        let Some(slot) = slots.get_mut(usize::from(number)) else {
            return Err(DecodeErrorKind::UnknownAttribute { at, number });
        };
        if slot.is_some() {
            return Err(DecodeErrorKind::DuplicateAttribute { at, attr });
        }
        let (start, len) = if attr == Attr::Data && version >= 2 {
            // v2+: no length field, the value is the rest of the command.
            let start = pos + DATA_HEADER_SIZE_V2;
            (start, payload.len() - start)
        } else {
            let Some(&[l0, l1]) = payload.get(pos + 2..pos + TLV_HEADER_SIZE) else {
                return Err(truncated);
            };
            (
                pos + TLV_HEADER_SIZE,
                usize::from(u16::from_le_bytes([l0, l1])),
            )
        };
        if payload.len() - start < len {
            return Err(truncated);
        }
        if let Some(expected) = attr.fixed_size()
            && expected != len
        {
            return Err(DecodeErrorKind::AttributeSize {
                at,
                attr,
                len,
                expected,
            });
        }
        *slot = Some(Slot {
            at,
            value: start..start + len,
        });
        pos = start + len;
    }
    Ok(slots)
}

/// Builds the typed command from a checked payload.
fn parse_command(
    kind: CommandKind,
    version: u32,
    payload: Vec<u8>,
    payload_offset: u64,
) -> Result<Command, DecodeErrorKind> {
    use Attr as A;
    let slots = parse_attrs(kind, version, &payload, payload_offset)?;
    let a = Attrs {
        payload: &payload,
        slots,
    };
    let mut cmd = match kind {
        CommandKind::Subvol => Command::Subvol {
            path: a.bytes(A::Path)?,
            uuid: a.uuid(A::Uuid)?,
            ctransid: a.u64(A::Ctransid)?,
        },
        CommandKind::Snapshot => Command::Snapshot {
            path: a.bytes(A::Path)?,
            uuid: a.uuid(A::Uuid)?,
            ctransid: a.u64(A::Ctransid)?,
            clone_uuid: a.uuid(A::CloneUuid)?,
            clone_ctransid: a.u64(A::CloneCtransid)?,
        },
        CommandKind::Mkfile => Command::Mkfile {
            path: a.bytes(A::Path)?,
            ino: a.u64(A::Ino)?,
        },
        CommandKind::Mkdir => Command::Mkdir {
            path: a.bytes(A::Path)?,
            ino: a.u64(A::Ino)?,
        },
        CommandKind::Mknod => Command::Mknod {
            path: a.bytes(A::Path)?,
            ino: a.u64(A::Ino)?,
            rdev: a.u64(A::Rdev)?,
            mode: a.u64(A::Mode)?,
        },
        CommandKind::Mkfifo => Command::Mkfifo {
            path: a.bytes(A::Path)?,
            ino: a.u64(A::Ino)?,
            rdev: a.u64(A::Rdev)?,
            mode: a.u64(A::Mode)?,
        },
        CommandKind::Mksock => Command::Mksock {
            path: a.bytes(A::Path)?,
            ino: a.u64(A::Ino)?,
            rdev: a.u64(A::Rdev)?,
            mode: a.u64(A::Mode)?,
        },
        CommandKind::Symlink => Command::Symlink {
            path: a.bytes(A::Path)?,
            ino: a.u64(A::Ino)?,
            path_link: a.bytes(A::PathLink)?,
        },
        CommandKind::Rename => Command::Rename {
            path: a.bytes(A::Path)?,
            path_to: a.bytes(A::PathTo)?,
        },
        CommandKind::Link => Command::Link {
            path: a.bytes(A::Path)?,
            path_link: a.bytes(A::PathLink)?,
        },
        CommandKind::Unlink => Command::Unlink {
            path: a.bytes(A::Path)?,
        },
        CommandKind::Rmdir => Command::Rmdir {
            path: a.bytes(A::Path)?,
        },
        CommandKind::SetXattr => Command::SetXattr {
            path: a.bytes(A::Path)?,
            name: a.bytes(A::XattrName)?,
            data: a.bytes(A::XattrData)?,
        },
        CommandKind::RemoveXattr => Command::RemoveXattr {
            path: a.bytes(A::Path)?,
            name: a.bytes(A::XattrName)?,
        },
        CommandKind::Write => {
            a.get(A::Data)?;
            Command::Write {
                path: a.bytes(A::Path)?,
                offset: a.u64(A::FileOffset)?,
                data: Vec::new(), // moved out of the payload below
            }
        }
        CommandKind::Clone => Command::Clone {
            path: a.bytes(A::Path)?,
            offset: a.u64(A::FileOffset)?,
            len: a.u64(A::CloneLen)?,
            clone_uuid: a.uuid(A::CloneUuid)?,
            clone_ctransid: a.u64(A::CloneCtransid)?,
            clone_path: a.bytes(A::ClonePath)?,
            clone_offset: a.u64(A::CloneOffset)?,
        },
        CommandKind::Truncate => Command::Truncate {
            path: a.bytes(A::Path)?,
            size: a.u64(A::Size)?,
        },
        CommandKind::Chmod => Command::Chmod {
            path: a.bytes(A::Path)?,
            mode: a.u64(A::Mode)?,
        },
        CommandKind::Chown => Command::Chown {
            path: a.bytes(A::Path)?,
            uid: a.u64(A::Uid)?,
            gid: a.u64(A::Gid)?,
        },
        CommandKind::Utimes => Command::Utimes {
            path: a.bytes(A::Path)?,
            atime: a.time(A::Atime)?,
            mtime: a.time(A::Mtime)?,
            ctime: a.time(A::Ctime)?,
            otime: a.opt_time(A::Otime)?,
        },
        CommandKind::End => Command::End,
        CommandKind::ArborResume => Command::ArborResume {
            uuid: a.uuid(A::Uuid)?,
            ctransid: a.u64(A::Ctransid)?,
            skip: a.u64(A::Size)?,
        },
        CommandKind::UpdateExtent => Command::UpdateExtent {
            path: a.bytes(A::Path)?,
            offset: a.u64(A::FileOffset)?,
            len: a.u64(A::Size)?,
        },
        CommandKind::Fallocate => Command::Fallocate {
            path: a.bytes(A::Path)?,
            mode: a.u32(A::FallocateMode)?,
            offset: a.u64(A::FileOffset)?,
            len: a.u64(A::Size)?,
        },
        CommandKind::Fileattr => Command::Fileattr {
            path: a.bytes(A::Path)?,
            attr: a.u64(A::Fileattr)?,
        },
        CommandKind::EncodedWrite => {
            a.get(A::Data)?;
            Command::EncodedWrite {
                path: a.bytes(A::Path)?,
                offset: a.u64(A::FileOffset)?,
                unencoded_file_len: a.u64(A::UnencodedFileLen)?,
                unencoded_len: a.u64(A::UnencodedLen)?,
                unencoded_offset: a.u64(A::UnencodedOffset)?,
                compression: a.opt_u32(A::Compression)?,
                encryption: a.opt_u32(A::Encryption)?,
                data: Vec::new(), // moved out of the payload below
            }
        }
        CommandKind::EnableVerity => Command::EnableVerity {
            path: a.bytes(A::Path)?,
            algorithm: a.u8(A::VerityAlgorithm)?,
            block_size: a.u32(A::VerityBlockSize)?,
            salt: a.bytes(A::VeritySaltData)?,
            sig: a.bytes(A::VeritySigData)?,
        },
    };

    let at_of = |attr: Attr| a.slot(attr).map_or(payload_offset, |s| s.at);
    let invalid = cmd
        .validate()
        .err()
        .map(|field| DecodeErrorKind::InvalidValue {
            at: at_of(field.attr),
            field,
        });
    let data_range = a.slot(A::Data).map(|s| s.value.clone());
    if let Some(e) = invalid {
        return Err(e);
    }
    if let (Command::Write { data, .. } | Command::EncodedWrite { data, .. }, Some(r)) =
        (&mut cmd, data_range)
    {
        *data = take_range(payload, r);
    }
    Ok(cmd)
}

/// The bytes `r` of `buf`, reusing its allocation.
fn take_range(mut buf: Vec<u8>, r: Range<usize>) -> Vec<u8> {
    if r.start > r.end || r.end > buf.len() {
        return Vec::new(); // not reached: ranges come from parse_attrs
    }
    buf.truncate(r.end);
    buf.drain(..r.start);
    buf
}
