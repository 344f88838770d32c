//! Subvolumes and snapshots against a model: random file and directory operations on
//! several subvolumes, interleaved with subvolume creation, snapshots (read-only or
//! writable, of the top level too), deletions, read-only toggles, commits and
//! reopens. Every live subvolume is walked through the API and compared with an
//! in-memory copy of what it should hold; the subvolume list with the model's ids,
//! flags and UUIDs; and the checkers run at the end. A second test deletes everything
//! and wants every block back.

use arbor_engine::MkfsOptions;
use arbor_engine::storage::MemStorage;
use arbor_fs::ino::{Loc, TOP_SUBVOL};
use arbor_fs::{Caller, Fs, FsError, FsOptions, ROOT_INO, RenameFlags, SetAttr};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::BTreeMap;
use std::sync::Arc;

const REG: u32 = 0o100644;
const DIR: u32 = 0o040755;
/// Names per directory: few, so that operations collide.
const NAMES: u8 = 6;
/// Directories that can hold names besides a root: `n0` and `n1`.
const DIRS: u8 = 2;
const DEV_SIZE: u64 = 128 << 20;

type TestResult<T = ()> = Result<T, TestCaseError>;

// ---- operations --------------------------------------------------------------------

/// A path of the small namespace: `n<name>` in the root, or `n<dir>/n<name>`.
#[derive(Clone, Copy)]
struct P {
    dir: Option<u8>,
    name: u8,
}

impl P {
    fn parent(self) -> String {
        self.dir.map_or_else(String::new, |d| format!("n{d}"))
    }

    fn name(self) -> String {
        format!("n{}", self.name)
    }

    fn path(self) -> String {
        join(&self.parent(), &self.name())
    }

    /// The inverse of [`P::path`].
    fn parse(path: &str) -> Option<P> {
        let num = |n: &str| n.strip_prefix('n')?.parse::<u8>().ok();
        match path.split_once('/') {
            None => Some(P {
                dir: None,
                name: num(path)?,
            }),
            Some((d, n)) => Some(P {
                dir: Some(num(d)?),
                name: num(n)?,
            }),
        }
    }
}

impl std::fmt::Debug for P {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.path())
    }
}

/// A path for an operation: usually one that exists in the subvolume (of the kind the
/// operation wants), sometimes any path of the namespace.
#[derive(Clone, Copy, Debug)]
enum Pick {
    Existing(u8),
    Any(P),
}

/// What kind of existing path a [`Pick::Existing`] wants.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    File,
    Dir,
    Any,
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// `sv` picks a live subvolume when the operation runs (see [`World::pick`]).
#[derive(Clone, Debug)]
enum Op {
    Create {
        sv: u8,
        at: P,
    },
    Write {
        sv: u8,
        at: Pick,
        off: u64,
        len: usize,
        seed: u8,
    },
    Truncate {
        sv: u8,
        at: Pick,
        size: u64,
    },
    Unlink {
        sv: u8,
        at: Pick,
    },
    Mkdir {
        sv: u8,
        at: P,
    },
    Rmdir {
        sv: u8,
        at: Pick,
    },
    Rename {
        sv: u8,
        from: Pick,
        to: Pick,
    },
    Link {
        sv: u8,
        from: Pick,
        to: Pick,
    },
    /// copy_range (copy_file_range, reflinks) between files of any two subvolumes.
    Copy {
        from_sv: u8,
        from: Pick,
        src_off: u64,
        to_sv: u8,
        to: Pick,
        dst_off: u64,
        len: u64,
    },
    SubvolCreate,
    Snapshot {
        src: u8,
        read_only: bool,
    },
    Delete {
        sv: u8,
    },
    ToggleReadOnly {
        sv: u8,
    },
    Sync,
    Reopen,
    Check,
}

fn path() -> impl Strategy<Value = P> {
    (prop::option::weighted(0.6, 0..DIRS), 0..NAMES).prop_map(|(dir, name)| P { dir, name })
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![3 => any::<u8>().prop_map(Pick::Existing), 1 => path().prop_map(Pick::Any)]
}

/// A new name for rename and link: usually any path, sometimes an existing one.
fn target() -> impl Strategy<Value = Pick> {
    prop_oneof![1 => any::<u8>().prop_map(Pick::Existing), 2 => path().prop_map(Pick::Any)]
}

/// Offsets and sizes up to ~400 KiB, often small (inline data) or block-aligned.
fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..3000,
        (0u64..100).prop_map(|b| b * 4096),
        0u64..400_000,
    ]
}

fn length() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 1usize..3000, 2 => 1usize..20_000, 1 => 1usize..300_000]
}

