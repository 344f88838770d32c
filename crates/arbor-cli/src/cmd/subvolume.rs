//! `arbor subvolume ...` and `arbor filesystem df`, modelled on btrfs-progs. On a
//! mounted filesystem they talk to the daemon over its control socket; with
//! `--image IMAGE` they open an unmounted image themselves, with paths inside it.

use anyhow::{Context, Result, bail};
use arbor_ctl::{Peer, Request, Response, SubvolView};
use arbor_fs::{Fs, ROOT_INO};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Where a command runs: through a mount's daemon, or on an image in process.
pub(crate) enum Target {
    Mounted,
    Image(Arc<Fs>),
}

impl Target {
    pub(crate) fn new(image: Option<&Path>) -> Result<Self> {
        Ok(match image {
            Some(img) => Target::Image(super::mount::open_image(img, false)?),
            None => Target::Mounted,
        })
    }

    /// The global inode number of `path`: `st_ino` on a mount (the kernel resolved the
    /// path, with the caller's permissions), a walk from the root in an image.
    pub(crate) fn ino(&self, path: &Path) -> Result<u64> {
        match self {
            Target::Mounted => Ok(std::fs::metadata(path)
                .with_context(|| format!("cannot stat {}", path.display()))?
                .ino()),
            Target::Image(fs) => resolve(fs, path),
        }
    }

    fn exists(&self, path: &Path) -> bool {
        self.ino(path).is_ok()
    }

    fn is_dir(&self, path: &Path) -> bool {
        match self {
            Target::Mounted => path.is_dir(),
            Target::Image(fs) => resolve(fs, path)
                .and_then(|i| Ok(fs.getattr(i)?))
                .is_ok_and(|i| i.is_dir()),
        }
    }

    /// Sends `req`; `at` is a path on the mount (to find its daemon).
    pub(crate) fn call(&self, at: &Path, req: &Request) -> Result<Response> {
        let response = match self {
            Target::Mounted => {
                let socket = arbor_ctl::socket_for_path(at)?;
                arbor_ctl::call(&socket, req)?
            }
            Target::Image(fs) => {
                let r = arbor_ctl::handle(
                    fs,
                    req,
                    &Peer::root(),
                    super::mount::arbor_errno,
                    &arbor_ctl::NoKernelCache,
                );
                fs.sync().context("commit failed")?;
                r
            }
        };
        if let Response::Error { errno, message } = &response {
            bail!("{message} ({})", std::io::Error::from_raw_os_error(*errno));
        }
        Ok(response)
    }
}

/// Walks `path` (inside an image, relative to its root) to a global inode number.
fn resolve(fs: &Fs, path: &Path) -> Result<u64> {
    let mut ino = ROOT_INO;
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => {
                ino = fs
                    .lookup(ino, name.as_bytes())
                    .with_context(|| {
                        format!("{}: no such file or directory in the image", path.display())
                    })?
                    .ino;
            }
            Component::ParentDir => ino = fs.lookup(ino, b"..")?.ino,
            Component::Prefix(_) => bail!("{}: bad path", path.display()),
        }
    }
    Ok(ino)
}

