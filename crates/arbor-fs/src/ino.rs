//! Inode numbers as the world sees them: unique across the whole filesystem.
//!
//! Inside a subvolume's tree, inodes have local numbers from 256 up, and a snapshot
//! keeps its source's numbers. Outside (the API of this crate, FUSE node ids and
//! `st_ino`), an inode is named by its subvolume and its local number together:
//! `global = prefix << 40 | local`, where the prefix is the subvolume id, except that
//! the top-level subvolume 5 has prefix 0, so that its inode numbers are the local
//! ones (the root directory is 256 in both).

use crate::error::{FsError, Result};
use crate::items::ROOT_INO;

/// The top-level subvolume (btrfs's `FS_TREE`).
pub const TOP_SUBVOL: u64 = 5;
/// The first id of a created subvolume or snapshot (btrfs's `FIRST_FREE_OBJECTID`).
pub const FIRST_SUBVOL: u64 = 256;
/// Bits of the local inode number.
pub const LOCAL_BITS: u32 = 40;
/// Local inode numbers stay below this.
pub const LOCAL_LIMIT: u64 = 1 << LOCAL_BITS;
/// Subvolume ids stay below this (24 bits of prefix).
pub const SUBVOL_LIMIT: u64 = 1 << (64 - LOCAL_BITS);

/// An inode inside one subvolume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Loc {
    /// The subvolume id, which is also its engine tree.
    pub subvol: u64,
    /// The inode number inside that subvolume's tree.
    pub ino: u64,
}

impl Loc {
    pub fn new(subvol: u64, ino: u64) -> Self {
        Self { subvol, ino }
    }

    /// The root directory of a subvolume.
    pub fn root_of(subvol: u64) -> Self {
        Self::new(subvol, ROOT_INO)
    }

    /// The global inode number.
    pub fn global(self) -> u64 {
        let prefix = if self.subvol == TOP_SUBVOL {
            0
        } else {
            self.subvol
        };
        prefix << LOCAL_BITS | self.ino
    }

    /// Splits a global inode number; fails for numbers no subvolume could hand out.
    pub fn of(global: u64) -> Result<Self> {
        let prefix = global >> LOCAL_BITS;
        let ino = global & (LOCAL_LIMIT - 1);
        let subvol = match prefix {
            0 => TOP_SUBVOL,
            p if p >= FIRST_SUBVOL => p,
            _ => return Err(FsError::NotFound),
        };
        if ino < ROOT_INO {
            return Err(FsError::NotFound);
        }
        Ok(Self { subvol, ino })
    }
}

/// The global number of the root directory of the whole filesystem.
pub const GLOBAL_ROOT: u64 = ROOT_INO;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_numbers_round_trip_and_keep_the_top_level_as_it_was() {
        assert_eq!(Loc::root_of(TOP_SUBVOL).global(), GLOBAL_ROOT);
        for loc in [
            Loc::new(TOP_SUBVOL, 256),
            Loc::new(TOP_SUBVOL, LOCAL_LIMIT - 1),
            Loc::new(256, 256),
            Loc::new(SUBVOL_LIMIT - 1, 1000),
        ] {
            assert_eq!(Loc::of(loc.global()).unwrap(), loc);
        }
        assert_ne!(Loc::new(256, 300).global(), Loc::new(257, 300).global());
        assert!(
            Loc::of(1 << LOCAL_BITS | 300).is_err(),
            "prefix 1 is no subvolume"
        );
        assert!(Loc::of(5).is_err(), "below 256");
    }
}
