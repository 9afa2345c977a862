#!/usr/bin/env bash
# Installs what the build and the tests need, if missing: libclang-dev (RocksDB's bindgen needs the
# library and clang's headers, even for the bundled RocksDB), Node.js and npm (js-ipfs), then the IPFS
# test daemons themselves: kubo, built once from the Go module proxy into ~/.cache
# (comms-ipfs/kubo/install.sh; needs Go >= 1.26.5), and js-ipfs from npm
# (comms-ipfs/testnet/install.sh). Uses apt-get as root, or through sudo.
set -euo pipefail

missing=()
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)

if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

"$(dirname "$0")/../comms-ipfs/kubo/install.sh" >/dev/null
"$(dirname "$0")/../comms-ipfs/testnet/install.sh"
