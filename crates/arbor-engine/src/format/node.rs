//! B-tree nodes: the header every node carries, leaves and branches, and the one
//! validator that every node read passes through.
//!
//! ```text
//! header (64 bytes)
//! offset size field
//!      0    4 checksum    crc32c of bytes [4, nodesize)
//!      4    1 level       0 for a leaf
//!      5    1 flags       zero in version 1
//!      6    2 nritems     number of items (leaf) or pointers (branch)
//!      8   16 fsid        must equal the superblock's
//!     24    8 bytenr      the node's own address
//!     32    8 generation  the transaction that wrote it
//!     40    8 owner       id of the tree that wrote it
//!     48   16 reserved    zero
//!
//! leaf item (25 bytes, at 64 + 25*i)      branch pointer (33 bytes, at 64 + 33*i)
//!      0   17 key                              0   17 key (first key of the child)
//!     17    4 data offset (from node start)   17    8 child bytenr
//!     21    4 data size                       25    8 child generation
//! ```
//! Leaf data is packed at the end of the node: item 0's data ends at `nodesize`, and
//! each later item's data ends where the previous item's begins.

use super::bytes::{get_u8, get_u16, get_u32, get_u64, put_u16, put_u32, put_u64};
use super::key::{KEY_SIZE, Key};
use super::leaf::Leaf;

/// Size of the node header.
pub const NODE_HEADER_SIZE: usize = 64;
/// Size of one leaf item header.
pub const LEAF_ITEM_SIZE: usize = KEY_SIZE + 4 + 4;
/// Size of one branch pointer.
pub const BRANCH_PTR_SIZE: usize = KEY_SIZE + 8 + 8;
/// Trees never grow taller than this; a deeper level is corruption.
pub const MAX_LEVEL: usize = 8;

const CSUM_OFFSET: usize = 0;
const LEVEL_OFFSET: usize = CSUM_OFFSET + 4;
const FLAGS_OFFSET: usize = LEVEL_OFFSET + 1;
const NRITEMS_OFFSET: usize = FLAGS_OFFSET + 1;
const FSID_OFFSET: usize = NRITEMS_OFFSET + 2;
const BYTENR_OFFSET: usize = FSID_OFFSET + 16;
const GENERATION_OFFSET: usize = BYTENR_OFFSET + 8;
const OWNER_OFFSET: usize = GENERATION_OFFSET + 8;
const _: () = assert!(OWNER_OFFSET + 8 + 16 == NODE_HEADER_SIZE);

/// The largest value one leaf item may hold at a given node size. A quarter of the
/// usable space, so that any overfull leaf can be split into two that fit.
pub fn max_item_size(nodesize: u32) -> usize {
    (nodesize as usize - NODE_HEADER_SIZE) / 4 - LEAF_ITEM_SIZE
}

/// A pointer from a branch to a child node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ptr {
    /// The first key stored in the child's subtree.
    pub key: Key,
    /// The child's address.
    pub bytenr: u64,
    /// The generation the child must carry.
    pub generation: u64,
}

/// What a node holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Items, sorted by key.
    Leaf(Leaf),
    /// Child pointers, sorted by key.
    Branch(Vec<Ptr>),
}

/// A decoded node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Its address.
    pub bytenr: u64,
    /// The transaction that wrote it.
    pub generation: u64,
    /// The tree that wrote it.
    pub owner: u64,
    /// 0 for leaves.
    pub level: u8,
    /// Items or pointers.
    pub body: Body,
}

impl Node {
    /// Number of items or pointers.
    pub fn len(&self) -> usize {
        match &self.body {
            Body::Leaf(items) => items.len(),
            Body::Branch(ptrs) => ptrs.len(),
        }
    }

    /// True when the node holds nothing (only an empty root leaf may).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The smallest key in the node.
    pub fn first_key(&self) -> Option<Key> {
        match &self.body {
            Body::Leaf(leaf) => leaf.keys().first().copied(),
            Body::Branch(ptrs) => ptrs.first().map(|p| p.key),
        }
    }

    /// Bytes the node occupies when encoded, header included.
    pub fn used_bytes(&self) -> usize {
        NODE_HEADER_SIZE
            + match &self.body {
                Body::Leaf(leaf) => leaf.used_bytes(),
                Body::Branch(ptrs) => ptrs.len() * BRANCH_PTR_SIZE,
            }
    }
}

