//! Why a send failed.

use arbor_fs::FsError;

/// A failed send.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Refused(String),
    #[error("reading {path}: {source}")]
    Fs { path: String, source: FsError },
    #[error(transparent)]
    Encode(#[from] arbor_send::EncodeError),
}

impl SendError {
    pub(crate) fn fs(path: &[u8]) -> impl FnOnce(FsError) -> SendError + '_ {
        move |source| SendError::Fs {
            path: if path.is_empty() {
                "/".into()
            } else {
                String::from_utf8_lossy(path).into_owned()
            },
            source,
        }
    }
}

/// A failed receive. Every rejection of a command names its index and byte offset.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("destination: {0}")]
    Dest(String),
    #[error(transparent)]
    Decode(#[from] arbor_send::DecodeError),
    #[error("command #{index} ({command}) at byte {offset}: {reason}")]
    Command {
        index: u64,
        offset: u64,
        command: &'static str,
        reason: String,
    },
    #[error(
        "the stream ended before its END command; the partial subvolume was left writable and unmarked"
    )]
    Truncated,
}
