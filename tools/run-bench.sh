#!/usr/bin/env bash
# Runs the end-to-end load cases of BENCHMARKS.md against a fresh release
# build: for each case, starts `tickwire serve` on a free port, drives it
# with `tickwire-load`, scrapes /metrics, and prints one markdown row.
#
#   tools/run-bench.sh            # all cases, 2 s warm-up + 8 s measured each
#   DURATION=4s tools/run-bench.sh "100 10000 all" "100 50000 latest"
#   PROTOCOLS=bin tools/run-bench.sh "100 50000 all"   # binary only
#
# Each case is "CLIENTS RATE MODE"; 1,000 symbols, every client on ["*"].
# Every case runs once per protocol in PROTOCOLS (default "json bin": the
# JSON protocol, then tickwire.v1.bin via `tickwire-load --binary`).
set -euo pipefail
cd "$(dirname "$0")/.."

WARMUP=${WARMUP:-2s}
DURATION=${DURATION:-8s}
read -r -a protocols <<<"${PROTOCOLS:-json bin}"
cases=("$@")
if [ ${#cases[@]} -eq 0 ]; then
  cases=("100 1000 all" "100 10000 all" "100 50000 all" "1000 1000 all" "100 50000 latest" "100 200000 latest")
fi

cargo build --release --quiet --bin tickwire --bin tickwire-load
bin=target/release

metric() { grep -E "^$1 " <<<"$2" | awk '{print $2}'; }

echo "| protocol | clients | rate/s | mode | delivered/s | ideal/s | e2e p50 ms | e2e p99 ms | e2e max ms | server ingest->encode p50/p99 ms | server CPU s/s | CPU us/msg | RSS MB | cseq gaps | overflow lost | failed clients |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for c in "${cases[@]}"; do
 for proto in "${protocols[@]}"; do
  read -r clients rate mode <<<"$c"
  flag=""
  [ "$proto" = bin ] && flag="--binary"
  out=$(mktemp)
  # One load client on loopback: lift the per-address connection limit.
  $bin/tickwire serve --listen 127.0.0.1:0 --symbols 1000 --rate "$rate" --max-connections-per-ip 100000 >"$out" 2>/dev/null &
  pid=$!
  for _ in $(seq 100); do grep -q http "$out" && break; sleep 0.05; done
  addr=$(grep -o '127.0.0.1:[0-9]*' "$out" | head -1)
  cpu0=$(awk '{print $14+$15}' /proc/$pid/stat)
  json=$($bin/tickwire-load --url "ws://$addr/ws" --clients "$clients" --mode "$mode" $flag \
    --warmup "$WARMUP" --duration "$DURATION" --json 2>/dev/null | tail -1 || true)
  cpu1=$(awk '{print $14+$15}' /proc/$pid/stat)
  rss_kb=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
  m=$(curl -s "http://$addr/metrics")
  kill -INT $pid; wait $pid || true
  rm -f "$out"
  python3 - "$json" "$proto" "$clients" "$rate" "$mode" "$cpu0" "$cpu1" "$rss_kb" \
    "$(metric 'tickwire_ingest_to_send_seconds\{quantile="0.5"\}' "$m")" \
    "$(metric 'tickwire_ingest_to_send_seconds\{quantile="0.99"\}' "$m")" \
    "$(metric tickwire_updates_out_total "$m")" "$WARMUP" "$DURATION" <<'EOF'
import json, sys
j, proto, clients, rate, mode, cpu0, cpu1, rss_kb, p50, p99, upd, warm, dur = sys.argv[1:]
try:
    r = json.loads(j)
except Exception:
    print(f"| {proto} | {clients} | {rate} | {mode} | load client failed | | | | | | | | | | | |")
    sys.exit(0)
hz = 100  # clock ticks per second (USER_HZ)
secs = lambda s: float(s.rstrip("s"))
span = secs(warm) + secs(dur) + 1
cpu = (int(cpu1) - int(cpu0)) / hz / span
delivered = r.get("updates_per_s", 0)
ideal = int(clients) * int(rate)
us_per_msg = cpu * 1e6 / max(int(upd) / span, 1)
e2e = r.get("e2e_ms", {})
print(f"| {proto} | {clients} | {int(rate):,} | {mode} | {delivered:,.0f} | {ideal:,} | {e2e.get('p50', 0):.2f} | "
      f"{e2e.get('p99', 0):.2f} | {e2e.get('max', 0):.1f} | {float(p50)*1e3:.2f} / {float(p99)*1e3:.2f} | "
      f"{cpu:.2f} | {us_per_msg:.2f} | {int(rss_kb)/1024:.0f} | {r.get('cseq_gaps', 0)} | {r.get('overflow_lost', 0):,} | {r.get('failed', 0)} |")
EOF
 done
done
