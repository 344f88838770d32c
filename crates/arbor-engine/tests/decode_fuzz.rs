//! Property tests: the decoders never panic, whatever the bytes, even when the checksum
//! has been made to match (as a buggy or hostile writer could).

use arbor_engine::format::{
    DropItem, Expect, ExtentItem, RootItem, SUPERBLOCK_SIZE, Superblock, decode_node,
};
use proptest::prelude::*;

const NS: usize = 4096;
const FSID: [u8; 16] = [9; 16];

fn reseal(b: &mut [u8]) {
    let c = crc32c::crc32c(&b[4..]);
    b[..4].copy_from_slice(&c.to_le_bytes());
}

/// Random bytes with a header that passes the identity checks, so that decoding gets
/// as far as the items.
fn node_bytes() -> impl Strategy<Value = (Vec<u8>, u8)> {
    (
        proptest::collection::vec(any::<u8>(), NS),
        0u8..3,
        0u16..300,
    )
        .prop_map(|(mut b, level, nritems)| {
            b[4] = level;
            b[5] = 0;
            b[6..8].copy_from_slice(&nritems.to_le_bytes());
            b[8..24].copy_from_slice(&FSID);
            b[24..32].copy_from_slice(&(8 * NS as u64).to_le_bytes());
            b[32..40].copy_from_slice(&7u64.to_le_bytes());
            b[48..64].fill(0);
            reseal(&mut b);
            (b, level)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decode_node_never_panics((bytes, level) in node_bytes()) {
        let want = Expect {
            bytenr: 8 * NS as u64,
            generation: 7,
            level,
            fsid: &FSID,
            nodesize: NS as u32,
            total_bytes: 1 << 30,
            lo: None,
            hi: None,
        };
        // Either outcome is fine; a panic is not.
        let _ = decode_node(&bytes, &want);
    }

    #[test]
    fn superblock_decode_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), SUPERBLOCK_SIZE)) {
        bytes[8..16].copy_from_slice(b"ARBOR-FS");
        reseal(&mut bytes);
        let _ = Superblock::decode(&bytes, 0);
    }

    #[test]
    fn item_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        let _ = RootItem::decode(&bytes);
        let _ = ExtentItem::decode(&bytes);
        let _ = DropItem::decode(&bytes);
    }
}
