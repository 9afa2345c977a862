#!/usr/bin/env bash
# Installs what the build and the tests need, if missing: libclang-dev (RocksDB's bindgen needs the
# library and clang's headers, even for the bundled RocksDB), then the IPFS test daemon: kubo, built
# once from the Go module proxy into ~/.cache (comms-ipfs/kubo/install.sh; needs Go >= 1.26.5).
# Uses apt-get as root, or through sudo.
set -euo pipefail

missing=()
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)

if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

"$(dirname "$0")/../comms-ipfs/kubo/install.sh" >/dev/null