fn op() -> impl Strategy<Value = Op> {
    let sv = any::<u8>;
    prop_oneof![
        10 => (sv(), path()).prop_map(|(sv, at)| Op::Create { sv, at }),
        8 => (sv(), pick(), offset(), length(), any::<u8>())
            .prop_map(|(sv, at, off, len, seed)| Op::Write { sv, at, off, len, seed }),
        2 => (sv(), pick(), offset()).prop_map(|(sv, at, size)| Op::Truncate { sv, at, size }),
        2 => (sv(), pick()).prop_map(|(sv, at)| Op::Unlink { sv, at }),
        2 => (sv(), 0..DIRS).prop_map(|(sv, d)| Op::Mkdir { sv, at: P { dir: None, name: d } }),
        1 => (sv(), path()).prop_map(|(sv, at)| Op::Mkdir { sv, at }),
        1 => (sv(), pick()).prop_map(|(sv, at)| Op::Rmdir { sv, at }),
        2 => (sv(), pick(), target()).prop_map(|(sv, from, to)| Op::Rename { sv, from, to }),
        2 => (sv(), pick(), target()).prop_map(|(sv, from, to)| Op::Link { sv, from, to }),
        3 => (sv(), pick(), offset(), sv(), pick(), offset(), offset())
            .prop_map(|(from_sv, from, src_off, to_sv, to, dst_off, len)| Op::Copy {
                from_sv, from, src_off, to_sv, to, dst_off, len,
            }),
        1 => Just(Op::SubvolCreate),
        3 => (any::<u8>(), any::<bool>()).prop_map(|(src, read_only)| Op::Snapshot { src, read_only }),
        1 => sv().prop_map(|sv| Op::Delete { sv }),
        1 => sv().prop_map(|sv| Op::ToggleReadOnly { sv }),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
        1 => Just(Op::Check),
    ]
}

/// Data that differs from block to block and write to write, never zero (so that a
/// hole read in its place shows).
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len as u32)
        .map(|i| {
            let h = i
                .wrapping_add(u32::from(seed) << 24)
                .wrapping_mul(2_654_435_761);
            ((h >> 13) as u8) | 1
        })
        .collect()
}

// ---- the model ---------------------------------------------------------------------

/// What a name stands for. Files are named by their local inode number, which a
/// snapshot keeps; hard links are entries with the same number.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    File(u64),
    Dir,
    /// The root of another subvolume (only in the top level's root).
    Subvol(u64),
}

/// One subvolume's content: entries by path, file data by local inode number.
#[derive(Clone, Debug, Default)]
struct Tree {
    entries: BTreeMap<String, Entry>,
    files: BTreeMap<u64, Vec<u8>>,
}

impl Tree {
    fn links(&self, ino: u64) -> u32 {
        self.entries
            .values()
            .filter(|e| **e == Entry::File(ino))
            .count() as u32
    }

    fn has_children(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.entries.keys().any(|k| k.starts_with(&prefix))
    }

    /// Directories and subvolumes directly in `dir`.
    fn subdirs(&self, dir: &str) -> u32 {
        self.entries
            .iter()
            .filter(|(k, e)| parent_of(k) == dir && !matches!(e, Entry::File(_)))
            .count() as u32
    }

    fn remove(&mut self, path: &str) {
        if let Some(Entry::File(ino)) = self.entries.remove(path)
            && self.links(ino) == 0
        {
            self.files.remove(&ino);
        }
    }

    /// What a snapshot of this tree holds: nested subvolumes become empty directories.
    fn snapshot(&self) -> Tree {
        let mut t = self.clone();
        for e in t.entries.values_mut() {
            if matches!(e, Entry::Subvol(_)) {
                *e = Entry::Dir;
            }
        }
        t
    }
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

#[derive(Clone, Debug)]
struct Subvol {
    tree: Tree,
    read_only: bool,
    /// Its name in the top level's root (empty for the top level).
    name: String,
    uuid: [u8; 16],
    parent_uuid: [u8; 16],
}

/// How an operation failed, for comparing with what the model expects.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Failure {
    Exists,
    NotFound,
    NotDir,
    IsDir,
    NotEmpty,
    NotPermitted,
    ReadOnly(u64),
    Other(String),
}

fn failure(e: &FsError) -> Failure {
    match e {
        FsError::Exists => Failure::Exists,
        FsError::NotFound => Failure::NotFound,
        FsError::NotDir => Failure::NotDir,
        FsError::IsDir => Failure::IsDir,
        FsError::NotEmpty => Failure::NotEmpty,
        FsError::NotPermitted(_) => Failure::NotPermitted,
        FsError::ReadOnly(id) => Failure::ReadOnly(*id),
        other => Failure::Other(other.to_string()),
    }
}

/// What a path names, per the model, with the global inode number the Fs gave for it.
enum Found {
    Dir(u64),
    File(u64),
    Missing,
}

fn who() -> Caller {
    Caller {
        uid: 1000,
        gid: 1000,
        umask: 0o022,
    }
}

fn mkfs(dev: &Arc<MemStorage>, nodesize: u32) -> Fs {
    let opts = MkfsOptions {
        nodesize: Some(nodesize),
        ..Default::default()
    };
    Fs::mkfs(dev.clone(), &opts).expect("mkfs");
    Fs::open(dev.clone(), &FsOptions::default()).expect("open")
}

/// The filesystem under test and the model of every live subvolume.
struct World {
    dev: Arc<MemStorage>,
    fs: Option<Fs>,
    live: BTreeMap<u64, Subvol>,
    deleted: Vec<u64>,
    /// For fresh subvolume names.
    names: u32,
}

