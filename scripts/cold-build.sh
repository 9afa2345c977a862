#!/usr/bin/env bash
# Measures the main job's cold build as a new user meets it: `cargo run -p simulate` from a fresh
# clone of this checkout's HEAD, with an empty cargo home (every crate downloaded) and an empty
# target directory. Checks first that nothing in the main job's build needs libclang or a C++
# compiler (no clang-sys, bindgen, cc or RocksDB in its tree: libclang cannot be taken off this
# machine, so the tree is the proof). Prints the build's and the run's wall times, the run's trace
# digest, and the disk the build took; removes everything it made.
#
#   scripts/cold-build.sh [--keep]     --keep: leave the work directory (printed) in place
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
[ "${1:-}" = "--keep" ] && keep=1

work=$(mktemp -d "${TMPDIR:-/tmp}/ledger-cold-build.XXXXXX")
clean_up() { [ "$keep" = 1 ] && echo "left in $work" || rm -rf "$work"; }
trap clean_up EXIT

git clone -q --no-hardlinks . "$work/clone"
export CARGO_HOME="$work/cargo-home" CARGO_TARGET_DIR="$work/target"
mkdir -p "$CARGO_HOME"
# The toolchain itself stays where rustup keeps it; only the registry and the build start empty.
export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
export PATH="$HOME/.cargo/bin:$PATH"
cd "$work/clone"
if cargo tree -q -p simulate -e normal,build --prefix none --locked |
    grep -E '^(clang-sys|bindgen|cc|librocksdb-sys|rocksdb) '; then
    echo "cold-build.sh: the main job's build needs the crates above" >&2
    exit 1
fi
start=$(date +%s.%N)
cargo build -q -p simulate --locked
built=$(date +%s.%N)
output=$(cargo run -q -p simulate --locked 2>/dev/null)
ran=$(date +%s.%N)

digest=$(printf '%s\n' "$output" | awk '/trace digest/ { print $3 }')
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
echo "cold build of the main job: $(seconds "$start" "$built") s (crate downloads included)"
echo "then the run:               $(seconds "$built" "$ran") s, trace digest $digest"
printf 'disk: target %s, cargo home %s\n' "$(du -sh "$CARGO_TARGET_DIR" | cut -f1)" "$(du -sh "$CARGO_HOME" | cut -f1)"
