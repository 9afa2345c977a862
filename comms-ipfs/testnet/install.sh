#!/usr/bin/env bash
# Provisions the real IPFS daemons the comms-ipfs tests run against: js-ipfs 0.66.1 from npm (it serves
# kubo's /api/v0 RPC over a real libp2p swarm with gossipsub and bitswap; kubo itself cannot be
# installed from the package registries this project may reach). Installs from the committed lockfile,
# then applies the patches below so that the daemon behaves like kubo where the tests depend on it.
# Idempotent; each patch is checked, and the script fails loudly if one no longer applies.
set -euo pipefail
cd "$(dirname "$0")"

command -v node >/dev/null || { echo "install.sh: Node.js (>= 18) is required for the test daemons" >&2; exit 1; }
if [ ! -x node_modules/.bin/jsipfs ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi

# patch FILE OLD NEW WHY: replaces OLD by NEW once (unless NEW is already there).
patch() {
    local file=node_modules/$1 old=$2 new=$3
    grep -qF -- "$new" "$file" && return 0
    grep -qF -- "$old" "$file" || { echo "install.sh: cannot patch $file ($4)" >&2; exit 1; }
    OLD=$old NEW=$new perl -0pi -e 's/\Q$ENV{OLD}\E/$ENV{NEW}/' "$file"
    grep -qF -- "$new" "$file"
}

# 1. Publishing to a topic nobody subscribes to succeeds in kubo; js-ipfs answers 500 InsufficientPeers.
patch ipfs-core-config/src/libp2p-pubsub-routers.js \
    'fallbackToFloodsub: true,' 'fallbackToFloodsub: true, allowPublishToZeroPeers: true,' \
    'publish with no subscribers'
# 2. kubo accepts a 1 MiB block or message plus its multipart framing; js-ipfs's HTTP server (hapi)
#    refuses any request body over 1 MiB with 413.
patch @hapi/hapi/lib/config.js \
    'maxBytes: Validate.number().integer().positive().default(1024 * 1024)' \
    'maxBytes: Validate.number().integer().positive().default(4 * 1024 * 1024)' \
    'request body limit'
