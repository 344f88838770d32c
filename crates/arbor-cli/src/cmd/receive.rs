//! `arbor receive`: re-create the subvolumes of a send stream (from stdin or a file)
//! in a directory of an arbor filesystem, natively: on a mount the daemon reads the
//! stream from the descriptor the command passes it; with `--image` the command writes
//! the image itself. `--dump` prints the stream's commands as `btrfs receive --dump`.

use super::subvolume::{ImageArg, Target};
use anyhow::{Context, Result, bail};
use arbor_ctl::{Request, Response};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `arbor receive`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub image: ImageArg,
    /// Read the stream from FILE instead of standard input.
    #[arg(short = 'f')]
    pub file: Option<PathBuf>,
    /// Print the stream's commands (as btrfs receive --dump) instead of applying them.
    #[arg(long)]
    pub dump: bool,
    /// The directory to make the subvolumes in (not needed with --dump).
    #[arg(required_unless_present = "dump")]
    pub dest: Option<PathBuf>,
}

/// `arbor receive`.
pub fn run(args: &Args) -> Result<ExitCode> {
    let input: std::fs::File = match &args.file {
        Some(f) => {
            std::fs::File::open(f).with_context(|| format!("cannot open {}", f.display()))?
        }
        None => std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?),
    };
    if args.dump {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        arbor_send::dump_stream(std::io::BufReader::new(input), &mut out)?;
        std::io::Write::flush(&mut out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(dest) = &args.dest else {
        bail!("receive needs a destination directory");
    };
    let t = Target::new(args.image.image.as_deref())?;
    let dest_ino = t.ino(dest)?;
    let (subvolumes, commands) = match &t {
        Target::Mounted => {
            let socket = arbor_ctl::socket_for_path(dest)?;
            let req = Request::Receive { dest: dest_ino };
            match arbor_ctl::call_with_file(&socket, &req, input.as_fd())? {
                Response::Received {
                    subvolumes,
                    commands,
                    ..
                } => (subvolumes.len(), commands),
                Response::Error { message, .. } => bail!("{message}"),
                other => bail!("unexpected response to a receive request: {other:?}"),
            }
        }
        Target::Image(fs) => {
            let r = arbor_sendrecv::receive(
                fs,
                dest_ino,
                std::io::BufReader::with_capacity(1 << 20, input),
            );
            fs.sync().context("commit failed")?;
            let s = r?;
            (s.subvolumes.len(), s.commands)
        }
    };
    eprintln!("received {subvolumes} subvolume(s), {commands} commands");
    Ok(ExitCode::SUCCESS)
}
