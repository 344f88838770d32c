//! `arbor mkfs`: format an image file or a block device.

use crate::size::{human, parse_size};
use anyhow::{Context, Result, bail};
use arbor_engine::MkfsOptions;
use arbor_engine::format::{
    LABEL_MAX, MAX_NODESIZE, MIN_NODESIZE, SECTOR_SIZE, superblock_offsets,
};
use arbor_engine::storage::FileStorage;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Arguments of `arbor mkfs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Size of the filesystem, e.g. 256M or 1G. Required when IMAGE does not exist;
    /// a larger size extends an existing image file, a smaller one uses only its start.
    #[arg(short, long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Bytes per B-tree node: a power of two from 4K to 64K (default 16K).
    #[arg(short, long, value_parser = parse_size)]
    pub nodesize: Option<u64>,
    /// A label of at most 256 bytes.
    #[arg(short = 'L', long, default_value = "")]
    pub label: String,
    /// The image file (created when missing) or block device.
    pub image: PathBuf,
}

/// What `mkfs` produced, for the summary.
#[derive(Debug)]
pub struct Summary {
    /// The label given.
    pub label: String,
    /// The new filesystem UUID.
    pub fsid: uuid::Uuid,
    /// Bytes per node.
    pub nodesize: u32,
    /// Size of the filesystem.
    pub total_bytes: u64,
    /// Bytes allocated right after mkfs.
    pub used_bytes: u64,
    /// Where the superblock copies are.
    pub superblocks: Vec<u64>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let label = if self.label.is_empty() {
            "(none)"
        } else {
            &self.label
        };
        let copies: Vec<String> = self.superblocks.iter().map(|&o| human(o)).collect();
        writeln!(f, "Label:              {label}")?;
        writeln!(f, "UUID:               {}", self.fsid)?;
        writeln!(f, "Node size:          {}", self.nodesize)?;
        writeln!(f, "Sector size:        {SECTOR_SIZE}")?;
        writeln!(
            f,
            "Filesystem size:    {} ({} bytes)",
            human(self.total_bytes),
            self.total_bytes
        )?;
        writeln!(f, "Used after mkfs:    {}", human(self.used_bytes))?;
        writeln!(
            f,
            "Superblock copies:  {} (at {})",
            self.superblocks.len(),
            copies.join(", ")
        )
    }
}

/// Checks the options that do not depend on the device, before anything is touched.
fn validate(args: &Args) -> Result<Option<u32>> {
    let nodesize = match args.nodesize {
        None => None,
        Some(n) => {
            let ok = n.is_power_of_two()
                && (u64::from(MIN_NODESIZE)..=u64::from(MAX_NODESIZE)).contains(&n);
            if !ok {
                bail!(
                    "invalid node size {n}: it must be a power of two from {MIN_NODESIZE} to {MAX_NODESIZE}"
                );
            }
            Some(n as u32)
        }
    };
    if args.label.len() > LABEL_MAX {
        bail!(
            "label is {} bytes long, at most {LABEL_MAX} are allowed",
            args.label.len()
        );
    }
    if args.label.contains('\0') {
        bail!("label must not contain NUL bytes");
    }
    if args.size == Some(0) {
        bail!("size must be larger than zero");
    }
    Ok(nodesize)
}

/// Opens (or creates) the device and works out how much of it to use. Returns the file,
/// the `total_bytes` to pass to mkfs, and whether the file was created here.
fn prepare(image: &Path, size: Option<u64>) -> Result<(File, Option<u64>, bool)> {
    let shown = image.display();
    let meta = match std::fs::metadata(image) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let Some(size) = size else {
                bail!("{shown} does not exist; give --size to create an image file of that size");
            };
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(image)
                .with_context(|| format!("cannot create {shown}"))?;
            if let Err(e) = file.set_len(size) {
                let _ = std::fs::remove_file(image);
                return Err(e).with_context(|| format!("cannot size {shown} to {size} bytes"));
            }
            return Ok((file, None, true));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot stat {shown}")),
    };
    let ft = meta.file_type();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .with_context(|| format!("cannot open {shown} for writing"))?;
    if ft.is_file() {
        let len = meta.len();
        match size {
            Some(s) if s > len => {
                file.set_len(s)
                    .with_context(|| format!("cannot extend {shown} to {s} bytes"))?;
                Ok((file, None, false))
            }
            Some(s) if s < len => Ok((file, Some(s), false)),
            _ => Ok((file, None, false)),
        }
    } else if ft.is_block_device() {
        let len = FileStorage::from_file(file.try_clone()?)
            .and_then(|d| arbor_engine::storage::Storage::len(&d))
            .with_context(|| format!("cannot find the size of {shown}"))?;
        match size {
            Some(s) if s > len => {
                bail!("{shown} holds only {len} bytes, less than the {s} asked for")
            }
            Some(s) if s < len => Ok((file, Some(s), false)),
            _ => Ok((file, None, false)),
        }
    } else {
        bail!("{shown} is neither a regular file nor a block device")
    }
}

/// Formats the image and returns what was made.
pub fn mkfs(args: &Args) -> Result<Summary> {
    let nodesize = validate(args)?;
    let (file, total_bytes, created) = prepare(&args.image, args.size)?;
    let result = (|| -> Result<Summary> {
        let dev = FileStorage::from_file(file)
            .with_context(|| format!("cannot open {}", args.image.display()))?;
        let opts = MkfsOptions {
            nodesize,
            total_bytes,
            label: args.label.clone(),
        };
        let engine = arbor_fs::Fs::mkfs(Arc::new(dev), &opts)?;
        let space = engine.space();
        Ok(Summary {
            label: engine.label().to_owned(),
            fsid: engine.fsid(),
            nodesize: engine.nodesize(),
            total_bytes: space.total_bytes,
            used_bytes: space.used_bytes,
            superblocks: superblock_offsets(space.total_bytes),
        })
    })();
    if result.is_err() && created {
        let _ = std::fs::remove_file(&args.image);
    }
    result.with_context(|| format!("mkfs of {} failed", args.image.display()))
}

/// `arbor mkfs`.
pub fn run(args: &Args) -> Result<ExitCode> {
    let summary = mkfs(args)?;
    println!("arbor mkfs {}", env!("CARGO_PKG_VERSION"));
    println!("Device:             {}", args.image.display());
    print!("{summary}");
    Ok(ExitCode::SUCCESS)
}
