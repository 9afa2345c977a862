#!/usr/bin/env bash
# Runs every test of the workspace. Each benchmark first runs once in its quick mode, so that it cannot
# rot (nothing is asserted about speed). Installs nothing by hand: whatever a test needs, this script
# provisions. Ends with one line totalling every test binary's results.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
# The protocol core stays free of IO: no runtime, store, HTTP client or backend among its dependencies.
if cargo tree -p ledger-core -e normal --prefix none --locked |
    grep -E '^(tokio|mio|rocksdb|librocksdb-sys|hyper|reqwest|comms-ipfs|sim) '; then
    echo "ledger-core depends on the IO crates above" >&2
    exit 1
fi
# In the test profile: the benchmarks' package depends on the ledger, and an optimized build of its
# RocksDB would add 20 minutes. Criterion runs each micro-benchmark once when started by `cargo test`.
cargo test --workspace --bench sim_scale --locked -- --quick
cargo test --workspace --bench sync_scale --locked -- --quick
cargo test --workspace --bench sync_scale --locked -- --quick --snapshot
cargo test --workspace --bench ipld_pin --locked -- --quick
cargo test --workspace --bench restart --locked -- --quick
cargo test --workspace --bench retention --locked -- --quick
cargo test --workspace --bench micro --locked
# The latency harness as the bench builds above built it (Cargo builds a package's binaries with its
# benches): `cargo run -p benches` would resolve the workspace's features for one package, differ
# in one of bindgen's (syn's `visit`), and compile RocksDB's C++ again, about 13 minutes here.
"${CARGO_TARGET_DIR:-target}/$(rustc -vV | sed -n 's/^host: //p')/debug/latency" --quick
# Every fuzz target for 20 s from its seeds (cargo-fuzz on nightly; without a nightly toolchain the
# script says so and skips).
./scripts/fuzz.sh 20

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# `node/testnet`: the `ipfs-testnet` binary the devnet test starts its daemons with.
cargo test --workspace --features node/testnet --locked 2>&1 | tee "$log"
awk '/^test result:/ { passed += $4; failed += $6; skipped += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, skipped }' "$log"
