#!/usr/bin/env bash
# Installs the external test tools that scripts/pjdfstest.sh and scripts/fsx.sh run.
# Idempotent: run it as often as you like, it only does what is missing. Run it from
# anywhere in the repository, as root (apt-get) on Debian, with cargo on PATH.
#
#   Debian packages: libacl1-dev (pjdfstest links libacl through the exacl crate, whose
#                    prebuilt bindings need no bindgen/clang), acl (setfacl/getfacl),
#                    fio, gcc + libc6-dev (cargo links through cc), btrfs-progs
#                    (mkfs.btrfs for scripts/bench-fs.sh), util-linux (setpriv for the
#                    mounted tests), fuse3 (fusermount3, to test unmounting with it).
#                    `apt-get update` runs only when one of them is missing.
#   Rust tools:      pjdfstest and fsx (fsx-rs), pinned, `cargo install --locked` into
#                    ./tools (git-ignored), binaries in tools/bin. Each is installed only
#                    when tools/bin lacks it or has another version.
#
# Environment: TOOLS_SKIP_APT=1 skips the Debian part (e.g. when not root).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

PJDFSTEST_VERSION=0.2.2
FSX_VERSION=0.3.2
DEB_PACKAGES=(libacl1-dev acl fio gcc libc6-dev btrfs-progs util-linux fuse3 rsync attr)

step() { printf '==> %s\n' "$*"; }

# --- Debian packages -------------------------------------------------------------------
if [[ "${TOOLS_SKIP_APT:-}" = 1 ]]; then
    step "apt: skipped (TOOLS_SKIP_APT=1)"
else
    missing=()
    for pkg in "${DEB_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        step "apt: all present (${DEB_PACKAGES[*]})"
    else
        if [[ "$(id -u)" -ne 0 ]]; then
            echo "error: missing Debian packages ${missing[*]}; run as root or install them" >&2
            exit 2
        fi
        step "apt: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
fi

# --- Rust tools ------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found on PATH (install rustup/cargo first)" >&2
    exit 2
fi

# cargo_tool CRATE VERSION BIN: installs CRATE@VERSION into ./tools unless tools/bin/BIN
# exists and cargo's install record (tools/.crates.toml) says it is that version.
cargo_tool() {
    local crate="$1" version="$2" bin="$3"
    if [[ -x "tools/bin/$bin" ]] && grep -q "^\"$crate $version " tools/.crates.toml 2>/dev/null; then
        step "$crate $version: already in tools/bin/$bin"
        return
    fi
    step "$crate $version: cargo install --locked into $repo/tools (takes a minute or two)"
    cargo install --locked --quiet --force --root "$repo/tools" "$crate" --version "=$version"
}
cargo_tool pjdfstest "$PJDFSTEST_VERSION" pjdfstest
cargo_tool fsx "$FSX_VERSION" fsx

step "tools ready: $(tools/bin/pjdfstest --version 2>/dev/null || echo pjdfstest), $(tools/bin/fsx --version 2>/dev/null || echo fsx), $(fio --version)"
