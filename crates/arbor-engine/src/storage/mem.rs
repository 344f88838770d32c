//! A device in memory, for tests and benchmarks.

use super::Storage;
use std::io;
use std::sync::RwLock;

/// A fixed-size device held in memory. Flushes are no-ops.
#[derive(Debug)]
pub struct MemStorage {
    bytes: RwLock<Vec<u8>>,
}

impl MemStorage {
    /// A zero-filled device of `len` bytes.
    pub fn new(len: u64) -> Self {
        Self::from_bytes(vec![0; len as usize])
    }

    /// A device holding exactly these bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self {
            bytes: RwLock::new(bytes),
        }
    }

    /// A copy of the device's current bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self.bytes.read() {
            Ok(b) => b.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

fn poisoned() -> io::Error {
    io::Error::other("memory device lock poisoned by a panicking thread")
}

impl Storage for MemStorage {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let bytes = self.bytes.read().map_err(|_| poisoned())?;
        let start = usize::try_from(offset)
            .map_err(|_| super::out_of_range(offset, buf.len(), bytes.len() as u64))?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(|| super::out_of_range(offset, buf.len(), bytes.len() as u64))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut bytes = self.bytes.write().map_err(|_| poisoned())?;
        let size = bytes.len() as u64;
        let start =
            usize::try_from(offset).map_err(|_| super::out_of_range(offset, buf.len(), size))?;
        let dst = start
            .checked_add(buf.len())
            .and_then(|end| bytes.get_mut(start..end))
            .ok_or_else(|| super::out_of_range(offset, buf.len(), size))?;
        dst.copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        let bytes = self.bytes.read().map_err(|_| poisoned())?;
        Ok(bytes.len() as u64)
    }
}
