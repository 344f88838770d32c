//! The engine's error type. Every variant maps to an errno for the layers above.

use std::io;

/// Errors of the storage engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The device failed.
    #[error("I/O error at byte offset {offset}: {source}")]
    Io {
        /// Where the access started.
        offset: u64,
        /// What the device said.
        #[source]
        source: io::Error,
    },
    /// A node failed validation. It was not used.
    #[error("corrupt node at block {block} (tree {tree}): {reason}")]
    CorruptNode {
        /// The node's byte address.
        block: u64,
        /// The tree being read when it was found.
        tree: u64,
        /// What is wrong, "have X expect Y" where it fits.
        reason: String,
    },
    /// An item inside a valid node could not be decoded.
    #[error("corrupt item {key} in tree {tree}: {reason}")]
    CorruptItem {
        /// The tree.
        tree: u64,
        /// The item's key, as text.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// No superblock copy is valid.
    #[error("no valid superblock: {0}")]
    NoSuperblock(String),
    /// The device has too little free space for the operation.
    #[error("no space left on device: {needed} bytes needed, {free} free")]
    NoSpace {
        /// Bytes the operation may need.
        needed: u64,
        /// Bytes free now.
        free: u64,
    },
    /// The tree does not exist.
    #[error("tree {0} does not exist")]
    NoSuchTree(u64),
    /// A tree with that id exists already.
    #[error("tree {0} already exists")]
    TreeExists(u64),
    /// The value is larger than one item may hold.
    #[error("item of {size} bytes is too large, the maximum is {max}")]
    ItemTooLarge {
        /// Size given.
        size: usize,
        /// Largest allowed.
        max: usize,
    },
    /// A bad argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An earlier failure left the in-memory state unusable; the image on disk holds the
    /// last committed state. Reopen it.
    #[error("an earlier failure poisoned this handle ({0}); reopen the image")]
    Poisoned(String),
    /// The engine was opened read-only.
    #[error("the image is open read-only")]
    ReadOnly,
    /// Inside `without_node_io`, an operation needed a node that is not in memory.
    #[error("{0}")]
    NotCached(Box<crate::loader::NodeMiss>),
}

/// Linux errno values the engine's errors map to.
mod errno {
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const E2BIG: i32 = 7;
    pub const EEXIST: i32 = 17;
    pub const EINVAL: i32 = 22;
    pub const ENOSPC: i32 = 28;
    pub const EROFS: i32 = 30;
    pub const EUCLEAN: i32 = 117;
}

impl Error {
    /// The errno this error is reported as.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Io { .. } | Error::Poisoned(_) | Error::NotCached(_) => errno::EIO,
            Error::CorruptNode { .. } | Error::CorruptItem { .. } | Error::NoSuperblock(_) => {
                errno::EUCLEAN
            }
            Error::NoSpace { .. } => errno::ENOSPC,
            Error::NoSuchTree(_) => errno::ENOENT,
            Error::TreeExists(_) => errno::EEXIST,
            Error::ItemTooLarge { .. } => errno::E2BIG,
            Error::InvalidArgument(_) => errno::EINVAL,
            Error::ReadOnly => errno::EROFS,
        }
    }

    pub(crate) fn io(offset: u64) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { offset, source }
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
