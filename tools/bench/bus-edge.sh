#!/usr/bin/env bash
# A tickwire-bench target that is an edge node: starts nats-server (on a
# free port), `tickwire ingest` with the synthetic feed, then becomes
# (exec) `tickwire serve --nats`, so the harness's pid, CPU and RSS are the
# edge's. The nats-server and the ingest stop when the edge does.
#
#   tools/bench/bus-edge.sh SYMBOLS RATE [extra edge flags...]
#
# Used by tools/bench/scenarios/bus.toml. Logs: target/bus-bench/.
set -euo pipefail
cd "$(dirname "$0")/../.."
symbols=$1 rate=$2
shift 2
BIN=target/release/tickwire
LOGS=target/bus-bench
mkdir -p "$LOGS"
NATS_BIN=$(command -v nats-server || echo /usr/sbin/nats-server)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "bus-edge.sh: nothing listens on port $1" >&2
  exit 1
}

nats_port=$(port)
"$NATS_BIN" -js -a 127.0.0.1 -p "$nats_port" -sd "$LOGS/js-$nats_port" >"$LOGS/nats-$nats_port.log" 2>&1 &
nats=$!
wait_port "$nats_port"
ingest_port=$(port)
"$BIN" ingest --nats "nats://127.0.0.1:$nats_port" --listen "127.0.0.1:$ingest_port" \
  --symbols "$symbols" --rate "$rate" --shards 1 >"$LOGS/ingest-$nats_port.log" 2>&1 &
ingest=$!
wait_port "$ingest_port"
echo "bus-edge.sh: NATS on $nats_port (pid $nats), ingest on $ingest_port (pid $ingest)" >&2
# Stops the ingest and NATS once this process (the edge, after exec) ends.
me=$$
(
  while kill -0 "$me" 2>/dev/null; do sleep 0.2; done
  kill -INT "$ingest" 2>/dev/null || true
  sleep 0.5
  kill "$nats" 2>/dev/null || true
  rm -rf "$LOGS/js-$nats_port"
) >/dev/null 2>&1 </dev/null &
exec "$BIN" serve --nats "nats://127.0.0.1:$nats_port" --listen 127.0.0.1:0 \
  --max-connections-per-ip 100000 "$@"
