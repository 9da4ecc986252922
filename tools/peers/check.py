#!/usr/bin/env python3
"""Keeps the reference peers in tools/peers/ honest: starts each one on a small
workload, connects one client and checks the contract of tools/peers/README.md.

For each peer: start it with `--port 0 --symbols 10 --rate 200`, read the
`listening on ws://...` line, connect with `?stamps=1&time_unit=ns`, check the
welcome, subscribe to everything, check the `subscribed` reply, then read
quotes for about a second and check that every field is present with the
right type, that the stamps are plausible (t <= ti <= to, in ns, within a few
seconds of now), that `seq` is contiguous per symbol and `cseq` per connection,
and that about R quotes per second arrived. Finally SIGTERM must make the
peer exit with status 0. Every step has a timeout.

Usage (from the repository root), after one `cargo test`, which provisions
the Python venv (target/tmp/venv, tests/python/requirements.txt) and the
node-ws peer's node_modules, and checks those two peers itself (tests/peers.rs):
    cargo build --release -p tokio-broadcast-peer
    target/tmp/venv/bin/python tools/peers/check.py [--only node-ws,python-websockets,tokio-broadcast]
                                                     [--rust-bin target/release/tokio-broadcast-peer]

Needs Python 3.9+ with `websockets` 13 or later (the peer itself needs 17.4,
tools/peers/python-websockets/requirements.txt; the venv has it) and Node.js 18+.
The Python peer runs with the interpreter that runs this script.
Exits 0 when every peer passes, 1 otherwise, 2 when a prerequisite is missing.
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

SYMBOLS = 10
RATE = 200
READ_SECONDS = 1.0
# Node's stamps are doubles (about 0.25 us resolution at today's epoch ns):
# allow a little disorder between t, ti and to.
STAMP_SLACK_NS = 1_000
QUOTE_FIELDS = {
    "type": str,
    "sym": str,
    "seq": int,
    "cseq": int,
    "bp": (int, float),
    "bs": int,
    "ap": (int, float),
    "as": int,
    "t": int,
    "ti": int,
    "to": int,
}


class CheckFailed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise CheckFailed(what)


def peers(rust_bin):
    return {
        "node-ws": ["node", os.path.join(HERE, "node-ws", "server.js")],
        "python-websockets": [sys.executable, os.path.join(HERE, "python-websockets", "server.py")],
        "tokio-broadcast": [rust_bin],
    }


def prerequisites(name, cmd):
    """Returns None when the peer can run, else what is missing."""
    if name == "node-ws":
        if shutil.which("node") is None:
            return "node is not on PATH (Node.js 18+ is required)"
        if not os.path.isdir(os.path.join(HERE, "node-ws", "node_modules", "ws")):
            return "ws is not installed: run `cargo test` once (it runs `npm ci --prefix tools/peers/node-ws`)"
    if name == "tokio-broadcast" and not os.access(cmd[0], os.X_OK):
        return f"{cmd[0]} not found: run `cargo build --release -p tokio-broadcast-peer`"
    return None


async def read_line(stream, timeout):
    line = await asyncio.wait_for(stream.readline(), timeout)
    return line.decode(errors="replace").strip()


async def check_peer(name, cmd):
    from websockets.asyncio.client import connect

    args = ["--port", "0", "--symbols", str(SYMBOLS), "--rate", str(RATE)]
    proc = await asyncio.create_subprocess_exec(
        *cmd, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        line = await read_line(proc.stdout, 10)
        m = re.fullmatch(r"listening on ws://127\.0\.0\.1:(\d+)/ws", line)
        expect(m, f"first stdout line {line!r} is not 'listening on ws://127.0.0.1:PORT/ws'")
        port = int(m.group(1))
        expect(port > 0, "port 0 was printed")

        url = f"ws://127.0.0.1:{port}/ws?stamps=1&time_unit=ns"
        async with connect(url, open_timeout=5, max_queue=None) as ws:
            welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
            expect(isinstance(welcome, list) and len(welcome) == 1, f"welcome frame {welcome!r}")
            w = welcome[0]
            expect(w.get("type") == "welcome", f"first message is not a welcome: {w!r}")
            for key, value in (("time_unit", "ns"), ("hb_ms", 1000), ("epoch", "peer")):
                expect(w.get(key) == value, f"welcome.{key} is {w.get(key)!r}, expected {value!r}")
            expect(re.fullmatch(r"p-\d+", str(w.get("session"))), f"welcome.session {w.get('session')!r}")
            expect(re.fullmatch(r"[\w.-]+/[\w.-]+", str(w.get("server"))), f"welcome.server {w.get('server')!r}")

            await ws.send(json.dumps({"type": "subscribe", "symbols": ["*"], "mode": "all", "id": 1}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            expect(isinstance(reply, list) and len(reply) == 1, f"subscribed frame {reply!r}")
            r = reply[0]
            expect(r.get("type") == "subscribed", f"reply to subscribe is not 'subscribed': {r!r}")
            expect(r.get("id") == 1 and r.get("cseq") == 1, f"subscribed id/cseq: {r!r}")
            expect(isinstance(r.get("subs"), list) and isinstance(r.get("rejected"), list), f"subscribed: {r!r}")

            quotes = []
            start = time.monotonic()
            while time.monotonic() - start < READ_SECONDS:
                try:
                    frame = await asyncio.wait_for(ws.recv(), 0.5)
                except asyncio.TimeoutError:
                    raise CheckFailed("no quote for 0.5 s")
                received_ns = time.time_ns()
                msgs = json.loads(frame)
                expect(isinstance(msgs, list) and len(msgs) == 1, f"not one message per frame: {frame[:200]}")
                quotes.append((msgs[0], received_ns))
            elapsed = time.monotonic() - start

        last_cseq = 1
        last_seq = {}
        for q, received_ns in quotes:
            for field, kind in QUOTE_FIELDS.items():
                expect(field in q, f"quote without {field!r}: {q!r}")
                expect(
                    isinstance(q[field], kind) and not isinstance(q[field], bool),
                    f"quote field {field!r} has type {type(q[field]).__name__}: {q!r}",
                )
            expect(q["type"] == "q", f"unexpected message type: {q!r}")
            expect(re.fullmatch(r"S\d{4}", q["sym"]) and int(q["sym"][1:]) < SYMBOLS, f"symbol {q['sym']!r}")
            expect(0 < q["bp"] < q["ap"], f"bid/ask: {q!r}")
            expect(q["bs"] > 0 and q["as"] > 0, f"sizes: {q!r}")
            expect(q["t"] <= q["ti"] + STAMP_SLACK_NS, f"t > ti: {q!r}")
            expect(q["ti"] <= q["to"] + STAMP_SLACK_NS, f"ti > to: {q!r}")
            expect(q["to"] <= received_ns + STAMP_SLACK_NS, f"to is after the client received it: {q!r}")
            expect(received_ns - q["t"] < 5e9, f"t is more than 5 s before it arrived (not ns?): {q!r}")
            expect(q["cseq"] == last_cseq + 1, f"cseq gap: {last_cseq} then {q!r}")
            last_cseq = q["cseq"]
            prev = last_seq.get(q["sym"])
            expect(prev is None or q["seq"] == prev + 1, f"seq gap for {q['sym']}: {prev} then {q!r}")
            last_seq[q["sym"]] = q["seq"]
        expect(len(last_seq) == SYMBOLS, f"saw {len(last_seq)} of {SYMBOLS} symbols")
        ideal = RATE * elapsed
        expect(0.5 * ideal <= len(quotes) <= 1.5 * ideal + 50, f"{len(quotes)} quotes in {elapsed:.2f} s at R={RATE}")

        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 5)
        expect(rc == 0, f"exit status {rc} after SIGTERM")
        return f"{len(quotes)} quotes in {elapsed:.2f} s, server {w['server']}"
    except asyncio.TimeoutError:
        raise CheckFailed("timed out")
    finally:
        failing = sys.exc_info()[0] is not None
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if failing:
            err = (await proc.stderr.read()).decode(errors="replace").strip()
            if err:
                tail = "\n".join("    " + line for line in err.splitlines()[-20:])
                print(f"{name}: the peer's stderr ended with:\n{tail}", file=sys.stderr)


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", help="comma-separated peer names")
    p.add_argument("--rust-bin", default=os.path.join(ROOT, "target", "release", "tokio-broadcast-peer"))
    args = p.parse_args()
    try:
        import websockets.asyncio.client  # noqa: F401
    except ImportError:
        print("check.py needs the Python websockets package: run it with target/tmp/venv/bin/python, which `cargo test` provisions", file=sys.stderr)
        return 2
    table = peers(os.path.abspath(args.rust_bin))
    names = args.only.split(",") if args.only else list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        print(f"unknown peer(s): {', '.join(unknown)}; known: {', '.join(table)}", file=sys.stderr)
        return 2
    missing = [(n, prerequisites(n, table[n])) for n in names]
    missing = [(n, why) for n, why in missing if why]
    for n, why in missing:
        print(f"{n}: MISSING PREREQUISITE: {why}", file=sys.stderr)
    if missing:
        return 2
    failed = 0
    for name in names:
        try:
            summary = await asyncio.wait_for(check_peer(name, table[name]), 30)
            print(f"{name}: ok ({summary})")
        except (CheckFailed, asyncio.TimeoutError, OSError) as e:
            failed += 1
            print(f"{name}: FAILED: {e or 'timed out'}", file=sys.stderr)
        except Exception as e:  # a protocol error from the client, a closed connection...
            failed += 1
            print(f"{name}: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
