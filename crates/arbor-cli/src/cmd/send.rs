//! `arbor send`: a read-only snapshot as a btrfs send stream, to stdout or a file. On
//! a mounted filesystem the daemon writes the stream straight into the descriptor the
//! command passes it; with `--image` the command reads the image itself. On a
//! terminal a progress bar shows on stderr (see [`crate::progress`]).

use super::subvolume::{ImageArg, Target};
use crate::progress;
use anyhow::{Context, Result, bail};
use arbor_ctl::{Request, Response};
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `arbor send`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub image: ImageArg,
    /// Send only what changed since this read-only snapshot (incremental send).
    #[arg(short = 'p')]
    pub parent: Option<PathBuf>,
    /// Snapshots whose data the receiver has, to clone from.
    #[arg(short = 'c')]
    pub clone_sources: Vec<PathBuf>,
    /// Write the stream to FILE instead of standard output.
    #[arg(short = 'f')]
    pub file: Option<PathBuf>,
    /// Stream version: 1, or 2 (larger writes, creation times).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=2))]
    pub proto: u32,
    /// Send where data changed, not the data (as btrfs send --no-data).
    #[arg(long)]
    pub no_data: bool,
    /// Show no progress bar (one shows only when stderr is a terminal).
    #[arg(short, long)]
    pub quiet: bool,
    /// Continue an interrupted receive: send only what it has not applied. TOKEN is
    /// what `arbor receive --resume-token` (or `subvolume show`) prints on the
    /// receiving side; give the same snapshot, -p, -c and --proto as the first time.
    #[arg(long, value_name = "TOKEN")]
    pub resume: Option<String>,
    /// The read-only snapshots to send, one stream after the other.
    #[arg(required = true)]
    pub snapshots: Vec<PathBuf>,
}

/// `arbor send`.
pub fn run(args: &Args) -> Result<ExitCode> {
    let resume = args
        .resume
        .as_deref()
        .map(arbor_sendrecv::ResumeToken::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    if resume.is_some() && args.snapshots.len() != 1 {
        bail!("--resume continues the receive of one snapshot: give exactly one");
    }
    let t = Target::new(args.image.image.as_deref())?;
    let parent = args.parent.as_ref().map(|p| t.ino(p)).transpose()?;
    let clone_sources = args
        .clone_sources
        .iter()
        .map(|c| t.ino(c))
        .collect::<Result<Vec<u64>>>()?;
    let out: std::fs::File = match &args.file {
        Some(f) => {
            std::fs::File::create(f).with_context(|| format!("cannot create {}", f.display()))?
        }
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!("not writing a send stream to a terminal: redirect it or use -f FILE");
            }
            std::fs::File::from(stdout.as_fd().try_clone_to_owned()?)
        }
    };
    for snap in &args.snapshots {
        let root = t.ino(snap)?;
        let name = snap
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_os_string()))
            .or_else(|| snap.file_name().map(|n| n.to_os_string()))
            .with_context(|| format!("{}: no name", snap.display()))?;
        let name = std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str()).to_vec();
        let bar = progress::wanted(args.quiet).then(|| {
            let total = expected_size(&t, snap, root, parent.is_some() || args.no_data);
            progress::bar(total, snap.display().to_string())
        });
        let (commands, data) = match &t {
            Target::Mounted => {
                let socket = arbor_ctl::socket_for_path(snap)?;
                let req = Request::Send {
                    root,
                    parent,
                    name,
                    version: args.proto,
                    no_data: args.no_data,
                    clone_sources: clone_sources.clone(),
                    resume: args.resume.clone(),
                };
                let response = match &bar {
                    None => arbor_ctl::call_with_file(&socket, &req, out.as_fd())?,
                    // The daemon writes into a pipe; a thread copies it to `out`.
                    Some(bar) => {
                        let dup = out.try_clone().context("cannot duplicate the output")?;
                        let (response, pump) = progress::pipe_to(dup, bar, |fd| {
                            arbor_ctl::call_with_file(&socket, &req, fd)
                        })?;
                        let copied = pump.finish();
                        let response = response?;
                        // A failed copy is why the daemon failed (its pipe broke).
                        copied?;
                        response
                    }
                };
                match response {
                    Response::Sent {
                        commands,
                        data_bytes,
                        ..
                    } => (commands, data_bytes),
                    Response::Error { errno, message } => {
                        bail!("{message} ({})", std::io::Error::from_raw_os_error(errno))
                    }
                    other => bail!("unexpected response to a send request: {other:?}"),
                }
            }
            Target::Image(fs) => {
                let mut w = std::io::BufWriter::with_capacity(
                    1 << 20,
                    progress::Counting::new(&out, bar.as_deref()),
                );
                let opts = arbor_sendrecv::SendOptions {
                    version: args.proto,
                    no_data: args.no_data,
                    clone_sources: clone_sources.clone(),
                    resume,
                };
                let s = match parent {
                    Some(p) => arbor_sendrecv::send_incremental(fs, p, root, &name, &mut w, opts)?,
                    None => arbor_sendrecv::send_full(fs, root, &name, &mut w, opts)?,
                };
                std::io::Write::flush(&mut w).context("writing the stream")?;
                (s.commands, s.data_bytes)
            }
        };
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        eprintln!(
            "At subvol {}: {commands} commands, {data} bytes of data",
            snap.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The size a progress bar for sending `snap` counts up to: a full send carries about
/// the snapshot's data (its referenced bytes). An incremental send, or one without
/// data, has no size known beforehand; nor has one whose size cannot be found.
fn expected_size(t: &Target, snap: &Path, root: u64, unknown: bool) -> Option<u64> {
    if unknown {
        return None;
    }
    match t {
        Target::Mounted => match t.call(snap, &Request::SubvolShow { ino: root }) {
            Ok(Response::Subvol(v)) => Some(v.referenced_bytes),
            _ => None,
        },
        Target::Image(fs) => fs
            .subvol_of(root)
            .and_then(|id| fs.subvol_info(id))
            .ok()
            .map(|i| i.referenced_bytes),
    }
}
