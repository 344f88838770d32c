//! Applies requests to a filesystem, as the peer that sent them may.

use crate::protocol::{DfView, DiffView, Request, Response, SubvolView};
use arbor_fs::ino::Loc;
use arbor_fs::{Caller, Fs, FsError, Inode, ROOT_INO};

/// Who sent a request (from the socket's peer credentials).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Peer {
    /// The superuser, as offline use on an image runs.
    pub fn root() -> Self {
        Self {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        }
    }

    fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether the mode bits let this peer write into and search directory `d`
    /// (ACL entries beyond the mode bits are not consulted).
    fn may_add_to(&self, d: &Inode) -> bool {
        if self.is_root() {
            return true;
        }
        let bits = if d.uid == self.uid {
            d.mode >> 6
        } else if d.gid == self.gid || self.groups.contains(&d.gid) {
            d.mode >> 3
        } else {
            d.mode
        };
        bits & 0o3 == 0o3
    }
}

/// What the kernel caches and must forget after a request changed the tree behind
/// its back (the FUSE adapter implements it; offline use needs nothing).
pub trait KernelCache: Send + Sync {
    /// The name `name` in directory `parent` (global inode numbers) changed.
    fn entry_changed(&self, parent: u64, name: &[u8]);
    /// The attributes of `ino` changed.
    fn inode_changed(&self, ino: u64);
}

/// For use without a kernel.
pub struct NoKernelCache;

impl KernelCache for NoKernelCache {
    fn entry_changed(&self, _: u64, _: &[u8]) {}
    fn inode_changed(&self, _: u64) {}
}

fn denied(why: &str) -> FsError {
    FsError::NotPermitted(why.into())
}

/// Applies `req` to `fs` on behalf of `peer`. `errno` maps filesystem errors (the
/// FUSE adapter's table).
pub fn handle(
    fs: &Fs,
    req: &Request,
    peer: &Peer,
    errno: fn(&FsError) -> i32,
    cache: &dyn KernelCache,
) -> Response {
    match apply(fs, req, peer, cache) {
        Ok(r) => r,
        Err(e) => Response::Error {
            errno: errno(&e),
            message: e.to_string(),
        },
    }
}

/// Applies a `Receive` request: the stream comes from `input`, the file the client
/// passed.
pub fn handle_receive(
    fs: &Fs,
    req: &Request,
    peer: &Peer,
    errno: fn(&FsError) -> i32,
    cache: &dyn KernelCache,
    input: Option<std::fs::File>,
) -> Response {
    let Request::Receive { dest } = req else {
        return handle(fs, req, peer, errno, cache);
    };
    let refuse = |e: FsError| Response::Error {
        errno: errno(&e),
        message: e.to_string(),
    };
    if !peer.is_root() {
        return refuse(denied("receiving a stream needs root"));
    }
    let Some(input) = input else {
        return refuse(FsError::Invalid(
            "a receive request needs a file descriptor for the stream".into(),
        ));
    };
    let r = arbor_sendrecv::receive(fs, *dest, std::io::BufReader::with_capacity(1 << 20, input));
    if r.is_err() {
        // What arrived, and the note to resume from, are durable at once.
        let _ = fs.sync();
    }
    // Whatever was made, the kernel must see the new names in `dest`.
    if let (Ok(at), Ok(list)) = (Loc::of(*dest), fs.subvol_list()) {
        for s in list
            .iter()
            .filter(|s| s.parent == Some(at.subvol) && s.dirid == at.ino)
        {
            if let Some(name) = s.path.rsplit(|&b| b == b'/').next() {
                cache.entry_changed(*dest, name);
            }
        }
    }
    cache.inode_changed(*dest);
    match r {
        Ok(s) => Response::Received {
            subvolumes: s.subvolumes,
            commands: s.commands,
            data_bytes: s.data_bytes,
        },
        Err(e) => Response::Error {
            errno: 22,
            message: e.to_string(),
        },
    }
}

/// Applies a `Send` request: the stream goes into `out`, the file the client passed.
pub fn handle_send(
    fs: &Fs,
    req: &Request,
    peer: &Peer,
    errno: fn(&FsError) -> i32,
    out: Option<std::fs::File>,
) -> Response {
    let Request::Send {
        root,
        parent,
        name,
        version,
        no_data,
        clone_sources,
        resume,
    } = req
    else {
        return handle(fs, req, peer, errno, &NoKernelCache);
    };
    let refuse = |e: FsError| Response::Error {
        errno: errno(&e),
        message: e.to_string(),
    };
    if !peer.is_root() {
        return refuse(denied("sending a subvolume needs root"));
    }
    let Some(out) = out else {
        return refuse(FsError::Invalid(
            "a send request needs a file descriptor for the stream".into(),
        ));
    };
    let opts = arbor_sendrecv::SendOptions {
        version: *version,
        no_data: *no_data,
        clone_sources: clone_sources.clone(),
        resume: match resume
            .as_deref()
            .map(arbor_sendrecv::ResumeToken::parse)
            .transpose()
        {
            Ok(t) => t,
            Err(message) => return Response::Error { errno: 22, message },
        },
    };
    let mut w = std::io::BufWriter::with_capacity(1 << 20, out);
    let sent = match parent {
        Some(p) => arbor_sendrecv::send_incremental(fs, *p, *root, name, &mut w, opts),
        None => arbor_sendrecv::send_full(fs, *root, name, &mut w, opts),
    };
    let r = sent.and_then(|s| {
        std::io::Write::flush(&mut w)
            .map(|()| s)
            .map_err(|e| arbor_sendrecv::SendError::Refused(format!("writing the stream: {e}")))
    });
    match r {
        Ok(s) => Response::Sent {
            commands: s.commands,
            inodes: s.inodes,
            data_bytes: s.data_bytes,
        },
        Err(e) => Response::Error {
            errno: match &e {
                arbor_sendrecv::SendError::Fs { source, .. } => errno(source),
                _ => 22,
            },
            message: e.to_string(),
        },
    }
}

