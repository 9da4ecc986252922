#!/usr/bin/env python3
"""Keeps the reference peers in tools/peers/ honest: starts each one on a small
workload, connects one client and checks the contract of tools/peers/README.md.

For each peer: provision it (`tools/peers/run PEER --prepare`: npm ci, a venv,
Debian packages, javac or cargo, each once), start it with
`tools/peers/run PEER --port 0 --symbols 10 --rate 200`, read the
`listening on ws://...` line, connect with `?stamps=1&time_unit=ns`, check the
welcome, then its clock: 20 `ping`s, each answered by a `pong` whose `t` must
fall between the ping's send and the pong's receipt on this machine's
realtime clock, give or take CLOCK_SLACK_NS (50 us); a peer whose clock runs a
millisecond ahead, as Node's `performance` clock did, fails here. Then it
subscribes to everything, checks the `subscribed` reply, and reads quotes for
about a second: every field present with the right type, stamps plausible
(t <= ti <= to <= receipt, in ns), `seq` contiguous per symbol, `cseq` per
connection (for the peers that keep one: Socket.IO and Netty broadcast one
encoding to every socket, so their messages have none), and about R quotes
per second. A second connection subscribes to two symbols by name and must get
only those. Finally SIGTERM must make the peer exit with status 0. Every step
has a timeout.

Socket.IO speaks the contract inside Engine.IO v4 packets (see
socketio/server.js): `Framing` wraps and unwraps them.

Usage (from the repository root):
    python3 tools/peers/check.py [--only node-ws,socketio,...]

Needs Python 3.9+ with `websockets` 13 or later: when it is missing, the
script runs itself again inside the python-websockets peer's venv
(target/peers/venv/python-websockets, made by tools/peers/run).
Exits 0 when every peer passes, 1 otherwise, 2 when a prerequisite is missing.
"""

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RUN = os.path.join(HERE, "run")

SYMBOLS = 10
RATE = 200
READ_SECONDS = 1.0
PINGS = 20
# Node's stamps are doubles (about 0.25 us resolution at today's epoch ns):
# allow a little disorder between t, ti and to.
STAMP_SLACK_NS = 1_000
# How far a peer's clock may be from this machine's realtime clock.
CLOCK_SLACK_NS = 50_000
# How long provisioning a peer may take (npm ci, pip, apt-get, javac, cargo).
PREPARE_TIMEOUT = 900
QUOTE_FIELDS = {
    "type": str,
    "sym": str,
    "seq": int,
    "bp": (int, float),
    "bs": int,
    "ap": (int, float),
    "as": int,
    "t": int,
    "ti": int,
    "to": int,
}

# name -> (path of the WebSocket URL, framing, keeps a per-connection cseq,
# takes named symbols)
PEERS = {
    "node-ws": ("/ws", "plain", True, True),
    "socketio": ("/socket.io/?EIO=4&transport=websocket", "socketio", False, True),
    "python-websockets": ("/ws", "plain", True, False),
    "django-channels": ("/ws", "plain", True, True),
    "netty": ("/ws", "plain", False, True),
    "tokio-broadcast": ("/ws", "plain", True, True),
}
# Not here: `floor` (tools/peers/floor), which answers no ping and takes no
# names by design; the harness's scale scenario checks what it sends.


class CheckFailed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise CheckFailed(what)


class Framing:
    """The contract's JSON over a plain WebSocket, or inside Engine.IO v4 /
    Socket.IO packets: requests as the event `msg`, replies and quotes as the
    event `md`, pings (`2`) answered with pongs (`3`)."""

    def __init__(self, ws, kind):
        self.ws = ws
        self.kind = kind

    async def open(self):
        if self.kind == "socketio":
            opened = await asyncio.wait_for(self.ws.recv(), 5)
            expect(opened.startswith("0{"), f"Engine.IO open packet: {opened[:100]!r}")
            await self.ws.send("40")
            connected = await asyncio.wait_for(self.ws.recv(), 5)
            expect(connected.startswith("40"), f"Socket.IO connect reply: {connected[:100]!r}")

    async def send(self, obj):
        text = json.dumps(obj)
        await self.ws.send(f'42["msg",{text}]' if self.kind == "socketio" else text)

    async def recv(self, timeout):
        """The next contract frame (a JSON array) as text."""
        end = time.monotonic() + timeout
        while True:
            text = await asyncio.wait_for(self.ws.recv(), max(0.0, end - time.monotonic()))
            if self.kind != "socketio":
                return text
            if text == "2":
                await self.ws.send("3")
                continue
            expect(text.startswith('42["md",') and text.endswith("]"), f"Socket.IO packet {text[:100]!r}")
            return text[len('42["md",') : -1]


