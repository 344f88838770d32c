//! redb as a [`Subject`]: one `u64 → &[u8]` table in a database file.

use crate::workloads::{SALT_LOAD, SALT_MODIFY, Subject, VALUE_LEN, Workload, value};
use anyhow::{Context, Result, ensure};
use redb::{Database, Durability, ReadableDatabase, TableDefinition, WriteTransaction};
use std::path::Path;

/// The version of redb measured; keep in sync with `Cargo.toml`, which pins it.
pub const REDB_VERSION: &str = "4.6.0";

/// redb's cache size: its default (1 GiB), set explicitly so the report can state it.
pub const REDB_CACHE_BYTES: usize = 1 << 30;

const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("bench");

/// A database on a fresh file, with redb's default configuration. Every write
/// transaction commits with [`Durability::Immediate`] (fsync before `commit` returns).
#[derive(Debug)]
pub struct RedbDb {
    db: Database,
}

impl RedbDb {
    /// Creates the database at `path`, which must not exist.
    pub fn create(path: &Path) -> Result<Self> {
        ensure!(!path.exists(), "{} already exists", path.display());
        let db = Database::builder()
            .set_cache_size(REDB_CACHE_BYTES)
            .create(path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { db })
    }

    fn write_txn(&self) -> Result<WriteTransaction> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        Ok(txn)
    }

    fn insert_all(&self, keys: &[u64], salt: u64) -> Result<()> {
        let txn = self.write_txn()?;
        {
            let mut table = txn.open_table(TABLE)?;
            for &k in keys {
                table.insert(k, value(k, salt).as_slice())?;
            }
        }
        Ok(txn.commit()?)
    }

    fn scan(&self, start: u64, limit: usize) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TABLE)?;
        let mut count = 0;
        for item in table.range(start..)?.take(limit) {
            let (_, v) = item?;
            ensure!(
                v.value().len() == VALUE_LEN,
                "redb: value of {} bytes",
                v.value().len()
            );
            count += 1;
        }
        Ok(count)
    }
}

impl Subject for RedbDb {
    fn bulk_insert(&mut self, w: &Workload) -> Result<()> {
        self.insert_all(&w.load, SALT_LOAD)
    }

    fn point_lookups(&mut self, w: &Workload) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TABLE)?;
        let mut bytes = 0;
        for &k in &w.lookups {
            if let Some(v) = table.get(k)? {
                bytes += v.value().len() as u64;
            }
        }
        Ok(bytes)
    }

    fn full_scan(&mut self) -> Result<u64> {
        self.scan(0, usize::MAX)
    }

    fn short_scans(&mut self, w: &Workload) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TABLE)?;
        let mut count = 0;
        for &start in &w.scan_starts {
            for item in table.range(start..)?.take(w.sizes.short_scan_len) {
                let (_, v) = item?;
                ensure!(v.value().len() == VALUE_LEN, "redb: bad value length");
                count += 1;
            }
        }
        Ok(count)
    }

    fn small_commits(&mut self, batches: &[Vec<u64>]) -> Result<()> {
        for batch in batches {
            self.insert_all(batch, SALT_LOAD)?;
        }
        Ok(())
    }

    fn snapshot_then_modify(&mut self, w: &Workload) -> Result<()> {
        let txn = self.write_txn()?;
        // Must come before any table is opened in this transaction.
        txn.persistent_savepoint()?;
        {
            let mut table = txn.open_table(TABLE)?;
            for &k in &w.modifications {
                table.insert(k, value(k, SALT_MODIFY).as_slice())?;
            }
        }
        Ok(txn.commit()?)
    }

    fn used_bytes(&mut self) -> Result<u64> {
        let txn = self.db.begin_write()?;
        let stats = txn.stats()?;
        let bytes = stats.allocated_pages() * stats.page_size() as u64;
        txn.abort()?;
        Ok(bytes)
    }
}
