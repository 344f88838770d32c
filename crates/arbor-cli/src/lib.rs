//! The `arbor` command line: argument parsing and one module per command.
//!
//! Commands return [`anyhow::Result`] of an exit status; [`run`] prints errors with
//! their causes and turns them into the command's failure status.

pub mod cmd;
pub mod size;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Make, check and demonstrate arbor images.
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
        .try_init();
}
