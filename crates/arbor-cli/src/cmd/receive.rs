//! `arbor receive`: re-create the subvolumes of a send stream (from stdin or a file)
//! in a directory of an arbor filesystem, natively: on a mount the daemon reads the
//! stream from the descriptor the command passes it; with `--image` the command writes
//! the image itself. `--dump` prints the stream's commands as `btrfs receive --dump`.
//! On a terminal a progress bar shows on stderr (see [`crate::progress`]).

use super::subvolume::{ImageArg, Target};
use crate::progress;
use anyhow::{Context, Result, bail};
use arbor_ctl::{Request, Response};
use std::io::{IsTerminal, Seek};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
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
    /// Show no progress bar (one shows only when stderr is a terminal).
    #[arg(short, long)]
    pub quiet: bool,
    /// Print the resume token of the unfinished receive DEST (a partial subvolume, or
    /// a directory holding one) instead of receiving: give it to `arbor send --resume`.
    #[arg(long)]
    pub resume_token: bool,
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
    let total = remaining(&input);
    let new_bar = || {
        let what = match &args.file {
            Some(f) => f.display().to_string(),
            None => "stdin".to_string(),
        };
        progress::bar(total, what)
    };
    if args.dump {
        // The commands go to stdout: no bar when that is the same terminal.
        let show = progress::wanted(args.quiet) && !std::io::stdout().is_terminal();
        let bar = show.then(new_bar);
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let input = progress::Counting::new(input, bar.as_deref());
        arbor_send::dump_stream(std::io::BufReader::new(input), &mut out)?;
        std::io::Write::flush(&mut out)?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(dest) = &args.dest else {
        bail!("receive needs a destination directory");
    };
    // Not on an arbor mount: re-created there with ordinary system calls.
    let plain = args.image.image.is_none() && !super::receive_plain::on_arbor(dest)?;
    if args.resume_token {
        if plain {
            // The progress notes plain receives leave.
            return print_tokens(dest, super::receive_plain::unfinished(dest)?);
        }
        return print_resume_tokens(&Target::new(args.image.image.as_deref())?, dest);
    }
    if plain {
        return super::receive_plain::run(dest, input, progress::wanted(args.quiet).then(new_bar));
    }
    let t = Target::new(args.image.image.as_deref())?;
    let dest_ino = t.ino(dest)?;
    let bar = progress::wanted(args.quiet).then(new_bar);
    let (subvolumes, commands) = match &t {
        Target::Mounted => {
            let socket = arbor_ctl::socket_for_path(dest)?;
            let req = Request::Receive { dest: dest_ino };
            let response = match &bar {
                None => arbor_ctl::call_with_file(&socket, &req, input.as_fd())?,
                // The daemon reads a pipe; a thread copies the input into it.
                Some(bar) => {
                    let (response, pump) = progress::pipe_from(input, bar, |fd| {
                        arbor_ctl::call_with_file(&socket, &req, fd)
                    })?;
                    let response = response?;
                    // After a failure the copy may still wait on the input: it is not
                    // waited for, but an input error it met explains the failure.
                    let copied = match response {
                        Response::Received { .. } => Some(pump.finish()),
                        _ => pump.if_finished(),
                    };
                    if let Some(Err(e)) = copied
                        && !progress::is_broken_pipe(&e)
                    {
                        return Err(e);
                    }
                    response
                }
            };
            match response {
                Response::Received {
                    subvolumes,
                    commands,
                    ..
                } => (subvolumes.len(), commands),
                Response::Error { message, .. } => bail!("{message}{}", resume_hint(&t, dest)),
                other => bail!("unexpected response to a receive request: {other:?}"),
            }
        }
        Target::Image(fs) => {
            let input = progress::Counting::new(input, bar.as_deref());
            let r = arbor_sendrecv::receive(
                fs,
                dest_ino,
                std::io::BufReader::with_capacity(1 << 20, input),
            );
            fs.sync().context("commit failed")?;
            let s = r.map_err(|e| anyhow::anyhow!("{e}{}", resume_hint(&t, dest)))?;
            (s.subvolumes.len(), s.commands)
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    eprintln!("received {subvolumes} subvolume(s), {commands} commands");
    Ok(ExitCode::SUCCESS)
}

/// After a failed receive: how to resume it, if it left an unfinished subvolume.
fn resume_hint(t: &Target, dest: &Path) -> String {
    match unfinished(t, dest) {
        Ok(found) if !found.is_empty() => {
            hint_text("subvolume", &found[0].0, &dest.display().to_string(), dest)
        }
        _ => String::new(),
    }
}

/// The hint after a failed receive into `dest` that left the unfinished `kind` (a
/// subvolume, a directory) `partial`; `token_at` is what `--resume-token` is given.
pub(super) fn hint_text(kind: &str, partial: &str, token_at: &str, dest: &Path) -> String {
    format!(
        "\nwhat arrived is kept in the unfinished {kind} {partial}: resume with `arbor send --resume $(arbor receive --resume-token {token_at}) SNAPSHOT | arbor receive {}`",
        dest.display()
    )
}

/// `--resume-token`: the token of the unfinished receive `path`, or of those in
/// directory `path` (one per line, with its name, when there are several).
fn print_resume_tokens(t: &Target, path: &Path) -> Result<ExitCode> {
    print_tokens(path, unfinished(t, path)?)
}

/// Prints the tokens of the unfinished receives `found` at `path`: (name, token).
fn print_tokens(path: &Path, found: Vec<(String, String)>) -> Result<ExitCode> {
    match found.as_slice() {
        [] => bail!("{}: no unfinished receive here", path.display()),
        [(_, token)] => println!("{token}"),
        many => {
            for (name, token) in many {
                println!("{name}\t{token}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The unfinished receives `path` is or holds: (name, resume token).
fn unfinished(t: &Target, path: &Path) -> Result<Vec<(String, String)>> {
    let ino = t.ino(path)?;
    let all = match t.call(path, &Request::SubvolList { usage: false })? {
        Response::Subvols(v) => v,
        other => bail!("unexpected response to a list request: {other:?}"),
    };
    let token_of = |ino: u64| {
        all.iter()
            .find(|v| v.root_ino == ino)
            .and_then(|v| v.resume_token.clone())
    };
    if let Some(token) = token_of(ino) {
        return Ok(vec![(path.display().to_string(), token)]);
    }
    let children: Vec<(String, u64)> = match t {
        Target::Mounted => std::fs::read_dir(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let ino = e.metadata().ok()?.ino();
                Some((e.file_name().to_string_lossy().into_owned(), ino))
            })
            .collect(),
        Target::Image(fs) => fs
            .readdir(ino, 2, usize::MAX)?
            .into_iter()
            .map(|e| (String::from_utf8_lossy(&e.name).into_owned(), e.ino))
            .collect(),
    };
    Ok(children
        .into_iter()
        .filter_map(|(name, ino)| token_of(ino).map(|t| (name, t)))
        .collect())
}

/// The bytes left to read in `input` when it is a regular file (a total for the bar);
/// none for a pipe or a terminal.
fn remaining(mut input: &std::fs::File) -> Option<u64> {
    let meta = input.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let at = input.stream_position().ok()?;
    Some(meta.len().saturating_sub(at))
}
