//! The typed model of a send stream: one [`Command`] variant per btrfs send command, the
//! command and attribute numbers ([`CommandKind`], [`Attr`]), which attributes each
//! command carries and in which order the kernel writes them, and the value rules
//! ([`Command::validate`]) that the encoder and the decoder both enforce.
//!
//! Paths are raw bytes, relative to the subvolume being received, never NUL-terminated;
//! `""` names the subvolume's root directory. Whether a path is *safe* (no `..`, not
//! absolute) is for the receiver to decide, not this layer.

use crate::wire::{MAX_PATH_LEN, MAX_XATTR_NAME_LEN};

/// A subvolume UUID: 16 raw bytes in the order of its textual form.
pub type Uuid = [u8; 16];

/// A timestamp as btrfs stores it: seconds since the epoch (the u64 of the wire read as
/// signed, as the kernel and btrfs-progs do) and nanoseconds (always below 10^9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timespec {
    /// Seconds since 1970-01-01T00:00:00Z.
    pub sec: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nsec: u32,
}

/// Bytes of a timespec on the wire: u64 seconds, u32 nanoseconds.
pub(crate) const TIMESPEC_SIZE: usize = 12;

macro_rules! numbered {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $num:literal => $text:literal,)* }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant = $num,)* }

        impl $name {
            /// Every value, in numeric order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The number on the wire.
            pub const fn number(self) -> u16 {
                self as u16
            }

            /// The value with that number on the wire, if any.
            pub const fn from_number(n: u16) -> Option<Self> {
                match n {
                    $($num => Some($name::$variant),)*
                    _ => None,
                }
            }

            /// The name btrfs uses for it.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{} ({})", self.name(), self.number())
            }
        }
    };
}

numbered! {
    /// A command number (`BTRFS_SEND_C_*`); names are those of `btrfs receive --dump`.
    pub enum CommandKind {
        /// Start a new subvolume (full send).
        Subvol = 1 => "subvol",
        /// Start a snapshot of a parent subvolume (incremental send).
        Snapshot = 2 => "snapshot",
        /// Create a regular file.
        Mkfile = 3 => "mkfile",
        /// Create a directory.
        Mkdir = 4 => "mkdir",
        /// Create a device node.
        Mknod = 5 => "mknod",
        /// Create a FIFO.
        Mkfifo = 6 => "mkfifo",
        /// Create a socket.
        Mksock = 7 => "mksock",
        /// Create a symlink.
        Symlink = 8 => "symlink",
        /// Rename.
        Rename = 9 => "rename",
        /// Hard link.
        Link = 10 => "link",
        /// Unlink a non-directory.
        Unlink = 11 => "unlink",
        /// Remove an empty directory.
        Rmdir = 12 => "rmdir",
        /// Set an xattr.
        SetXattr = 13 => "set_xattr",
        /// Remove an xattr.
        RemoveXattr = 14 => "remove_xattr",
        /// Write file data.
        Write = 15 => "write",
        /// Clone (reflink) a range from another file.
        Clone = 16 => "clone",
        /// Set the file size.
        Truncate = 17 => "truncate",
        /// Set permission bits.
        Chmod = 18 => "chmod",
        /// Set owner and group.
        Chown = 19 => "chown",
        /// Set timestamps.
        Utimes = 20 => "utimes",
        /// End of the stream (of one subvolume).
        End = 21 => "end",
        /// A data range changed; sent instead of WRITE by `btrfs send --no-data`.
        UpdateExtent = 22 => "update_extent",
        /// Preallocate or punch a hole (v2).
        Fallocate = 23 => "fallocate",
        /// Set btrfs inode flags (v2).
        Fileattr = 24 => "fileattr",
        /// Write compressed data as is (v2).
        EncodedWrite = 25 => "encoded_write",
        /// Enable fs-verity (v3).
        EnableVerity = 26 => "enable_verity",
        /// arbor's own: this stream resumes an interrupted receive (see
        /// [`Command::ArborResume`]). Far from btrfs's numbers; `btrfs receive` refuses
        /// it as an unknown command, so that it never applies a stream's tail alone.
        ArborResume = 0xa7b0 => "arbor_resume",
    }
}

