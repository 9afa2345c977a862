#!/usr/bin/env bash
# Installs the system packages the build and the tests need, if missing: libclang-dev (RocksDB's
# bindgen needs the library and clang's headers, even for the bundled RocksDB). Uses apt-get as root, or through sudo.
set -euo pipefail

missing=()
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq "${missing[@]}" >/dev/null
