//! Which source the measured engine was built from, asked of git read-only.

use std::process::Command;

/// The abbreviated commit of the working tree, with a mark when the engine's sources
/// differ from it; `None` outside a git checkout or without git.
pub fn engine_revision() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_string();
    let clean = Command::new("git")
        .args(["diff", "--quiet", "HEAD", "--", "crates/arbor-engine"])
        .status()
        .ok()?
        .success();
    Some(if clean {
        commit
    } else {
        format!("{commit} with uncommitted engine changes")
    })
}
