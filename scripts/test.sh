#!/usr/bin/env bash
# Runs every test of the workspace. Each benchmark first runs once in its quick mode, so that it cannot
# rot (nothing is asserted about speed). Installs nothing by hand: whatever a test needs, this script
# provisions.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo bench -p benches --bench sim_scale --locked -- --quick
cargo test --workspace --locked
