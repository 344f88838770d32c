//! `arbor`: make, check and demonstrate arbor images.
//!
//! Exit status: 0 on success; for `check`, 1 when problems were found; 2 for usage
//! errors and for I/O errors that kept `check` from running; 1 for other failures.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = arbor_cli::Cli::parse_from(arbor_cli::helper_argv(std::env::args_os().collect()));
    arbor_cli::init_tracing(cli.verbose);
    arbor_cli::run(cli)
}
