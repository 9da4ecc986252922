#!/usr/bin/env python3
"""python-websockets peer: a reference market-data server for tickwire-bench,
written the way a typical developer writes a broadcast server with asyncio and
the `websockets` library.

Versions: CPython 3.11 (websockets 17 needs 3.11+), websockets 17.4 (pinned in
requirements.txt; its new asyncio implementation, `websockets.asyncio.server`,
with default settings: 32 KiB write limit, 20 s ping interval and timeout).

What it does: the standard workload only (see ../README.md for the
contract): welcome, subscribe-all, `ping` answered with `pong`, and one `q` message per text frame per
client, stamped `t` (due time), `ti` (created), `to` (serialized for this
client), all in ns since the Unix epoch. The feed is open-loop: update k is
due at start + k/R, and a task sleeping ~1 ms emits every update that is due,
sending it to every subscribed connection in turn (`await ws.send(...)`).

What it deliberately does not do: no batching of several quotes per frame,
no encode-once (each client gets its own json.dumps, because `cseq` and `to`
are per client), no per-client queues or tasks for sending, no slow-consumer
policy: `ws.send` waits when a client's write buffer is above the limit, so
one slow client stalls the broadcast loop for everyone (see the README),
no conflation, no per-symbol subscriptions, no heartbeats, no uvloop.
"""

import argparse
import asyncio
import itertools
import json
import random
import signal
import sys
import time
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.server import serve

# Connections that sent `subscribe`, with their per-connection message counter.
CLIENTS = {}
# The same counter for connections that sent only a `ping` so far.
PENDING = {}
SESSION_IDS = itertools.count(1)


def parse_args():
    p = argparse.ArgumentParser(description="python-websockets reference peer")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--symbols", type=int, default=1000)
    p.add_argument("--rate", type=float, default=1000.0)
    args = p.parse_args()
    if not 1 <= args.symbols <= 10000:
        p.error("--symbols must be 1..10000")
    if args.rate <= 0:
        p.error("--rate must be > 0")
    return args


class Instrument:
    """One symbol's random walk (prices in cents)."""

    def __init__(self, i):
        self.sym = f"S{i:04d}"
        self.seq = 0
        self.mid = random.randint(5000, 25000)
        self.spread = random.randint(1, 3)


def lot():
    return 100 * random.randint(1, 20)


async def handler(ws):
    await ws.send(
        json.dumps(
            [
                {
                    "type": "welcome",
                    "session": f"p-{next(SESSION_IDS)}",
                    "server": f"python-websockets/{websockets.version.version}",
                    "time_unit": "ns",
                    "hb_ms": 1000,
                    "epoch": "peer",
                }
            ]
        )
    )
    try:
        async for data in ws:
            try:
                msg = json.loads(data)
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue
            if msg.get("type") == "subscribe":
                reply = {"type": "subscribed", "id": msg.get("id"), "subs": [], "rejected": []}
            elif msg.get("type") == "ping":
                reply = {"type": "pong", "id": msg.get("id"), "ts": msg.get("ts"), "t": time.time_ns()}
            else:
                continue
            # A ping before any subscription is answered, but only `subscribe`
            # adds the connection to the broadcast.
            cseq = CLIENTS.get(ws, PENDING.get(ws, 0)) + 1
            if msg.get("type") == "subscribe" or ws in CLIENTS:
                CLIENTS[ws] = cseq
                PENDING.pop(ws, None)
            else:
                PENDING[ws] = cseq
            reply["cseq"] = cseq
            await ws.send(json.dumps([reply]))
    except websockets.ConnectionClosed:
        pass
    finally:
        CLIENTS.pop(ws, None)
        PENDING.pop(ws, None)


async def feed(symbols, rate):
    """Open-loop schedule: update k is due at start + k / rate."""
    instruments = [Instrument(i) for i in range(symbols)]
    start = time.monotonic_ns()
    start_wall = time.time_ns()
    emitted = 0
    while True:
        await asyncio.sleep(0.001)
        # Updates 0..=k with k/R <= elapsed are due: floor(elapsed * R) + 1.
        due = (time.monotonic_ns() - start) * rate // 1e9 + 1
        while emitted < due:
            inst = instruments[emitted % symbols]  # round-robin
            inst.mid = max(100, inst.mid + random.randint(-2, 2))
            inst.seq += 1
            quote = {
                "type": "q",
                "sym": inst.sym,
                "seq": inst.seq,
                "cseq": 0,
                "bp": inst.mid / 100,
                "bs": lot(),
                "ap": (inst.mid + inst.spread) / 100,
                "as": lot(),
                "t": start_wall + int(emitted * 1e9 / rate),
                "ti": time.time_ns(),
                "to": 0,
            }
            emitted += 1
            for ws in list(CLIENTS):
                if ws not in CLIENTS:
                    continue
                CLIENTS[ws] += 1
                quote["cseq"] = CLIENTS[ws]
                quote["to"] = time.time_ns()
                try:
                    await ws.send(json.dumps([quote]))
                except websockets.ConnectionClosed:
                    CLIENTS.pop(ws, None)


def only_ws_path(connection, request):
    """Accept upgrades on /ws (any query string); 404 elsewhere."""
    if urlsplit(request.path).path != "/ws":
        return connection.respond(404, "not found\n")
    return None


async def main():
    args = parse_args()
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(handler, args.host, args.port, process_request=only_ws_path) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on ws://{args.host}:{port}/ws", flush=True)
        feeder = asyncio.create_task(feed(args.symbols, args.rate))
        await stop
        feeder.cancel()
        server.close(close_connections=False)
        for ws in list(server.connections):
            ws.transport.abort()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    sys.exit(0)
