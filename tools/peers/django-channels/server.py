#!/usr/bin/env python3
"""django-channels peer: a reference market-data server for tickwire-bench,
written the way Django Channels' users write a broadcast: an
`AsyncWebsocketConsumer` per connection that joins one group per symbol it
subscribes to (or the group `everything`), and a feed that calls
`channel_layer.group_send(group, {"type": "quote", ...})` per update; each
consumer's `quote` handler then serializes and sends it to its client.

Versions (requirements.txt): CPython 3.11, Django 5.2, channels 4.3, daphne
4.2 (the ASGI server Channels' docs start with; Twisted underneath), and the
in-memory channel layer with its defaults (capacity 100 messages per
channel, 60 s expiry). Settings are configured in this file: no project
folder, no database.

Why Django Channels rather than Flask-SocketIO: Django is the Python web
framework most teams already run, Channels is the Django project's own
WebSocket layer, and groups with `group_send` are its documented way to
broadcast (its tutorial is one). Flask-SocketIO speaks the Socket.IO protocol,
which the socketio peer already measures in its reference implementation,
and its async modes (eventlet, gevent) are the part of that stack in flux.

What it does (see ../README.md for the contract): welcome; subscribe to
`["*"]` or to named symbols; `ping` answered with `pong`; one `q` message
per text frame per client, with this connection's `cseq`, stamped `t` (due
time), `ti` (created), `to` (serialized for this client), in ns since the
Unix epoch. The feed is open-loop: update k is due at start + k/R, and a
task sleeping ~1 ms emits every update that is due.

What it deliberately does not do: no batching, no conflation (`mode` and
`max_hz` are ignored), no heartbeats. On overload it does what the
in-memory layer does: `group_send` drops a message for a consumer whose
queue holds 100 already (`ChannelFull`, ignored), so `seq` jumps without an
`overflow`, while `cseq` stays contiguous (it counts what was sent).
"""

import argparse
import asyncio
import bisect
import itertools
import json
import random
import sys
import time

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    INSTALLED_APPS=["daphne", "channels"],
    CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    ROOT_URLCONF=__name__,
)
django.setup()

from daphne.server import Server  # noqa: E402  (daphne installs the asyncio reactor on import)
from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

urlpatterns = []
SESSION_IDS = itertools.count(1)
EVERYTHING = "everything"
SERVER_NAME = f"django-channels/{__import__('channels').__version__}"


def group_of(sym):
    """Channels group names allow letters, digits, `-`, `_` and `.`."""
    return "sym." + sym


class Quotes(AsyncWebsocketConsumer):
    async def connect(self):
        self.cseq = 0
        self.joined = []
        await self.accept()
        welcome = {
            "type": "welcome",
            "session": f"p-{next(SESSION_IDS)}",
            "server": SERVER_NAME,
            "time_unit": "ns",
            "hb_ms": 1000,
            "epoch": "peer",
        }
        await self.send(text_data=json.dumps([welcome]))

    async def reply(self, msg):
        self.cseq += 1
        msg["cseq"] = self.cseq
        await self.send(text_data=json.dumps([msg]))

    async def receive(self, text_data=None, bytes_data=None):
        try:
            msg = json.loads(text_data or "")
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        if msg.get("type") == "subscribe":
            symbols = [s for s in msg.get("symbols", ["*"]) if isinstance(s, str)]
            groups = [EVERYTHING] if "*" in symbols else [group_of(s) for s in symbols]
            for g in groups:
                await self.channel_layer.group_add(g, self.channel_name)
            self.joined.extend(groups)
            await self.reply({"type": "subscribed", "id": msg.get("id"), "subs": [], "rejected": []})
        elif msg.get("type") == "ping":
            await self.reply({"type": "pong", "id": msg.get("id"), "ts": msg.get("ts"), "t": time.time_ns()})

    async def quote(self, event):
        q = event["q"]
        self.cseq += 1
        q["cseq"] = self.cseq
        q["to"] = time.time_ns()
        await self.send(text_data=json.dumps([q]))

    async def disconnect(self, code):
        for g in self.joined:
            await self.channel_layer.group_discard(g, self.channel_name)


async def feed(symbols, rate, zipf):
    """Open-loop schedule: update k is due at start + k / rate."""
    layer = get_channel_layer()
    names = [f"S{i:04d}" for i in range(symbols)]
    seq = [0] * symbols
    mid = [random.randint(5000, 25000) for _ in range(symbols)]
    spread = [random.randint(1, 3) for _ in range(symbols)]
    cumulative = list(itertools.accumulate(1 / (i + 1) ** zipf for i in range(symbols))) if zipf > 0 else None
    start = time.monotonic_ns()
    start_wall = time.time_ns()
    emitted = 0
    while True:
        await asyncio.sleep(0.001)
        # Updates 0..=k with k/R <= elapsed are due: floor(elapsed * R) + 1.
        due = (time.monotonic_ns() - start) * rate // 1e9 + 1
        while emitted < due:
            if cumulative is None:
                i = emitted % symbols
            else:
                i = min(bisect.bisect_left(cumulative, random.random() * cumulative[-1]), symbols - 1)
            mid[i] = max(100, mid[i] + random.randint(-2, 2))
            seq[i] += 1
            quote = {
                "type": "q",
                "sym": names[i],
                "seq": seq[i],
                "bp": mid[i] / 100,
                "bs": 100 * random.randint(1, 20),
                "ap": (mid[i] + spread[i]) / 100,
                "as": 100 * random.randint(1, 20),
                "t": start_wall + int(emitted * 1e9 / rate),
                "ti": time.time_ns(),
            }
            emitted += 1
            await layer.group_send(EVERYTHING, {"type": "quote", "q": quote})
            await layer.group_send(group_of(names[i]), {"type": "quote", "q": quote})


def main():
    p = argparse.ArgumentParser(description="Django Channels reference peer")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--symbols", type=int, default=1000)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--zipf", type=float, default=0.0)
    args = p.parse_args()
    if not 1 <= args.symbols <= 10000:
        p.error("--symbols must be 1..10000")
    if args.rate <= 0 or args.zipf < 0:
        p.error("--rate must be > 0 and --zipf >= 0")

    application = ProtocolTypeRouter({"websocket": URLRouter([path("ws", Quotes.as_asgi())])})
    server = None

    def ready():
        host, port = server.listening_addresses[0]
        print(f"listening on ws://{host}:{port}/ws", flush=True)
        asyncio.get_event_loop().create_task(feed(args.symbols, args.rate, args.zipf))

    server = Server(
        application,
        endpoints=[f"tcp:port={args.port}:interface={args.host}"],
        ready_callable=ready,
        verbosity=0,
    )
    server.run()  # until SIGTERM or SIGINT


if __name__ == "__main__":
    main()
    sys.exit(0)
