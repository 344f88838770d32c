//! arbor's engine as a [`Subject`]: one user tree in an image file.

use crate::workloads::{SALT_LOAD, SALT_MODIFY, Subject, VALUE_LEN, Workload, value};
use anyhow::{Context, Result, ensure};
use arbor_engine::format::objectid::FIRST_USER_TREE;
use arbor_engine::storage::FileStorage;
use arbor_engine::{Config, Engine, Key, MkfsOptions};
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;

/// The tree the data is loaded into.
const DATA_TREE: u64 = FIRST_USER_TREE;
/// The clone that the snapshot workload modifies.
const CLONE_TREE: u64 = FIRST_USER_TREE + 1;

/// The key under which arbor stores the benchmark's key `k`.
fn key(k: u64) -> Key {
    Key::new(k, 1, 0)
}

/// An engine on a fresh, sparse image file, made with the given node size
/// and the default configuration.
#[derive(Debug)]
pub struct ArborDb {
    engine: Engine,
    /// Commits made by the last bulk insert, the forced ones included.
    bulk_commits: u64,
}

impl ArborDb {
    /// Creates a sparse image of `image_bytes` at `path` (which must not exist) and
    /// formats it.
    pub fn create(path: &Path, image_bytes: u64, nodesize: u32) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.set_len(image_bytes)
            .with_context(|| format!("sizing {}", path.display()))?;
        let storage = FileStorage::from_file(file)?;
        let mut engine = Engine::create(
            Arc::new(storage),
            &MkfsOptions {
                nodesize: Some(nodesize),
                ..MkfsOptions::default()
            },
            Config::default(),
        )
        .context("formatting the arbor image")?;
        engine.create_tree(DATA_TREE)?;
        engine.commit()?;
        Ok(Self {
            engine,
            bulk_commits: 0,
        })
    }

    fn scan(&self, start: Key, limit: usize) -> Result<u64> {
        let mut count = 0;
        for item in self.engine.range(DATA_TREE, start..)?.take(limit) {
            let (_, v) = item?;
            ensure!(v.len() == VALUE_LEN, "arbor: value of {} bytes", v.len());
            count += 1;
        }
        Ok(count)
    }
}

impl Subject for ArborDb {
    fn bulk_insert(&mut self, w: &Workload) -> Result<()> {
        let before = self.engine.committed_generation();
        for &k in &w.load {
            self.engine
                .insert(DATA_TREE, key(k), &value(k, SALT_LOAD))?;
        }
        self.engine.commit()?;
        self.bulk_commits = self.engine.committed_generation() - before;
        Ok(())
    }

    fn point_lookups(&mut self, w: &Workload) -> Result<u64> {
        let mut bytes = 0;
        for &k in &w.lookups {
            if let Some(v) = self.engine.get(DATA_TREE, key(k))? {
                bytes += v.len() as u64;
            }
        }
        Ok(bytes)
    }

    fn full_scan(&mut self) -> Result<u64> {
        self.scan(Key::MIN, usize::MAX)
    }

    fn short_scans(&mut self, w: &Workload) -> Result<u64> {
        let mut count = 0;
        for &start in &w.scan_starts {
            count += self.scan(key(start), w.sizes.short_scan_len)?;
        }
        Ok(count)
    }

    fn small_commits(&mut self, batches: &[Vec<u64>]) -> Result<()> {
        for batch in batches {
            for &k in batch {
                self.engine
                    .insert(DATA_TREE, key(k), &value(k, SALT_LOAD))?;
            }
            self.engine.commit()?;
        }
        Ok(())
    }

    fn snapshot_then_modify(&mut self, w: &Workload) -> Result<()> {
        self.engine.clone_tree(DATA_TREE, CLONE_TREE)?;
        for &k in &w.modifications {
            self.engine
                .insert(CLONE_TREE, key(k), &value(k, SALT_MODIFY))?;
        }
        Ok(self.engine.commit()?)
    }

    fn used_bytes(&mut self) -> Result<u64> {
        Ok(self.engine.space().used_bytes)
    }

    fn notes(&self) -> Vec<String> {
        let max_dirty = Config::default().max_dirty_bytes >> 20;
        let forced = self.bulk_commits.saturating_sub(1);
        let nodesize = self.engine.nodesize() / 1024;
        vec![
            format!("arbor's node size: {nodesize} KiB (`--nodesize`; mkfs's default is 16 KiB)"),
            format!(
                "arbor's bulk insert committed {} time{}: {forced} forced by `max_dirty_bytes` \
             ({max_dirty} MiB of dirty nodes), then the final one",
                self.bulk_commits,
                if self.bulk_commits == 1 { "" } else { "s" },
            ),
        ]
    }
}
