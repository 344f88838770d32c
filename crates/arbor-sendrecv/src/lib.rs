//! Send and receive: a read-only snapshot becomes a btrfs send stream (`arbor-send`
//! encodes it), and a stream becomes a subvolume again. This layer knows the
//! filesystem model (`arbor-fs`) and the stream's commands, and nothing of FUSE or of
//! the command line.
//!
//! * `full.rs`: a full send, every inode of one snapshot.
//! * `incremental.rs`: what turns a parent snapshot into a newer one.
//! * `clones.rs`: data the receiver already has, sent as clones.
//! * `receive/`: applying a stream, checked command by command, to a target.

mod clones;
mod error;
mod full;
mod incremental;
mod receive;
mod resume;

pub use error::{ReceiveError, SendError};
pub use full::{SendOptions, SendStats, send_full};
pub use incremental::send_incremental;
pub use receive::{
    CloneFrom, Falloc, NewInode, Plain as PlainTarget, ReceiveStats, StreamSubvol, Target, apply,
    receive, receive_plain,
};
pub use resume::ResumeToken;
