//! The item types the engine itself stores.
//!
//! ```text
//! RootItem   (root tree, key (tree id, ROOT_ITEM, 0)), 32 bytes
//!      0    8 bytenr      root node of the tree
//!      8    8 generation  generation of that node
//!     16    1 level       height of the tree
//!     17    7 reserved    zero
//!     24    8 exclusive   bytes only this tree holds, as of this commit
//!
//! ExtentItem (extent tree, key (bytenr, EXTENT_ITEM, length)), 16 bytes
//!      0    8 refs        number of references: parent pointers + root pointers
//!                         + pending drops
//!      8    8 flags       EXTENT_FLAG_TREE_BLOCK or EXTENT_FLAG_DATA
//!
//! DropItem   (root tree, key (DROP_QUEUE, DROP_ITEM, bytenr)), 16 bytes
//!      0    8 generation  generation of the node to drop (from its parent pointer)
//!      8    4 count       references to drop
//!     12    1 level       level of the node
//!     13    3 reserved    zero
//!
//! AnchorItem (extent tree, key (bytenr, ANCHOR_ITEM, anchor_hash(anchor))), 17*n bytes
//!      0   17 anchor      a key where a run of items naming the data extent starts
//!     ...                 (more anchors only if their hashes collide)
//! ```

use super::RootPtr;
use super::bytes::{get_u8, get_u32, get_u64, put_u32, put_u64};
use super::key::{KEY_SIZE, Key};

/// The extent holds a B-tree node.
pub const EXTENT_FLAG_TREE_BLOCK: u64 = 1;
/// The extent holds file data (used by the filesystem layer).
pub const EXTENT_FLAG_DATA: u64 = 2;

fn exact(v: &[u8], len: usize, what: &str) -> Result<(), String> {
    if v.len() == len {
        Ok(())
    } else {
        Err(format!("{what} is {} bytes, expected {len}", v.len()))
    }
}

/// A tree's root pointer and exclusive bytes, as the root tree stores them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootItem {
    /// The tree's root node.
    pub root: RootPtr,
    /// Bytes of nodes and data extents that only this tree holds (see
    /// `docs/format.md`, "Exclusive usage").
    pub exclusive: u64,
}

impl RootItem {
    /// Encoded size.
    pub const SIZE: usize = 32;

    /// Encodes the item.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; Self::SIZE];
        put_u64(&mut b, 0, self.root.bytenr);
        put_u64(&mut b, 8, self.root.generation);
        b[16] = self.root.level;
        put_u64(&mut b, 24, self.exclusive);
        b
    }

    /// Decodes the item.
    pub fn decode(v: &[u8]) -> Result<Self, String> {
        exact(v, Self::SIZE, "root item")?;
        Ok(Self {
            root: RootPtr {
                bytenr: get_u64(v, 0).ok_or("truncated root item")?,
                generation: get_u64(v, 8).ok_or("truncated root item")?,
                level: get_u8(v, 16).ok_or("truncated root item")?,
            },
            exclusive: get_u64(v, 24).ok_or("truncated root item")?,
        })
    }
}

/// The anchors of one data extent that share a hash: keys where runs of items naming
/// the extent start (see `DataRefs::anchor`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnchorItem(pub Vec<Key>);

impl AnchorItem {
    /// Encodes the item.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.0.len() * KEY_SIZE);
        for k in &self.0 {
            b.extend_from_slice(&key_bytes(k));
        }
        b
    }

    /// Decodes the item: one or more keys.
    pub fn decode(v: &[u8]) -> Result<Self, String> {
        if v.is_empty() || !v.len().is_multiple_of(KEY_SIZE) {
            return Err(format!(
                "anchor item of {} bytes is not a whole number of keys",
                v.len()
            ));
        }
        let keys = v
            .chunks_exact(KEY_SIZE)
            .map(|c| Key::decode(c, 0))
            .collect::<Option<Vec<Key>>>()
            .ok_or("truncated anchor")?;
        Ok(Self(keys))
    }
}

/// The key offset an anchor is stored under: the CRC-32C of its encoding.
pub fn anchor_hash(anchor: &Key) -> u64 {
    u64::from(crc32c::crc32c(&key_bytes(anchor)))
}

fn key_bytes(k: &Key) -> [u8; KEY_SIZE] {
    let mut b = [0u8; KEY_SIZE];
    k.encode(&mut b, 0);
    b
}