/// Encodes a node into a `nodesize` buffer and seals it with its checksum.
pub fn encode_node(node: &Node, nodesize: u32, fsid: &[u8; 16]) -> Vec<u8> {
    let ns = nodesize as usize;
    let mut b = vec![0u8; ns];
    b[LEVEL_OFFSET] = node.level;
    put_u16(&mut b, NRITEMS_OFFSET, node.len() as u16);
    b[FSID_OFFSET..FSID_OFFSET + 16].copy_from_slice(fsid);
    put_u64(&mut b, BYTENR_OFFSET, node.bytenr);
    put_u64(&mut b, GENERATION_OFFSET, node.generation);
    put_u64(&mut b, OWNER_OFFSET, node.owner);
    match &node.body {
        Body::Leaf(items) => {
            let mut data_end = ns;
            for (i, (key, value)) in items.iter().enumerate() {
                let at = NODE_HEADER_SIZE + i * LEAF_ITEM_SIZE;
                let start = data_end - value.len();
                key.encode(&mut b, at);
                put_u32(&mut b, at + KEY_SIZE, start as u32);
                put_u32(&mut b, at + KEY_SIZE + 4, value.len() as u32);
                b[start..data_end].copy_from_slice(value);
                data_end = start;
            }
        }
        Body::Branch(ptrs) => {
            for (i, p) in ptrs.iter().enumerate() {
                let at = NODE_HEADER_SIZE + i * BRANCH_PTR_SIZE;
                p.key.encode(&mut b, at);
                put_u64(&mut b, at + KEY_SIZE, p.bytenr);
                put_u64(&mut b, at + KEY_SIZE + 8, p.generation);
            }
        }
    }
    let csum = crc32c::crc32c(&b[CSUM_OFFSET + 4..]);
    put_u32(&mut b, CSUM_OFFSET, csum);
    b
}

/// What the reader of a node knows about it before reading: from the parent pointer
/// (or the root pointer) and from the superblock.
#[derive(Clone, Copy, Debug)]
pub struct Expect<'a> {
    /// Address it was read from.
    pub bytenr: u64,
    /// Generation the parent pointer promises.
    pub generation: u64,
    /// Level the parent implies.
    pub level: u8,
    /// The superblock's fsid.
    pub fsid: &'a [u8; 16],
    /// Node size of the filesystem.
    pub nodesize: u32,
    /// Size of the device, to bound child addresses.
    pub total_bytes: u64,
    /// Every key must be at least this (the parent's separator), if known.
    pub lo: Option<Key>,
    /// Every key must be below this (the next separator), if known.
    pub hi: Option<Key>,
}

/// The level and generation a node's header claims, unchecked: for reading a node whose
/// parent pointer is not at hand (the node must still pass [`decode_node`]).
pub fn header_claims(b: &[u8]) -> Option<(u8, u64)> {
    Some((get_u8(b, LEVEL_OFFSET)?, get_u64(b, GENERATION_OFFSET)?))
}

/// Decodes and validates a node. This is the only way bytes become a [`Node`]: every
/// check a reader could rely on happens here, so no other code re-checks. The error is
/// the reason, in the form "have X expect Y" where it fits; the caller names the block.
pub fn decode_node(b: &[u8], want: &Expect<'_>) -> Result<Node, String> {
    let ns = want.nodesize as usize;
    if b.len() != ns {
        return Err(format!("node is {} bytes, expected {ns}", b.len()));
    }
    let stored = get_u32(b, CSUM_OFFSET).ok_or("truncated header")?;
    let actual = crc32c::crc32c(&b[CSUM_OFFSET + 4..]);
    if stored != actual {
        return Err(format!(
            "checksum mismatch, have {actual:#010x} expect {stored:#010x}"
        ));
    }
    let bytenr = get_u64(b, BYTENR_OFFSET).ok_or("truncated header")?;
    if bytenr != want.bytenr {
        return Err(format!(
            "wrong address in header, have {bytenr} expect {}",
            want.bytenr
        ));
    }
    if b[FSID_OFFSET..FSID_OFFSET + 16] != want.fsid[..] {
        return Err("node belongs to another filesystem (fsid mismatch)".into());
    }
    let generation = get_u64(b, GENERATION_OFFSET).ok_or("truncated header")?;
    if generation != want.generation {
        return Err(format!(
            "generation mismatch (lost or misplaced write), have {generation} expect {}",
            want.generation
        ));
    }
    let level = get_u8(b, LEVEL_OFFSET).ok_or("truncated header")?;
    if level != want.level {
        return Err(format!(
            "level mismatch, have {level} expect {}",
            want.level
        ));
    }
    if usize::from(level) >= MAX_LEVEL {
        return Err(format!(
            "level {level} exceeds the maximum {}",
            MAX_LEVEL - 1
        ));
    }
    let flags = get_u8(b, FLAGS_OFFSET).ok_or("truncated header")?;
    if flags != 0 {
        return Err(format!("unknown node flags {flags:#x}"));
    }
    let owner = get_u64(b, OWNER_OFFSET).ok_or("truncated header")?;
    if b[OWNER_OFFSET + 8..NODE_HEADER_SIZE]
        .iter()
        .any(|&x| x != 0)
    {
        return Err("reserved header bytes 48..64 are not zero".into());
    }
    let n = usize::from(get_u16(b, NRITEMS_OFFSET).ok_or("truncated header")?);
    if n == 0 && want.lo.is_some() {
        return Err("a node below the root holds no items".into());
    }
    let body = if level == 0 {
        decode_leaf(b, n)?
    } else {
        decode_branch(b, n, generation, want)?
    };
    let node = Node {
        bytenr,
        generation,
        owner,
        level,
        body,
    };
    check_key_order(&node, want)?;
    Ok(node)
}

