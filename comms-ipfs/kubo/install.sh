#!/usr/bin/env bash
# Builds kubo, the Go IPFS daemon the tests run against, from the Go module proxy, once: the version
# and every module are pinned by go.mod and go.sum beside this script (see go.mod for why this is a
# wrapper module). The binary goes to the cache the tests look in,
#   ${XDG_CACHE_HOME:-~/.cache}/ledger-node/kubo-<version>/ipfs
# with a stamp of the go.mod and go.sum it came from; re-running with both unchanged costs nothing.
# Prints the binary's path. Needs Go >= 1.26.5 (kubo's own minimum).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

version=$(awk '$1 == "require" && $2 == "github.com/ipfs/kubo" { print $3 }' "$here/go.mod")
[ -n "$version" ] || { echo "kubo/install.sh: no kubo version in $here/go.mod" >&2; exit 1; }
dir="${XDG_CACHE_HOME:-$HOME/.cache}/ledger-node/kubo-$version"
stamp=$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -d' ' -f1)
if [ -x "$dir/ipfs" ] && [ "$(cat "$dir/stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "$dir/ipfs"
    exit 0
fi

# The Go toolchain's usual place, for a shell whose PATH lacks it.
command -v go >/dev/null || [ ! -x /usr/local/go/bin/go ] || PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || { echo "kubo/install.sh: Go >= 1.26.5 is required to build kubo $version" >&2; exit 1; }
go_version=$(go env GOVERSION)
if ! printf '%s\n' go1.26.5 "$go_version" | sort -V -C; then
    echo "kubo/install.sh: kubo $version needs Go >= 1.26.5; this is $go_version" >&2
    exit 1
fi

echo "building kubo $version with $go_version into $dir (a few minutes, once)" >&2
started=$(date +%s)
mkdir -p "$dir"
# -mod=readonly: the build uses exactly the committed go.sum, and fails rather than change it;
# -buildvcs=false: nothing to stamp (and no git needed).
(cd "$here" && GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -o "$dir/ipfs.partial" github.com/ipfs/kubo/cmd/ipfs)
mv "$dir/ipfs.partial" "$dir/ipfs"
echo "$stamp" > "$dir/stamp"
built=$("$dir/ipfs" version)
echo "built $built in $(( $(date +%s) - started )) s" >&2
echo "$dir/ipfs"
