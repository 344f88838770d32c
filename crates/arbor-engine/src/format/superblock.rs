//! The superblock: 4 KiB at fixed offsets, each copy with its own checksum and generation.
//!
//! ```text
//! offset size field
//!      0    4 checksum        crc32c of bytes [4, 4096)
//!      4    4 format_version  FORMAT_VERSION
//!      8    8 magic           b"ARBOR-FS"
//!     16   16 fsid            UUID chosen by mkfs; every node repeats it
//!     32    8 generation      the transaction this superblock commits
//!     40    8 total_bytes     size of the filesystem
//!     48    8 bytes_used      sum of the lengths of all allocated extents
//!     56    4 nodesize        bytes per B-tree node
//!     60    4 sectorsize      allocation unit (4096)
//!     64   24 root_tree       RootPtr of the root tree
//!     88   24 extent_tree     RootPtr of the extent tree
//!    112    4 copy_index      which mirror this copy is (0, 1, 2, ...)
//!    116    4 reserved        zero
//!    120    8 incompat_flags  must be zero in version 1
//!    128  256 label           UTF-8, NUL padded
//!    384 3712 reserved        zero
//! ```
//! A `RootPtr` is bytenr (8), generation (8), level (1), 7 bytes of zero.

use super::bytes::{get_u8, get_u32, get_u64, put_u32, put_u64};

/// The size of one superblock copy.
pub const SUPERBLOCK_SIZE: usize = 4096;
/// Identifies an arbor superblock.
pub const MAGIC: [u8; 8] = *b"ARBOR-FS";
/// The version this code writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 2;

const CSUM_OFFSET: usize = 0;
const VERSION_OFFSET: usize = CSUM_OFFSET + 4;
const MAGIC_OFFSET: usize = VERSION_OFFSET + 4;
const FSID_OFFSET: usize = MAGIC_OFFSET + 8;
const GENERATION_OFFSET: usize = FSID_OFFSET + 16;
const TOTAL_BYTES_OFFSET: usize = GENERATION_OFFSET + 8;
const BYTES_USED_OFFSET: usize = TOTAL_BYTES_OFFSET + 8;
const NODESIZE_OFFSET: usize = BYTES_USED_OFFSET + 8;
const SECTORSIZE_OFFSET: usize = NODESIZE_OFFSET + 4;
const ROOT_TREE_OFFSET: usize = SECTORSIZE_OFFSET + 4;
const EXTENT_TREE_OFFSET: usize = ROOT_TREE_OFFSET + ROOT_PTR_SIZE;
const COPY_INDEX_OFFSET: usize = EXTENT_TREE_OFFSET + ROOT_PTR_SIZE;
const INCOMPAT_OFFSET: usize = COPY_INDEX_OFFSET + 8;
const LABEL_OFFSET: usize = INCOMPAT_OFFSET + 8;
/// The longest label, in bytes.
pub const LABEL_MAX: usize = 256;
const ROOT_PTR_SIZE: usize = 24;

/// Where superblock copies live: 64 KiB, 128 KiB, 64 MiB and 256 GiB, each used only
/// when the device is large enough to hold it.
pub fn superblock_offsets(total: u64) -> Vec<u64> {
    [64 << 10, 128 << 10, 64 << 20, 256u64 << 30]
        .into_iter()
        .filter(|&off| off + SUPERBLOCK_SIZE as u64 <= total)
        .collect()
}

/// A pointer to the root node of a tree, with the generation the node must carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RootPtr {
    /// Byte address of the root node.
    pub bytenr: u64,
    /// Generation of the root node.
    pub generation: u64,
    /// Height of the tree above the leaves (0 = the root is a leaf).
    pub level: u8,
}

impl RootPtr {
    /// Checks that the pointer can name a node of a filesystem committed at
    /// `generation`, with nodes of `nodesize` bytes on a device of `total` bytes.
    pub fn validate(&self, generation: u64, nodesize: u32, total: u64) -> Result<(), String> {
        let ns = u64::from(nodesize);
        if self.generation == 0 || self.generation > generation {
            return Err(format!(
                "root generation {} is not in 1..={generation}",
                self.generation
            ));
        }
        let end = self.bytenr.checked_add(ns);
        if self.bytenr == 0 || !self.bytenr.is_multiple_of(ns) || end.is_none_or(|e| e > total) {
            return Err(format!(
                "root at {} is not a valid node address",
                self.bytenr
            ));
        }
        if usize::from(self.level) >= super::node::MAX_LEVEL {
            return Err(format!("root level {} is too deep", self.level));
        }
        Ok(())
    }

