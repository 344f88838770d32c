//! The messages: one JSON object per line, a request from the CLI, then one response
//! from the daemon. Inodes are the filesystem's global inode numbers, which are also
//! the `st_ino` the kernel shows, so the CLI names directories by `fstat` of paths it
//! opened itself (the kernel has checked that it may reach them).

use arbor_fs::SubvolInfo;
use serde::{Deserialize, Serialize};

/// What the CLI asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// A new, empty subvolume `name` in directory `parent`.
    SubvolCreate { parent: u64, name: Vec<u8> },
    /// A snapshot of the subvolume whose root is `source`, as `name` in `parent`.
    SubvolSnapshot {
        source: u64,
        parent: u64,
        name: Vec<u8>,
        read_only: bool,
    },
    /// Delete the subvolume `name` in `parent`.
    SubvolDelete { parent: u64, name: Vec<u8> },
    /// Every subvolume; with `usage`, each one's exclusive bytes too (as of the
    /// last commit, which keeps them).
    SubvolList { usage: bool },
    /// The subvolume that holds inode `ino`.
    SubvolShow { ino: u64 },
    /// Set or clear a subvolume's read-only flag.
    SubvolSetReadOnly { ino: u64, read_only: bool },
    /// Space usage.
    Df,
    /// Wait until deleted subvolumes have given back their space.
    SubvolSync,
    /// What changed from subvolume root `old` to subvolume root `new`.
    Diff { old: u64, new: u64 },
    /// Send the read-only subvolume whose root is `root`, named `name`, as a stream
    /// into the file descriptor passed with the request (SCM_RIGHTS).
    Send {
        root: u64,
        /// For an incremental send: the root of the parent snapshot.
        parent: Option<u64>,
        name: Vec<u8>,
        version: u32,
        no_data: bool,
        /// Roots of read-only snapshots the receiver has, to clone from.
        #[serde(default)]
        clone_sources: Vec<u64>,
        /// Resume the receive this token describes.
        #[serde(default)]
        resume: Option<String>,
    },
    /// Receive the stream read from the file descriptor passed with the request into
    /// directory `dest`.
    Receive { dest: u64 },
}

/// What the daemon answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Subvol(SubvolView),
    Subvols(Vec<SubvolView>),
    Deleted {
        id: u64,
    },
    Df(DfView),
    Diff(DiffView),
    Sent {
        commands: u64,
        inodes: u64,
        data_bytes: u64,
    },
    Received {
        /// Root inode numbers of the subvolumes made.
        subvolumes: Vec<u64>,
        commands: u64,
        data_bytes: u64,
    },
    Done,
    /// The request failed: an errno and a message that names what failed.
    Error {
        errno: i32,
        message: String,
    },
}

/// A subvolume as the CLI prints it (`subvolume list --format json` prints these).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubvolView {
    pub id: u64,
    /// The subvolume whose directory holds this one (5 is the top level; none for it).
    pub parent_id: Option<u64>,
    /// Path from the top level.
    pub path: String,
    pub uuid: String,
    pub parent_uuid: Option<String>,
    pub received_uuid: Option<String>,
    pub read_only: bool,
    /// The transaction that last changed it.
    pub generation: u64,
    /// The transaction that created it.
    pub otransid: u64,
    /// Creation time: seconds and nanoseconds since the epoch.
    pub otime: (i64, u32),
    /// The inode number (`st_ino`) of its root directory.
    pub root_ino: u64,
    /// The file data its files hold.
    pub referenced_bytes: u64,
    /// What only it holds (data and metadata): what deleting it would free; given
    /// where it was asked for.
    pub exclusive_bytes: Option<u64>,
    /// For the unfinished receive of a stream: the token `arbor send --resume`
    /// continues it from.
    #[serde(default)]
    pub resume_token: Option<String>,
}

impl From<&SubvolInfo> for SubvolView {
    fn from(i: &SubvolInfo) -> Self {
        let uuid = |u: [u8; 16]| (u != [0; 16]).then(|| uuid::Uuid::from_bytes(u).to_string());
        Self {
            id: i.id,
            parent_id: i.parent,
            path: String::from_utf8_lossy(&i.path).into_owned(),
            uuid: uuid::Uuid::from_bytes(i.item.uuid).to_string(),
            parent_uuid: uuid(i.item.parent_uuid),
            received_uuid: uuid(i.item.received_uuid),
            read_only: i.item.read_only(),
            generation: i.generation,
            otransid: i.item.otransid,
            otime: (i.item.otime.sec, i.item.otime.nsec),
            root_ino: i.root,
            referenced_bytes: i.referenced_bytes,
            exclusive_bytes: None,
            resume_token: None,
        }
    }
}

/// Space as `filesystem df` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DfView {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
    /// Freed in the running transaction; free after the next commit.
    pub pinned_bytes: u64,
    /// Nodes of deleted subvolumes not yet freed.
    pub cleanup_pending_nodes: usize,
    pub subvolumes: usize,
}

/// One changed path, as `zfs diff` marks it: `+` added, `-` removed, `M` modified,
/// `R` renamed (then `to` is the new path).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffLine {
    pub change: char,
    pub path: String,
    pub to: Option<String>,
    pub dir: bool,
}

/// A diff and what it cost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffView {
    pub changes: Vec<DiffLine>,
    /// Tree nodes read on both sides (subtrees the two share are skipped).
    pub nodes_read: u64,
    pub shared_subtrees_skipped: u64,
}

impl From<&arbor_fs::Diff> for DiffView {
    fn from(d: &arbor_fs::Diff) -> Self {
        use arbor_fs::DiffEntry as E;
        let s = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
        let changes = d
            .entries
            .iter()
            .map(|e| match e {
                E::Added { path, dir } => DiffLine {
                    change: '+',
                    path: s(path),
                    to: None,
                    dir: *dir,
                },
                E::Removed { path, dir } => DiffLine {
                    change: '-',
                    path: s(path),
                    to: None,
                    dir: *dir,
                },
                E::Modified { path, dir } => DiffLine {
                    change: 'M',
                    path: s(path),
                    to: None,
                    dir: *dir,
                },
                E::Renamed { from, to, dir } => DiffLine {
                    change: 'R',
                    path: s(from),
                    to: Some(s(to)),
                    dir: *dir,
                },
            })
            .collect();
        Self {
            changes,
            nodes_read: d.stats.nodes_read(),
            shared_subtrees_skipped: d.stats.shared_subtrees_skipped,
        }
    }
}

/// Longest request or response line accepted (a list of many subvolumes fits).
pub const MAX_LINE: usize = 64 << 20;
