#!/usr/bin/env bash
# What the compile cache saves on a large component: `weir deploy` and a node's start-up for
# the Python orders example (about 18 MB), with `--compile-cache off` and with a warm cache.
# Needs a release build (`cargo build --release -p weir-runtime`) and the component
# (`make py-guests`). Talks to a nats-server of its own on 127.0.0.1:4333, which it stops.
set -euo pipefail
cd "$(dirname "$0")/.."
WEIR=./target/release/weir
COMPONENT=target/guests/py/py-orders.wasm
URL=nats://127.0.0.1:4333
RUNS=${RUNS:-3}
[ -x "$WEIR" ] || { echo "no $WEIR: cargo build --release -p weir-runtime" >&2; exit 1; }
[ -f "$COMPONENT" ] || { echo "no $COMPONENT: make py-guests" >&2; exit 1; }

work=$(mktemp -d)
node=
.venv/bin/nats-server -js -a 127.0.0.1 -p 4333 -sd "$work/js" >/dev/null 2>&1 &
nats=$!
trap 'kill $nats ${node:+$node} 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do "$WEIR" ls --nats-url $URL >/dev/null 2>&1 && break; sleep 0.1; done
"$WEIR" stream create IN --subjects 'in.*.>' --partitions 4 --nats-url $URL >/dev/null
"$WEIR" stream create OUT --subjects 'out.>' --nats-url $URL >/dev/null

ms() { echo $(( $(date +%s%N) / 1000000 )); }
deploy() {
  local start; start=$(ms)
  "$WEIR" deploy "$COMPONENT" --tenant acme --name py --stream IN --output 'out.>' \
    --nats-url $URL --compile-cache "$1" >/dev/null 2>&1
  echo "  $(( $(ms) - start )) ms"
}
# The node logs how long it took to have the version ready, and whether it compiled it.
start_node() {
  "$WEIR" node --nats-url $URL --http off --compile-cache "$1" --node-id n1 >"$work/node.log" 2>&1 &
  node=$!
  for _ in $(seq 600); do grep -q "version .* in " "$work/node.log" && break; sleep 0.1; done
  echo "  $(grep -o "version .* in [0-9.]*[a-zµ]*" "$work/node.log" | head -1)"
  kill $node; wait $node 2>/dev/null || true; node=
}

echo "weir deploy, --compile-cache off:"
for _ in $(seq "$RUNS"); do deploy off; done
echo "weir deploy, first with an empty cache, then warm:"
for _ in $(seq $((RUNS + 1))); do deploy "$work/cache"; done
echo "node start-up, --compile-cache off:"
for _ in $(seq "$RUNS"); do start_node off; done
echo "node start-up, warm cache:"
for _ in $(seq "$RUNS"); do start_node "$work/cache"; done