/// A subvolume as the CLI shows it, with its exclusive bytes if `usage`.
fn view(fs: &Fs, info: &arbor_fs::SubvolInfo, usage: bool) -> Result<SubvolView, FsError> {
    let mut v = SubvolView::from(info);
    v.resume_token = fs
        .receive_progress(info.id)?
        .map(|p| arbor_sendrecv::ResumeToken::from_progress(&p).to_string());
    if usage {
        v.exclusive_bytes = Some(fs.subvol_exclusive_bytes(info.id)?);
    }
    Ok(v)
}

fn apply(
    fs: &Fs,
    req: &Request,
    peer: &Peer,
    cache: &dyn KernelCache,
) -> Result<Response, FsError> {
    let caller = Caller {
        uid: peer.uid,
        gid: peer.gid,
        umask: 0o022,
    };
    match req {
        Request::SubvolCreate { parent, name } => {
            if !peer.may_add_to(&fs.getattr(*parent)?) {
                return Err(denied("no write permission in the parent directory"));
            }
            let info = fs.subvol_create(*parent, name, caller)?;
            cache.entry_changed(*parent, name);
            cache.inode_changed(*parent);
            Ok(Response::Subvol(SubvolView::from(&info)))
        }
        Request::SubvolSnapshot {
            source,
            parent,
            name,
            read_only,
        } => {
            if !peer.may_add_to(&fs.getattr(*parent)?) {
                return Err(denied("no write permission in the parent directory"));
            }
            if !peer.is_root() && fs.getattr(*source)?.uid != peer.uid {
                return Err(denied(
                    "only the owner of a subvolume (or root) may snapshot it",
                ));
            }
            let info = fs.subvol_snapshot(*source, *parent, name, *read_only)?;
            cache.entry_changed(*parent, name);
            cache.inode_changed(*parent);
            Ok(Response::Subvol(SubvolView::from(&info)))
        }
        Request::SubvolDelete { parent, name } => {
            if !peer.is_root() {
                return Err(denied("deleting a subvolume needs root"));
            }
            let id = fs.subvol_delete(*parent, name)?;
            cache.entry_changed(*parent, name);
            cache.inode_changed(*parent);
            Ok(Response::Deleted { id })
        }
        Request::SubvolList { usage } => Ok(Response::Subvols(
            fs.subvol_list()?
                .iter()
                .map(|i| view(fs, i, *usage))
                .collect::<Result<_, _>>()?,
        )),
        Request::SubvolShow { ino } => {
            let id = Loc::of(*ino)?.subvol;
            Ok(Response::Subvol(view(fs, &fs.subvol_info(id)?, true)?))
        }
        Request::SubvolSetReadOnly { ino, read_only } => {
            let at = Loc::of(*ino)?;
            if at.ino != ROOT_INO {
                return Err(FsError::Invalid(format!(
                    "inode {ino} is not the root of a subvolume"
                )));
            }
            if !peer.is_root() && fs.getattr(*ino)?.uid != peer.uid {
                return Err(denied(
                    "only the owner of a subvolume (or root) may change it",
                ));
            }
            fs.subvol_set_read_only(at.subvol, *read_only)?;
            Ok(Response::Done)
        }
        Request::Df => {
            let s = fs.space()?;
            Ok(Response::Df(DfView {
                total_bytes: s.total_bytes,
                used_bytes: s.used_bytes,
                free_bytes: s.free_bytes,
                pinned_bytes: s.pinned_bytes,
                cleanup_pending_nodes: fs.subvol_cleanup_pending()?,
                subvolumes: fs.subvol_list()?.len(),
            }))
        }
        Request::Diff { old, new } => Ok(Response::Diff(DiffView::from(
            &fs.diff_subvols(*old, *new)?,
        ))),
        Request::Send { .. } | Request::Receive { .. } => Err(FsError::Invalid(
            "send and receive requests are served with handle_send and handle_receive".into(),
        )),
        Request::SubvolSync => {
            while fs.subvol_cleanup_pending()? > 0 {
                fs.sync()?;
            }
            fs.sync()?;
            Ok(Response::Done)
        }
    }
}
