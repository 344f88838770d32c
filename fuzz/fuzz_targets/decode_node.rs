//! Fuzz target `decode_node`: the node validator on arbitrary bytes whose checksum and
//! header identity fields (fsid, address, generation, level, flags, reserved bytes) have
//! been made to match, so that decoding gets past the cheap checks into the items; the
//! fuzzing twin of `crates/arbor-engine/tests/decode_fuzz.rs`.
//!
//! Contract: errors are fine, panics are bugs. A node that decodes must also survive
//! `encode_node` and decode again to the same node.
//!
//! Input: byte 0 is a control byte (bit 0: leave the checksum as given instead of
//! resealing it; bit 1: leave the identity fields alone; bit 2: expect a parent's low
//! key, bit 3: a high key); bytes 1..35 are the two bound keys (17 bytes each, in the
//! on-disk key encoding); the rest is the node, cut or zero-padded to 4096 bytes.
#![no_main]

use arbor_engine::format::{Expect, KEY_SIZE, Key, decode_node, encode_node};
use libfuzzer_sys::fuzz_target;

const NS: usize = 4096;
const FSID: [u8; 16] = [9; 16];
const BYTENR: u64 = 8 * NS as u64;
const GENERATION: u64 = 7;
const CTL_LEN: usize = 1 + 2 * KEY_SIZE;

/// A key in the on-disk encoding (objectid u64 LE, type u8, offset u64 LE), read from
/// `b[at..]` with missing bytes taken as zero.
fn key_at(b: &[u8], at: usize) -> Key {
    let mut k = [0u8; KEY_SIZE];
    for (i, x) in k.iter_mut().enumerate() {
        *x = b.get(at + i).copied().unwrap_or(0);
    }
    let u64_at = |o: usize| u64::from_le_bytes(k[o..o + 8].try_into().unwrap_or_default());
    Key::new(u64_at(0), k[8], u64_at(9))
}

// Errors are fine, panics are bugs.
fuzz_target!(|data: &[u8]| {
    let ctl = data.first().copied().unwrap_or(0);
    let lo = key_at(data, 1);
    let hi = key_at(data, 1 + KEY_SIZE);
    let mut b = data.get(CTL_LEN..).unwrap_or_default().to_vec();
    b.resize(NS, 0);
    // The level the parent implies: the node's own level byte, kept small so both leaves
    // and branches are common (MAX_LEVEL is 8; 8 and 9 exercise the "too deep" check).
    let level = b[4] % 10;
    if ctl & 2 == 0 {
        b[4] = level;
        b[5] = 0;
        b[8..24].copy_from_slice(&FSID);
        b[24..32].copy_from_slice(&BYTENR.to_le_bytes());
        b[32..40].copy_from_slice(&GENERATION.to_le_bytes());
        b[48..64].fill(0);
    }
    if ctl & 1 == 0 {
        let c = crc32c::crc32c(&b[4..]);
        b[..4].copy_from_slice(&c.to_le_bytes());
    }
    let want = Expect {
        bytenr: BYTENR,
        generation: GENERATION,
        level,
        fsid: &FSID,
        nodesize: NS as u32,
        total_bytes: 1 << 30,
        lo: (ctl & 4 != 0).then_some(lo),
        hi: (ctl & 8 != 0).then_some(hi),
    };
    if let Ok(node) = decode_node(&b, &want) {
        let again = encode_node(&node, NS as u32, &FSID);
        assert_eq!(
            decode_node(&again, &want).as_ref(),
            Ok(&node),
            "a decoded node does not survive encode_node + decode_node"
        );
    }
});
