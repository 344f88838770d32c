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