numbered! {
    /// An attribute number (`BTRFS_SEND_A_*`).
    pub enum Attr {
        /// Subvolume UUID (16 bytes).
        Uuid = 1 => "UUID",
        /// Subvolume ctransid (u64).
        Ctransid = 2 => "CTRANSID",
        /// Inode number in the sending filesystem (u64).
        Ino = 3 => "INO",
        /// Size (u64).
        Size = 4 => "SIZE",
        /// Mode (u64).
        Mode = 5 => "MODE",
        /// Owner (u64).
        Uid = 6 => "UID",
        /// Group (u64).
        Gid = 7 => "GID",
        /// Device number (u64).
        Rdev = 8 => "RDEV",
        /// Change time (timespec).
        Ctime = 9 => "CTIME",
        /// Modification time (timespec).
        Mtime = 10 => "MTIME",
        /// Access time (timespec).
        Atime = 11 => "ATIME",
        /// Creation time (timespec).
        Otime = 12 => "OTIME",
        /// Xattr name (string).
        XattrName = 13 => "XATTR_NAME",
        /// Xattr value (bytes).
        XattrData = 14 => "XATTR_DATA",
        /// Path (string).
        Path = 15 => "PATH",
        /// Rename destination (string).
        PathTo = 16 => "PATH_TO",
        /// Symlink contents, or the existing name of a hard link (string).
        PathLink = 17 => "PATH_LINK",
        /// File offset (u64).
        FileOffset = 18 => "FILE_OFFSET",
        /// File data (bytes; in v2 and v3 without a length, always last).
        Data = 19 => "DATA",
        /// Clone source subvolume (16 bytes).
        CloneUuid = 20 => "CLONE_UUID",
        /// Clone source ctransid (u64).
        CloneCtransid = 21 => "CLONE_CTRANSID",
        /// Clone source path (string).
        ClonePath = 22 => "CLONE_PATH",
        /// Clone source offset (u64).
        CloneOffset = 23 => "CLONE_OFFSET",
        /// Clone length (u64).
        CloneLen = 24 => "CLONE_LEN",
        /// fallocate(2) mode (u32).
        FallocateMode = 25 => "FALLOCATE_MODE",
        /// btrfs inode flags (u64).
        Fileattr = 26 => "FILEATTR",
        /// File bytes an encoded extent covers (u64).
        UnencodedFileLen = 27 => "UNENCODED_FILE_LEN",
        /// Decoded size of an encoded extent (u64).
        UnencodedLen = 28 => "UNENCODED_LEN",
        /// Where the file range starts in the decoded extent (u64).
        UnencodedOffset = 29 => "UNENCODED_OFFSET",
        /// Compression of an encoded extent (u32).
        Compression = 30 => "COMPRESSION",
        /// Encryption of an encoded extent (u32).
        Encryption = 31 => "ENCRYPTION",
        /// fs-verity hash algorithm (u8).
        VerityAlgorithm = 32 => "VERITY_ALGORITHM",
        /// fs-verity block size (u32).
        VerityBlockSize = 33 => "VERITY_BLOCK_SIZE",
        /// fs-verity salt (bytes).
        VeritySaltData = 34 => "VERITY_SALT_DATA",
        /// fs-verity signature (bytes).
        VeritySigData = 35 => "VERITY_SIG_DATA",
    }
}

impl CommandKind {
    /// The first stream version that has this command.
    pub const fn min_version(self) -> u32 {
        match self {
            CommandKind::Fallocate | CommandKind::Fileattr | CommandKind::EncodedWrite => 2,
            CommandKind::EnableVerity => 3,
            _ => 1,
        }
    }

