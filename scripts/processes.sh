# Process helpers for the measurement scripts: source it, put the pids to stop in NODE_PIDS and
# SERVER, and `trap cleanup EXIT`.
NODE_PIDS=()
SERVER=

# Stops the processes given: SIGTERM, then SIGKILL for what still runs 10 s later.
stop() {
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$@" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$@" 2>/dev/null || true
}

# Nodes first, while their server is still there to drain against; then the server; then $DIR.
cleanup() {
  stop "${NODE_PIDS[@]}"
  [ -z "$SERVER" ] || stop "$SERVER"
  wait 2>/dev/null || true
  [ -z "${DIR:-}" ] || rm -rf "$DIR"
}

now() { date +%s.%N; }