impl World {
    fn new(nodesize: u32) -> Self {
        let dev = Arc::new(MemStorage::new(DEV_SIZE));
        let fs = mkfs(&dev, nodesize);
        let top = fs.subvol_info(TOP_SUBVOL).expect("top level");
        let mut live = BTreeMap::new();
        live.insert(
            TOP_SUBVOL,
            Subvol {
                tree: Tree::default(),
                read_only: false,
                name: String::new(),
                uuid: top.item.uuid,
                parent_uuid: [0; 16],
            },
        );
        World {
            dev,
            fs: Some(fs),
            live,
            deleted: Vec::new(),
            names: 0,
        }
    }

    fn fs(&self) -> &Fs {
        self.fs.as_ref().expect("an open filesystem")
    }

    /// A live subvolume for a file operation: usually a writable one, one time in
    /// eight any (so that read-only ones are tried too).
    fn pick(&self, n: u8) -> u64 {
        let all: Vec<u64> = self.live.keys().copied().collect();
        let writable: Vec<u64> = self
            .live
            .iter()
            .filter(|(_, s)| !s.read_only)
            .map(|(&id, _)| id)
            .collect();
        let from = if n.is_multiple_of(8) || writable.is_empty() {
            &all
        } else {
            &writable
        };
        from[usize::from(n / 8) % from.len()]
    }

    /// The path `pick` stands for in subvolume `id`; `None` if it wants an existing
    /// path and there is none of that kind.
    fn choose(&self, id: u64, pick: Pick, want: Want) -> Option<P> {
        match pick {
            Pick::Any(p) => Some(p),
            Pick::Existing(n) => {
                let paths: Vec<P> = self
                    .tree(id)
                    .entries
                    .iter()
                    .filter(|(_, e)| match want {
                        Want::File => matches!(e, Entry::File(_)),
                        Want::Dir => matches!(e, Entry::Dir),
                        Want::Any => !matches!(e, Entry::Subvol(_)),
                    })
                    .filter_map(|(k, _)| P::parse(k))
                    .collect();
                (!paths.is_empty()).then(|| paths[usize::from(n) % paths.len()])
            }
        }
    }

    fn tree(&self, id: u64) -> &Tree {
        &self.live[&id].tree
    }

    fn tree_mut(&mut self, id: u64) -> &mut Tree {
        &mut self.live.get_mut(&id).expect("live subvolume").tree
    }

    /// Looks `path` up through the Fs and checks it against the model.
    fn resolve(&self, id: u64, path: &str) -> TestResult<Found> {
        let root = Loc::root_of(id).global();
        if path.is_empty() {
            return Ok(Found::Dir(root));
        }
        let dir = match self.resolve(id, parent_of(path))? {
            Found::Dir(d) => d,
            Found::File(_) | Found::Missing => return Ok(Found::Missing),
        };
        let name = path.rsplit('/').next().unwrap_or(path);
        let got = self.fs().lookup(dir, name.as_bytes());
        match self.tree(id).entries.get(path) {
            None => {
                let err = got.map(|i| i.ino).map_err(|e| failure(&e));
                prop_assert_eq!(err, Err(Failure::NotFound), "lookup {}:{}", id, path);
                Ok(Found::Missing)
            }
            Some(Entry::File(ino)) => {
                let inode = got.map_err(|e| fail(format!("lookup {id}:{path}: {e}")))?;
                prop_assert_eq!(inode.ino, Loc::new(id, *ino).global(), "{}:{}", id, path);
                prop_assert!(inode.is_reg());
                Ok(Found::File(inode.ino))
            }
            Some(Entry::Dir) => {
                let inode = got.map_err(|e| fail(format!("lookup {id}:{path}: {e}")))?;
                prop_assert!(inode.is_dir(), "{}:{} is a directory", id, path);
                prop_assert_eq!(Loc::of(inode.ino).map(|l| l.subvol).ok(), Some(id));
                Ok(Found::Dir(inode.ino))
            }
            Some(Entry::Subvol(sv)) => {
                let inode = got.map_err(|e| fail(format!("lookup {id}:{path}: {e}")))?;
                prop_assert_eq!(inode.ino, Loc::root_of(*sv).global());
                Ok(Found::Dir(inode.ino))
            }
        }
    }

    /// The directory that holds `at`: its inode number, and whether it is one (a
    /// file's number when the model has a file there); `None` if the path is missing.
    fn parent(&self, id: u64, at: P) -> TestResult<Option<(u64, bool)>> {
        Ok(match self.resolve(id, &at.parent())? {
            Found::Dir(d) => Some((d, true)),
            Found::File(f) => Some((f, false)),
            Found::Missing => None,
        })
    }

    /// Compares the result of an operation with what the model expects (a read-only
    /// subvolume refuses every change); returns the value when it succeeded.
    fn settle<T>(
        &self,
        what: &str,
        id: u64,
        r: arbor_fs::Result<T>,
        expected: Result<(), Failure>,
    ) -> TestResult<Option<T>> {
        let expected = if self.live[&id].read_only {
            Err(Failure::ReadOnly(id))
        } else {
            expected
        };
        match r {
            Ok(v) => {
                prop_assert_eq!(Ok(()), expected, "{} in subvolume {} succeeded", what, id);
                Ok(Some(v))
            }
            Err(e) => {
                prop_assert_eq!(Err(failure(&e)), expected, "{} in subvolume {}", what, id);
                Ok(None)
            }
        }
    }