    /// The attributes this command may carry, in the order the kernel writes them (which
    /// is the order the encoder writes them). Optional ones: UTIMES' OTIME (the kernel
    /// sends it from v2 on), ENCODED_WRITE's COMPRESSION and ENCRYPTION (default 0; the
    /// kernel leaves ENCRYPTION out for inline extents). Every other one is required.
    pub const fn attrs(self) -> &'static [Attr] {
        use Attr as A;
        match self {
            CommandKind::Subvol => &[A::Path, A::Uuid, A::Ctransid],
            CommandKind::Snapshot => &[
                A::Path,
                A::Uuid,
                A::Ctransid,
                A::CloneUuid,
                A::CloneCtransid,
            ],
            CommandKind::Mkfile | CommandKind::Mkdir => &[A::Path, A::Ino],
            CommandKind::Mknod | CommandKind::Mkfifo | CommandKind::Mksock => {
                &[A::Path, A::Ino, A::Rdev, A::Mode]
            }
            CommandKind::Symlink => &[A::Path, A::Ino, A::PathLink],
            CommandKind::Rename => &[A::Path, A::PathTo],
            CommandKind::Link => &[A::Path, A::PathLink],
            CommandKind::Unlink | CommandKind::Rmdir => &[A::Path],
            CommandKind::SetXattr => &[A::Path, A::XattrName, A::XattrData],
            CommandKind::RemoveXattr => &[A::Path, A::XattrName],
            CommandKind::Write => &[A::Path, A::FileOffset, A::Data],
            CommandKind::Clone => &[
                A::FileOffset,
                A::CloneLen,
                A::Path,
                A::CloneUuid,
                A::CloneCtransid,
                A::ClonePath,
                A::CloneOffset,
            ],
            CommandKind::Truncate => &[A::Path, A::Size],
            CommandKind::Chmod => &[A::Path, A::Mode],
            CommandKind::Chown => &[A::Path, A::Uid, A::Gid],
            CommandKind::Utimes => &[A::Path, A::Atime, A::Mtime, A::Ctime, A::Otime],
            CommandKind::End => &[],
            CommandKind::ArborResume => &[A::Uuid, A::Ctransid, A::Size],
            CommandKind::UpdateExtent => &[A::Path, A::FileOffset, A::Size],
            CommandKind::Fallocate => &[A::Path, A::FallocateMode, A::FileOffset, A::Size],
            CommandKind::Fileattr => &[A::Path, A::Fileattr],
            CommandKind::EncodedWrite => &[
                A::Path,
                A::FileOffset,
                A::UnencodedFileLen,
                A::UnencodedLen,
                A::UnencodedOffset,
                A::Compression,
                A::Encryption,
                A::Data,
            ],
            CommandKind::EnableVerity => &[
                A::Path,
                A::VerityAlgorithm,
                A::VerityBlockSize,
                A::VeritySaltData,
                A::VeritySigData,
            ],
        }
    }

    /// Whether this command's PATH may be `""`, the subvolume root: only for commands
    /// that change an existing inode's metadata, which the root has too.
    pub const fn path_may_be_root(self) -> bool {
        matches!(
            self,
            CommandKind::Chown
                | CommandKind::Chmod
                | CommandKind::Utimes
                | CommandKind::SetXattr
                | CommandKind::RemoveXattr
                | CommandKind::Fileattr
        )
    }
}

impl Attr {
    /// The exact size of a fixed-size attribute, `None` for strings and byte strings.
    pub const fn fixed_size(self) -> Option<usize> {
        match self {
            Attr::VerityAlgorithm => Some(1),
            Attr::FallocateMode | Attr::Compression | Attr::Encryption | Attr::VerityBlockSize => {
                Some(4)
            }
            Attr::Uuid | Attr::CloneUuid => Some(16),
            Attr::Ctime | Attr::Mtime | Attr::Atime | Attr::Otime => Some(TIMESPEC_SIZE),
            Attr::XattrName
            | Attr::XattrData
            | Attr::Path
            | Attr::PathTo
            | Attr::PathLink
            | Attr::Data
            | Attr::ClonePath
            | Attr::VeritySaltData
            | Attr::VeritySigData => None,
            _ => Some(8),
        }
    }

    /// Whether the attribute is a path (checked by [`Command::validate`]).
    pub const fn is_path(self) -> bool {
        matches!(
            self,
            Attr::Path | Attr::PathTo | Attr::PathLink | Attr::ClonePath
        )
    }
}

