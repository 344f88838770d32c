//! Storage backends: the one small trait every layer above writes through.
//!
//! A backend is a flat byte-addressed device. It knows nothing of blocks, nodes or
//! trees. `flush` is the only ordering primitive: every write that returned before a
//! `flush` began is durable once that `flush` returns (fdatasync semantics).

mod crash;
mod fault;
mod file;
mod mem;

pub use crash::{CrashRecorder, CrashState, Epoch};
pub use fault::FaultInjector;
pub use file::FileStorage;
pub use mem::MemStorage;

use std::fmt::Debug;
use std::io;

/// A byte-addressed device: an image file, a block device, memory, or a test wrapper.
pub trait Storage: Send + Sync + Debug {
    /// Fills `buf` from `offset`. Reading past the end is an error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `buf` at `offset`. Not durable until the next [`Storage::flush`].
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// A barrier: returns once every earlier write is durable.
    fn flush(&self) -> io::Result<()>;
    /// The size of the device in bytes.
    fn len(&self) -> io::Result<u64>;
    /// True when the device has no bytes at all.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

impl<S: Storage + ?Sized> Storage for std::sync::Arc<S> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        (**self).write_at(offset, buf)
    }
    fn flush(&self) -> io::Result<()> {
        (**self).flush()
    }
    fn len(&self) -> io::Result<u64> {
        (**self).len()
    }
}

/// The error for an access that runs past the end of a device.
pub(crate) fn out_of_range(offset: u64, len: usize, size: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("access of {len} bytes at offset {offset} runs past the device end ({size} bytes)"),
    )
}