    fn apply(&mut self, op: &Op) -> TestResult {
        match *op {
            Op::Create { sv, at } | Op::Mkdir { sv, at } => {
                let dir = matches!(op, Op::Mkdir { .. });
                let id = self.pick(sv);
                let Some((parent, is_dir)) = self.parent(id, at)? else {
                    return Ok(());
                };
                let expected = if !is_dir {
                    Err(Failure::NotDir)
                } else if self.tree(id).entries.contains_key(&at.path()) {
                    Err(Failure::Exists)
                } else {
                    Ok(())
                };
                let mode = if dir { DIR } else { REG };
                let r = self
                    .fs()
                    .create(parent, at.name().as_bytes(), mode, 0, who(), None);
                if let Some(inode) =
                    self.settle(&format!("create {}", at.path()), id, r, expected)?
                {
                    let loc = Loc::of(inode.ino).map_err(|e| fail(e.to_string()))?;
                    prop_assert_eq!(loc.subvol, id, "new inode's subvolume");
                    let tree = self.tree_mut(id);
                    if dir {
                        tree.entries.insert(at.path(), Entry::Dir);
                    } else {
                        prop_assert!(!tree.files.contains_key(&loc.ino), "inode reused");
                        tree.files.insert(loc.ino, Vec::new());
                        tree.entries.insert(at.path(), Entry::File(loc.ino));
                    }
                }
            }
            Op::Write {
                sv,
                at,
                off,
                len,
                seed,
            } => {
                let id = self.pick(sv);
                let Some(at) = self.choose(id, at, Want::File) else {
                    return Ok(());
                };
                let (ino, expected) = match self.resolve(id, &at.path())? {
                    Found::Missing => return Ok(()),
                    Found::Dir(d) => (d, Err(Failure::IsDir)),
                    Found::File(f) => (f, Ok(())),
                };
                let data = pattern(len, seed);
                let r = self.fs().write_file(ino, off, &data, false);
                if let Some(inode) =
                    self.settle(&format!("write {}", at.path()), id, r, expected)?
                {
                    let local = Loc::of(ino).map_err(|e| fail(e.to_string()))?.ino;
                    let file = self.tree_mut(id).files.get_mut(&local).expect("model file");
                    let end = off as usize + len;
                    if file.len() < end {
                        file.resize(end, 0);
                    }
                    file[off as usize..end].copy_from_slice(&data);
                    prop_assert_eq!(inode.size, file.len() as u64, "size after the write");
                }
            }
            Op::Truncate { sv, at, size } => {
                let id = self.pick(sv);
                let Some(at) = self.choose(id, at, Want::File) else {
                    return Ok(());
                };
                let (ino, expected) = match self.resolve(id, &at.path())? {
                    Found::Missing => return Ok(()),
                    Found::Dir(d) => (d, Err(Failure::IsDir)),
                    Found::File(f) => (f, Ok(())),
                };
                let set = SetAttr {
                    size: Some(size),
                    ..Default::default()
                };
                let r = self.fs().setattr(ino, &set);
                if let Some(inode) =
                    self.settle(&format!("truncate {}", at.path()), id, r, expected)?
                {
                    prop_assert_eq!(inode.size, size);
                    let local = Loc::of(ino).map_err(|e| fail(e.to_string()))?.ino;
                    let file = self.tree_mut(id).files.get_mut(&local).expect("model file");
                    file.resize(size as usize, 0);
                }
            }
            Op::Unlink { sv, at } | Op::Rmdir { sv, at } => {
                let rmdir = matches!(op, Op::Rmdir { .. });
                let id = self.pick(sv);
                let want = if rmdir { Want::Dir } else { Want::Any };
                let Some(at) = self.choose(id, at, want) else {
                    return Ok(());
                };
                let Some((parent, is_dir)) = self.parent(id, at)? else {
                    return Ok(());
                };
                let tree = self.tree(id);
                let path = at.path();
                let expected = match (is_dir, tree.entries.get(&path), rmdir) {
                    (false, _, _) => Err(Failure::NotDir),
                    (true, None, _) => Err(Failure::NotFound),
                    (true, Some(Entry::Subvol(_)), _) => return Ok(()),
                    (true, Some(Entry::Dir), false) => Err(Failure::IsDir),
                    (true, Some(Entry::File(_)), true) => Err(Failure::NotDir),
                    (true, Some(Entry::Dir), true) if tree.has_children(&path) => {
                        Err(Failure::NotEmpty)
                    }
                    _ => Ok(()),
                };
                let name = at.name();
                let r = if rmdir {
                    self.fs().rmdir(parent, name.as_bytes())
                } else {
                    self.fs().unlink(parent, name.as_bytes())
                };
                let what = format!("{} {path}", if rmdir { "rmdir" } else { "unlink" });
                if self.settle(&what, id, r, expected)?.is_some() {
                    self.tree_mut(id).remove(&path);
                }
            }
            Op::Rename { sv, from, to } => {
                let id = self.pick(sv);
                let (Some(from), Some(to)) = (
                    self.choose(id, from, Want::File),
                    self.choose(id, to, Want::Any),
                ) else {
                    return Ok(());
                };
                let (Some((src_dir, src_ok)), Some((dst_dir, dst_ok))) =
                    (self.parent(id, from)?, self.parent(id, to)?)
                else {
                    return Ok(());
                };
                let tree = self.tree(id);
                let (src, dst) = (tree.entries.get(&from.path()), tree.entries.get(&to.path()));
                // Files only: a directory moved into n0/n1 would leave the namespace.
                let expected = match (src_ok && dst_ok, src, dst) {
                    (false, _, _) => Err(Failure::NotDir),
                    (true, None, _) => Err(Failure::NotFound),
                    (true, Some(Entry::Dir | Entry::Subvol(_)), _) => return Ok(()),
                    (true, Some(Entry::File(_)), Some(Entry::Dir | Entry::Subvol(_))) => {
                        Err(Failure::IsDir)
                    }
                    _ => Ok(()),
                };
                let src = src.cloned();
                let same = src.is_some() && src.as_ref() == dst;
                let r = self.fs().rename(
                    src_dir,
                    from.name().as_bytes(),
                    dst_dir,
                    to.name().as_bytes(),
                    RenameFlags::default(),
                );
                let what = format!("rename {} {}", from.path(), to.path());
                if self.settle(&what, id, r, expected)?.is_some() && !same {
                    // Renaming one link of a file onto another of the same file does
                    // nothing (POSIX).
                    let tree = self.tree_mut(id);
                    tree.remove(&to.path());
                    let e = tree.entries.remove(&from.path()).expect("source");
                    tree.entries.insert(to.path(), e);
                }
            }
            Op::Link { sv, from, to } => {
                let id = self.pick(sv);
                let (Some(from), Some(to)) = (
                    self.choose(id, from, Want::File),
                    self.choose(id, to, Want::Any),
                ) else {
                    return Ok(());
                };
                let (ino, src_file) = match self.resolve(id, &from.path())? {
                    Found::Missing => return Ok(()),
                    Found::Dir(d) => (d, false),
                    Found::File(f) => (f, true),
                };
                let Some((dst_dir, dst_ok)) = self.parent(id, to)? else {
                    return Ok(());
                };
                let expected = if !src_file {
                    Err(Failure::NotPermitted)
                } else if !dst_ok {
                    Err(Failure::NotDir)
                } else if self.tree(id).entries.contains_key(&to.path()) {
                    Err(Failure::Exists)
                } else {
                    Ok(())
                };
                let r = self.fs().link(ino, dst_dir, to.name().as_bytes());
                let what = format!("link {} {}", from.path(), to.path());
                if let Some(inode) = self.settle(&what, id, r, expected)? {
                    let local = Loc::of(ino).map_err(|e| fail(e.to_string()))?.ino;
                    let tree = self.tree_mut(id);
                    tree.entries.insert(to.path(), Entry::File(local));
                    prop_assert_eq!(inode.nlink, tree.links(local), "nlink after link");
                }
            }
            Op::Copy {
                from_sv,
                from,
                src_off,
                to_sv,
                to,
                dst_off,
                len,
            } => {
                let (a, b) = (self.pick(from_sv), self.pick(to_sv));
                let (Some(from), Some(to)) = (
                    self.choose(a, from, Want::File),
                    self.choose(b, to, Want::File),
                ) else {
                    return Ok(());
                };
                let (Found::File(src), Found::File(dst)) =
                    (self.resolve(a, &from.path())?, self.resolve(b, &to.path())?)
                else {
                    return Ok(());
                };
                let (sl, dl) = (
                    Loc::of(src).map_err(|e| fail(e.to_string()))?.ino,
                    Loc::of(dst).map_err(|e| fail(e.to_string()))?.ino,
                );
                let src_data = self.tree(a).files.get(&sl).cloned().unwrap_or_default();
                let n = len.min((src_data.len() as u64).saturating_sub(src_off));
                let overlap = src == dst && n > 0 && src_off < dst_off + n && dst_off < src_off + n;
                let r = self.fs().copy_range(src, src_off, dst, dst_off, len);
                let what = format!("copy {a}:{} -> {b}:{}", from.path(), to.path());
                if overlap && !self.live[&b].read_only {
                    prop_assert!(matches!(r, Err(FsError::Invalid(_))), "{}: {:?}", what, r);
                    return Ok(());
                }
                if let Some(copied) = self.settle(&what, b, r, Ok(()))? {
                    prop_assert_eq!(copied, n, "{}: bytes copied", what);
                    let file = self.tree_mut(b).files.get_mut(&dl).expect("model file");
                    if n > 0 {
                        let (so, d, n) = (src_off as usize, dst_off as usize, n as usize);
                        if file.len() < d + n {
                            file.resize(d + n, 0);
                        }
                        file[d..d + n].copy_from_slice(&src_data[so..so + n]);
                    }
                }
            }
            Op::SubvolCreate => {
                let name = self.fresh_name();
                let r = self.fs().subvol_create(ROOT_INO, name.as_bytes(), who());
                if let Some(info) = self.settle("subvolume create", TOP_SUBVOL, r, Ok(()))? {
                    self.placed(&info, &name)?;
                    prop_assert_eq!(info.item.parent_uuid, [0; 16]);
                    prop_assert!(!info.item.read_only());
                    self.add_subvol(&info, name, Tree::default(), false);
                }
            }
            Op::Snapshot { src, read_only } => {
                let all: Vec<u64> = self.live.keys().copied().collect();
                let src = all[usize::from(src) % all.len()];
                let name = self.fresh_name();
                let r = self.fs().subvol_snapshot(
                    Loc::root_of(src).global(),
                    ROOT_INO,
                    name.as_bytes(),
                    read_only,
                );
                let what = format!("snapshot of {src}");
                if let Some(info) = self.settle(&what, TOP_SUBVOL, r, Ok(()))? {
                    self.placed(&info, &name)?;
                    prop_assert_eq!(info.item.parent_uuid, self.live[&src].uuid);
                    prop_assert_eq!(info.item.read_only(), read_only);
                    let tree = self.tree(src).snapshot();
                    self.add_subvol(&info, name, tree, read_only);
                }
            }
            Op::Delete { sv } => {
                let others: Vec<u64> = self
                    .live
                    .keys()
                    .copied()
                    .filter(|&id| id != TOP_SUBVOL)
                    .collect();
                if others.is_empty() {
                    return Ok(());
                }
                let id = others[usize::from(sv) % others.len()];
                let name = self.live[&id].name.clone();
                let r = self.fs().subvol_delete(ROOT_INO, name.as_bytes());
                let what = format!("delete subvolume {id}");
                if let Some(gone) = self.settle(&what, TOP_SUBVOL, r, Ok(()))? {
                    prop_assert_eq!(gone, id);
                    self.live.remove(&id);
                    self.deleted.push(id);
                    self.tree_mut(TOP_SUBVOL).entries.remove(&name);
                }
            }
            Op::ToggleReadOnly { sv } => {
                // The top level one time in four: while it is read-only, no subvolume
                // can be made or deleted.
                let others: Vec<u64> = self
                    .live
                    .keys()
                    .copied()
                    .filter(|&id| id != TOP_SUBVOL)
                    .collect();
                let id = if sv.is_multiple_of(4) {
                    TOP_SUBVOL
                } else if others.is_empty() {
                    return Ok(());
                } else {
                    others[usize::from(sv / 4) % others.len()]
                };
                let ro = !self.live[&id].read_only;
                self.fs()
                    .subvol_set_read_only(id, ro)
                    .map_err(|e| fail(format!("set read-only {id} {ro}: {e}")))?;
                self.live.get_mut(&id).expect("live").read_only = ro;
            }
            Op::Sync => self.fs().sync().map_err(|e| fail(format!("sync: {e}")))?,
            Op::Reopen => {
                self.reopen()?;
                self.check()?;
            }
            Op::Check => self.check()?,
        }
        Ok(())
    }

