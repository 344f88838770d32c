//! Resuming an interrupted receive, as `zfs send -t` does. A receive notes, with every
//! commit, how many commands it applied after the subvol or snapshot command, and a
//! digest of them (their kinds and paths). The token is that note, printable:
//! `arbor receive --resume-token` and `subvolume show` print it, and `arbor send
//! --resume TOKEN` makes the stream again without the applied commands: the subvol or
//! snapshot command, then an `arbor_resume` command naming how many it left out, then
//! the rest. The sender checks that the commands it leaves out have the digest the
//! token names, so a resume with another snapshot or other send options is refused
//! instead of applying the wrong tail.

use arbor_fs::subvol_items::ReceiveProgress;
use arbor_send::{Command, CommandKind};

/// What a receive that stopped had applied. Its text form is the resume token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumeToken {
    /// The subvolume the stream makes, as the stream names it.
    pub uuid: [u8; 16],
    pub ctransid: u64,
    /// The parent of an incremental stream (zero for a full one).
    pub parent_uuid: [u8; 16],
    pub parent_ctransid: u64,
    /// Stream version.
    pub version: u32,
    /// Commands applied after the subvol or snapshot command, and their digest.
    pub applied: u64,
    pub digest: u32,
}

/// The token's format, first byte of its binary form.
const TOKEN_FORMAT: u8 = 1;
const TOKEN_LEN: usize = 1 + 16 + 8 + 16 + 8 + 4 + 8 + 4 + 4;

impl ResumeToken {
    pub fn from_progress(p: &ReceiveProgress) -> Self {
        Self {
            uuid: p.uuid,
            ctransid: p.ctransid,
            parent_uuid: p.parent_uuid,
            parent_ctransid: p.parent_ctransid,
            version: p.version,
            applied: p.applied,
            digest: p.digest,
        }
    }

    /// The parent, for an incremental stream.
    pub fn parent(&self) -> Option<([u8; 16], u64)> {
        (self.parent_uuid != [0; 16]).then_some((self.parent_uuid, self.parent_ctransid))
    }

    fn bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(TOKEN_LEN);
        v.push(TOKEN_FORMAT);
        v.extend_from_slice(&self.uuid);
        v.extend_from_slice(&self.ctransid.to_le_bytes());
        v.extend_from_slice(&self.parent_uuid);
        v.extend_from_slice(&self.parent_ctransid.to_le_bytes());
        v.extend_from_slice(&self.version.to_le_bytes());
        v.extend_from_slice(&self.applied.to_le_bytes());
        v.extend_from_slice(&self.digest.to_le_bytes());
        let crc = crc32c::crc32c(&v);
        v.extend_from_slice(&crc.to_le_bytes());
        v
    }

    /// Reads a token printed by [`std::fmt::Display`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = |why: &str| format!("not a resume token ({why})");
        if text.len() != 2 * TOKEN_LEN || !text.is_ascii() {
            return Err(bad("wrong length"));
        }
        let mut b = Vec::with_capacity(TOKEN_LEN);
        for i in (0..text.len()).step_by(2) {
            b.push(u8::from_str_radix(&text[i..i + 2], 16).map_err(|_| bad("not hex"))?);
        }
        let (body, crc) = b.split_at(TOKEN_LEN - 4);
        let crc = u32::from_le_bytes(crc.try_into().map_err(|_| bad("short"))?);
        if crc32c::crc32c(body) != crc {
            return Err(bad("checksum mismatch: mistyped or cut?"));
        }
        if body[0] != TOKEN_FORMAT {
            return Err(bad("unknown format"));
        }
        let mut at = 1;
        let mut take = |n: usize| {
            let s = &body[at..at + n];
            at += n;
            s
        };
        let u16b = |s: &[u8]| {
            let mut a = [0u8; 16];
            a.copy_from_slice(s);
            a
        };
        let u64b = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or([0; 8]));
        let u32b = |s: &[u8]| u32::from_le_bytes(s.try_into().unwrap_or([0; 4]));
        Ok(Self {
            uuid: u16b(take(16)),
            ctransid: u64b(take(8)),
            parent_uuid: u16b(take(16)),
            parent_ctransid: u64b(take(8)),
            version: u32b(take(4)),
            applied: u64b(take(8)),
            digest: u32b(take(4)),
        })
    }
}

impl std::fmt::Display for ResumeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The digest of the commands so far, with `kind` at `path` added: what a resume
/// checks the commands it leaves out against.
pub(crate) fn digest(d: u32, kind: CommandKind, path: &[u8]) -> u32 {
    let d = crc32c::crc32c_append(d, &kind.number().to_le_bytes());
    crc32c::crc32c_append(d, path)
}

pub(crate) fn digest_of(d: u32, cmd: &Command) -> u32 {
    digest(d, cmd.kind(), cmd.path().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_and_a_changed_one_is_refused() {
        let t = ResumeToken {
            uuid: [7; 16],
            ctransid: 42,
            parent_uuid: [0; 16],
            parent_ctransid: 0,
            version: 2,
            applied: 123_456,
            digest: 0xdead_beef,
        };
        let text = t.to_string();
        assert_eq!(ResumeToken::parse(&text), Ok(t));
        assert_eq!(t.parent(), None);
        let mut bad = text.clone().into_bytes();
        bad[40] = if bad[40] == b'0' { b'1' } else { b'0' };
        let e = ResumeToken::parse(std::str::from_utf8(&bad).unwrap()).unwrap_err();
        assert!(e.contains("checksum"), "{e}");
        assert!(ResumeToken::parse("zz").is_err());
        assert!(ResumeToken::parse(&text[..text.len() - 2]).is_err());
    }
}
