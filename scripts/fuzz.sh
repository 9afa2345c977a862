#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for SECONDS each (default 20) with cargo-fuzz and
# libFuzzer on the nightly toolchain, from the committed seeds (fuzz/seeds/<target>) plus what
# earlier runs found (fuzz/corpus/<target>, not committed), and prints how many inputs each ran;
# it builds under target/fuzz.
# A crash stops the run with libFuzzer's report and the input under fuzz/artifacts/<target>:
# make it a regression test beside the decoder's own tests (stable), and fix it.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Without a nightly toolchain it says so and exits 0: the stable test run does not depend on it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-20}
shift || true
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz.sh: no nightly toolchain (rustup toolchain install nightly); fuzzing skipped"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "seeds/$target"
    log=$(mktemp)
    if ! cargo +nightly fuzz run --target-dir ../target/fuzz "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        cat "$log" >&2
        echo "fuzz.sh: $target FAILED (the input is under fuzz/artifacts/$target)" >&2
        rm -f "$log"
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz.sh: $target: ${runs:-?} inputs in ${seconds}s, no failure"
    rm -f "$log"
done