    fn fresh_name(&mut self) -> String {
        self.names += 1;
        format!("s{}", self.names)
    }

    /// Checks where a new subvolume sits.
    fn placed(&self, info: &arbor_fs::SubvolInfo, name: &str) -> TestResult {
        prop_assert!(
            !self.live.contains_key(&info.id) && !self.deleted.contains(&info.id),
            "subvolume id {} handed out twice",
            info.id
        );
        prop_assert_eq!(info.parent, Some(TOP_SUBVOL));
        prop_assert_eq!(&info.path, name.as_bytes());
        prop_assert_eq!(info.root, Loc::root_of(info.id).global());
        Ok(())
    }

    fn add_subvol(&mut self, info: &arbor_fs::SubvolInfo, name: String, tree: Tree, ro: bool) {
        self.tree_mut(TOP_SUBVOL)
            .entries
            .insert(name.clone(), Entry::Subvol(info.id));
        self.live.insert(
            info.id,
            Subvol {
                tree,
                read_only: ro,
                name,
                uuid: info.item.uuid,
                parent_uuid: info.item.parent_uuid,
            },
        );
    }

    /// Commits, drops the Fs and opens the device again.
    fn reopen(&mut self) -> TestResult {
        self.fs().sync().map_err(|e| fail(format!("sync: {e}")))?;
        self.fs = None;
        let fs = Fs::open(self.dev.clone(), &FsOptions::default())
            .map_err(|e| fail(format!("reopen: {e}")))?;
        self.fs = Some(fs);
        Ok(())
    }

