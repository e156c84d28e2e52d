#!/usr/bin/env bash
# The noisy-neighbour measurement. By default it is `weir bench --neighbour spin`: a calm
# tenant's throughput on a node without --config, with a --config of two tenants, and beside a
# tenant whose handler runs an endless loop on every partition of its own stream, REPEAT times,
# with each tenant's guest CPU. Needs `make guests build` first.
# Usage: N=100000 REPEAT=5 scripts/noisy-neighbour.sh
#
# With NODES=2 it runs two nodes of its own beside a private nats-server instead, and also counts
# what would be false failovers: membership lapses, and pins released as if a node had crashed
# (none should be, since both nodes run throughout).
# Usage: NODES=2 N=10000 scripts/noisy-neighbour.sh
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-1}
if [ "$NODES" -eq 1 ]; then
  exec "${WEIR:-./target/release/weir}" bench --modes wasm --handlers "${HANDLERS:-noop,orders}" \
    --neighbour spin --messages "${N:-100000}" --partitions "${PARTITIONS:-16}" \
    --repeat "${REPEAT:-5}"
fi
N=${N:-10000}
PARTITIONS=${PARTITIONS:-16}
PORT=${PORT:-4334}
WEIR=${WEIR:-./target/release/weir}
GUEST=./target/guests/wasm32-wasip2/release/scripted.wasm
URL=nats://127.0.0.1:$PORT
DIR=$(mktemp -d)
. scripts/processes.sh
trap cleanup EXIT
w() { "$WEIR" --nats-url "$URL" "$@"; }

# Messages of tenant $1's deployments not yet acknowledged (waiting or in hand).
backlog() {
  w status --json | python3 -c '
import json, sys
status = json.load(sys.stdin)
print(sum(p["lag"] + p["pending"] for d in status["deployments"] if d["tenant"] == sys.argv[1]
          for p in d["partitions"]))' "$1"
}

# Publishes N messages for the calm tenant and prints how many it handled per second.
measure() {
  local start took
  start=$(now)
  w publish 'in.{key}.ev' --count "$N" --keys 256 --template 'calm {n}' >/dev/null
  until [ "$(backlog calm)" -eq 0 ]; do sleep 0.05; done
  took=$(python3 -c "print($(now) - $start)")
  python3 -c "print(round($N / $took))"
}

cat >"$DIR/weir.toml" <<EOF
[tenants.calm]
input_streams = ["IN"]
output_subjects = ["out.>"]

[tenants.noisy]
input_streams = ["HIN"]
cpu_time_per_message = "10s"
EOF

.venv/bin/nats-server -js -a 127.0.0.1 -p "$PORT" -sd "$DIR/js" >"$DIR/server.log" 2>&1 &
SERVER=$!
until (: >/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null; do sleep 0.1; done
w stream create IN --subjects 'in.*.>' --partitions "$PARTITIONS" >/dev/null
w stream create OUT --subjects 'out.>' >/dev/null
w stream create HIN --subjects 'hin.*.>' --partitions "$PARTITIONS" >/dev/null
for i in $(seq 1 "$NODES"); do
  "$WEIR" --nats-url "$URL" node --http off --node-id "noisy-neighbour-$i" --config "$DIR/weir.toml" \
    2>"$DIR/node-$i.log" &
  NODE_PIDS+=($!)
done
w deploy "$GUEST" --tenant calm --name echo --stream IN --output 'out.>' >/dev/null

w publish 'in.{key}.ev' --count 1000 --keys 256 --template 'warm-up {n}' >/dev/null
until [ "$(backlog calm)" -eq 0 ]; do sleep 0.05; done
alone=$(measure)
echo "calm tenant alone: $alone messages/s ($N messages, $PARTITIONS partitions)"

# Every partition of the noisy tenant spins for 10 s of CPU per delivery, is retried 100 ms
# later, and does so for the whole measurement.
w deploy "$GUEST" --tenant noisy --name spin --stream HIN --max-deliver 1000 --backoff 100ms \
  --handler-timeout 60s >/dev/null
w publish 'hin.{key}.ev' --count 256 --keys 256 --template spin >/dev/null
sleep 2
beside=$(measure)
echo "calm tenant beside an endless loop on all $PARTITIONS partitions: $beside messages/s"
python3 -c "print(f'ratio: {$beside / $alone:.2f}')"
if [ "$NODES" -gt 1 ]; then
  lapses=$(cat "$DIR"/node-*.log | grep -c "membership lapsed" || true)
  released=$(cat "$DIR"/node-*.log | grep -c "is gone: releasing its pin" || true)
  echo "false failovers: $released pin(s) released, $lapses membership lapse(s) over the run"
fi
