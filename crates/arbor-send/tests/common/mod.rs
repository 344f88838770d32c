//! Helpers shared by the integration tests: the kernel fixtures, raw framing, and a
//! command builder that bypasses the encoder (to craft what the encoder refuses).
#![allow(dead_code)]

use std::path::PathBuf;

use arbor_send::wire::{self, COMMAND_HEADER_SIZE, HEADER_SIZE};
use arbor_send::{Command, CommandInfo, DecodeError, StreamReader};

/// Kernel 6.18 streams (see tests/fixtures/README.md), smallest first.
pub const FIXTURES: &[&str] = &[
    "kernel618_inv_inc_v1",
    "kernel618_nodata_v1",
    "kernel618_inc_v2",
    "kernel618_comp",
    "kernel618_full_v1",
    "kernel618_full_v2",
    "kernel618_inc_v1",
];

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The raw stream of a fixture.
pub fn stream(name: &str) -> Vec<u8> {
    let p = fixture_path(&format!("{name}.stream"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The `TZ=UTC btrfs receive --dump` output (btrfs-progs 6.2) of a fixture.
pub fn progs_dump(name: &str) -> Vec<u8> {
    let p = fixture_path(&format!("{name}.dump-progs6.2.txt"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `(offset, size)` of every command of a valid single stream, by its length fields alone.
pub fn command_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut pos = HEADER_SIZE;
    while pos + COMMAND_HEADER_SIZE <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let size = COMMAND_HEADER_SIZE + len;
        spans.push((pos, size));
        pos += size;
    }
    assert_eq!(pos, bytes.len(), "fixture framing");
    spans
}

/// Every item the reader yields, errors included.
pub fn decode_items(bytes: &[u8]) -> (Vec<(CommandInfo, Command)>, Option<DecodeError>) {
    let reader = match StreamReader::new(bytes) {
        Ok(r) => r,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut ok = Vec::new();
    for item in reader {
        match item {
            Ok(c) => ok.push(c),
            Err(e) => return (ok, Some(e)),
        }
    }
    (ok, None)
}

/// Decodes a whole stream that must be valid.
pub fn decode_all(bytes: &[u8]) -> Vec<Command> {
    let (items, err) = decode_items(bytes);
    if let Some(e) = err {
        panic!("{e}");
    }
    items.into_iter().map(|(_, c)| c).collect()
}

/// A TLV with a 16-bit length.
pub fn tlv(ty: u16, value: &[u8]) -> Vec<u8> {
    let mut v = ty.to_le_bytes().to_vec();
    v.extend_from_slice(&u16::try_from(value.len()).unwrap().to_le_bytes());
    v.extend_from_slice(value);
    v
}

/// A framed command with a correct CRC around any payload.
pub fn raw_command(cmd: u16, payload: &[u8]) -> Vec<u8> {
    let mut head = [0u8; COMMAND_HEADER_SIZE];
    head[..4].copy_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
    head[4..6].copy_from_slice(&cmd.to_le_bytes());
    let crc = wire::command_crc(&head, payload);
    head[6..].copy_from_slice(&crc.to_le_bytes());
    let mut v = head.to_vec();
    v.extend_from_slice(payload);
    v
}

/// A stream of the given version: header, the given raw commands, then END.
pub fn raw_stream(version: u32, commands: &[Vec<u8>]) -> Vec<u8> {
    let mut v = wire::header(version).to_vec();
    for c in commands {
        v.extend_from_slice(c);
    }
    v.extend_from_slice(&raw_command(21, &[]));
    v
}

/// Recomputes the CRC of every command whose length field fits in the input, so that
/// mutated commands reach the attribute checks.
pub fn reseal(bytes: &mut [u8]) {
    let mut pos = HEADER_SIZE;
    while pos + COMMAND_HEADER_SIZE <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let Some(end) = (pos + COMMAND_HEADER_SIZE).checked_add(len) else {
            break;
        };
        if end > bytes.len() {
            break;
        }
        let head: [u8; COMMAND_HEADER_SIZE] =
            bytes[pos..pos + COMMAND_HEADER_SIZE].try_into().unwrap();
        let crc = wire::command_crc(&head, &bytes[pos + COMMAND_HEADER_SIZE..end]);
        bytes[pos + 6..pos + 10].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
}
