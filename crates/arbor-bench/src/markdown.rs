//! The engine section of `BENCHMARKS.md`: its text, and replacing it in the file
//! between its markers, leaving the rest of the file alone.

use crate::machine::Machine;
use crate::phases::COMMITS_PER_SLICE;
use crate::redb_db::{REDB_CACHE_BYTES, REDB_VERSION};
use crate::report::Results;
use crate::workloads::{VALUE_LEN, Workload};
use anyhow::{Context, Result, bail};
use arbor_engine::Config;
use std::fmt::Write as _;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

/// The line that opens the section.
pub const START: &str = "<!-- engine-bench:start -->";
/// The line that closes the section.
pub const END: &str = "<!-- engine-bench:end -->";

const INTRO: &str = "# Benchmarks\n\n\
Side-by-side measurements of arbor against established engines, taken in one run on \
one machine. Every result is a ratio to the competitor; absolute times are given only \
next to their ratio, since they mean little on another machine. The sections between \
the `<!-- …:start -->` and `<!-- …:end -->` markers are generated: rerun the command \
they name instead of editing them.\n";

/// What the section states about the run besides the table.
#[derive(Debug)]
pub struct RunInfo<'a> {
    /// Where and when.
    pub machine: &'a Machine,
    /// The shell command that reproduces the run from the repository root.
    pub command: String,
    /// Repetitions of every workload.
    pub reps: usize,
    /// The seed of the key order.
    pub seed: u64,
    /// The git revision of the engine measured, if known.
    pub revision: Option<String>,
}

/// The whole section, markers included.
pub fn section(info: &RunInfo<'_>, w: &Workload, results: &Results) -> String {
    let m = info.machine;
    let cfg = Config::default();
    let mib = |b: u64| b >> 20;
    let mut s = String::new();
    let _ = writeln!(s, "{START}");
    let _ = writeln!(s, "## Engine: arbor vs redb\n");
    let _ = writeln!(
        s,
        "Measured {date} on {cpu} ({nproc} CPUs), Linux {kernel}, {fs}. arbor-engine {ver}{rev} \
         against redb {REDB_VERSION}, both on files in the same directory. N = {n} items \
         with {VALUE_LEN}-byte values, keys in a random order from seed {seed}; median of \
         {reps} run{plural}, each from empty stores, the two engines taking turns at every workload (in the commit workload, at every \
         {COMMITS_PER_SLICE} transactions, so that both see the same drift in fsync latency).\n",
        date = m.date,
        cpu = m.cpu,
        nproc = m.nproc,
        kernel = m.kernel,
        fs = m.filesystem,
        ver = env!("CARGO_PKG_VERSION"),
        rev = info
            .revision
            .as_ref()
            .map_or(String::new(), |r| format!(" (git {r})")),
        n = w.sizes.items,
        seed = info.seed,
        reps = info.reps,
        plural = if info.reps == 1 { "" } else { "s" },
    );
    let _ = writeln!(
        s,
        "Reproduce from the repository root:\n\n    {}\n",
        info.command
    );
    let _ = writeln!(
        s,
        "**Ratio = arbor median / redb median; below 1 means arbor is better** (faster, or \
         smaller).\n"
    );
    s.push_str(&results.table(w));
    let mut notes = results.notes().peekable();
    if notes.peek().is_some() {
        s.push_str("\nObserved during the runs:\n\n");
        for note in notes {
            let _ = writeln!(s, "- {note}.");
        }
    }
    let _ = writeln!(
        s,
        "\nSetup. arbor: `FileStorage` on a sparse preallocated image, mkfs with the node size \
         noted above, and `Config` ({cache} MiB node cache, a commit forced past {dirty} MiB of dirty \
         nodes — part of the bulk insert's cost); key `n` is `Key::new(n, 1, 0)`. redb: \
         `TableDefinition<u64, &[u8]>`, {rcache} MiB cache (its default), every write \
         transaction committed with `Durability::Immediate`. Every commit of both is \
         durable (fsync) before it returns.\n",
        cache = mib(cfg.cache_bytes),
        dirty = mib(cfg.max_dirty_bytes),
        rcache = mib(REDB_CACHE_BYTES as u64),
    );
    let _ = writeln!(
        s,
        "Clone. redb has no O(1) table clone; its closest analogue is a persistent \
         savepoint, taken here in the same write transaction as the updates. arbor clones \
         the tree (`clone_tree`) and updates the clone. The space row is the growth of \
         allocated bytes across that workload (arbor: `Engine::space().used_bytes`; \
         redb: allocated pages × page size), a sanity figure for the cost of sharing."
    );
    let _ = writeln!(s, "{END}");
    s
}

/// Replaces the section in the file at `path`, creating the file with a short
/// introduction if it does not exist.
pub fn write_section(path: &Path, section: &str) -> Result<()> {
    let doc = match fs::read_to_string(path) {
        Ok(doc) => doc,
        Err(e) if e.kind() == ErrorKind::NotFound => INTRO.to_string(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let new = splice(&doc, section).with_context(|| format!("updating {}", path.display()))?;
    let tmp = path.with_extension("md.tmp");
    fs::write(&tmp, new).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// `doc` with the marked section replaced by `section`, or with `section` appended
/// when there is none.
fn splice(doc: &str, section: &str) -> Result<String> {
    let section = section.trim_end();
    match (doc.find(START), doc.find(END)) {
        (Some(s), Some(e)) if s < e => {
            Ok(format!("{}{section}{}", &doc[..s], &doc[e + END.len()..]))
        }
        (None, None) => Ok(format!("{}\n\n{section}\n", doc.trim_end())),
        _ => bail!("the markers {START} and {END} are missing one half or out of order"),
    }
}

#[cfg(test)]
mod tests {
    use super::{END, START, splice};

    #[test]
    fn appends_then_replaces() {
        let one = format!("{START}\none\n{END}\n");
        let two = format!("{START}\ntwo\n{END}\n");
        let doc = splice("# B\n\ntext\n", &one).unwrap();
        assert_eq!(doc, format!("# B\n\ntext\n\n{one}"));
        let doc = splice(&format!("{doc}\n## after\n"), &two).unwrap();
        assert_eq!(doc, format!("# B\n\ntext\n\n{two}\n## after\n"));
    }

    #[test]
    fn refuses_half_markers() {
        assert!(splice(&format!("x {END} {START}"), "s").is_err());
        assert!(splice(&format!("x {START}"), "s").is_err());
    }
}
