//! What the daemon saw, logged at unmount: requests, worker threads that served them,
//! the largest read and write. Tests read it to see the kernel's side of the
//! negotiation (threads, 1 MiB requests) actually happen.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    threads: AtomicU64,
    max_write: AtomicU64,
    max_read: AtomicU64,
    by_kind: Mutex<BTreeMap<&'static str, u64>>,
}

impl Stats {
    /// Counts one request of a kind, and the calling thread the first time it serves
    /// one.
    pub fn request(&self, kind: &'static str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.by_kind.lock() {
            *m.entry(kind).or_insert(0) += 1;
        }
        if !COUNTED.with(|c| c.replace(true)) {
            self.threads.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn write(&self, len: usize) {
        self.request("write");
        self.max_write.fetch_max(len as u64, Ordering::Relaxed);
    }

    pub fn read(&self, len: usize) {
        self.request("read");
        self.max_read.fetch_max(len as u64, Ordering::Relaxed);
    }

    pub fn summary(&self) -> String {
        let kinds = self
            .by_kind
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        format!(
            "served {} requests on {} threads ({kinds}); largest write {} bytes, largest read {} bytes",
            self.requests.load(Ordering::Relaxed),
            self.threads.load(Ordering::Relaxed),
            self.max_write.load(Ordering::Relaxed),
            self.max_read.load(Ordering::Relaxed),
        )
    }
}