fn decode_leaf(b: &[u8], n: usize) -> Result<Body, String> {
    let ns = b.len();
    let items_end = NODE_HEADER_SIZE + n * LEAF_ITEM_SIZE;
    if items_end > ns {
        return Err(format!(
            "{n} items run off the node ({items_end} > {ns} bytes)"
        ));
    }
    let mut items = Leaf::default();
    let mut data_end = ns;
    for slot in 0..n {
        let at = NODE_HEADER_SIZE + slot * LEAF_ITEM_SIZE;
        let key = Key::decode(b, at).ok_or("truncated item")?;
        let off = get_u32(b, at + KEY_SIZE).ok_or("truncated item")? as usize;
        let size = get_u32(b, at + KEY_SIZE + 4).ok_or("truncated item")? as usize;
        let end = off
            .checked_add(size)
            .ok_or_else(|| format!("slot {slot}: data range overflows"))?;
        if off < items_end || end != data_end {
            return Err(format!(
                "slot {slot}: item data [{off}, {end}) is out of place, expected it to end at {data_end} and start at or after {items_end}"
            ));
        }
        items.push(key, &b[off..end]);
        data_end = off;
    }
    Ok(Body::Leaf(items))
}

fn decode_branch(b: &[u8], n: usize, generation: u64, want: &Expect<'_>) -> Result<Body, String> {
    let ns = b.len();
    if n == 0 {
        return Err("branch node has no pointers".into());
    }
    let end = NODE_HEADER_SIZE + n * BRANCH_PTR_SIZE;
    if end > ns {
        return Err(format!(
            "{n} pointers run off the node ({end} > {ns} bytes)"
        ));
    }
    let mut ptrs = Vec::with_capacity(n);
    for slot in 0..n {
        let at = NODE_HEADER_SIZE + slot * BRANCH_PTR_SIZE;
        let key = Key::decode(b, at).ok_or("truncated pointer")?;
        let bytenr = get_u64(b, at + KEY_SIZE).ok_or("truncated pointer")?;
        let child_gen = get_u64(b, at + KEY_SIZE + 8).ok_or("truncated pointer")?;
        let aligned = bytenr % u64::from(want.nodesize) == 0;
        if bytenr == 0
            || !aligned
            || bytenr.saturating_add(u64::from(want.nodesize)) > want.total_bytes
        {
            return Err(format!(
                "slot {slot}: child address {bytenr} is not a valid node address"
            ));
        }
        if child_gen == 0 || child_gen > generation {
            return Err(format!(
                "slot {slot}: child generation {child_gen} is not in 1..={generation}"
            ));
        }
        ptrs.push(Ptr {
            key,
            bytenr,
            generation: child_gen,
        });
    }
    Ok(Body::Branch(ptrs))
}

