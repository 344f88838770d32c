//! A fault injector: a device that dies on cue.
//!
//! [`FaultInjector`] wraps another device and numbers every write and flush it is
//! asked to do. Once armed, the chosen operation and (unless it was armed for a single
//! fault) every later one fails without reaching the wrapped device, the way a disk
//! that lost power or was pulled out behaves.

use super::Storage;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The `fail_from` value meaning "disarmed".
const DISARMED: u64 = u64::MAX;

/// Wraps a device and makes its writes, flushes and optionally reads fail on demand.
#[derive(Debug)]
pub struct FaultInjector {
    inner: Arc<dyn Storage>,
    /// Writes and flushes attempted so far, failed ones included.
    ops: AtomicU64,
    /// The number of the first write-or-flush that fails, or [`DISARMED`].
    fail_from: AtomicU64,
    /// When set, only the operation numbered `fail_from` fails.
    once: AtomicBool,
    /// When set, every read fails.
    fail_reads: AtomicBool,
    /// How many operations have been failed on purpose.
    injected: AtomicU64,
}

impl FaultInjector {
    /// Wraps `inner`, disarmed: everything passes through until armed.
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        Self {
            inner,
            ops: AtomicU64::new(0),
            fail_from: AtomicU64::new(DISARMED),
            once: AtomicBool::new(false),
            fail_reads: AtomicBool::new(false),
            injected: AtomicU64::new(0),
        }
    }

    /// Arms the injector: the `n`-th following write or flush (0 = the very next one)
    /// and every one after it fail without reaching the wrapped device.
    pub fn fail_after(&self, n: u64) {
        self.arm(n, false);
    }

    /// Arms the injector for a single fault: only the `n`-th following write or flush
    /// (0 = the very next one) fails; the ones before and after it pass through.
    pub fn fail_once_after(&self, n: u64) {
        self.arm(n, true);
    }

    /// Makes every read fail while `on`, whether or not writes are armed to fail.
    pub fn fail_reads(&self, on: bool) {
        self.fail_reads.store(on, Ordering::SeqCst);
    }

    /// Stops failing anything: writes, flushes and reads pass through again.
    pub fn disarm(&self) {
        self.fail_from.store(DISARMED, Ordering::SeqCst);
        self.once.store(false, Ordering::SeqCst);
        self.fail_reads.store(false, Ordering::SeqCst);
    }

    /// How many writes and flushes have been attempted, failed ones included.
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::SeqCst)
    }

    /// How many operations (reads included) have been failed on purpose.
    pub fn injected_faults(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// The wrapped device, e.g. to inspect what reached it.
    pub fn inner(&self) -> &Arc<dyn Storage> {
        &self.inner
    }

    fn arm(&self, n: u64, once: bool) {
        // Disarm first so no operation sees the new target with the old mode.
        self.fail_from.store(DISARMED, Ordering::SeqCst);
        self.once.store(once, Ordering::SeqCst);
        let target = self
            .ops
            .load(Ordering::SeqCst)
            .saturating_add(n)
            .min(DISARMED - 1);
        self.fail_from.store(target, Ordering::SeqCst);
    }

    /// Numbers one write or flush and fails it if the injector is armed for it.
    fn check_op(&self, what: &str) -> io::Result<()> {
        let op = self.ops.fetch_add(1, Ordering::SeqCst);
        let from = self.fail_from.load(Ordering::SeqCst);
        let fails = if self.once.load(Ordering::SeqCst) {
            op == from
        } else {
            op >= from
        };
        if fails {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::other(format!(
                "injected fault: {what} (operation {op}, armed to fail from operation {from})"
            )));
        }
        Ok(())
    }
}

