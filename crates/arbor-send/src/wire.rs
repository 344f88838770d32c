//! Framing of the stream, its size limits and its checksum, shared by the encoder and the
//! decoder. Layout (all integers little-endian, nothing aligned or padded):
//!
//! ```text
//! stream header   magic "btrfs-stream\0" (13 bytes) | version u32
//! command         len u32 | cmd u16 | crc u32 | payload (len bytes of TLVs)
//! TLV             type u16 | len u16 | value (len bytes)
//! DATA, v2 and v3 type u16 | value (the rest of the command; no length field)
//! ```

/// What every stream header starts with: `btrfs-stream` and its NUL terminator.
pub const MAGIC: [u8; 13] = *b"btrfs-stream\0";
/// Bytes of a stream header: the magic, then the version.
pub const HEADER_SIZE: usize = MAGIC.len() + VERSION_SIZE;
const VERSION_SIZE: usize = size_of::<u32>();

/// Bytes of a command header: `len` (payload bytes after the header), `cmd`, `crc`.
pub const COMMAND_HEADER_SIZE: usize = CRC_OFFSET + size_of::<u32>();
pub(crate) const LEN_OFFSET: usize = 0;
pub(crate) const CMD_OFFSET: usize = LEN_OFFSET + size_of::<u32>();
pub(crate) const CRC_OFFSET: usize = CMD_OFFSET + size_of::<u16>();

/// Bytes of a TLV header: type, then length.
pub const TLV_HEADER_SIZE: usize = 2 * size_of::<u16>();
/// Bytes of the header of a DATA attribute in v2 and v3: the type alone.
pub(crate) const DATA_HEADER_SIZE_V2: usize = size_of::<u16>();

/// The oldest stream version read and written.
pub const MIN_VERSION: u32 = 1;
/// The newest stream version read and written. Version 3 (fs-verity) is what kernels
/// built with CONFIG_BTRFS_EXPERIMENTAL write; stock btrfs-progs receive only accepts
/// versions up to 2. Version 0 is never written by a kernel (btrfs-progs happens to parse
/// it with the v1 rules); it is rejected here.
pub const MAX_VERSION: u32 = 3;

/// arbor's own: the header version of a stream that resumes an interrupted receive is
/// its base version with these bits set. No `btrfs receive` accepts such a version, so
/// it refuses the stream before it makes anything, instead of applying a stream's tail
/// as if it were whole (it skips commands it does not know).
pub const RESUMED_FLAG: u32 = 0xa7b0_0000;

/// Largest v1 command, header included: the kernel's v1 send buffer
/// (`BTRFS_SEND_BUF_SIZE_V1` = 64 KiB), which no v1 command can outgrow.
pub const MAX_COMMAND_SIZE_V1: usize = 64 << 10;

/// Largest v2/v3 command, header included, that this crate reads or writes. The kernel's
/// buffer is `ALIGN(16 KiB + BTRFS_MAX_COMPRESSED (128 KiB), PAGE_SIZE)`: 144 KiB with 4
/// or 16 KiB pages, 192 KiB with 64 KiB pages, 256 KiB with the rare 256 KiB pages. The
/// protocol text says receivers should "assume no limit" and btrfs-progs grows its
/// buffer to any u32 length before checking the CRC; bounding it here is what keeps a
/// forged length from costing up to 4 GiB of memory per command.
pub const MAX_COMMAND_SIZE_V2: usize = 256 << 10;

/// Largest command, header included, of a stream of the given version.
pub const fn max_command_size(version: u32) -> usize {
    if version <= 1 {
        MAX_COMMAND_SIZE_V1
    } else {
        MAX_COMMAND_SIZE_V2
    }
}

/// File data the kernel puts in one v1 WRITE (`BTRFS_SEND_READ_SIZE`, 48 KiB): what a
/// sender should cut files into. Larger WRITEs up to the command size limit are valid.
pub const WRITE_CHUNK_V1: usize = 48 << 10;
/// File data the kernel puts in one v2/v3 WRITE with 4 KiB pages (buffer minus 16 KiB).
pub const WRITE_CHUNK_V2: usize = 128 << 10;

/// Longest path attribute: the kernel fails a send whose path needs more than PATH_MAX
/// (4096) bytes with its NUL.
pub const MAX_PATH_LEN: usize = 4095;
/// Longest xattr name (XATTR_NAME_MAX).
pub const MAX_XATTR_NAME_LEN: usize = 255;

/// The stream header of the given version.
pub fn header(version: u32) -> [u8; HEADER_SIZE] {
    let mut h = [0u8; HEADER_SIZE];
    h[..MAGIC.len()].copy_from_slice(&MAGIC);
    h[MAGIC.len()..].copy_from_slice(&version.to_le_bytes());
    h
}

/// CRC-32C the way btrfs send computes it: the raw Castagnoli register update, started
/// from `crc` (0 for a new command) and with **no** inversion on entry or exit, unlike
/// the standard CRC-32C (which `crc32c::crc32c_append` computes; hence the inversions
/// here). `crc32c(0, b"123456789") == 0x58E3_FA20`.
pub fn crc32c(crc: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!crc, data)
}

/// The CRC of a command: over its header with the crc field taken as zero, then the
/// payload.
pub fn command_crc(header: &[u8; COMMAND_HEADER_SIZE], payload: &[u8]) -> u32 {
    let mut h = *header;
    h[CRC_OFFSET..].fill(0);
    crc32c(crc32c(0, &h), payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_reference_check_value_and_a_kernel_end_command() {
        assert_eq!(crc32c(0, b"123456789"), 0x58E3_FA20);
        // END: len 0, cmd 21, crc 0x9DC96C50 (from a kernel stream).
        let h = [0, 0, 0, 0, 21, 0, 0, 0, 0, 0];
        assert_eq!(command_crc(&h, &[]), 0x9DC9_6C50);
        // Chaining over two parts equals one pass.
        assert_eq!(crc32c(crc32c(0, b"1234"), b"56789"), 0x58E3_FA20);
    }

    #[test]
    fn header_is_magic_then_le_version() {
        let h = header(2);
        assert_eq!(&h[..13], b"btrfs-stream\0");
        assert_eq!(&h[13..], &[2, 0, 0, 0]);
    }
}
