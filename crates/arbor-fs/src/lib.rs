//! arbor's filesystem model on the storage engine: inodes with nanosecond times,
//! directories with a name-hash index and a sequence index, file data in checksummed
//! copy-on-write extents (small files inline), symlinks, hard links, special files,
//! extended attributes and POSIX ACLs. It knows nothing of FUSE: the adapter maps
//! requests onto [`Fs`] and its errors onto errnos.

mod acl;
mod changes;
mod diff;
mod dir;
mod error;
mod extents;
mod file;
mod fs;
mod fsck;
pub mod ino;
pub mod items;
mod receiving;
mod reflink;
mod subvol;
pub mod subvol_items;
mod xattr;

pub use changes::{Changes, Entry, InodeChange};
pub use diff::{Diff, DiffEntry};
pub use dir::{ReadDirEntry, RenameFlags};
pub use error::{FsError, Result};
pub use extents::DataPiece;
pub use file::{FallocMode, MAX_EXTENT};
pub use fs::{Caller, FS_TREE, Fs, FsOptions, MAX_FILE_SIZE, SetAttr, SetTime, StatFs};
pub use fsck::fsck;
pub use items::{FsDataRefs, Inode, ROOT_INO, Time};
pub use receiving::CommitHold;
pub use subvol::SubvolInfo;
pub use xattr::XattrFlags;