/// One command of a send stream, with typed fields. The attribute each field travels in
/// is named in its documentation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Begin a new subvolume named `path` (a name, not a path): a full send.
    Subvol {
        /// PATH: the subvolume name.
        path: Vec<u8>,
        /// UUID: its received UUID if it has one, else its own.
        uuid: Uuid,
        /// CTRANSID.
        ctransid: u64,
    },
    /// Begin a new subvolume as a snapshot of the subvolume `clone_uuid`: an incremental send.
    Snapshot {
        /// PATH: the subvolume name.
        path: Vec<u8>,
        /// UUID.
        uuid: Uuid,
        /// CTRANSID.
        ctransid: u64,
        /// CLONE_UUID: the parent.
        clone_uuid: Uuid,
        /// CLONE_CTRANSID: the parent's ctransid.
        clone_ctransid: u64,
    },
    /// Create an empty regular file.
    Mkfile {
        /// PATH.
        path: Vec<u8>,
        /// INO: the inode number on the sending side (informational).
        ino: u64,
    },
    /// Create an empty directory.
    Mkdir {
        /// PATH.
        path: Vec<u8>,
        /// INO.
        ino: u64,
    },
    /// Create a device node.
    Mknod {
        /// PATH.
        path: Vec<u8>,
        /// INO.
        ino: u64,
        /// RDEV: the kernel's `new_encode_dev` form.
        rdev: u64,
        /// MODE: with the file type bits.
        mode: u64,
    },
    /// Create a FIFO.
    Mkfifo {
        /// PATH.
        path: Vec<u8>,
        /// INO.
        ino: u64,
        /// RDEV.
        rdev: u64,
        /// MODE.
        mode: u64,
    },
    /// Create a Unix socket.
    Mksock {
        /// PATH.
        path: Vec<u8>,
        /// INO.
        ino: u64,
        /// RDEV.
        rdev: u64,
        /// MODE.
        mode: u64,
    },
    /// Create a symlink at `path` whose contents are `path_link`.
    Symlink {
        /// PATH.
        path: Vec<u8>,
        /// INO.
        ino: u64,
        /// PATH_LINK: the link's contents.
        path_link: Vec<u8>,
    },
    /// Rename `path` to `path_to`.
    Rename {
        /// PATH: the current name.
        path: Vec<u8>,
        /// PATH_TO: the new name.
        path_to: Vec<u8>,
    },
    /// Create the hard link `path` to the existing `path_link`.
    Link {
        /// PATH: the NEW name.
        path: Vec<u8>,
        /// PATH_LINK: the existing name.
        path_link: Vec<u8>,
    },
    /// Remove a non-directory name.
    Unlink {
        /// PATH.
        path: Vec<u8>,
    },
    /// Remove an empty directory.
    Rmdir {
        /// PATH.
        path: Vec<u8>,
    },
    /// Set an xattr.
    SetXattr {
        /// PATH.
        path: Vec<u8>,
        /// XATTR_NAME.
        name: Vec<u8>,
        /// XATTR_DATA.
        data: Vec<u8>,
    },
    /// Remove an xattr.
    RemoveXattr {
        /// PATH.
        path: Vec<u8>,
        /// XATTR_NAME.
        name: Vec<u8>,
    },
    /// Write `data` at `offset`.
    Write {
        /// PATH.
        path: Vec<u8>,
        /// FILE_OFFSET.
        offset: u64,
        /// DATA.
        data: Vec<u8>,
    },
    /// Clone `len` bytes at `clone_offset` of `clone_path` in subvolume `clone_uuid` to
    /// `offset` of `path`.
    Clone {
        /// PATH: the destination.
        path: Vec<u8>,
        /// FILE_OFFSET: the destination offset.
        offset: u64,
        /// CLONE_LEN.
        len: u64,
        /// CLONE_UUID: the source subvolume (the stream's own UUID for the one being received).
        clone_uuid: Uuid,
        /// CLONE_CTRANSID.
        clone_ctransid: u64,
        /// CLONE_PATH: the source file in that subvolume.
        clone_path: Vec<u8>,
        /// CLONE_OFFSET: the source offset.
        clone_offset: u64,
    },
    /// Set the file size.
    Truncate {
        /// PATH.
        path: Vec<u8>,
        /// SIZE.
        size: u64,
    },
    /// Set permission bits.
    Chmod {
        /// PATH.
        path: Vec<u8>,
        /// MODE: permission bits only (`& 0o7777`).
        mode: u64,
    },
    /// Set owner and group (numeric, not mapped).
    Chown {
        /// PATH.
        path: Vec<u8>,
        /// UID.
        uid: u64,
        /// GID.
        gid: u64,
    },
    /// Set timestamps.
    Utimes {
        /// PATH.
        path: Vec<u8>,
        /// ATIME.
        atime: Timespec,
        /// MTIME.
        mtime: Timespec,
        /// CTIME.
        ctime: Timespec,
        /// OTIME (creation time): sent by the kernel from stream v2 on.
        otime: Option<Timespec>,
    },
    /// End of the stream of one subvolume.
    End,
    /// arbor's own, right after the subvol or snapshot command: the stream continues
    /// the interrupted receive of that subvolume, and leaves out the first `skip`
    /// commands after that one, which the receiver applied already.
    ArborResume {
        /// UUID and CTRANSID: the subvolume's, as in the subvol command.
        uuid: Uuid,
        ctransid: u64,
        /// SIZE: commands left out.
        skip: u64,
    },
    /// `len` bytes at `offset` changed (`--no-data` sends).
    UpdateExtent {
        /// PATH.
        path: Vec<u8>,
        /// FILE_OFFSET.
        offset: u64,
        /// SIZE.
        len: u64,
    },
    /// fallocate(2): the kernel sends mode 3 (PUNCH_HOLE | KEEP_SIZE) for holes. v2.
    Fallocate {
        /// PATH.
        path: Vec<u8>,
        /// FALLOCATE_MODE: `FALLOC_FL_*` bits.
        mode: u32,
        /// FILE_OFFSET.
        offset: u64,
        /// SIZE.
        len: u64,
    },
    /// Set btrfs inode flags (`BTRFS_INODE_*`, not `FS_*_FL`). v2.
    Fileattr {
        /// PATH.
        path: Vec<u8>,
        /// FILEATTR.
        attr: u64,
    },
    /// Write an encoded (compressed) extent as is. v2.
    EncodedWrite {
        /// PATH.
        path: Vec<u8>,
        /// FILE_OFFSET.
        offset: u64,
        /// UNENCODED_FILE_LEN: file bytes covered.
        unencoded_file_len: u64,
        /// UNENCODED_LEN: decoded size of the whole extent.
        unencoded_len: u64,
        /// UNENCODED_OFFSET: where the file range starts in the decoded extent.
        unencoded_offset: u64,
        /// COMPRESSION (`BTRFS_ENCODED_IO_COMPRESSION_*`), `None` if absent (meaning 0).
        compression: Option<u32>,
        /// ENCRYPTION, `None` if absent (meaning 0; the kernel omits it for inline extents).
        encryption: Option<u32>,
        /// DATA: the encoded bytes.
        data: Vec<u8>,
    },
    /// Enable fs-verity. v3.
    EnableVerity {
        /// PATH.
        path: Vec<u8>,
        /// VERITY_ALGORITHM.
        algorithm: u8,
        /// VERITY_BLOCK_SIZE.
        block_size: u32,
        /// VERITY_SALT_DATA.
        salt: Vec<u8>,
        /// VERITY_SIG_DATA.
        sig: Vec<u8>,
    },
}

