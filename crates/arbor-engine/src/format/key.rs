//! Keys: btrfs-style `(objectid u64, type u8, offset u64)`, ordered by all three.

use super::bytes::{get_u8, get_u64, put_u64};

/// The encoded size of a key: objectid (8), type (1), offset (8).
pub const KEY_SIZE: usize = 17;

/// Item types used by the engine itself. The filesystem layer adds its own above 0.
pub mod item_type {
    /// A tree's root pointer in the root tree, keyed `(tree id, ROOT_ITEM, 0)`.
    pub const ROOT_ITEM: u8 = 132;
    /// An allocated extent in the extent tree, keyed `(bytenr, EXTENT_ITEM, length)`.
    pub const EXTENT_ITEM: u8 = 168;
    /// Where items naming a data extent are, in the extent tree, keyed
    /// `(bytenr, ANCHOR_ITEM, anchor_hash)`.
    pub const ANCHOR_ITEM: u8 = 176;
    /// A pending reference drop in the root tree, keyed `(DROP_QUEUE, DROP_ITEM, bytenr)`.
    pub const DROP_ITEM: u8 = 200;
}

/// Reserved object ids. Trees created by users have ids of at least `FIRST_USER_TREE`.
pub mod objectid {
    /// The root tree: holds the root items of every other tree.
    pub const ROOT_TREE: u64 = 1;
    /// The extent tree: a reference count for every allocated extent.
    pub const EXTENT_TREE: u64 = 2;
    /// The objectid under which the root tree keeps the queue of pending drops.
    pub const DROP_QUEUE: u64 = 3;
    /// The first id a user tree may have (5 is btrfs's FS_TREE).
    pub const FIRST_USER_TREE: u64 = 5;
}

/// A B-tree key. Items are sorted by `(objectid, ty, offset)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Key {
    /// The object the item belongs to (an inode, a tree, a block address).
    pub objectid: u64,
    /// The kind of item.
    pub ty: u8,
    /// Meaning depends on the type (a file offset, a name hash, a length).
    pub offset: u64,
}

impl Key {
    /// The smallest key.
    pub const MIN: Key = Key {
        objectid: 0,
        ty: 0,
        offset: 0,
    };
    /// The largest key.
    pub const MAX: Key = Key {
        objectid: u64::MAX,
        ty: u8::MAX,
        offset: u64::MAX,
    };

    /// A key from its three parts.
    pub const fn new(objectid: u64, ty: u8, offset: u64) -> Self {
        Self {
            objectid,
            ty,
            offset,
        }
    }

    /// The next key in order, or `None` for [`Key::MAX`].
    pub fn successor(self) -> Option<Key> {
        if let Some(offset) = self.offset.checked_add(1) {
            return Some(Key { offset, ..self });
        }
        if let Some(ty) = self.ty.checked_add(1) {
            return Some(Key {
                ty,
                offset: 0,
                ..self
            });
        }
        self.objectid.checked_add(1).map(|objectid| Key {
            objectid,
            ty: 0,
            offset: 0,
        })
    }

    /// Writes the key's 17 bytes at `off`.
    pub(crate) fn encode(&self, b: &mut [u8], off: usize) {
        put_u64(b, off, self.objectid);
        if let Some(t) = b.get_mut(off + 8) {
            *t = self.ty;
        }
        put_u64(b, off + 9, self.offset);
    }

    /// Reads a key at `off`, or `None` if it runs off the slice.
    pub(crate) fn decode(b: &[u8], off: usize) -> Option<Key> {
        Some(Key {
            objectid: get_u64(b, off)?,
            ty: get_u8(b, off + 8)?,
            offset: get_u64(b, off + 9)?,
        })
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({} {} {})", self.objectid, self.ty, self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_through_bytes() {
        let k = Key::new(0x0102_0304_0506_0708, 9, u64::MAX - 1);
        let mut b = [0u8; KEY_SIZE];
        k.encode(&mut b, 0);
        assert_eq!(b[0], 0x08, "objectid is little-endian");
        assert_eq!(Key::decode(&b, 0), Some(k));
        assert_eq!(Key::decode(&b[1..], 0), None);
    }

    #[test]
    fn successor_carries_into_type_and_objectid() {
        assert_eq!(Key::new(1, 2, 3).successor(), Some(Key::new(1, 2, 4)));
        assert_eq!(
            Key::new(1, 2, u64::MAX).successor(),
            Some(Key::new(1, 3, 0))
        );
        assert_eq!(
            Key::new(1, u8::MAX, u64::MAX).successor(),
            Some(Key::new(2, 0, 0))
        );
        assert_eq!(Key::MAX.successor(), None);
    }
}
