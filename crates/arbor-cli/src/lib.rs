//! The `arbor` command line: argument parsing and one module per command.
//!
//! Commands return [`anyhow::Result`] of an exit status; [`run`] prints errors with
//! their causes and turns them into the command's failure status.

pub mod cmd;
pub mod mountinfo;
pub mod progress;
pub mod size;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Make, check, mount and demonstrate arbor filesystems.
#[derive(Debug, Parser)]
#[command(name = "arbor", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr: -v info, -vv debug, -vvv trace.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an arbor filesystem on an image file or a block device.
    Mkfs(cmd::mkfs::Args),
    /// Check an image offline: exit 0 when clean, 1 when problems were found, 2 on error.
    Check(cmd::check::Args),
    /// Run the engine end to end on a scratch image and show what it does.
    Demo(cmd::demo::Args),
    /// Mount a filesystem through FUSE; returns once it is mounted (see -f).
    Mount(cmd::mount::Args),
    /// Unmount, waiting for the final commit.
    Umount(cmd::umount::Args),
    /// Commit everything on a mounted filesystem now (what syncfs cannot do on FUSE).
    Sync(cmd::sync::Args),
    /// Create, snapshot, delete, list and show subvolumes (as btrfs subvolume).
    Subvolume(cmd::subvolume::Args),
    /// Filesystem-wide information (as btrfs filesystem).
    Filesystem(cmd::subvolume::FilesystemArgs),
    /// What changed between two snapshots (as zfs diff).
    Diff(cmd::diff::Args),
    /// Get or set a subvolume's read-only flag (as btrfs property ... ro).
    Property(cmd::subvolume::PropertyArgs),
    /// Write a read-only snapshot as a btrfs send stream (as btrfs send).
    Send(cmd::send::Args),
    /// Re-create the subvolumes of a send stream (as btrfs receive).
    Receive(cmd::receive::Args),
}

/// Exit status for a usage error or an I/O error that kept a command from running.
pub const EXIT_USAGE: u8 = 2;
/// Exit status for a failed command (and for `check`: problems found).
pub const EXIT_FAILURE: u8 = 1;

/// Runs a parsed command line and returns the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    let (result, failure) = match &cli.command {
        Command::Mkfs(args) => (cmd::mkfs::run(args), EXIT_FAILURE),
        Command::Check(args) => (cmd::check::run(args), EXIT_USAGE),
        Command::Demo(args) => (cmd::demo::run(args), EXIT_FAILURE),
        Command::Mount(args) => (cmd::mount::run(args), EXIT_FAILURE),
        Command::Umount(args) => (cmd::umount::run(args), EXIT_FAILURE),
        Command::Sync(args) => (cmd::sync::run(args), EXIT_FAILURE),
        Command::Subvolume(args) => (cmd::subvolume::run(args), EXIT_FAILURE),
        Command::Filesystem(args) => (cmd::subvolume::run_filesystem(args), EXIT_FAILURE),
        Command::Diff(args) => (cmd::diff::run(args), EXIT_FAILURE),
        Command::Property(args) => (cmd::subvolume::run_property(args), EXIT_FAILURE),
        Command::Send(args) => (cmd::send::run(args), EXIT_FAILURE),
        Command::Receive(args) => (cmd::receive::run(args), EXIT_FAILURE),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("arbor: error: {e:#}");
            ExitCode::from(failure)
        }
    }
}

/// Sends `tracing` output to stderr: errors only by default, more with each `-v`.
pub fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => tracing::Level::ERROR,
        1 => tracing::Level::INFO,
        2 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    // Fails only when a subscriber is already set, which is then kept.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// When run as mount(8)'s helper (`/sbin/mount.fuse.arbor IMAGE DIR -o OPTS`, or as
/// `arbor IMAGE DIR -o OPTS` from mount.fuse3), rewrites the arguments into
/// `arbor mount -o OPTS IMAGE DIR`. Other command lines pass through unchanged.
pub fn helper_argv(argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let name = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let looks_like_helper = name.starts_with("mount.")
        || (argv.len() >= 3
            && argv[1].to_string_lossy().contains('/')
            && std::path::Path::new(&argv[2]).is_dir());
    if !looks_like_helper {
        return argv;
    }
    let mut out: Vec<std::ffi::OsString> = vec!["arbor".into(), "mount".into()];
    let mut positional = Vec::new();
    let mut it = argv.into_iter().skip(1);
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-o") => {
                if let Some(o) = it.next() {
                    out.push("-o".into());
                    out.push(o);
                }
            }
            // mount(8) passes -t TYPE, and may pass -n (no mtab), -s, -v, -f (fake).
            Some("-t") => {
                it.next();
            }
            Some("-n" | "-s" | "-v") => {}
            _ => positional.push(a),
        }
    }
    out.extend(positional);
    out
}
