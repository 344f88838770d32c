//! arbor's storage engine.
//!
//! Layers, lowest first; none knows the ones above it:
//! - [`storage`]: the byte-device trait and its backends (image file or block device,
//!   memory, a crash recorder, a fault injector);
//! - [`format`]: the on-disk format, defined once (see `docs/format.md`);
//! - the copy-on-write B+tree (`tree/`), with btrfs-style keys, child generations in
//!   every pointer, and Rodeh's lazy reference counts so that trees can share nodes;
//! - the allocator, derived from the extent tree, and transactions ([`Engine`]);
//! - the offline checker ([`check()`]).
//!
//! ```
//! use arbor_engine::{Engine, Config, MkfsOptions, Key, storage::MemStorage};
//! use std::sync::Arc;
//! let dev = Arc::new(MemStorage::new(8 << 20));
//! let mut e = Engine::create(dev.clone(), &MkfsOptions::default(), Config::default())?;
//! e.create_tree(5)?;
//! e.insert(5, Key::new(1, 1, 0), b"hello")?;
//! e.clone_tree(5, 6)?;
//! e.commit()?;
//! assert!(arbor_engine::check(&*dev).is_clean());
//! # Ok::<(), arbor_engine::Error>(())
//! ```

mod accounting;
mod alloc;
mod cache;
mod check;
mod commit;
mod data;
mod diff;
mod drop;
mod engine;
mod error;
pub mod format;
mod loader;
mod nodes;
mod open;
mod space;
pub mod storage;
mod tree;
mod usage;

pub use check::{CheckReport, check, check_with};
pub use commit::{CommitWritten, PreparedCommit};
pub use diff::{Change, DiffStats};
pub use engine::{Config, DataRefs, Engine, MkfsOptions, SpaceInfo};
pub use error::{Error, Result};
pub use format::Key;
pub use loader::{NodeLoader, NodeMiss, without_node_io};
pub use open::read_superblock;
pub use tree::Range;
pub use usage::Usage;
