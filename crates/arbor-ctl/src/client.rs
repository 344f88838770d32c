//! The CLI's side: find the socket of the mount that holds a path, send one request.

use crate::protocol::{MAX_LINE, Request, Response};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Why a request could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "{path} is not on a mounted arbor filesystem (no control socket {socket}); use --image for an unmounted image"
    )]
    NotMounted { path: PathBuf, socket: PathBuf },
    #[error("cannot reach the arbor daemon at {socket}: {source}")]
    Io {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("the arbor daemon sent a bad response: {0}")]
    BadResponse(String),
}

/// Where daemons put their control sockets: `$ARBOR_RUN_DIR`, else /run/arbor.
pub fn run_dir() -> PathBuf {
    std::env::var_os("ARBOR_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/arbor"))
}

/// The socket of the mount with device number `dev` (`st_dev` of any file on it).
pub fn socket_for_dev(dev: u64) -> PathBuf {
    run_dir().join(format!(
        "ctl-{}:{}.sock",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    ))
}

/// The socket of the mount that holds `path`.
pub fn socket_for_path(path: &Path) -> Result<PathBuf, ClientError> {
    let dev = std::fs::metadata(path)
        .map_err(|source| ClientError::Io {
            socket: path.to_path_buf(),
            source,
        })?
        .dev();
    let socket = socket_for_dev(dev);
    if !socket.exists() {
        return Err(ClientError::NotMounted {
            path: path.to_path_buf(),
            socket,
        });
    }
    Ok(socket)
}

/// Sends one request with an open file passed along (SCM_RIGHTS), for requests that
/// write into it (`Send`), and waits for the response.
pub fn call_with_file(
    socket: &Path,
    req: &Request,
    file: std::os::fd::BorrowedFd<'_>,
) -> Result<Response, ClientError> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let io = |source| ClientError::Io {
        socket: socket.to_path_buf(),
        source,
    };
    let conn = UnixStream::connect(socket).map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| ClientError::BadResponse(e.to_string()))?;
    line.push(b'\n');
    let fds = [file];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    let sent = rustix::net::sendmsg(
        &conn,
        &[std::io::IoSlice::new(&line)],
        &mut control,
        SendFlags::empty(),
    )
    .map_err(|e| io(e.into()))?;
    (&conn).write_all(&line[sent..]).map_err(io)?;
    read_response(socket, &conn)
}

fn read_response(socket: &Path, conn: &UnixStream) -> Result<Response, ClientError> {
    let mut buf = Vec::new();
    BufReader::new(conn.take(MAX_LINE as u64))
        .read_until(b'\n', &mut buf)
        .map_err(|source| ClientError::Io {
            socket: socket.to_path_buf(),
            source,
        })?;
    serde_json::from_slice(&buf)
        .map_err(|e| ClientError::BadResponse(format!("{e} ({} bytes)", buf.len())))
}

/// Sends one request and waits for its response.
pub fn call(socket: &Path, req: &Request) -> Result<Response, ClientError> {
    let io = |source| ClientError::Io {
        socket: socket.to_path_buf(),
        source,
    };
    let mut conn = UnixStream::connect(socket).map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| ClientError::BadResponse(e.to_string()))?;
    line.push(b'\n');
    conn.write_all(&line).map_err(io)?;
    read_response(socket, &conn)
}