/// An attribute value, borrowed from a [`Command`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    U8(u8),
    U32(u32),
    U64(u64),
    Uuid(&'a Uuid),
    Time(Timespec),
    Bytes(&'a [u8]),
}

/// Why a field's value is not allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueProblem {
    /// An empty path where a name is needed, or an empty xattr name.
    #[error("is empty")]
    Empty,
    /// A NUL byte inside a path or name (btrfs-progs would silently cut it there).
    #[error("contains a NUL byte at index {0}")]
    Nul(usize),
    /// Longer than the kernel can send.
    #[error("is {len} bytes long, the maximum is {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Nanoseconds of a timestamp not below 10^9.
    #[error("has {0} nanoseconds, not below 1000000000")]
    Nanoseconds(u32),
}

/// A field of a command whose value breaks a rule of [`Command::validate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("attribute {attr} {problem}")]
pub struct InvalidField {
    /// The attribute the field travels in.
    pub attr: Attr,
    /// What is wrong with it.
    pub problem: ValueProblem,
}

impl Command {
    /// The command number.
    pub const fn kind(&self) -> CommandKind {
        match self {
            Command::Subvol { .. } => CommandKind::Subvol,
            Command::Snapshot { .. } => CommandKind::Snapshot,
            Command::Mkfile { .. } => CommandKind::Mkfile,
            Command::Mkdir { .. } => CommandKind::Mkdir,
            Command::Mknod { .. } => CommandKind::Mknod,
            Command::Mkfifo { .. } => CommandKind::Mkfifo,
            Command::Mksock { .. } => CommandKind::Mksock,
            Command::Symlink { .. } => CommandKind::Symlink,
            Command::Rename { .. } => CommandKind::Rename,
            Command::Link { .. } => CommandKind::Link,
            Command::Unlink { .. } => CommandKind::Unlink,
            Command::Rmdir { .. } => CommandKind::Rmdir,
            Command::SetXattr { .. } => CommandKind::SetXattr,
            Command::RemoveXattr { .. } => CommandKind::RemoveXattr,
            Command::Write { .. } => CommandKind::Write,
            Command::Clone { .. } => CommandKind::Clone,
            Command::Truncate { .. } => CommandKind::Truncate,
            Command::Chmod { .. } => CommandKind::Chmod,
            Command::Chown { .. } => CommandKind::Chown,
            Command::Utimes { .. } => CommandKind::Utimes,
            Command::End => CommandKind::End,
            Command::ArborResume { .. } => CommandKind::ArborResume,
            Command::UpdateExtent { .. } => CommandKind::UpdateExtent,
            Command::Fallocate { .. } => CommandKind::Fallocate,
            Command::Fileattr { .. } => CommandKind::Fileattr,
            Command::EncodedWrite { .. } => CommandKind::EncodedWrite,
            Command::EnableVerity { .. } => CommandKind::EnableVerity,
        }
    }