/// An allocated extent's reference count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtentItem {
    /// Number of references.
    pub refs: u64,
    /// What the extent holds.
    pub flags: u64,
}

impl ExtentItem {
    /// Encoded size.
    pub const SIZE: usize = 16;

    /// Encodes the item.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; Self::SIZE];
        put_u64(&mut b, 0, self.refs);
        put_u64(&mut b, 8, self.flags);
        b
    }

    /// Decodes the item.
    pub fn decode(v: &[u8]) -> Result<Self, String> {
        exact(v, Self::SIZE, "extent item")?;
        let item = Self {
            refs: get_u64(v, 0).ok_or("truncated extent item")?,
            flags: get_u64(v, 8).ok_or("truncated extent item")?,
        };
        if item.refs == 0 {
            return Err("extent item with zero references".into());
        }
        Ok(item)
    }
}

/// Checks an extent item's placement: a non-empty, sector-aligned range inside the
/// device; a tree block is exactly one node long.
pub fn validate_extent(
    bytenr: u64,
    len: u64,
    flags: u64,
    nodesize: u32,
    total: u64,
) -> Result<(), String> {
    let sector = u64::from(super::SECTOR_SIZE);
    if len == 0 || !len.is_multiple_of(sector) || !bytenr.is_multiple_of(sector) {
        return Err(format!(
            "extent at {bytenr} of {len} bytes is empty or not sector-aligned"
        ));
    }
    if bytenr.checked_add(len).is_none_or(|end| end > total) {
        return Err(format!(
            "extent at {bytenr} of {len} bytes runs past the device end"
        ));
    }
    match flags {
        EXTENT_FLAG_TREE_BLOCK if len != u64::from(nodesize) => Err(format!(
            "tree block extent at {bytenr} is {len} bytes, not one node"
        )),
        EXTENT_FLAG_TREE_BLOCK | EXTENT_FLAG_DATA => Ok(()),
        other => Err(format!("extent at {bytenr} has unknown flags {other:#x}")),
    }
}

/// References to a node that still have to be dropped, possibly across many commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropItem {
    /// Generation of the node.
    pub generation: u64,
    /// How many references to drop.
    pub count: u32,
    /// Level of the node.
    pub level: u8,
}

impl DropItem {
    /// Encoded size.
    pub const SIZE: usize = 16;

    /// Encodes the item.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; Self::SIZE];
        put_u64(&mut b, 0, self.generation);
        put_u32(&mut b, 8, self.count);
        b[12] = self.level;
        b
    }

    /// Decodes the item.
    pub fn decode(v: &[u8]) -> Result<Self, String> {
        exact(v, Self::SIZE, "drop item")?;
        let item = Self {
            generation: get_u64(v, 0).ok_or("truncated drop item")?,
            count: get_u32(v, 8).ok_or("truncated drop item")?,
            level: get_u8(v, 12).ok_or("truncated drop item")?,
        };
        if item.count == 0 {
            return Err("drop item with a zero count".into());
        }
        Ok(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip() {
        let r = RootItem {
            root: RootPtr {
                bytenr: 1 << 20,
                generation: 3,
                level: 2,
            },
            exclusive: 7 << 12,
        };
        let a = AnchorItem(vec![Key::new(1, 2, 3), Key::new(4, 5, 6)]);
        assert_eq!(AnchorItem::decode(&a.encode()), Ok(a));
        assert!(AnchorItem::decode(&[0; 18]).is_err());
        assert!(AnchorItem::decode(&[]).is_err());
        assert_eq!(RootItem::decode(&r.encode()), Ok(r));
        let e = ExtentItem {
            refs: 2,
            flags: EXTENT_FLAG_TREE_BLOCK,
        };
        assert_eq!(ExtentItem::decode(&e.encode()), Ok(e));
        let d = DropItem {
            generation: 4,
            count: 1,
            level: 0,
        };
        assert_eq!(DropItem::decode(&d.encode()), Ok(d));
    }

    #[test]
    fn items_of_the_wrong_size_are_rejected() {
        assert!(RootItem::decode(&[0; 24]).is_err());
        assert!(ExtentItem::decode(&[0; 17]).is_err());
        assert!(ExtentItem::decode(&[0; 16]).unwrap_err().contains("zero"));
    }
}
