//! Progress bars for `send` and `receive`: bytes moved, rate and (when the size is
//! known) ETA, drawn on stderr only when it is a terminal.
//!
//! In process the stream passes through a [`Counting`] reader or writer. On a mount the
//! daemon reads or writes the descriptor it is passed, so to count the bytes the command
//! passes it one end of a pipe instead and copies between the pipe and the real file in
//! a thread ([`pipe_to`], [`pipe_from`]). Without a bar none of this is used.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};
use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::thread::JoinHandle;
use std::time::Duration;

/// Whether to show a bar: not when `quiet`, nor when stderr is not a terminal.
pub fn wanted(quiet: bool) -> bool {
    !quiet && io::stderr().is_terminal()
}

/// A progress bar that clears itself when this handle is dropped (say, on an error,
/// so that the message starts on a clean line), even while a pump thread still holds
/// a clone of it.
pub struct Bar(ProgressBar);

impl std::ops::Deref for Bar {
    type Target = ProgressBar;
    fn deref(&self) -> &ProgressBar {
        &self.0
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if !self.0.is_finished() {
            self.0.finish_and_clear();
        }
    }
}

/// A bar on stderr labelled `msg`: with a total, bytes of the total, rate and ETA;
/// without one, a spinner with bytes and rate. Call only when [`wanted`].
pub fn bar(total: Option<u64>, msg: String) -> Bar {
    let template = match total {
        Some(_) => {
            "{spinner} {msg} [{elapsed_precise}] [{wide_bar}] \
             {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}"
        }
        None => "{spinner} {msg} [{elapsed_precise}] {binary_bytes} {binary_bytes_per_sec}",
    };
    // The templates are constant; should one not parse, a plain bar still works.
    let style = ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr())
        .with_style(style)
        .with_message(msg)
        .with_finish(ProgressFinish::AndClear);
    // Keeps the spinner, rate and elapsed time moving while the stream stalls.
    bar.enable_steady_tick(Duration::from_millis(200));
    Bar(bar)
}

/// Advances `bar` by `n` bytes. A total is an estimate (a snapshot's data, without the
/// stream's own headers), so it grows when the stream outruns it.
fn advance(bar: &ProgressBar, n: usize) {
    bar.inc(n as u64);
    if let Some(len) = bar.length()
        && bar.position() > len
    {
        bar.set_length(bar.position());
    }
}

/// A reader or writer that advances a bar, when there is one, by the bytes that pass.
pub struct Counting<T> {
    inner: T,
    bar: Option<ProgressBar>,
}

impl<T> Counting<T> {
    /// Wraps `inner`; with no bar it only passes the calls on.
    pub fn new(inner: T, bar: Option<&ProgressBar>) -> Self {
        Counting {
            inner,
            bar: bar.cloned(),
        }
    }
}

impl<T: Read> Read for Counting<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(bar) = &self.bar {
            advance(bar, n);
        }
        Ok(n)
    }
}

impl<T: Write> Write for Counting<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(bar) = &self.bar {
            advance(bar, n);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The thread that copies between a pipe and the real input or output.
pub struct Pump(JoinHandle<Result<u64>>);

impl Pump {
    /// Waits for the copy to end and returns how many bytes it moved.
    pub fn finish(self) -> Result<u64> {
        self.0
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// The copy's outcome if it has already ended, without waiting for it.
    pub fn if_finished(self) -> Option<Result<u64>> {
        self.0.is_finished().then(|| self.finish())
    }
}

/// Whether `e` is a broken pipe: the other side closed it, having read what it wanted
/// or having failed (and then its own error says why).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// Runs `daemon` with the write end of a pipe while a thread copies what comes out of
/// the pipe into `out`, advancing `bar`. Our copy of the write end is closed when
/// `daemon` returns, so the copy ends once the daemon has closed its own: call
/// [`Pump::finish`] after its response.
pub fn pipe_to<R>(
    out: File,
    bar: &ProgressBar,
    daemon: impl FnOnce(BorrowedFd<'_>) -> R,
) -> Result<(R, Pump)> {
    let (reader, writer) = io::pipe().context("cannot make a pipe for the progress bar")?;
    widen(&writer);
    let b = bar.clone();
    let pump = std::thread::Builder::new()
        .name("send-pump".into())
        .spawn(move || {
            copy(
                reader,
                out,
                &b,
                "reading the stream from the daemon",
                "writing the stream",
            )
        })
        .context("cannot start the progress thread")?;
    let r = daemon(writer.as_fd());
    drop(writer);
    Ok((r, Pump(pump)))
}

/// Runs `daemon` with the read end of a pipe while a thread copies `input` into the
/// pipe, advancing `bar`, and closes it at the end of `input`. Our copy of the read end
/// is closed when `daemon` returns. After a successful response, [`Pump::finish`]
/// returns at once (the daemon read to the end); after a failure the copy may still
/// wait on the input, so [`Pump::if_finished`] asks without waiting.
pub fn pipe_from<R>(
    input: File,
    bar: &ProgressBar,
    daemon: impl FnOnce(BorrowedFd<'_>) -> R,
) -> Result<(R, Pump)> {
    let (reader, writer) = io::pipe().context("cannot make a pipe for the progress bar")?;
    widen(&writer);
    let b = bar.clone();
    let pump = std::thread::Builder::new()
        .name("receive-pump".into())
        .spawn(move || {
            copy(
                input,
                writer,
                &b,
                "reading the stream",
                "passing the stream to the daemon",
            )
        })
        .context("cannot start the progress thread")?;
    let r = daemon(reader.as_fd());
    drop(reader);
    Ok((r, Pump(pump)))
}

/// Asks for a 1 MiB pipe buffer, to wake the copying thread less often; the default
/// one (64 KiB) also works, so a refusal is ignored.
fn widen(pipe: &impl AsFd) {
    let _ = nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
}

/// Copies `from` into `to` until the end of `from`, advancing `bar`.
fn copy(
    mut from: impl Read,
    mut to: impl Write,
    bar: &ProgressBar,
    reading: &'static str,
    writing: &'static str,
) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context(reading),
        };
        to.write_all(&buf[..n]).context(writing)?;
        advance(bar, n);
        total += n as u64;
    }
    to.flush().context(writing)?;
    Ok(total)
}