impl Storage for FaultInjector {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.fail_reads.load(Ordering::SeqCst) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::other(format!(
                "injected fault: read of {} bytes at offset {offset}",
                buf.len()
            )));
        }
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.check_op(&format!("write of {} bytes at offset {offset}", buf.len()))?;
        self.inner.write_at(offset, buf)
    }
    fn flush(&self) -> io::Result<()> {
        self.check_op("flush")?;
        self.inner.flush()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CrashRecorder, MemStorage};
    use super::*;

    const DEVICE: u64 = 64 * 1024;

    fn injector() -> (Arc<MemStorage>, FaultInjector) {
        let mem = Arc::new(MemStorage::new(DEVICE));
        let inner: Arc<dyn Storage> = mem.clone();
        (mem, FaultInjector::new(inner))
    }

    #[test]
    fn fault_injector_passes_everything_through_while_disarmed() {
        let (mem, dev) = injector();
        assert!(dev.write_at(10, &[1, 2, 3]).is_ok());
        assert!(dev.flush().is_ok());
        let mut buf = [0; 3];
        assert!(dev.read_at(10, &mut buf).is_ok());
        assert_eq!(buf, [1, 2, 3]);
        assert_eq!(mem.to_bytes()[10..13], [1, 2, 3]);
        assert_eq!(dev.len().ok(), Some(DEVICE));
        assert_eq!(dev.injected_faults(), 0);
    }

    #[test]
    fn fault_injector_fails_from_the_nth_write_on() {
        let (mem, dev) = injector();
        assert!(dev.write_at(0, &[1]).is_ok());
        dev.fail_after(2);
        assert!(dev.write_at(1, &[1]).is_ok());
        assert!(dev.write_at(2, &[1]).is_ok());
        for i in 3..8 {
            let err = dev.write_at(i, &[1]).err();
            assert!(err.is_some_and(|e| e.to_string().contains("injected fault")));
        }
        assert_eq!(mem.to_bytes()[..8], [1, 1, 1, 0, 0, 0, 0, 0]);
        assert_eq!(dev.injected_faults(), 5);
    }

    #[test]
    fn fail_after_zero_fails_the_very_next_operation() {
        let (mem, dev) = injector();
        dev.fail_after(0);
        assert!(dev.write_at(0, &[9]).is_err());
        assert_eq!(mem.to_bytes()[0], 0);
    }

    #[test]
    fn flushes_count_as_operations_and_fail_too() {
        let (_, dev) = injector();
        dev.fail_after(1);
        assert!(dev.flush().is_ok());
        assert!(dev.flush().is_err());
        assert!(dev.write_at(0, &[1]).is_err());
        assert_eq!(dev.ops(), 3);
    }

    #[test]
    fn failed_writes_never_reach_the_inner_device() {
        let recorder = Arc::new(CrashRecorder::new(vec![0; DEVICE as usize]));
        let inner: Arc<dyn Storage> = recorder.clone();
        let dev = FaultInjector::new(inner);
        assert!(dev.write_at(0, &[1]).is_ok());
        assert!(dev.flush().is_ok());
        dev.fail_after(0);
        assert!(dev.write_at(1, &[1]).is_err());
        assert!(dev.flush().is_err());
        assert_eq!(recorder.write_count(), 1);
        assert_eq!(recorder.flush_count(), 1);
    }

    #[test]
    fn fail_once_after_fails_only_that_operation() {
        let (mem, dev) = injector();
        dev.fail_once_after(1);
        assert!(dev.write_at(0, &[1]).is_ok());
        assert!(dev.write_at(1, &[1]).is_err());
        assert!(dev.write_at(2, &[1]).is_ok());
        assert!(dev.flush().is_ok());
        assert_eq!(mem.to_bytes()[..3], [1, 0, 1]);
        assert_eq!(dev.injected_faults(), 1);
    }

    #[test]
    fn fail_reads_makes_reads_fail() {
        let (_, dev) = injector();
        let mut buf = [0; 4];
        dev.fail_reads(true);
        assert!(dev.read_at(0, &mut buf).is_err());
        assert!(dev.write_at(0, &[1]).is_ok());
        dev.fail_reads(false);
        assert!(dev.read_at(0, &mut buf).is_ok());
        assert_eq!(buf, [1, 0, 0, 0]);
    }

    #[test]
    fn disarm_stops_failing() {
        let (_, dev) = injector();
        dev.fail_after(0);
        dev.fail_reads(true);
        assert!(dev.write_at(0, &[1]).is_err());
        dev.disarm();
        assert!(dev.write_at(0, &[1]).is_ok());
        assert!(dev.flush().is_ok());
        assert!(dev.read_at(0, &mut [0; 1]).is_ok());
    }

    #[test]
    fn ops_counts_attempts_including_failed_ones() {
        let (_, dev) = injector();
        let mut buf = [0; 1];
        assert!(dev.read_at(0, &mut buf).is_ok());
        assert!(dev.write_at(0, &[1]).is_ok());
        dev.fail_after(0);
        assert!(dev.write_at(0, &[1]).is_err());
        assert!(dev.flush().is_err());
        assert_eq!(dev.ops(), 3);
    }

    #[test]
    fn arming_counts_from_the_moment_it_is_armed() {
        let (_, dev) = injector();
        for _ in 0..10 {
            assert!(dev.flush().is_ok());
        }
        dev.fail_after(1);
        assert!(dev.flush().is_ok());
        assert!(dev.flush().is_err());
    }
}
