//! The on-disk format, defined once. `docs/format.md` describes the same bytes in prose.
//!
//! Every integer is little-endian. Every layout constant is derived from the one before
//! it. `docs/format.md` repeats these layouts in prose: change both in one commit.

mod bytes;
mod items;
mod key;
mod leaf;
mod node;
mod superblock;

pub use items::{
    AnchorItem, DropItem, EXTENT_FLAG_DATA, EXTENT_FLAG_TREE_BLOCK, ExtentItem, RootItem,
    anchor_hash, validate_extent,
};
pub use key::{KEY_SIZE, Key, item_type, objectid};
pub use leaf::{Leaf, partition_point};
pub use node::{
    BRANCH_PTR_SIZE, Body, Expect, LEAF_ITEM_SIZE, NODE_HEADER_SIZE, Node, Ptr, decode_node,
    encode_node, header_claims, max_item_size,
};
pub use superblock::{
    FORMAT_VERSION, LABEL_MAX, MAGIC, RootPtr, SUPERBLOCK_SIZE, Superblock, superblock_offsets,
};

/// The unit of allocation and of torn-write atomicity we assume: 4 KiB.
pub const SECTOR_SIZE: u32 = 4096;
/// The default node size chosen by mkfs.
pub const DEFAULT_NODESIZE: u32 = 16384;
/// The smallest node size mkfs accepts.
pub const MIN_NODESIZE: u32 = 4096;
/// The largest node size mkfs accepts.
pub const MAX_NODESIZE: u32 = 65536;
/// Bytes at the start of every device that are never allocated: the first superblock
/// copies live here, and the rest is left for boot loaders and partition tools.
pub const RESERVED_HEAD: u64 = 1 << 20;
/// Bytes kept free around each far superblock mirror (64 MiB, 256 GiB).
pub const MIRROR_RESERVE: u64 = 64 * 1024;

/// The ranges `[start, end)` of a device of `total` bytes that are never allocated.
pub fn reserved_ranges(total: u64) -> Vec<(u64, u64)> {
    let mut out = vec![(0, RESERVED_HEAD.min(total))];
    for off in superblock_offsets(total) {
        if off >= RESERVED_HEAD {
            out.push((off, (off + MIRROR_RESERVE).min(total)));
        }
    }
    out
}
