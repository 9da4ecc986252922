#!/usr/bin/env bash
# A tickwire cluster on this machine: nats-server (JetStream on), one
# `tickwire ingest` and two edges (`tickwire serve --nats`), then their
# URLs. Ctrl-C stops them all.
#
#   tools/cluster.sh [any source flags for the ingest, e.g. --rate 5000 or --replay FILE]
#
# Ports (override with the environment): NATS_PORT=4222, INGEST_PORT=8080,
# EDGE_PORTS="8081 8082". Logs go to target/cluster/*.log.
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_PORT=${NATS_PORT:-4222}
INGEST_PORT=${INGEST_PORT:-8080}
EDGE_PORTS=${EDGE_PORTS:-"8081 8082"}
LOGS=target/cluster
mkdir -p "$LOGS"

if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
  echo "nats-server is missing: install it with \`apt-get install -y nats-server\`" >&2
  exit 1
fi
NATS_BIN=$(command -v nats-server || echo /usr/sbin/nats-server)

cargo build --release --quiet --bin tickwire
BIN=target/release/tickwire

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping..."
  # The edges and the ingest first (they close their clients with 1012), NATS last.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  exit 0
}
trap stop INT TERM EXIT

# Waits (at most 10 s) until something listens on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on port $1; see $LOGS/" >&2
  exit 1
}

"$NATS_BIN" -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$LOGS/jetstream" >"$LOGS/nats.log" 2>&1 &
pids+=($!)
wait_port "$NATS_PORT"
NATS=nats://127.0.0.1:$NATS_PORT

"$BIN" ingest --nats "$NATS" --listen "127.0.0.1:$INGEST_PORT" "$@" >"$LOGS/ingest.log" 2>&1 &
pids+=($!)
wait_port "$INGEST_PORT"

n=0
for port in $EDGE_PORTS; do
  n=$((n + 1))
  "$BIN" serve --nats "$NATS" --listen "127.0.0.1:$port" --node-name "edge-$n" \
    >"$LOGS/edge-$n.log" 2>&1 &
  pids+=($!)
done
for port in $EDGE_PORTS; do wait_port "$port"; done

echo "NATS:    $NATS (JetStream on; logs in $LOGS/)"
echo "ingest:  http://127.0.0.1:$INGEST_PORT/  (metrics: http://127.0.0.1:$INGEST_PORT/metrics)"
n=0
for port in $EDGE_PORTS; do
  n=$((n + 1))
  echo "edge-$n:  http://127.0.0.1:$port/  ws://127.0.0.1:$port/ws  (metrics: /metrics)"
done
echo "Ctrl-C stops them all."
wait -n "${pids[@]}" || true
echo "a process ended; see $LOGS/" >&2
