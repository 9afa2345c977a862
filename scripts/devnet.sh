#!/usr/bin/env bash
# A local ledger network over real IPFS: K validators (`ledger-node run`), each on its own kubo
# daemon on loopback (the tests' installer and setup) or on an embedded IPFS peer, a load of
# transfers sent with the CLI, the commits, and a check that every node reached the same state
# root. Stops everything it started, by PID.
#
#   scripts/devnet.sh [--nodes K] [--backend B] [--transfers N] [--load M] [--rate R] [--link-delay D] [--block-interval D] [--dir DIR] [--hold]
#
#   --nodes K       validators (default 4)
#   --backend B     ipfs-rpc: each validator on its own kubo daemon (default); embedded: each an
#                   IPFS peer in its own process, no daemon at all; mixed: the first half on kubo
#                   daemons, the rest embedded, all in one network
#   --transfers N   transfers per account; account i sends through validator i (default 5)
#   --load M        then `ledger-node load`: M transfers from the K accounts as one burst, 32 in
#                   flight, spread over every validator; its report goes to DIR/load.json (default 0)
#   --rate R        send the load at R transfers per second rather than as a burst
#   --link-delay D  D (e.g. 20ms) on every link between two daemons, both ways: each daemon's peers
#                   reach its swarm through a relay that holds every byte for D (ipfs-testnet;
#                   daemons only)
#   --block-interval D  the validators' min_block_interval (their pace while busy; default 5ms)
#   --dir DIR       where keys, genesis, configs, data and logs go (default: a fresh temp dir)
#   --hold          keep the network running after the check, until Ctrl-C
#
# LEDGER_NODE_BIN and IPFS_TESTNET_BIN name prebuilt binaries; otherwise this script builds them.
set -euo pipefail
cd "$(dirname "$0")/.."

nodes=4 backend=ipfs-rpc transfers=5 load=0 rate="" link_delay="" block_interval="" dir="" hold=0
while [ $# -gt 0 ]; do
    case $1 in
        --nodes) nodes=$2; shift 2 ;;
        --backend) backend=$2; shift 2 ;;
        --transfers) transfers=$2; shift 2 ;;
        --load) load=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --hold) hold=1; shift ;;
        --rate) rate=$2; shift 2 ;;
        --link-delay) link_delay=$2; shift 2 ;;
        --block-interval) block_interval=$2; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "devnet.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ "$nodes" -ge 1 ] && [ "$transfers" -ge 1 ] || { echo "devnet.sh: --nodes and --transfers must be at least 1" >&2; exit 2; }
# Validators 0 .. on_kubo-1 run on kubo daemons, the rest embedded.
case $backend in
    ipfs-rpc) on_kubo=$nodes ;;
    embedded) on_kubo=0 ;;
    mixed) on_kubo=$(((nodes + 1) / 2)) ;;
    *) echo "devnet.sh: --backend is ipfs-rpc, embedded or mixed, not $backend" >&2; exit 2 ;;
esac
[ -z "$link_delay" ] || [ "$on_kubo" -eq "$nodes" ] || { echo "devnet.sh: --link-delay needs --backend ipfs-rpc" >&2; exit 2; }
[ -n "$dir" ] || dir=$(mktemp -d "${TMPDIR:-/tmp}/ledger-devnet.XXXXXX")
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# Wait for FILE to exist, at most SECONDS, while PID lives.
wait_for_file() {
    local file=$1 seconds=$2 pid=$3 log=$4
    for _ in $(seq $((seconds * 10))); do
        [ -s "$file" ] && return 0
        kill -0 "$pid" 2>/dev/null || { echo "devnet.sh: process $pid exited; its log ($log):" >&2; tail -20 "$log" >&2; exit 1; }
        sleep 0.1
    done
    echo "devnet.sh: $file did not appear within ${seconds}s; see $log" >&2
    exit 1
}

