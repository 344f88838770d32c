//! btrfs-compatible send streams, the wire layer of arbor's send and receive.
//!
//! A send stream is what `btrfs send` writes and `btrfs receive` replays: a header
//! (`btrfs-stream\0` and a version) and a sequence of commands (create, rename, write,
//! clone, set attributes, ...), each a length, a command number and a CRC-32C followed by
//! type-length-value attributes. This crate knows the bytes and nothing above them: no
//! filesystem, no paths resolved, no I/O besides the given reader or writer.
//!
//! - [`command`]: the typed model, one [`Command`] variant per btrfs send command
//!   (versions 1 to 3), the command and attribute numbers, which attributes each command
//!   carries in the order the kernel writes them, and the value rules;
//! - [`encode`]: [`StreamWriter`], which writes streams byte for byte as the Linux kernel
//!   does (a kernel stream decoded and re-encoded is the same bytes);
//! - [`decode`]: [`StreamReader`], a strict decoder for untrusted input: lengths bounded
//!   before anything is allocated, the CRC checked before a command is interpreted, every
//!   attribute checked, every error a [`DecodeError`] naming the command index and byte
//!   offset; it never panics;
//! - [`dump`]: the text of `btrfs receive --dump` (btrfs-progs 6.2, `TZ=UTC`), for
//!   comparing streams with the real tool;
//! - [`wire`]: framing constants, size limits and btrfs' CRC-32C flavour.
//!
//! What is *not* checked here, by design: whether paths are safe to apply (`..`,
//! absolute paths, symlinks on the way), whether the commands make sense in sequence
//! (SUBVOL first, renames of existing names, clone sources): that is the receiver's job.
//!
//! ```
//! use arbor_send::{Command, StreamReader, StreamWriter};
//!
//! let mut w = StreamWriter::new(Vec::new(), 1)?;
//! w.write_command(&Command::Subvol { path: b"snap".to_vec(), uuid: [7; 16], ctransid: 9 })?;
//! w.write_command(&Command::Mkfile { path: b"o257-9-0".to_vec(), ino: 257 })?;
//! w.write_command(&Command::End)?;
//! let bytes = w.into_inner();
//!
//! let mut text = Vec::new();
//! arbor_send::dump_stream(&bytes[..], &mut text)?;
//! assert_eq!(
//!     String::from_utf8(text)?,
//!     "subvol          ./snap                          \
//!      uuid=07070707-0707-0707-0707-070707070707 transid=9\n\
//!      mkfile          ./snap/o257-9-0\n"
//! );
//! let cmds: Vec<Command> = StreamReader::new(&bytes[..])?
//!     .map(|item| item.map(|(_, cmd)| cmd))
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(cmds.len(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod command;
pub mod decode;
pub mod dump;
pub mod encode;
pub mod wire;

pub use command::{Attr, Command, CommandKind, InvalidField, Timespec, Uuid, ValueProblem};
pub use decode::{CommandInfo, DecodeError, DecodeErrorKind, StreamReader};
pub use dump::{DumpError, Dumper, dump_stream};
pub use encode::{EncodeError, StreamWriter, encode_command};
