//! The filesystem layer's error. Each variant stands for one errno; the table that
//! maps them lives in the FUSE adapter.

use arbor_engine::Error as EngineError;

/// Why a filesystem operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("name of {0} bytes is longer than 255")]
    NameTooLong(usize),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("operation not permitted: {0}")]
    NotPermitted(String),
    #[error("no such attribute")]
    NoAttr,
    #[error("attribute value does not fit the buffer")]
    Range,
    #[error("attribute of {0} bytes is too large")]
    TooBig(usize),
    #[error("file too large")]
    FileTooBig,
    #[error("too many links")]
    TooManyLinks,
    #[error("not supported: {0}")]
    NotSupported(&'static str),
    #[error("subvolume {0} is read-only")]
    ReadOnly(u64),
    #[error("crosses a subvolume boundary")]
    CrossSubvolume,
    #[error("busy: {0}")]
    Busy(String),
    #[error("no data at or after offset {0}")]
    NoData(u64),
    #[error("checksum mismatch in inode {ino} at file offset {offset} (block {bytenr})")]
    Checksum { ino: u64, offset: u64, bytenr: u64 },
    #[error("inode {ino}: corrupt item {key}: {reason}")]
    Corrupt {
        ino: u64,
        key: String,
        reason: String,
    },
    #[error("I/O error at byte {offset}: {source}")]
    Io { offset: u64, source: std::io::Error },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

pub type Result<T, E = FsError> = std::result::Result<T, E>;

pub(crate) fn corrupt(ino: u64, key: impl std::fmt::Display, reason: impl Into<String>) -> FsError {
    FsError::Corrupt {
        ino,
        key: key.to_string(),
        reason: reason.into(),
    }
}