    fn encode(&self, b: &mut [u8], off: usize) {
        put_u64(b, off, self.bytenr);
        put_u64(b, off + 8, self.generation);
        if let Some(l) = b.get_mut(off + 16) {
            *l = self.level;
        }
    }

    fn decode(b: &[u8], off: usize) -> Option<Self> {
        Some(Self {
            bytenr: get_u64(b, off)?,
            generation: get_u64(b, off + 8)?,
            level: get_u8(b, off + 16)?,
        })
    }
}

/// The decoded superblock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// Filesystem UUID.
    pub fsid: [u8; 16],
    /// The committed transaction.
    pub generation: u64,
    /// Size of the filesystem in bytes.
    pub total_bytes: u64,
    /// Sum of the lengths of all allocated extents.
    pub bytes_used: u64,
    /// Bytes per node.
    pub nodesize: u32,
    /// Allocation unit.
    pub sectorsize: u32,
    /// The root tree.
    pub root_tree: RootPtr,
    /// The extent tree.
    pub extent_tree: RootPtr,
    /// Label given at mkfs.
    pub label: String,
}

impl Superblock {
    /// Encodes copy number `copy_index`, checksum included.
    pub fn encode(&self, copy_index: u32) -> Vec<u8> {
        let mut b = vec![0u8; SUPERBLOCK_SIZE];
        put_u32(&mut b, VERSION_OFFSET, FORMAT_VERSION);
        b[MAGIC_OFFSET..MAGIC_OFFSET + 8].copy_from_slice(&MAGIC);
        b[FSID_OFFSET..FSID_OFFSET + 16].copy_from_slice(&self.fsid);
        put_u64(&mut b, GENERATION_OFFSET, self.generation);
        put_u64(&mut b, TOTAL_BYTES_OFFSET, self.total_bytes);
        put_u64(&mut b, BYTES_USED_OFFSET, self.bytes_used);
        put_u32(&mut b, NODESIZE_OFFSET, self.nodesize);
        put_u32(&mut b, SECTORSIZE_OFFSET, self.sectorsize);
        self.root_tree.encode(&mut b, ROOT_TREE_OFFSET);
        self.extent_tree.encode(&mut b, EXTENT_TREE_OFFSET);
        put_u32(&mut b, COPY_INDEX_OFFSET, copy_index);
        let label = self.label.as_bytes();
        let n = label.len().min(LABEL_MAX);
        b[LABEL_OFFSET..LABEL_OFFSET + n].copy_from_slice(&label[..n]);
        let csum = crc32c::crc32c(&b[CSUM_OFFSET + 4..]);
        put_u32(&mut b, CSUM_OFFSET, csum);
        b
    }

