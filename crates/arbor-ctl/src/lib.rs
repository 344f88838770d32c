//! The control channel of a mounted arbor filesystem. `arbor subvolume ...` and
//! `arbor filesystem df` talk to the mount's daemon through a Unix socket, so that
//! subvolume operations never go through per-file FUSE requests: the daemon applies
//! them to its [`arbor_fs::Fs`] directly and tells the kernel which cached names
//! changed. The same handler serves offline use on an image (`--image`), in process.
//!
//! * `protocol.rs`: the request and response messages (one JSON line each).
//! * `handler.rs`: applies a request to an `Fs`, with the caller's permissions.
//! * `server.rs`: the daemon's socket; `client.rs`: the CLI's side.

mod client;
mod handler;
mod protocol;
mod server;

pub use client::{ClientError, call, call_with_file, run_dir, socket_for_dev, socket_for_path};
pub use handler::{KernelCache, NoKernelCache, Peer, handle, handle_receive, handle_send};
pub use protocol::{DfView, DiffLine, DiffView, MAX_LINE, Request, Response, SubvolView};
pub use server::{Server, serve};
