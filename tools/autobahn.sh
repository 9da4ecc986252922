#!/usr/bin/env bash
# WebSocket conformance: runs the Autobahn test cases (the PyPI `kosoku`
# fuzzing client, Python 3) against tickwire's WebSocket layer and compares
# every case's verdict with tests/autobahn/expected.json.
#
#   tools/autobahn.sh            run and compare (`cargo test` runs it: tests/autobahn.rs)
#   tools/autobahn.sh --update   run and rewrite the expected file (review the diff!)
#
# The server runs with --echo-endpoint: /echo goes through the same upgrade
# and WebSocket framing (src/socket/ws.rs) as a market-data session, with
# larger message limits (Autobahn group 9 sends messages up to 16 MiB),
# and permessage-deflate on (--compression on), negotiated as for any
# client that offers it (groups 12 and 13 test it).
#
# Fails on any FAILED verdict, any case whose verdict differs from the
# expected file, a case missing or added, or a run longer than
# AUTOBAHN_TIMEOUT seconds (default 600).
# Environment: AUTOBAHN_GROUPS (`all`, the default, or `core`: every group but
# 12-13, permessage-deflate, which send about 130 MB each way in some cases;
# `cargo test` runs `core`, about 10 s, and .ci/run runs `all`, 2 to 4
# minutes), TICKWIRE_BIN (default: the release build, built if needed: the
# debug build's framing makes groups 12-13 take three times as long),
# AUTOBAHN_OUT (report directory, default target/autobahn), KOSOKU (default:
# the one in the venv that `cargo test` provisions, tests/provision.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

update=0
case "${1:-}" in
  --update) update=1 ;;
  "") ;;
  *) echo "usage: $0 [--update]" >&2; exit 2 ;;
esac

kosoku="${KOSOKU:-${CARGO_TARGET_DIR:-target}/tmp/venv/bin/kosoku}"
if [ ! -x "$kosoku" ]; then
  echo "autobahn: no kosoku at $kosoku: run \`cargo test\` once (it provisions the venv with tests/python/requirements.txt)" >&2
  exit 2
fi

bin="${TICKWIRE_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --quiet --release --bin tickwire
  bin="${CARGO_TARGET_DIR:-target}/release/tickwire"
fi
out="${AUTOBAHN_OUT:-target/autobahn}"
rm -rf "$out"
mkdir -p "$out"
# Created here, not by the background job's redirections: the loop below may
# read server.out before the shell that starts the server has opened it.
: >"$out/server.out"
: >"$out/server.err"

# A small synthetic feed: the echo does not use it, and it should cost nothing.
"$bin" serve --listen 127.0.0.1:0 --echo-endpoint --compression on --shards 1 --symbols 10 --rate 10 \
  >"$out/server.out" 2>"$out/server.err" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT

addr=""
for _ in $(seq 100); do
  addr=$(sed -n 's|^tickwire listening on http://\([^/]*\)/.*|\1|p' "$out/server.out")
  [ -n "$addr" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$out/server.err" >&2; echo "server did not start" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "server printed no address" >&2; exit 1; }

echo "== kosoku fuzzingclient against ws://$addr/echo (groups: ${AUTOBAHN_GROUPS:-all})"
status=0
groups="${AUTOBAHN_GROUPS:-all}"
case "$groups" in
  all) exclude=() ;;
  core) exclude=(-x '12.*' -x '13.*') ;;
  *) echo "AUTOBAHN_GROUPS must be all or core" >&2; exit 2 ;;
esac
timeout "${AUTOBAHN_TIMEOUT:-600}" "$kosoku" -m fuzzingclient "${exclude[@]}" -p 2 \
  -o "$out/reports" "ws://$addr/echo" >"$out/kosoku.log" 2>&1 || status=$?
tail -n 3 "$out/kosoku.log"
if [ "$status" -eq 124 ]; then
  echo "autobahn: timed out after ${AUTOBAHN_TIMEOUT:-600} s" >&2
  exit 1
fi
# kosoku exits 1 when a case did not pass; the comparison below says which.

python3 - "$out/reports/index.json" tests/autobahn/expected.json "$update" "${AUTOBAHN_GROUPS:-all}" <<'EOF'
import collections, json, sys

index_path, expected_path, update = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
core_only = sys.argv[4] == "core"
if update and core_only:
    sys.exit("autobahn: --update needs every group (AUTOBAHN_GROUPS=all)")
try:
    index = json.load(open(index_path))
except FileNotFoundError:
    sys.exit(f"autobahn: no report at {index_path} (see kosoku.log)")
(agent, cases), = index.items()

def key(case_id):
    return tuple(int(p) for p in case_id.split("."))

got = {c: {"behavior": v["behavior"], "behaviorClose": v["behaviorClose"]}
       for c, v in sorted(cases.items(), key=lambda kv: key(kv[0]))}
counts = collections.Counter(v["behavior"] for v in got.values())
close_counts = collections.Counter(v["behaviorClose"] for v in got.values())
print(f"autobahn: {len(got)} cases: " + ", ".join(f"{n} {b}" for b, n in counts.most_common()))
print("autobahn: closing handshake: " + ", ".join(f"{n} {b}" for b, n in close_counts.most_common()))

if update:
    doc = {
        "about": "Autobahn verdicts of tickwire's /echo (tools/autobahn.sh), "
                 "every group (12-13: permessage-deflate). Regenerate with "
                 "tools/autobahn.sh --update and review the diff.",
        "kosoku": "0.1.0",
        "summary": dict(sorted(counts.items())),
        "cases": got,
    }
    with open(expected_path, "w") as f:
        f.write("{\n")
        for k in ("about", "kosoku", "summary"):
            f.write(f"  {json.dumps(k)}: {json.dumps(doc[k], sort_keys=True)},\n")
        f.write('  "cases": {\n')
        rows = [f"    {json.dumps(c)}: {json.dumps(v, sort_keys=True)}" for c, v in got.items()]
        f.write(",\n".join(rows) + "\n  }\n}\n")
    print(f"autobahn: wrote {expected_path}")

expected = json.load(open(expected_path))["cases"]
if core_only:
    expected = {c: v for c, v in expected.items() if c.split(".")[0] not in ("12", "13")}
problems = []
for c, v in got.items():
    # kosoku's own pass rule: OK, NON-STRICT or INFORMATIONAL both ways.
    if not {v["behavior"], v["behaviorClose"]} <= {"OK", "NON-STRICT", "INFORMATIONAL"}:
        problems.append(f"{c}: {v['behavior']} / close {v['behaviorClose']} (see {index_path})")
    if c not in expected:
        problems.append(f"{c}: not in {expected_path}")
    elif expected[c] != v:
        problems.append(f"{c}: expected {expected[c]}, got {v}")
for c in expected.keys() - got.keys():
    problems.append(f"{c}: expected but not run")
if problems:
    print("autobahn: FAILED", *problems, sep="\n  ")
    sys.exit(1)
print(f"autobahn: every case as expected ({expected_path})")
EOF