    /// The PATH attribute, `None` for END.
    pub fn path(&self) -> Option<&[u8]> {
        match self.value(Attr::Path) {
            Some(Value::Bytes(p)) => Some(p),
            _ => None,
        }
    }

    /// Checks the rules the decoder enforces on every command (and the encoder before
    /// writing one): paths at most [`MAX_PATH_LEN`] bytes without NUL, non-empty except
    /// PATH of the commands for which [`CommandKind::path_may_be_root`]; xattr names
    /// non-empty, at most [`MAX_XATTR_NAME_LEN`] bytes without NUL; nanoseconds below 10^9.
    pub fn validate(&self) -> Result<(), InvalidField> {
        let kind = self.kind();
        for &attr in kind.attrs() {
            let problem = match self.value(attr) {
                Some(Value::Bytes(b)) if attr.is_path() => {
                    let may_be_empty = attr == Attr::Path && kind.path_may_be_root();
                    check_string(b, may_be_empty, MAX_PATH_LEN)
                }
                Some(Value::Bytes(b)) if attr == Attr::XattrName => {
                    check_string(b, false, MAX_XATTR_NAME_LEN)
                }
                Some(Value::Time(t)) if t.nsec >= 1_000_000_000 => {
                    Some(ValueProblem::Nanoseconds(t.nsec))
                }
                _ => None,
            };
            if let Some(problem) = problem {
                return Err(InvalidField { attr, problem });
            }
        }
        Ok(())
    }