pids=()
stop_all() {
    [ ${#pids[@]} -gt 0 ] || return 0
    step "stopping ${#pids[@]} processes (SIGTERM by PID)"
    # Validators first, waited for (they flush their stores and record their peers), then daemons.
    local daemons_end=${daemon_pids:-${#pids[@]}} pid
    for pid in "${pids[@]:daemons_end}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]:daemons_end}"; do wait "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]:0:daemons_end}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]:0:daemons_end}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap stop_all EXIT
trap 'exit 130' INT TERM

if [ "$on_kubo" -gt 0 ]; then
    step "installing the IPFS daemon (kubo, built once)"
    ./comms-ipfs/kubo/install.sh >/dev/null
fi

if [ -z "${LEDGER_NODE_BIN:-}" ] || { [ "$on_kubo" -gt 0 ] && [ -z "${IPFS_TESTNET_BIN:-}" ]; }; then
    step "building ledger-node and ipfs-testnet"
    cargo build -p node --features testnet --bins --locked
    bin_dir=${CARGO_TARGET_DIR:-target}/$(rustc -vV | sed -n 's/^host: //p')/debug
    LEDGER_NODE_BIN=${LEDGER_NODE_BIN:-$bin_dir/ledger-node}
    IPFS_TESTNET_BIN=${IPFS_TESTNET_BIN:-$bin_dir/ipfs-testnet}
fi
ledger() { "$LEDGER_NODE_BIN" "$@"; }

daemons=()
daemon_pids=0
if [ "$on_kubo" -gt 0 ]; then
    step "starting $on_kubo IPFS daemons"
    delay=()
    [ -z "$link_delay" ] || delay=(--link-delay "$link_delay")
    "$IPFS_TESTNET_BIN" --count "$on_kubo" "${delay[@]}" --out "$dir/daemons.txt" 2>"$dir/ipfs-testnet.log" &
    pids+=($!)
    wait_for_file "$dir/daemons.txt" 180 "${pids[0]}" "$dir/ipfs-testnet.log"
    daemon_pids=${#pids[@]}
    mapfile -t daemons <"$dir/daemons.txt"
    printf '  %s\n' "${daemons[@]}"
fi

step "keys and genesis"
genesis_args=()
accounts=()
for ((i = 0; i < nodes; i++)); do
    ledger keygen --out "$dir/validator-$i.key" >/dev/null
    accounts+=("$(ledger keygen --out "$dir/account-$i.key")")
    genesis_args+=(--validator "$dir/validator-$i.key" --balance "$dir/account-$i.key=1000000")
done
chain=$(ledger genesis --chain-id devnet --out "$dir/genesis.json" "${genesis_args[@]}")
echo "  chain $chain: $nodes validators, $nodes accounts of 1000000"

step "starting $nodes validators ($on_kubo on kubo daemons, $((nodes - on_kubo)) embedded)"
# A validator on a daemon connects its daemon to the other daemons; an embedded one dials every
# daemon and every embedded peer started before it (they dial back nobody: one side suffices).
embedded_peers=()
for ((i = 0; i < nodes; i++)); do
    peers=()
    if [ "$i" -lt "$on_kubo" ]; then
        read -r api _ <<<"${daemons[i]}"
        for ((j = 0; j < on_kubo; j++)); do
            [ "$j" -eq "$i" ] || peers+=(--peer "${daemons[j]#* }")
        done
        how=(--backend ipfs-rpc --ipfs-api "$api")
    else
        for ((j = 0; j < on_kubo; j++)); do peers+=(--peer "${daemons[j]#* }"); done
        for address in "${embedded_peers[@]}"; do peers+=(--peer "$address"); done
        how=(--backend embedded --listen /ip4/127.0.0.1/tcp/0)
    fi
    ledger config --genesis "$dir/genesis.json" --key "$dir/validator-$i.key" \
        --data-dir "$dir/node-$i" --api 127.0.0.1:0 "${how[@]}" "${peers[@]}" \
        --out "$dir/node-$i.toml" --force
    [ -z "$block_interval" ] ||
        sed -i "s/^min_block_interval = .*/min_block_interval = \"$block_interval\"/" "$dir/node-$i.toml"
    RUST_LOG=${RUST_LOG:-info} "$LEDGER_NODE_BIN" run --config "$dir/node-$i.toml" 2>"$dir/node-$i.log" &
    pids+=($!)
    if [ "$i" -ge "$on_kubo" ]; then
        wait_for_file "$dir/node-$i/p2p" 120 "${pids[-1]}" "$dir/node-$i.log"
        embedded_peers+=("$(head -1 "$dir/node-$i/p2p")")
    fi
done
urls=()
for ((i = 0; i < nodes; i++)); do
    wait_for_file "$dir/node-$i/api" 120 "${pids[i + daemon_pids]}" "$dir/node-$i.log"
    urls+=("$(cat "$dir/node-$i/api")")
    echo "  validator $i: ${urls[i]}  (log $dir/node-$i.log)"
done

step "sending $((nodes * transfers)) transfers"
sending=$(date +%s.%N)
for ((n = 0; n < transfers; n++)); do
    for ((i = 0; i < nodes; i++)); do
        wait=()
        # Each account's last transfer waits for its commit.
        [ "$n" -lt $((transfers - 1)) ] || wait=(--wait 120s)
        ledger tx --node "${urls[i]}" --key "$dir/account-$i.key" --nonce "$n" "${wait[@]}" \
            transfer --to "${accounts[(i + 1) % nodes]}" --amount $((n + 1)) >/dev/null
    done
done
echo "  all committed, $(awk -v from="$sending" -v to="$(date +%s.%N)" 'BEGIN { printf "%.1f", to - from }') s after the first was sent"

if [ "$load" -gt 0 ]; then
    pace=(); how="as a burst"
    [ -z "$rate" ] || { pace=(--rate "$rate"); how="at $rate per second"; }
    step "load: $load transfers $how over $nodes validators"
    keys=()
    for ((i = 0; i < nodes; i++)); do keys+=(--key "$dir/account-$i.key"); done
    node_args=()
    for url in "${urls[@]}"; do node_args+=(--node "$url"); done
    ledger load "${node_args[@]}" "${keys[@]}" --count "$load" "${pace[@]}" --quiet \
        --json "$dir/load.json" --svg "$dir/load.svg"
fi

step "latest commits of validator 0"
ledger query --node "${urls[0]}" commits --limit 1

step "agreement"
ledger query agreement "${urls[@]}"

step "a light client's check: account 0 at validator 1, proven against the genesis alone"
# A checkpoint is certified a few rounds after every 16th commit: until then the node says so.
for ((try = 1; ; try++)); do
    if verified=$(ledger query --node "${urls[1]}" balance "${accounts[0]}" --verify \
        --genesis "$dir/genesis.json" 2>&1); then
        echo "$verified"
        break
    fi
    [ "$try" -lt 60 ] || { echo "$verified" >&2; exit 1; }
    sleep 1
done

if [ "$hold" -eq 1 ]; then
    step "running; try: ledger-node query --node ${urls[0]} status   (Ctrl-C stops everything)"
    wait "${pids[0]}"
fi
