//! `arbor diff OLD NEW`: what changed between two snapshots of one subvolume (or a
//! snapshot and the subvolume itself), in `zfs diff`'s format.

use super::subvolume::{Format, ImageArg, Target};
use anyhow::{Result, bail};
use arbor_ctl::{Request, Response};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `arbor diff`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub image: ImageArg,
    /// Output format: `text` is one line per change, `M`, `+`, `-` or `R`, a tab and
    /// the path (`R`: `OLD -> NEW`), paths from the subvolume's root.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Also print, on stderr, how many tree nodes the comparison read.
    #[arg(long)]
    pub stats: bool,
    /// The older snapshot (a subvolume's root directory).
    pub old: PathBuf,
    /// The newer one.
    pub new: PathBuf,
}

/// `arbor diff`.
pub fn run(args: &Args) -> Result<ExitCode> {
    let t = Target::new(args.image.image.as_deref())?;
    let (old, new) = (t.ino(&args.old)?, t.ino(&args.new)?);
    let Response::Diff(d) = t.call(&args.old, &Request::Diff { old, new })? else {
        bail!("unexpected response to a diff request");
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&d.changes)?),
        Format::Text => {
            let mut out = String::new();
            for c in &d.changes {
                match &c.to {
                    Some(to) => out.push_str(&format!("{}\t{} -> {}\n", c.change, c.path, to)),
                    None => out.push_str(&format!("{}\t{}\n", c.change, c.path)),
                }
            }
            print!("{out}");
        }
    }
    if args.stats {
        eprintln!(
            "compared by reading {} tree nodes ({} shared subtrees skipped)",
            d.nodes_read, d.shared_subtrees_skipped
        );
    }
    Ok(ExitCode::SUCCESS)
}