    /// The value of one attribute; `None` if the command does not have it (or it is an
    /// optional one that is absent).
    pub(crate) fn value(&self, attr: Attr) -> Option<Value<'_>> {
        use Attr as A;
        use Value as V;
        let v = match (self, attr) {
            (Command::Subvol { path, .. }, A::Path) => V::Bytes(path),
            (Command::Subvol { uuid, .. }, A::Uuid) => V::Uuid(uuid),
            (Command::Subvol { ctransid, .. }, A::Ctransid) => V::U64(*ctransid),

            (Command::Snapshot { path, .. }, A::Path) => V::Bytes(path),
            (Command::Snapshot { uuid, .. }, A::Uuid) => V::Uuid(uuid),
            (Command::Snapshot { ctransid, .. }, A::Ctransid) => V::U64(*ctransid),
            (Command::Snapshot { clone_uuid, .. }, A::CloneUuid) => V::Uuid(clone_uuid),
            (Command::Snapshot { clone_ctransid, .. }, A::CloneCtransid) => V::U64(*clone_ctransid),

            (Command::Mkfile { path, .. } | Command::Mkdir { path, .. }, A::Path) => V::Bytes(path),
            (Command::Mkfile { ino, .. } | Command::Mkdir { ino, .. }, A::Ino) => V::U64(*ino),

            (
                Command::Mknod { path, .. }
                | Command::Mkfifo { path, .. }
                | Command::Mksock { path, .. },
                A::Path,
            ) => V::Bytes(path),
            (
                Command::Mknod { ino, .. }
                | Command::Mkfifo { ino, .. }
                | Command::Mksock { ino, .. },
                A::Ino,
            ) => V::U64(*ino),
            (
                Command::Mknod { rdev, .. }
                | Command::Mkfifo { rdev, .. }
                | Command::Mksock { rdev, .. },
                A::Rdev,
            ) => V::U64(*rdev),
            (
                Command::Mknod { mode, .. }
                | Command::Mkfifo { mode, .. }
                | Command::Mksock { mode, .. },
                A::Mode,
            ) => V::U64(*mode),

            (Command::Symlink { path, .. }, A::Path) => V::Bytes(path),
            (Command::Symlink { ino, .. }, A::Ino) => V::U64(*ino),
            (Command::Symlink { path_link, .. }, A::PathLink) => V::Bytes(path_link),

            (Command::Rename { path, .. }, A::Path) => V::Bytes(path),
            (Command::Rename { path_to, .. }, A::PathTo) => V::Bytes(path_to),

            (Command::Link { path, .. }, A::Path) => V::Bytes(path),
            (Command::Link { path_link, .. }, A::PathLink) => V::Bytes(path_link),

            (Command::Unlink { path } | Command::Rmdir { path }, A::Path) => V::Bytes(path),

            (Command::SetXattr { path, .. }, A::Path) => V::Bytes(path),
            (Command::SetXattr { name, .. }, A::XattrName) => V::Bytes(name),
            (Command::SetXattr { data, .. }, A::XattrData) => V::Bytes(data),

            (Command::RemoveXattr { path, .. }, A::Path) => V::Bytes(path),
            (Command::RemoveXattr { name, .. }, A::XattrName) => V::Bytes(name),

            (Command::Write { path, .. }, A::Path) => V::Bytes(path),
            (Command::Write { offset, .. }, A::FileOffset) => V::U64(*offset),
            (Command::Write { data, .. }, A::Data) => V::Bytes(data),

            (Command::Clone { path, .. }, A::Path) => V::Bytes(path),
            (Command::Clone { offset, .. }, A::FileOffset) => V::U64(*offset),
            (Command::Clone { len, .. }, A::CloneLen) => V::U64(*len),
            (Command::Clone { clone_uuid, .. }, A::CloneUuid) => V::Uuid(clone_uuid),
            (Command::Clone { clone_ctransid, .. }, A::CloneCtransid) => V::U64(*clone_ctransid),
            (Command::Clone { clone_path, .. }, A::ClonePath) => V::Bytes(clone_path),
            (Command::Clone { clone_offset, .. }, A::CloneOffset) => V::U64(*clone_offset),

            (Command::ArborResume { uuid, .. }, A::Uuid) => V::Uuid(uuid),
            (Command::ArborResume { ctransid, .. }, A::Ctransid) => V::U64(*ctransid),
            (Command::ArborResume { skip, .. }, A::Size) => V::U64(*skip),

            (Command::Truncate { path, .. }, A::Path) => V::Bytes(path),
            (Command::Truncate { size, .. }, A::Size) => V::U64(*size),

            (Command::Chmod { path, .. }, A::Path) => V::Bytes(path),
            (Command::Chmod { mode, .. }, A::Mode) => V::U64(*mode),

            (Command::Chown { path, .. }, A::Path) => V::Bytes(path),
            (Command::Chown { uid, .. }, A::Uid) => V::U64(*uid),
            (Command::Chown { gid, .. }, A::Gid) => V::U64(*gid),

            (Command::Utimes { path, .. }, A::Path) => V::Bytes(path),
            (Command::Utimes { atime, .. }, A::Atime) => V::Time(*atime),
            (Command::Utimes { mtime, .. }, A::Mtime) => V::Time(*mtime),
            (Command::Utimes { ctime, .. }, A::Ctime) => V::Time(*ctime),
            (Command::Utimes { otime, .. }, A::Otime) => V::Time((*otime)?),

            (Command::UpdateExtent { path, .. }, A::Path) => V::Bytes(path),
            (Command::UpdateExtent { offset, .. }, A::FileOffset) => V::U64(*offset),
            (Command::UpdateExtent { len, .. }, A::Size) => V::U64(*len),

            (Command::Fallocate { path, .. }, A::Path) => V::Bytes(path),
            (Command::Fallocate { mode, .. }, A::FallocateMode) => V::U32(*mode),
            (Command::Fallocate { offset, .. }, A::FileOffset) => V::U64(*offset),
            (Command::Fallocate { len, .. }, A::Size) => V::U64(*len),

            (Command::Fileattr { path, .. }, A::Path) => V::Bytes(path),
            (Command::Fileattr { attr, .. }, A::Fileattr) => V::U64(*attr),

            (Command::EncodedWrite { path, .. }, A::Path) => V::Bytes(path),
            (Command::EncodedWrite { offset, .. }, A::FileOffset) => V::U64(*offset),
            (
                Command::EncodedWrite {
                    unencoded_file_len, ..
                },
                A::UnencodedFileLen,
            ) => V::U64(*unencoded_file_len),
            (Command::EncodedWrite { unencoded_len, .. }, A::UnencodedLen) => {
                V::U64(*unencoded_len)
            }
            (
                Command::EncodedWrite {
                    unencoded_offset, ..
                },
                A::UnencodedOffset,
            ) => V::U64(*unencoded_offset),
            (Command::EncodedWrite { compression, .. }, A::Compression) => V::U32((*compression)?),
            (Command::EncodedWrite { encryption, .. }, A::Encryption) => V::U32((*encryption)?),
            (Command::EncodedWrite { data, .. }, A::Data) => V::Bytes(data),

            (Command::EnableVerity { path, .. }, A::Path) => V::Bytes(path),
            (Command::EnableVerity { algorithm, .. }, A::VerityAlgorithm) => V::U8(*algorithm),
            (Command::EnableVerity { block_size, .. }, A::VerityBlockSize) => V::U32(*block_size),
            (Command::EnableVerity { salt, .. }, A::VeritySaltData) => V::Bytes(salt),
            (Command::EnableVerity { sig, .. }, A::VeritySigData) => V::Bytes(sig),

            _ => return None,
        };
        Some(v)
    }
}

