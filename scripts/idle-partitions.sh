#!/usr/bin/env bash
# What idle partitions cost: one node running P partitions of a no-op deployment with no
# traffic, and a private nats-server on loopback. After a warm-up, prints the CPU time both
# processes use over SECONDS, as a share of one core. Needs `make guests build` first.
# Usage: P=1000 SECONDS_MEASURED=30 NODE_ARGS="--pin-timeout 30s" scripts/idle-partitions.sh [path/to/weir]
set -euo pipefail
cd "$(dirname "$0")/.."
P=${P:-1000}
MEASURE=${SECONDS_MEASURED:-30}
WARM_UP=${WARM_UP:-20}
PORT=${PORT:-4335}
WEIR=${1:-./target/release/weir}
read -r -a NODE_ARGS <<<"${NODE_ARGS:-}"
GUEST=./target/guests/wasm32-wasip2/release/noop.wasm
URL=nats://127.0.0.1:$PORT
DIR=$(mktemp -d)
. scripts/processes.sh
trap cleanup EXIT
w() { "$WEIR" --nats-url "$URL" "$@"; }

# CPU time (user and system) of a process so far, in clock ticks.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

.venv/bin/nats-server -js -a 127.0.0.1 -p "$PORT" -sd "$DIR/js" >"$DIR/server.log" 2>&1 &
SERVER=$!
until (: >/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null; do sleep 0.1; done
w stream create IDLE --subjects 'idle.*.>' --partitions "$P" >/dev/null
"$WEIR" --nats-url "$URL" node --http off --node-id idle "${NODE_ARGS[@]}" 2>"$DIR/node.log" &
NODE=$!
NODE_PIDS+=("$NODE")
w deploy "$GUEST" --tenant bench --name idle --stream IDLE >/dev/null

# Every partition's worker up, and each instance warm: one message each way through.
w publish 'idle.{key}.ev' --count "$((P * 4))" --keys "$((P * 4))" >/dev/null
until w status --json | python3 -c '
import json, sys
d = json.load(sys.stdin)["deployments"][0]["partitions"]
sys.exit(0 if all(p["owners"] and p["lag"] + p["pending"] == 0 for p in d) else 1)'; do
  sleep 1
done
sleep "$WARM_UP"

hz=$(getconf CLK_TCK)
node_start=$(ticks "$NODE")
server_start=$(ticks "$SERVER")
sleep "$MEASURE"
node_used=$(( $(ticks "$NODE") - node_start ))
server_used=$(( $(ticks "$SERVER") - server_start ))
python3 - "$P" "$MEASURE" "$hz" "$node_used" "$server_used" <<'EOF'
import sys
partitions, seconds, hz, node, server = map(int, sys.argv[1:])
share = lambda ticks: 100 * ticks / hz / seconds
print(f"{partitions} idle partitions over {seconds}s: node {share(node):.1f}% of a core, "
      f"nats-server {share(server):.1f}%, together {share(node + server):.1f}%")
EOF