fn check_key_order(node: &Node, want: &Expect<'_>) -> Result<(), String> {
    let branch_keys: Vec<Key>;
    let keys: &[Key] = match &node.body {
        Body::Leaf(leaf) => leaf.keys(),
        Body::Branch(ptrs) => {
            branch_keys = ptrs.iter().map(|p| p.key).collect();
            &branch_keys
        }
    };
    for (slot, pair) in keys.windows(2).enumerate() {
        if pair[0] >= pair[1] {
            return Err(format!(
                "keys out of order at slot {}: {} is not below {}",
                slot + 1,
                pair[0],
                pair[1]
            ));
        }
    }
    if let (Some(lo), Some(first)) = (want.lo, keys.first())
        && *first != lo
    {
        return Err(format!(
            "first key {first} differs from the parent's key {lo}"
        ));
    }
    if let (Some(hi), Some(last)) = (want.hi, keys.last())
        && *last >= hi
    {
        return Err(format!(
            "last key {last} is not below the next parent key {hi}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FSID: [u8; 16] = [3; 16];

    fn expect(node: &Node) -> Expect<'static> {
        Expect {
            bytenr: node.bytenr,
            generation: node.generation,
            level: node.level,
            fsid: &FSID,
            nodesize: 4096,
            total_bytes: 1 << 30,
            lo: None,
            hi: None,
        }
    }

    fn leaf() -> Node {
        Node {
            bytenr: 8192,
            generation: 4,
            owner: 5,
            level: 0,
            body: Body::Leaf(Leaf::from_items(vec![
                (Key::new(1, 1, 0), b"one".to_vec()),
                (Key::new(2, 1, 0), vec![]),
                (Key::new(2, 1, 7), vec![9; 100]),
            ])),
        }
    }

    fn branch() -> Node {
        let p = |o, b| Ptr {
            key: Key::new(o, 0, 0),
            bytenr: b,
            generation: 3,
        };
        Node {
            bytenr: 4096 * 9,
            generation: 4,
            owner: 5,
            level: 1,
            body: Body::Branch(vec![p(1, 4096 * 20), p(7, 4096 * 21)]),
        }
    }

    #[test]
    fn leaf_and_branch_round_trip() {
        for n in [leaf(), branch()] {
            let b = encode_node(&n, 4096, &FSID);
            assert_eq!(decode_node(&b, &expect(&n)), Ok(n));
        }
    }

    #[test]
    fn every_single_bit_flip_in_a_leaf_is_detected() {
        let n = leaf();
        let b = encode_node(&n, 4096, &FSID);
        for byte in (0..4096).step_by(7) {
            let mut c = b.clone();
            c[byte] ^= 0x10;
            assert!(
                decode_node(&c, &expect(&n)).is_err(),
                "flip at byte {byte} went unseen"
            );
        }
    }

    fn reseal(b: &mut [u8]) {
        let c = crc32c::crc32c(&b[4..]);
        put_u32(b, 0, c);
    }

    #[test]
    fn keys_out_of_order_are_rejected_even_with_a_good_checksum() {
        let n = leaf();
        let mut b = encode_node(&n, 4096, &FSID);
        Key::new(9, 9, 9).encode(&mut b, NODE_HEADER_SIZE);
        reseal(&mut b);
        let err = decode_node(&b, &expect(&n)).unwrap_err();
        assert!(err.contains("out of order"), "{err}");
    }

    #[test]
    fn item_running_off_the_node_is_rejected() {
        let n = leaf();
        let mut b = encode_node(&n, 4096, &FSID);
        put_u32(&mut b, NODE_HEADER_SIZE + KEY_SIZE + 4, 5000);
        reseal(&mut b);
        let err = decode_node(&b, &expect(&n)).unwrap_err();
        assert!(err.contains("out of place"), "{err}");
        let mut b = encode_node(&n, 4096, &FSID);
        put_u16(&mut b, NRITEMS_OFFSET, 1000);
        reseal(&mut b);
        assert!(
            decode_node(&b, &expect(&n))
                .unwrap_err()
                .contains("run off")
        );
    }

    #[test]
    fn wrong_address_or_generation_is_a_misplaced_write() {
        let n = leaf();
        let b = encode_node(&n, 4096, &FSID);
        let mut e = expect(&n);
        e.bytenr += 4096;
        assert!(decode_node(&b, &e).unwrap_err().contains("wrong address"));
        let mut e = expect(&n);
        e.generation = 5;
        assert!(
            decode_node(&b, &e)
                .unwrap_err()
                .contains("generation mismatch")
        );
    }

    #[test]
    fn child_newer_than_parent_is_rejected() {
        let mut n = branch();
        if let Body::Branch(p) = &mut n.body {
            p[1].generation = 5;
        }
        let b = encode_node(&n, 4096, &FSID);
        assert!(
            decode_node(&b, &expect(&n))
                .unwrap_err()
                .contains("child generation")
        );
    }

    #[test]
    fn reserved_header_bytes_and_empty_children_are_rejected() {
        let n = leaf();
        let mut b = encode_node(&n, 4096, &FSID);
        b[50] = 1;
        reseal(&mut b);
        assert!(
            decode_node(&b, &expect(&n))
                .unwrap_err()
                .contains("reserved")
        );
        let empty = Node {
            body: Body::Leaf(Leaf::default()),
            ..leaf()
        };
        let b = encode_node(&empty, 4096, &FSID);
        assert!(
            decode_node(&b, &expect(&empty)).is_ok(),
            "an empty root leaf is fine"
        );
        let mut e = expect(&empty);
        e.lo = Some(Key::MIN);
        assert!(decode_node(&b, &e).unwrap_err().contains("no items"));
    }

    #[test]
    fn keys_outside_the_parent_range_are_rejected() {
        let n = leaf();
        let b = encode_node(&n, 4096, &FSID);
        let mut e = expect(&n);
        e.hi = Some(Key::new(2, 1, 7));
        assert!(decode_node(&b, &e).unwrap_err().contains("not below"));
    }
}
