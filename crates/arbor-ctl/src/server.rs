//! The daemon's side: a Unix socket in the run directory, named after the mount's
//! device number, served by one thread per connection.

use crate::handler::{KernelCache, Peer, handle, handle_receive, handle_send};
use crate::protocol::{MAX_LINE, Request, Response};
use arbor_fs::{Fs, FsError};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A running control socket; dropping it stops the server and removes the socket.
pub struct Server {
    path: PathBuf,
    /// The socket file's inode: once this mount is gone, another may reuse its device
    /// number and so the path; only our own file is removed.
    ino: u64,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often the accept loop looks at its stop flag.
const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(200);

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Serves control requests for `fs` on the socket `path` (replacing a stale one).
/// Anyone may connect; each request is checked against the peer's credentials.
pub fn serve(
    fs: Arc<Fs>,
    path: &Path,
    errno: fn(&FsError) -> i32,
    cache: Arc<dyn KernelCache>,
) -> std::io::Result<Server> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!("removed a stale control socket {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    let ino = std::fs::symlink_metadata(path)?.ino();
    // Non-blocking, so that a connection that went away between poll and accept
    // cannot stall the loop.
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("arbor-ctl".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    // Wait for a connection, or for the time to look at `stop` again.
                    let mut fds = [rustix::event::PollFd::new(
                        &listener,
                        rustix::event::PollFlags::IN,
                    )];
                    let timeout = rustix::event::Timespec {
                        tv_sec: 0,
                        tv_nsec: STOP_POLL.as_nanos() as _,
                    };
                    match rustix::event::poll(&mut fds, Some(&timeout)) {
                        Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!("control socket: {e}");
                            break;
                        }
                    }
                    let Ok((conn, _)) = listener.accept() else {
                        continue;
                    };
                    if let Err(e) = conn.set_nonblocking(false) {
                        tracing::warn!("control connection: {e}");
                        continue;
                    }
                    let fs = Arc::clone(&fs);
                    let cache = Arc::clone(&cache);
                    let spawned = std::thread::Builder::new()
                        .name("arbor-ctl-conn".into())
                        .spawn(move || {
                            if let Err(e) = serve_one(&fs, conn, errno, &*cache) {
                                tracing::warn!("control connection: {e}");
                            }
                        });
                    if let Err(e) = spawned {
                        tracing::warn!("cannot serve a control connection: {e}");
                    }
                }
            })?
    };
    Ok(Server {
        path: path.to_path_buf(),
        ino,
        stop,
        thread: Some(thread),
    })
}

fn peer_of(conn: &UnixStream) -> std::io::Result<Peer> {
    let cred = getsockopt(conn, PeerCredentials).map_err(std::io::Error::from)?;
    Ok(Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        groups: supplementary_groups(cred.pid()),
    })
}

/// The supplementary groups of process `pid`, from /proc (none if it is gone).
fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

fn serve_one(
    fs: &Fs,
    conn: UnixStream,
    errno: fn(&FsError) -> i32,
    cache: &dyn KernelCache,
) -> std::io::Result<()> {
    let peer = peer_of(&conn)?;
    let (line, mut fds) = read_request(&conn)?;
    let response = match serde_json::from_slice::<Request>(&line) {
        Ok(req @ Request::Send { .. }) => {
            tracing::info!("control request from uid {}: {req:?}", peer.uid);
            let out = (!fds.is_empty()).then(|| std::fs::File::from(fds.remove(0)));
            handle_send(fs, &req, &peer, errno, out)
        }
        Ok(req @ Request::Receive { .. }) => {
            tracing::info!("control request from uid {}: {req:?}", peer.uid);
            let input = (!fds.is_empty()).then(|| std::fs::File::from(fds.remove(0)));
            handle_receive(fs, &req, &peer, errno, cache, input)
        }
        Ok(req) => {
            tracing::info!("control request from uid {}: {req:?}", peer.uid);
            handle(fs, &req, &peer, errno, cache)
        }
        Err(e) => Response::Error {
            errno: libc_einval(),
            message: format!("bad request ({} bytes): {e}", line.len()),
        },
    };
    let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    out.push(b'\n');
    (&conn).write_all(&out)
}

/// Reads the request line and any file descriptors sent with it (SCM_RIGHTS).
fn read_request(conn: &UnixStream) -> std::io::Result<(Vec<u8>, Vec<std::os::fd::OwnedFd>)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut line = Vec::new();
    let mut fds = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    while !line.contains(&b'\n') && line.len() < MAX_LINE {
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            conn,
            &mut [std::io::IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(passed) = msg {
                fds.extend(passed);
            }
        }
        if got.bytes == 0 {
            break;
        }
        line.extend_from_slice(&buf[..got.bytes.min(buf.len())]);
    }
    Ok((line, fds))
}

const fn libc_einval() -> i32 {
    22
}