    /// Decodes and validates copy `copy_index`. The error says what is wrong.
    pub fn decode(b: &[u8], copy_index: u32) -> Result<Self, String> {
        if b.len() != SUPERBLOCK_SIZE {
            return Err(format!(
                "superblock is {} bytes, expected {SUPERBLOCK_SIZE}",
                b.len()
            ));
        }
        if b[MAGIC_OFFSET..MAGIC_OFFSET + 8] != MAGIC {
            return Err("bad magic, not an arbor superblock".into());
        }
        let want = get_u32(b, CSUM_OFFSET).ok_or("truncated")?;
        let have = crc32c::crc32c(&b[CSUM_OFFSET + 4..]);
        if want != have {
            return Err(format!(
                "checksum mismatch, have {have:#010x} expect {want:#010x}"
            ));
        }
        let version = get_u32(b, VERSION_OFFSET).ok_or("truncated")?;
        if version != FORMAT_VERSION {
            return Err(format!(
                "unsupported format version {version}, this build reads {FORMAT_VERSION}"
            ));
        }
        let incompat = get_u64(b, INCOMPAT_OFFSET).ok_or("truncated")?;
        if incompat != 0 {
            return Err(format!("unknown incompatible feature flags {incompat:#x}"));
        }
        let pads = [
            (ROOT_TREE_OFFSET + 17, ROOT_TREE_OFFSET + ROOT_PTR_SIZE),
            (EXTENT_TREE_OFFSET + 17, EXTENT_TREE_OFFSET + ROOT_PTR_SIZE),
            (COPY_INDEX_OFFSET + 4, INCOMPAT_OFFSET),
            (LABEL_OFFSET + LABEL_MAX, SUPERBLOCK_SIZE),
        ];
        if let Some((start, _)) = pads.iter().find(|(s, e)| b[*s..*e].iter().any(|&x| x != 0)) {
            return Err(format!("reserved bytes at offset {start} are not zero"));
        }
        let idx = get_u32(b, COPY_INDEX_OFFSET).ok_or("truncated")?;
        if idx != copy_index {
            return Err(format!(
                "copy index {idx} found where copy {copy_index} belongs"
            ));
        }
        let mut fsid = [0u8; 16];
        fsid.copy_from_slice(&b[FSID_OFFSET..FSID_OFFSET + 16]);
        let label_bytes = &b[LABEL_OFFSET..LABEL_OFFSET + LABEL_MAX];
        let end = label_bytes
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(LABEL_MAX);
        let label = String::from_utf8_lossy(&label_bytes[..end]).into_owned();
        let sb = Self {
            fsid,
            generation: get_u64(b, GENERATION_OFFSET).ok_or("truncated")?,
            total_bytes: get_u64(b, TOTAL_BYTES_OFFSET).ok_or("truncated")?,
            bytes_used: get_u64(b, BYTES_USED_OFFSET).ok_or("truncated")?,
            nodesize: get_u32(b, NODESIZE_OFFSET).ok_or("truncated")?,
            sectorsize: get_u32(b, SECTORSIZE_OFFSET).ok_or("truncated")?,
            root_tree: RootPtr::decode(b, ROOT_TREE_OFFSET).ok_or("truncated")?,
            extent_tree: RootPtr::decode(b, EXTENT_TREE_OFFSET).ok_or("truncated")?,
            label,
        };
        sb.validate()?;
        Ok(sb)
    }

    fn validate(&self) -> Result<(), String> {
        let ns = self.nodesize;
        if !ns.is_power_of_two() || !(super::MIN_NODESIZE..=super::MAX_NODESIZE).contains(&ns) {
            return Err(format!("invalid nodesize {ns}"));
        }
        if self.sectorsize != super::SECTOR_SIZE {
            return Err(format!("invalid sectorsize {}", self.sectorsize));
        }
        if self.bytes_used > self.total_bytes {
            return Err(format!(
                "bytes_used {} exceeds total_bytes {}",
                self.bytes_used, self.total_bytes
            ));
        }
        if self.generation == u64::MAX {
            return Err("generation is exhausted (u64::MAX)".into());
        }
        for (name, r) in [
            ("root tree", self.root_tree),
            ("extent tree", self.extent_tree),
        ] {
            r.validate(self.generation, ns, self.total_bytes)
                .map_err(|e| format!("{name} {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        Superblock {
            fsid: [7; 16],
            generation: 9,
            total_bytes: 64 << 20,
            bytes_used: 3 * 16384,
            nodesize: 16384,
            sectorsize: 4096,
            root_tree: RootPtr {
                bytenr: 1 << 20,
                generation: 9,
                level: 0,
            },
            extent_tree: RootPtr {
                bytenr: (1 << 20) + 16384,
                generation: 8,
                level: 1,
            },
            label: "tank".into(),
        }
    }

    #[test]
    fn superblock_round_trips() {
        let sb = sample();
        let b = sb.encode(1);
        assert_eq!(Superblock::decode(&b, 1), Ok(sb));
    }

    #[test]
    fn superblock_bit_flip_is_a_checksum_error() {
        let mut b = sample().encode(0);
        b[GENERATION_OFFSET] ^= 1;
        let err = Superblock::decode(&b, 0).unwrap_err();
        assert!(err.contains("checksum"), "{err}");
    }

    #[test]
    fn superblock_in_the_wrong_slot_is_rejected() {
        let b = sample().encode(0);
        assert!(
            Superblock::decode(&b, 1)
                .unwrap_err()
                .contains("copy index")
        );
    }

    #[test]
    fn small_devices_keep_the_two_head_copies() {
        assert_eq!(superblock_offsets(2 << 20), vec![64 << 10, 128 << 10]);
        assert_eq!(superblock_offsets(1 << 30).len(), 3);
    }
}
