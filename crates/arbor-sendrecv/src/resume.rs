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

/// What a receive that stopped had applied: its progress note without the
/// generation (which only the receiver checks). Its text form is the resume token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumeToken(ReceiveProgress);

/// The token's format, first byte of its binary form; the note's encoding and a
/// crc32c of both follow.
const TOKEN_FORMAT: u8 = 1;

impl ResumeToken {
    pub fn from_progress(p: &ReceiveProgress) -> Self {
        Self(ReceiveProgress {
            generation: 0,
            ..*p
        })
    }

    /// The parent, for an incremental stream.
    pub fn parent(&self) -> Option<([u8; 16], u64)> {
        (self.parent_uuid != [0; 16]).then_some((self.parent_uuid, self.parent_ctransid))
    }

    fn bytes(&self) -> Vec<u8> {
        let mut v = vec![TOKEN_FORMAT];
        v.extend_from_slice(&self.0.encode());
        let crc = crc32c::crc32c(&v);
        v.extend_from_slice(&crc.to_le_bytes());
        v
    }

    /// Reads a token printed by [`std::fmt::Display`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = |why: &str| format!("not a resume token ({why})");
        let len = 1 + ReceiveProgress::SIZE + 4;
        if text.len() != 2 * len || !text.is_ascii() {
            return Err(bad("wrong length"));
        }
        let mut b = Vec::with_capacity(len);
        for i in (0..text.len()).step_by(2) {
            b.push(u8::from_str_radix(&text[i..i + 2], 16).map_err(|_| bad("not hex"))?);
        }
        let (body, crc) = b.split_at(len - 4);
        let crc = u32::from_le_bytes(crc.try_into().map_err(|_| bad("short"))?);
        if crc32c::crc32c(body) != crc {
            return Err(bad("checksum mismatch: mistyped or cut?"));
        }
        let Some((&TOKEN_FORMAT, note)) = body.split_first() else {
            return Err(bad("unknown format"));
        };
        let p = ReceiveProgress::decode(0, ReceiveProgress::key(0), note)
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Self::from_progress(&p))
    }
}

impl std::ops::Deref for ResumeToken {
    type Target = ReceiveProgress;
    fn deref(&self) -> &ReceiveProgress {
        &self.0
    }
}

impl std::ops::DerefMut for ResumeToken {
    fn deref_mut(&mut self) -> &mut ReceiveProgress {
        &mut self.0
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

/// Whether the unfinished receive `what` (whose note is `note`) is the one that
/// `s`, resuming after `skip` commands, continues: the same stream, the same parent
/// and version, stopped exactly there.
pub(crate) fn check_fit(
    note: &ReceiveProgress,
    s: &crate::receive::StreamSubvol,
    skip: u64,
    what: &str,
) -> Result<(), String> {
    if (note.uuid, note.ctransid) != (s.uuid, s.ctransid)
        || s.parent.unwrap_or_default() != (note.parent_uuid, note.parent_ctransid)
    {
        return Err(format!(
            "{what} is the unfinished receive of another stream (uuid {})",
            crate::receive::paths::hex(&note.uuid)
        ));
    }
    if note.version != s.version {
        return Err(format!(
            "{what} was received from a version {} stream, this one is version {}",
            note.version, s.version
        ));
    }
    if note.applied != skip {
        return Err(format!(
            "the stream resumes after {skip} commands, but {what} stopped after {}: use its resume token",
            note.applied
        ));
    }
    Ok(())
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
        let t = ResumeToken::from_progress(&ReceiveProgress {
            uuid: [7; 16],
            ctransid: 42,
            version: 2,
            applied: 123_456,
            digest: 0xdead_beef,
            generation: 99,
            ..Default::default()
        });
        assert_eq!(t.generation, 0);
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
