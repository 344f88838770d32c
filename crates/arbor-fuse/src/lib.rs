//! The FUSE adapter: serves an [`arbor_fs::Fs`] through the kernel with fuser.
//! Multithreaded, with the writeback cache, 1 MiB requests, parallel directory
//! operations, readdirplus and POSIX ACLs. Errors become errnos in one table
//! (`errno.rs`).

mod adapter;
mod attr;
mod errno;
mod session;
mod stats;

pub use errno::errno;
pub use session::{KernelNotifier, MountConfig, Mounted, mount};
