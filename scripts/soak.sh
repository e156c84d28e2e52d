#!/usr/bin/env bash
# The fault soak: three nodes share a 12-partition deployment under steady traffic while
# faults come at random, one at a time, each 3 to 20 s long: a node frozen (SIGSTOP), a node
# cut off from NATS (a TCP proxy the test controls stops passing bytes), a node killed (-9) and
# started again, the NATS server restarted (its data kept). The output stream remembers ids for
# 12 s, shorter than many of the faults. At the end every key's outputs must be in the output stream
# exactly once and in input order, with no dead letters (the integration test `faults::soak`,
# which prints each fault and the figures).
# Usage: SOAK_FAULTS=12 SOAK_MINUTES=10 [SOAK_SEED=n] scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
export SOAK_FAULTS=${SOAK_FAULTS:-12} SOAK_MINUTES=${SOAK_MINUTES:-10}
exec cargo test -p weir-runtime --test integration -- faults::soak --exact --ignored --nocapture
