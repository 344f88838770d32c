//! Fuzz target `send_decode`: the send-stream decoder (`arbor_send::StreamReader`) and the
//! `btrfs receive --dump` printer on arbitrary bytes; the fuzzing twin of
//! `crates/arbor-send/tests/hostile_input.rs`.
//!
//! Contract: errors are fine, panics are bugs. Every command that decodes must also dump
//! (an error is fine), and when the whole input decodes, re-encoding the commands with
//! `StreamWriter` must decode to the same commands. (One asymmetry is allowed: the
//! decoder accepts v1 commands of exactly 64 KiB, as the kernel may write them, while the
//! encoder stays one byte below for btrfs-progs before 5.19.)
//!
//! Raw random bytes would rarely get past the magic and the per-command CRC, so the input
//! is: byte 0, a control byte (bit 0: reseal the CRC of every command whose length fits
//! the input, so that the attribute parser is reached; bit 1: put a valid stream header
//! of version 1 + (bits 2..4 % 3) in front instead of taking it from the input); the rest
//! is the stream. A seed corpus: the kernel streams in `crates/arbor-send/tests/fixtures`.
#![no_main]

use std::io;

use arbor_send::wire::{self, COMMAND_HEADER_SIZE, HEADER_SIZE, MAX_COMMAND_SIZE_V1};
use arbor_send::{Command, Dumper, EncodeError, StreamReader, StreamWriter};
use libfuzzer_sys::fuzz_target;

/// Recomputes the CRC of every command whose length field fits in `b`.
fn reseal(b: &mut [u8]) {
    let mut pos = HEADER_SIZE;
    while let Some(head) = b.get(pos..pos + COMMAND_HEADER_SIZE) {
        let head: [u8; COMMAND_HEADER_SIZE] = head.try_into().unwrap_or_default();
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let end = pos + COMMAND_HEADER_SIZE + len;
        let Some(payload) = b.get(pos + COMMAND_HEADER_SIZE..end) else {
            break;
        };
        let crc = wire::command_crc(&head, payload);
        b[pos + 6..pos + 10].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
}

fuzz_target!(|data: &[u8]| {
    let ctl = data.first().copied().unwrap_or(0);
    let rest = data.get(1..).unwrap_or_default();
    let mut b = Vec::with_capacity(rest.len() + HEADER_SIZE);
    if ctl & 2 != 0 {
        b.extend_from_slice(&wire::header(1 + u32::from((ctl >> 2) & 3) % 3));
    }
    b.extend_from_slice(rest);
    if ctl & 1 != 0 {
        reseal(&mut b);
    }

    let Ok(mut reader) = StreamReader::new(&b[..]) else {
        return;
    };
    let mut dumper = Dumper::new();
    let mut cmds = Vec::new();
    // Concatenated streams may mix versions; re-encode with the highest one.
    let mut version = reader.version();
    while let Some(item) = reader.next() {
        match item {
            Ok((_, cmd)) => {
                let _ = dumper.dump(&cmd, &mut io::sink());
                version = version.max(reader.version());
                cmds.push(cmd);
            }
            Err(e) => {
                let _ = e.to_string();
                return;
            }
        }
    }
    let mut w = StreamWriter::new(Vec::new(), version).expect("version was accepted on decode");
    for c in &cmds {
        match w.write_command(c) {
            Ok(()) => {}
            Err(EncodeError::CommandTooLarge {
                size, version: 1, ..
            }) if size == MAX_COMMAND_SIZE_V1 => {
                return;
            }
            Err(e) => panic!("a decoded command does not re-encode: {e}"),
        }
    }
    let again: Vec<Command> = StreamReader::new(&w.into_inner()[..])
        .expect("header")
        .map(|i| i.expect("re-encoded stream decodes").1)
        .collect();
    assert_eq!(again, cmds);
});