/// Splits `path` into its directory and last name.
fn split(path: &Path) -> Result<(PathBuf, Vec<u8>)> {
    let name = path
        .file_name()
        .with_context(|| format!("{}: no name to create", path.display()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ if path.is_absolute() => PathBuf::from("/"),
        _ => PathBuf::from("."),
    };
    Ok((dir, name.as_bytes().to_vec()))
}

/// Arguments shared by every subcommand.
#[derive(Debug, clap::Args)]
pub struct ImageArg {
    /// Work on this unmounted image instead of a mount; paths are inside the image.
    #[arg(long, global = true)]
    pub image: Option<PathBuf>,
}

/// `arbor subvolume`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub image: ImageArg,
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Create an empty subvolume at PATH.
    Create { path: PathBuf },
    /// Snapshot subvolume SOURCE as DEST (or as DEST/<name of SOURCE> if DEST is a
    /// directory). Includes everything written to SOURCE so far, synced or not.
    Snapshot {
        /// Make the snapshot read-only.
        #[arg(short = 'r')]
        read_only: bool,
        source: PathBuf,
        dest: PathBuf,
    },
    /// Delete subvolumes; their space comes back in the background.
    Delete {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// List the subvolumes of the filesystem that holds PATH.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        path: PathBuf,
    },
    /// Show the subvolume that holds PATH.
    Show {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        path: PathBuf,
    },
    /// Wait until deleted subvolumes have given back all their space.
    Sync { path: PathBuf },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// `arbor subvolume`.
pub fn run(args: &Args) -> Result<ExitCode> {
    let t = Target::new(args.image.image.as_deref())?;
    match &args.command {
        Sub::Create { path } => {
            let (dir, name) = split(path)?;
            let parent = t.ino(&dir)?;
            t.call(&dir, &Request::SubvolCreate { parent, name })?;
            println!("Create subvolume '{}'", path.display());
        }
        Sub::Snapshot {
            read_only,
            source,
            dest,
        } => {
            let src = t.ino(source)?;
            let dest = if t.is_dir(dest) {
                let name = source
                    .file_name()
                    .with_context(|| format!("{}: no name", source.display()))?;
                dest.join(name)
            } else {
                dest.clone()
            };
            if t.exists(&dest) {
                bail!("{} exists", dest.display());
            }
            let (dir, name) = split(&dest)?;
            let parent = t.ino(&dir)?;
            if let Target::Mounted = t {
                // Hand the kernel's dirty pages of the source to the daemon first.
                let f = std::fs::File::open(source)
                    .with_context(|| format!("cannot open {}", source.display()))?;
                nix::unistd::syncfs(&f).with_context(|| format!("syncfs {}", source.display()))?;
            }
            t.call(
                &dir,
                &Request::SubvolSnapshot {
                    source: src,
                    parent,
                    name,
                    read_only: *read_only,
                },
            )?;
            println!(
                "Create a{} snapshot of '{}' in '{}'",
                if *read_only { " readonly" } else { "" },
                source.display(),
                dest.display()
            );
        }
        Sub::Delete { paths } => {
            for path in paths {
                let (dir, name) = split(path)?;
                let parent = t.ino(&dir)?;
                t.call(&dir, &Request::SubvolDelete { parent, name })?;
                println!("Delete subvolume '{}'", path.display());
            }
        }
        Sub::List { format, path } => {
            let Response::Subvols(list) = t.call(path, &Request::SubvolList { usage: true })?
            else {
                bail!("unexpected response to a list request");
            };
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                Format::Text => {
                    for s in list.iter().filter(|s| s.parent_id.is_some()) {
                        println!(
                            "ID {} gen {} top level {} referenced {} exclusive {} path {}",
                            s.id,
                            s.generation,
                            s.parent_id.unwrap_or(5),
                            human(s.referenced_bytes),
                            s.exclusive_bytes.map_or("-".into(), human),
                            s.path
                        );
                    }
                }
            }
        }
        Sub::Show { format, path } => {
            let ino = t.ino(path)?;
            let Response::Subvol(s) = t.call(path, &Request::SubvolShow { ino })? else {
                bail!("unexpected response to a show request");
            };
            // The others, for the snapshots of this one (their usage is not needed).
            let Response::Subvols(all) = t.call(path, &Request::SubvolList { usage: false })?
            else {
                bail!("unexpected response to a list request");
            };
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&s)?),
                Format::Text => print!("{}", show_text(&s, &all)),
            }
        }
        Sub::Sync { path } => {
            t.call(path, &Request::SubvolSync)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A time as btrfs-progs shows it, in UTC (times before 1970 show as 1970).
fn time_text((sec, _nsec): (i64, u32)) -> String {
    let secs = sec.max(0);
    let (y, m, dd) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{dd:02} {:02}:{:02}:{:02} +0000",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a (year, month, day) date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `subvolume show` as btrfs-progs prints it.
fn show_text(s: &SubvolView, all: &[SubvolView]) -> String {
    let name = if s.path.is_empty() {
        "<FS_TREE>".to_string()
    } else {
        s.path.clone()
    };
    let short = Path::new(&name)
        .file_name()
        .map_or(name.clone(), |n| n.to_string_lossy().into_owned());
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let snapshots: Vec<&str> = all
        .iter()
        .filter(|o| o.parent_uuid.as_deref() == Some(s.uuid.as_str()))
        .map(|o| o.path.as_str())
        .collect();
    let mut out = format!(
        "{name}\n\tName: \t\t\t{short}\n\tUUID: \t\t\t{}\n\tParent UUID: \t\t{}\n\tReceived UUID: \t\t{}\n\tCreation time: \t\t{}\n\tSubvolume ID: \t\t{}\n\tGeneration: \t\t{}\n\tGen at creation: \t{}\n\tParent ID: \t\t{}\n\tTop level ID: \t\t{}\n\tFlags: \t\t\t{}\n\tReferenced: \t\t{}\n\tExclusive: \t\t{}\n\tSnapshot(s):\n",
        s.uuid,
        dash(&s.parent_uuid),
        dash(&s.received_uuid),
        time_text(s.otime),
        s.id,
        s.generation,
        s.otransid,
        s.parent_id.unwrap_or(0),
        s.parent_id.unwrap_or(0),
        if s.read_only { "readonly" } else { "-" },
        human(s.referenced_bytes),
        s.exclusive_bytes.map_or("-".into(), human),
    );
    for p in snapshots {
        out.push_str(&format!("\t\t\t\t{p}\n"));
    }
    if let Some(token) = &s.resume_token {
        out.push_str(&format!(
            "\tReceive:\t\tunfinished (not a snapshot yet)\n\tResume token:\t\t{token}\n"
        ));
    }
    out
}

/// `arbor property`.
#[derive(Debug, clap::Args)]
pub struct PropertyArgs {
    #[command(flatten)]
    pub image: ImageArg,
    #[command(subcommand)]
    pub command: PropSub,
}

#[derive(Debug, clap::Subcommand)]
pub enum PropSub {
    /// Show a subvolume's properties (`ro`).
    Get {
        /// A subvolume's root directory.
        path: PathBuf,
        /// Only this property.
        name: Option<String>,
    },
    /// Set a subvolume's property: `ro true` or `ro false`.
    Set {
        path: PathBuf,
        name: String,
        value: String,
    },
}

/// `arbor property`, as btrfs property for subvolumes (the `ro` flag).
pub fn run_property(args: &PropertyArgs) -> Result<ExitCode> {
    let t = Target::new(args.image.image.as_deref())?;
    match &args.command {
        PropSub::Get { path, name } => {
            if let Some(n) = name
                && n != "ro"
            {
                bail!("unknown property {n:?} (subvolumes have: ro)");
            }
            let ino = t.ino(path)?;
            let Response::Subvol(s) = t.call(path, &Request::SubvolShow { ino })? else {
                bail!("unexpected response to a show request");
            };
            if s.root_ino != ino {
                bail!("{} is not the root of a subvolume", path.display());
            }
            println!("ro={}", s.read_only);
        }
        PropSub::Set { path, name, value } => {
            if name != "ro" {
                bail!("unknown property {name:?} (subvolumes have: ro)");
            }
            let read_only = match value.as_str() {
                "true" => true,
                "false" => false,
                other => bail!("ro must be true or false, not {other:?}"),
            };
            let ino = t.ino(path)?;
            t.call(path, &Request::SubvolSetReadOnly { ino, read_only })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `arbor filesystem`.
#[derive(Debug, clap::Args)]
pub struct FilesystemArgs {
    #[command(flatten)]
    pub image: ImageArg,
    #[command(subcommand)]
    pub command: FsSub,
}

#[derive(Debug, clap::Subcommand)]
pub enum FsSub {
    /// Space: total, used, free, and what deleted subvolumes still hold.
    Df {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        path: PathBuf,
    },
}

/// `arbor filesystem`.
pub fn run_filesystem(args: &FilesystemArgs) -> Result<ExitCode> {
    let t = Target::new(args.image.image.as_deref())?;
    match &args.command {
        FsSub::Df { format, path } => {
            let Response::Df(d) = t.call(path, &Request::Df)? else {
                bail!("unexpected response to a df request");
            };
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&d)?),
                Format::Text => {
                    println!(
                        "Total: {}, Used: {}, Free: {} ({} freed, available after the next commit)",
                        human(d.total_bytes),
                        human(d.used_bytes),
                        human(d.free_bytes),
                        human(d.pinned_bytes)
                    );
                    println!(
                        "Subvolumes: {}, deleted subvolume nodes still to free: {}",
                        d.subvolumes, d.cleanup_pending_nodes
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Bytes as btrfs-progs prints them (binary units, two decimals).
fn human(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b}.00B")
    } else {
        format!("{v:.2}{}", units[u])
    }
}