    // ---- checking --------------------------------------------------------------

    /// Compares every live subvolume and the subvolume list with the model.
    fn check(&self) -> TestResult {
        let fs = self.fs();
        let list = fs
            .subvol_list()
            .map_err(|e| fail(format!("subvol_list: {e}")))?;
        let ids: Vec<u64> = list.iter().map(|i| i.id).collect();
        let want: Vec<u64> = self.live.keys().copied().collect();
        prop_assert_eq!(ids, want, "subvolume list");
        for info in &list {
            let sv = &self.live[&info.id];
            prop_assert_eq!(
                info.item.read_only(),
                sv.read_only,
                "read-only flag of {}",
                info.id
            );
            prop_assert_eq!(fs.is_read_only_inode(info.root), sv.read_only);
            prop_assert_eq!(info.item.uuid, sv.uuid, "uuid of {}", info.id);
            prop_assert_eq!(
                info.item.parent_uuid,
                sv.parent_uuid,
                "parent uuid of {}",
                info.id
            );
            prop_assert_eq!(info.root, Loc::root_of(info.id).global());
            let one = fs
                .subvol_info(info.id)
                .map_err(|e| fail(format!("subvol_info {}: {e}", info.id)))?;
            prop_assert_eq!(&one, info, "subvol_info and subvol_list");
            if info.id == TOP_SUBVOL {
                prop_assert_eq!(info.parent, None);
                prop_assert!(info.path.is_empty());
            } else {
                prop_assert_eq!(info.parent, Some(TOP_SUBVOL));
                prop_assert_eq!(info.dirid, ROOT_INO);
                prop_assert_eq!(&info.path, sv.name.as_bytes());
            }
        }
        for &id in &self.deleted {
            prop_assert!(
                matches!(fs.subvol_info(id), Err(FsError::NotFound)),
                "deleted subvolume {} still has info",
                id
            );
            prop_assert!(
                matches!(
                    fs.getattr(Loc::root_of(id).global()),
                    Err(FsError::NotFound)
                ),
                "deleted subvolume {} still has a root",
                id
            );
        }
        for (&id, sv) in &self.live {
            check_subvol(fs, id, &sv.tree)?;
        }
        Ok(())
    }