/// Checks a path or name: non-empty (unless allowed), no NUL, at most `max` bytes.
fn check_string(b: &[u8], may_be_empty: bool, max: usize) -> Option<ValueProblem> {
    if b.is_empty() && !may_be_empty {
        Some(ValueProblem::Empty)
    } else if let Some(i) = b.iter().position(|&c| c == 0) {
        Some(ValueProblem::Nul(i))
    } else if b.len() > max {
        Some(ValueProblem::TooLong { len: b.len(), max })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_match_the_protocol_header() {
        for &k in CommandKind::ALL {
            assert_eq!(CommandKind::from_number(k.number()), Some(k));
        }
        for &a in Attr::ALL {
            assert_eq!(Attr::from_number(a.number()), Some(a));
        }
        assert_eq!(CommandKind::ALL.len(), 27);
        assert_eq!(Attr::ALL.len(), 35);
        assert_eq!(CommandKind::from_number(0), None);
        assert_eq!(CommandKind::from_number(27), None);
        assert_eq!(Attr::from_number(0), None);
        assert_eq!(Attr::from_number(36), None);
        assert_eq!(CommandKind::UpdateExtent.number(), 22);
        assert_eq!(CommandKind::EncodedWrite.number(), 25);
        assert_eq!(Attr::CloneLen.number(), 24);
        assert_eq!(Attr::Encryption.number(), 31);
    }

    #[test]
    fn every_attribute_a_command_lists_is_one_its_value_accessor_knows() {
        // A command built with all optional fields present must expose every listed
        // attribute, and nothing else.
        let t = Timespec { sec: 1, nsec: 2 };
        let samples = [
            Command::Utimes {
                path: b"p".to_vec(),
                atime: t,
                mtime: t,
                ctime: t,
                otime: Some(t),
            },
            Command::EncodedWrite {
                path: b"p".to_vec(),
                offset: 0,
                unencoded_file_len: 1,
                unencoded_len: 1,
                unencoded_offset: 0,
                compression: Some(1),
                encryption: Some(0),
                data: vec![1],
            },
        ];
        for c in &samples {
            for &a in Attr::ALL {
                assert_eq!(
                    c.value(a).is_some(),
                    c.kind().attrs().contains(&a),
                    "{:?} {a}",
                    c.kind()
                );
            }
        }
    }

    #[test]
    fn validate_accepts_root_path_only_for_metadata_commands() {
        let chown = Command::Chown {
            path: Vec::new(),
            uid: 0,
            gid: 0,
        };
        assert_eq!(chown.validate(), Ok(()));
        let unlink = Command::Unlink { path: Vec::new() };
        assert_eq!(
            unlink.validate(),
            Err(InvalidField {
                attr: Attr::Path,
                problem: ValueProblem::Empty
            })
        );
        let rename = Command::Rename {
            path: b"a".to_vec(),
            path_to: b"b\0c".to_vec(),
        };
        assert_eq!(
            rename.validate(),
            Err(InvalidField {
                attr: Attr::PathTo,
                problem: ValueProblem::Nul(1)
            })
        );
    }
}
