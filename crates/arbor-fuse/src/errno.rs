//! The one table that maps the lower layers' errors to errnos.

use arbor_engine::Error as EngineError;
use arbor_fs::FsError;
use fuser::Errno;

/// The errno a failed request returns.
pub fn errno(e: &FsError) -> Errno {
    let n = match e {
        FsError::NotFound => libc::ENOENT,
        FsError::Exists => libc::EEXIST,
        FsError::NotDir => libc::ENOTDIR,
        FsError::IsDir => libc::EISDIR,
        FsError::NotEmpty => libc::ENOTEMPTY,
        FsError::NameTooLong(_) => libc::ENAMETOOLONG,
        FsError::Invalid(_) => libc::EINVAL,
        FsError::NotPermitted(_) => libc::EPERM,
        FsError::NoAttr => libc::ENODATA,
        FsError::Range => libc::ERANGE,
        FsError::TooBig(_) => libc::E2BIG,
        FsError::FileTooBig => libc::EFBIG,
        FsError::TooManyLinks => libc::EMLINK,
        FsError::NotSupported(_) => libc::EOPNOTSUPP,
        FsError::NoData(_) => libc::ENXIO,
        FsError::ReadOnly(_) => libc::EROFS,
        FsError::CrossSubvolume => libc::EXDEV,
        FsError::Busy(_) => libc::EBUSY,
        FsError::Checksum { .. } | FsError::Corrupt { .. } | FsError::Io { .. } => libc::EIO,
        FsError::Engine(e) => match e {
            EngineError::NoSpace { .. } => libc::ENOSPC,
            EngineError::ReadOnly => libc::EROFS,
            EngineError::ItemTooLarge { .. } => libc::E2BIG,
            EngineError::InvalidArgument(_) => libc::EINVAL,
            EngineError::NoSuchTree(_) => libc::ENOENT,
            EngineError::TreeExists(_) => libc::EEXIST,
            _ => libc::EIO,
        },
    };
    Errno::from_i32(n)
}