    /// Runs the final checks: the model, fsck, the image checker after a commit, and
    /// the model again after a reopen.
    fn finish(&mut self) -> TestResult {
        self.check()?;
        let fs = self.fs();
        let problems = fs.fsck().map_err(|e| fail(format!("fsck: {e}")))?;
        prop_assert!(problems.is_empty(), "fsck: {:#?}", problems);
        fs.sync().map_err(|e| fail(format!("sync: {e}")))?;
        let r = Fs::check_image(self.dev.clone());
        prop_assert!(r.is_clean(), "image checker:\n{}", r);
        self.reopen()?;
        self.check()
    }
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

/// Walks subvolume `id` through `readdir`, `lookup`, `getattr` and `read_file` and
/// compares it with `tree`.
fn check_subvol(fs: &Fs, id: u64, tree: &Tree) -> TestResult {
    let root = Loc::root_of(id).global();
    let mut seen = BTreeMap::new();
    let mut dirs = BTreeMap::new();
    dirs.insert(String::new(), root);
    walk(fs, id, root, ROOT_INO, "", &mut seen, &mut dirs)?;
    let got: BTreeMap<&String, &Entry> = seen.iter().collect();
    let want: BTreeMap<&String, &Entry> = tree.entries.iter().collect();
    prop_assert_eq!(got, want, "the names and kinds in subvolume {}", id);
    for (path, &ino) in &dirs {
        let attr = fs
            .getattr(ino)
            .map_err(|e| fail(format!("getattr {id}:{path}: {e}")))?;
        prop_assert!(attr.is_dir());
        prop_assert_eq!(attr.ino, ino);
        prop_assert_eq!(
            attr.nlink,
            2 + tree.subdirs(path),
            "links of directory {}:{:?}",
            id,
            path
        );
    }
    for (&local, data) in &tree.files {
        let ino = Loc::new(id, local).global();
        let attr = fs
            .getattr(ino)
            .map_err(|e| fail(format!("getattr {id}:{local}: {e}")))?;
        prop_assert!(attr.is_reg());
        prop_assert_eq!(attr.ino, ino);
        prop_assert_eq!(attr.size, data.len() as u64, "size of {}:{}", id, local);
        prop_assert_eq!(attr.nlink, tree.links(local), "links of {}:{}", id, local);
        let got = fs
            .read_file(ino, 0, u32::MAX)
            .map_err(|e| fail(format!("read {id}:{local}: {e}")))?;
        if got != *data {
            let at = got.iter().zip(data).position(|(a, b)| a != b);
            return Err(fail(format!(
                "content of {id}:{local} differs at {at:?} (len {} vs {})",
                got.len(),
                data.len()
            )));
        }
    }
    Ok(())
}

fn walk(
    fs: &Fs,
    id: u64,
    dir: u64,
    parent: u64,
    prefix: &str,
    seen: &mut BTreeMap<String, Entry>,
    dirs: &mut BTreeMap<String, u64>,
) -> TestResult {
    let list = fs
        .readdir(dir, 0, usize::MAX)
        .map_err(|e| fail(format!("readdir {id}:{prefix:?}: {e}")))?;
    prop_assert!(list.len() >= 2 && list[0].name == b"." && list[1].name == b"..");
    prop_assert_eq!(list[0].ino, dir, ". of {}:{:?}", id, prefix);
    prop_assert_eq!(list[1].ino, parent, ".. of {}:{:?}", id, prefix);
    for d in &list[2..] {
        let name = String::from_utf8(d.name.clone()).map_err(|e| fail(e.to_string()))?;
        let path = join(prefix, &name);
        let loc = Loc::of(d.ino).map_err(|e| fail(format!("{id}:{path}: {e}")))?;
        let looked = fs
            .lookup(dir, &d.name)
            .map_err(|e| fail(format!("lookup {id}:{path}: {e}")))?;
        prop_assert_eq!(looked.ino, d.ino, "lookup and readdir of {}:{}", id, path);
        let entry = if loc.subvol != id {
            prop_assert!(
                id == TOP_SUBVOL && prefix.is_empty() && loc.ino == ROOT_INO && d.dtype == 4,
                "{}:{} names inode {:?} of another subvolume",
                id,
                path,
                loc
            );
            Entry::Subvol(loc.subvol)
        } else if d.dtype == 4 {
            prop_assert!(looked.is_dir());
            dirs.insert(path.clone(), d.ino);
            walk(fs, id, d.ino, dir, &path, seen, dirs)?;
            Entry::Dir
        } else {
            prop_assert_eq!(d.dtype, 8, "type of {}:{}", id, path);
            prop_assert!(looked.is_reg());
            Entry::File(loc.ino)
        };
        prop_assert!(seen.insert(path.clone(), entry).is_none(), "{} twice", path);
    }
    Ok(())
}

fn run(ops: &[Op], nodesize: u32) -> TestResult<World> {
    let mut w = World::new(nodesize);
    for op in ops {
        w.apply(op)?;
    }
    w.finish()?;
    Ok(w)
}

/// Deletes every subvolume but the top level and empties that; waits for the freeing
/// to finish.
fn delete_everything(w: &mut World) -> TestResult {
    let fs = w.fs();
    if w.live[&TOP_SUBVOL].read_only {
        fs.subvol_set_read_only(TOP_SUBVOL, false)
            .map_err(|e| fail(format!("set top writable: {e}")))?;
    }
    for (&id, sv) in &w.live {
        if id != TOP_SUBVOL {
            let gone = fs
                .subvol_delete(ROOT_INO, sv.name.as_bytes())
                .map_err(|e| fail(format!("delete {id}: {e}")))?;
            prop_assert_eq!(gone, id);
        }
    }
    empty_dir(fs, ROOT_INO)?;
    let mut rounds = 0;
    loop {
        fs.sync().map_err(|e| fail(format!("sync: {e}")))?;
        if fs
            .subvol_cleanup_pending()
            .map_err(|e| fail(e.to_string()))?
            == 0
        {
            break;
        }
        rounds += 1;
        prop_assert!(rounds < 10_000, "deleted subvolumes never freed");
    }
    fs.sync().map_err(|e| fail(format!("sync: {e}")))?;
    prop_assert_eq!(fs.subvol_list().map_err(|e| fail(e.to_string()))?.len(), 1);
    Ok(())
}

fn empty_dir(fs: &Fs, dir: u64) -> TestResult {
    let list = fs
        .readdir(dir, 2, usize::MAX)
        .map_err(|e| fail(format!("readdir {dir}: {e}")))?;
    for d in list {
        if d.dtype == 4 {
            empty_dir(fs, d.ino)?;
            fs.rmdir(dir, &d.name)
                .map_err(|e| fail(format!("rmdir {dir}/{:?}: {e}", d.name)))?;
        } else {
            fs.unlink(dir, &d.name)
                .map_err(|e| fail(format!("unlink {dir}/{:?}: {e}", d.name)))?;
        }
    }
    Ok(())
}

/// Free blocks of a fresh filesystem made like the one under test, after a commit.
fn fresh_blocks_free(nodesize: u32) -> u64 {
    let dev = Arc::new(MemStorage::new(DEV_SIZE));
    let fs = mkfs(&dev, nodesize);
    fs.sync().expect("sync");
    fs.statfs().expect("statfs").blocks_free
}

/// `ARBOR_LONG` set: many more and longer sequences.
fn long() -> bool {
    std::env::var("ARBOR_LONG").is_ok()
}

/// Cases per test: a second or two in all by default (opt-level 0 included).
fn cases() -> u32 {
    if long() { 2000 } else { 64 }
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..if long() { 300 } else { 120 })
}

fn nodesize() -> impl Strategy<Value = u32> {
    prop_oneof![Just(4096u32), Just(16384u32)]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        // A failure is reported with its shrunk sequence; nothing is written to the
        // source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_snapshot_matches_the_model_after_random_operations(
        nodesize in nodesize(),
        ops in ops(),
    ) {
        run(&ops, nodesize)?;
    }

    #[test]
    fn deleting_everything_returns_every_block(nodesize in nodesize(), ops in ops()) {
        let mut w = run(&ops, nodesize)?;
        delete_everything(&mut w)?;
        let free = w.fs().statfs().map_err(|e| fail(e.to_string()))?.blocks_free;
        prop_assert_eq!(
            free,
            fresh_blocks_free(nodesize),
            "free blocks after deleting everything"
        );
        let r = Fs::check_image(w.dev.clone());
        prop_assert!(r.is_clean(), "image checker:\n{}", r);
    }
}
