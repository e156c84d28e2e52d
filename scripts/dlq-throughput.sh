#!/usr/bin/env bash
# How fast dead letters are made, listed and replayed: N messages rejected by the scripted test
# guest over 16 partitions, with NODES nodes (each running a mover), on a private nats-server
# on loopback. Needs `make guests build` first. Usage: N=20000 NODES=2 scripts/dlq-throughput.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000}
NODES=${NODES:-1}
PORT=${PORT:-4333}
WEIR=./target/release/weir
GUEST=./target/guests/wasm32-wasip2/release/scripted.wasm
URL=nats://127.0.0.1:$PORT
DIR=$(mktemp -d)
. scripts/processes.sh
trap cleanup EXIT
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }

.venv/bin/nats-server -js -a 127.0.0.1 -p "$PORT" -sd "$DIR/js" >"$DIR/server.log" 2>&1 &
SERVER=$!
w() { "$WEIR" --nats-url "$URL" "$@"; }
until (: >/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null; do sleep 0.1; done
w stream create IN --subjects 'in.*.>' --partitions 16 >/dev/null
w stream create OUT --subjects 'out.>' >/dev/null
for i in $(seq 1 "$NODES"); do
  "$WEIR" --nats-url "$URL" node --http off --node-id "n$i" 2>"$DIR/node$i.log" &
  NODE_PIDS+=($!)
done
w deploy "$GUEST" --tenant bench --name dead --stream IN --output 'out.>' >/dev/null

start=$(now)
w publish 'in.{key}.ev' --count "$N" --keys 64 --template 'reject bad {n}' >/dev/null
until [ "$(w status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["deployments"][0]["dead_letters"])')" -ge "$N" ]; do
  sleep 0.2
done
took=$(elapsed "$start" "$(now)")
echo "nodes=$NODES: $N messages published and dead-lettered in ${took}s ($(python3 -c "print(round($N / $took))") dead letters/s)"
start=$(now); w dlq ls --json >/dev/null
echo "dlq ls --json of $N: $(elapsed "$start" "$(now)")s"
start=$(now); w dlq replay --all --to out.replayed >/dev/null
echo "dlq replay --all of $N: $(elapsed "$start" "$(now)")s"