def prepare(name):
    """Provisions a peer once; None when ready, else the launcher's last line."""
    try:
        p = subprocess.run([RUN, name, "--prepare"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           timeout=PREPARE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"provisioning took longer than {PREPARE_TIMEOUT} s"
    if p.returncode == 0:
        return None
    lines = p.stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"tools/peers/run {name} --prepare exited {p.returncode}"


async def read_line(stream, timeout):
    line = await asyncio.wait_for(stream.readline(), timeout)
    return line.decode(errors="replace").strip()


async def check_clock(f):
    """Bounds the peer's clock offset from `pong.t` against each ping's send
    and the pong's receipt: max(t - received) <= offset <= min(t - sent)."""
    low, high = -float("inf"), float("inf")
    for i in range(PINGS):
        sent = time.time_ns()
        await f.send({"type": "ping", "id": 100 + i, "ts": sent})
        while True:
            msgs = json.loads(await f.recv(5))
            received = time.time_ns()
            pong = next((m for m in msgs if m.get("type") == "pong"), None)
            if pong is not None:
                break
        expect(pong.get("id") == 100 + i, f"pong id: {pong!r}")
        expect(isinstance(pong.get("t"), int), f"pong without an integer t: {pong!r}")
        low = max(low, pong["t"] - received)
        high = min(high, pong["t"] - sent)
    expect(
        low <= CLOCK_SLACK_NS and high >= -CLOCK_SLACK_NS,
        f"clock: the peer's clock is off by {low / 1e3:+.0f} to {high / 1e3:+.0f} us (limit 50 us)",
    )
    return low, high


async def subscribe(f, symbols, with_cseq):
    await f.send({"type": "subscribe", "symbols": symbols, "mode": "all", "id": 1})
    while True:
        reply = json.loads(await f.recv(5))
        expect(isinstance(reply, list) and len(reply) == 1, f"subscribed frame {reply!r}")
        r = reply[0]
        if r.get("type") != "q":  # quotes to ["*"] may be on their way already: not here
            break
    expect(r.get("type") == "subscribed", f"reply to subscribe is not 'subscribed': {r!r}")
    expect(r.get("id") == 1, f"subscribed id: {r!r}")
    expect(not with_cseq or isinstance(r.get("cseq"), int), f"subscribed without cseq: {r!r}")
    expect(isinstance(r.get("subs"), list) and isinstance(r.get("rejected"), list), f"subscribed: {r!r}")
    return r.get("cseq", 0)


async def check_peer(name):
    from websockets.asyncio.client import connect

    path, framing, with_cseq, named = PEERS[name]
    args = ["--port", "0", "--symbols", str(SYMBOLS), "--rate", str(RATE)]
    proc = await asyncio.create_subprocess_exec(
        RUN, name, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        line = await read_line(proc.stdout, 20)
        m = re.fullmatch(r"listening on ws://127\.0\.0\.1:(\d+)(/\S*)", line)
        expect(m and m.group(2) == path, f"first stdout line {line!r} is not 'listening on ws://127.0.0.1:PORT{path}'")
        port = int(m.group(1))
        expect(port > 0, "port 0 was printed")
        sep = "&" if "?" in path else "?"
        url = f"ws://127.0.0.1:{port}{path}{sep}stamps=1&time_unit=ns"
        async with connect(url, open_timeout=5, max_queue=None) as ws:
            f = Framing(ws, framing)
            await f.open()
            welcome = json.loads(await f.recv(5))
            expect(isinstance(welcome, list) and len(welcome) == 1, f"welcome frame {welcome!r}")
            w = welcome[0]
            expect(w.get("type") == "welcome", f"first message is not a welcome: {w!r}")
            for key, value in (("time_unit", "ns"), ("hb_ms", 1000), ("epoch", "peer")):
                expect(w.get(key) == value, f"welcome.{key} is {w.get(key)!r}, expected {value!r}")
            expect(re.fullmatch(r"p-\d+", str(w.get("session"))), f"welcome.session {w.get('session')!r}")
            expect(re.fullmatch(r"[\w.-]+/[\w.-]+", str(w.get("server"))), f"welcome.server {w.get('server')!r}")

            clock = await check_clock(f)
            last_cseq = await subscribe(f, ["*"], with_cseq)
            quotes = []
            start = time.monotonic()
            while time.monotonic() - start < READ_SECONDS:
                try:
                    frame = await f.recv(0.5)
                except asyncio.TimeoutError:
                    raise CheckFailed("no quote for 0.5 s")
                received_ns = time.time_ns()
                msgs = json.loads(frame)
                expect(isinstance(msgs, list) and len(msgs) == 1, f"not one message per frame: {frame[:200]}")
                quotes.append((msgs[0], received_ns))
            elapsed = time.monotonic() - start

        last_seq = {}
        for q, received_ns in quotes:
            fields = dict(QUOTE_FIELDS, cseq=int) if with_cseq else QUOTE_FIELDS
            for field, kind in fields.items():
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
            expect(q["to"] <= received_ns + CLOCK_SLACK_NS, f"to is after the client received it: {q!r}")
            expect(received_ns - q["t"] < 5e9, f"t is more than 5 s before it arrived (not ns?): {q!r}")
            if with_cseq:
                expect(q["cseq"] == last_cseq + 1, f"cseq gap: {last_cseq} then {q!r}")
                last_cseq = q["cseq"]
            prev = last_seq.get(q["sym"])
            expect(prev is None or q["seq"] == prev + 1, f"seq gap for {q['sym']}: {prev} then {q!r}")
            last_seq[q["sym"]] = q["seq"]
        expect(len(last_seq) == SYMBOLS, f"saw {len(last_seq)} of {SYMBOLS} symbols")
        ideal = RATE * elapsed
        expect(0.5 * ideal <= len(quotes) <= 1.5 * ideal + 50, f"{len(quotes)} quotes in {elapsed:.2f} s at R={RATE}")

        if named:
            wanted = {"S0001", "S0003"}
            async with connect(url, open_timeout=5, max_queue=None) as ws:
                f = Framing(ws, framing)
                await f.open()
                await f.recv(5)  # welcome
                await subscribe(f, sorted(wanted), with_cseq)
                seen = set()
                for _ in range(20):
                    seen.add(json.loads(await f.recv(1))[0].get("sym"))
                expect(seen == wanted, f"subscribed to {sorted(wanted)}, got quotes of {sorted(seen)}")

        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 10)
        expect(rc == 0, f"exit status {rc} after SIGTERM")
        return (
            f"{len(quotes)} quotes in {elapsed:.2f} s, clock offset within "
            f"[{clock[0] / 1e3:+.0f}, {clock[1] / 1e3:+.0f}] us, server {w['server']}"
        )
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


def with_websockets():
    """Runs this script again in the python-websockets peer's venv when the
    running Python has no `websockets`; returns only if it has."""
    try:
        import websockets.asyncio.client  # noqa: F401

        return
    except ImportError:
        pass
    why = prepare("python-websockets")
    python = os.path.join(ROOT, "target", "peers", "venv", "python-websockets", "bin", "python")
    if why is not None or os.environ.get("CHECK_PY_IN_VENV"):
        print(f"check.py needs the Python websockets package ({why or 'not in its venv'})", file=sys.stderr)
        sys.exit(2)
    os.environ["CHECK_PY_IN_VENV"] = "1"
    os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", help="comma-separated peer names")
    args = p.parse_args()
    names = args.only.split(",") if args.only else list(PEERS)
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        print(f"unknown peer(s): {', '.join(unknown)}; known: {', '.join(PEERS)}", file=sys.stderr)
        return 2
    missing = [(n, prepare(n)) for n in names]
    missing = [(n, why) for n, why in missing if why]
    for n, why in missing:
        print(f"{n}: MISSING PREREQUISITE: {why}", file=sys.stderr)
    if missing:
        return 2
    failed = 0
    for name in names:
        try:
            summary = await asyncio.wait_for(check_peer(name), 40)
            print(f"{name}: ok ({summary})")
        except (CheckFailed, asyncio.TimeoutError, OSError) as e:
            failed += 1
            print(f"{name}: FAILED: {e or 'timed out'}", file=sys.stderr)
        except Exception as e:  # a protocol error from the client, a closed connection...
            failed += 1
            print(f"{name}: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    with_websockets()
    sys.exit(asyncio.run(main()))
