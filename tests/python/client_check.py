#!/usr/bin/env python3
"""A third-party check of a tickwire server, written from the wire protocol
document (PROTOCOL.md, v1) alone, with Python's `websockets` package.

Usage: client_check.py ws://HOST:PORT/ws [--expect-extension NAME|none]

`websockets` offers permessage-deflate by default (compression="deflate");
with --expect-extension the server's answer must (NAME) or must not
(none) name that extension, and everything below then runs over it.

The server must run the synthetic feed with AAPL and MSFT among its symbols
and NOPE not among them. Prints a one-line summary and exits 0 when every
check passes; prints the first failure to stderr and exits 1 otherwise.

Checked on every message: every frame is a non-empty JSON array of objects
in a text frame; `cseq` rises by exactly 1 per message from 1 (welcome is
cseq 0 implicitly and carries none); a reply travels alone; per (channel,
symbol) in mode "latest", `seq` rises by exactly `cf` (default 1, omitted
when 1) from the previous message of that (channel, symbol), a snapshot
counting as the previous message; a snapshot comes once, after `subscribed`
and before any update, only when `subscribed` gave a `seq` > 0; prices are
numbers; times are plausible millisecond timestamps; no `ti`/`to` without
`stamps=1`; no data for symbols not subscribed (or no longer subscribed).

Sequence: welcome (fields), status (feed live), subscribe AAPL, MSFT, NOPE
(subs for both channels of AAPL and MSFT, NOPE rejected with 404), the
snapshots and at least 20 q/t updates, ping -> pong (id and ts echoed),
malformed JSON -> error 400 with the connection kept open (a ping still
works), unsubscribe -> unsubscribed, then silence up to the next heartbeat.
"""

import asyncio
import json
import sys
import time
from collections import Counter, deque

try:
    from websockets.asyncio.client import connect
except ImportError:  # websockets < 13
    from websockets import connect
from websockets.exceptions import ConnectionClosed

TOTAL_TIMEOUT_S = 20
STEP_TIMEOUT_S = 10
MIN_UPDATES = 20
SYMBOLS = ("AAPL", "MSFT")
UNKNOWN = "NOPE"
CHANNELS = ("quotes", "trades")
KIND = {"quotes": "q", "trades": "t"}
CHANNEL_OF = {"q": "quotes", "t": "trades"}
REPLY_TYPES = ("subscribed", "unsubscribed", "pong", "symbols", "error")
# Server clock vs. ours (same machine in CI, but be generous).
CLOCK_SKEW_MS = 5 * 60 * 1000


class CheckFailed(Exception):
    pass


def fail(msg):
    raise CheckFailed(msg)


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_time(v, what):
    if not is_int(v):
        fail(f"{what}: time must be an integer, got {v!r}")
    now = time.time() * 1000
    if abs(v - now) > CLOCK_SKEW_MS:
        fail(f"{what}: {v} is not a plausible ms timestamp (local clock {now:.0f})")


def check_market_fields(m, kind, what):
    """The fields of a `q` (kind "q") or a `t` (kind "t"), in `m`."""
    if m.get("sym") not in SYMBOLS:
        fail(f"{what}: data for a symbol never subscribed: {m}")
    if not is_int(m.get("seq")) or m["seq"] < 1:
        fail(f"{what}: seq must be an integer >= 1: {m}")
    check_time(m.get("t"), what)
    if kind == "q":
        for f in ("bp", "ap"):
            if not is_num(m.get(f)) or m[f] <= 0:
                fail(f"{what}: price {f} must be a positive JSON number: {m}")
        for f in ("bs", "as"):
            if not is_num(m.get(f)) or m[f] < 0:
                fail(f"{what}: size {f} must be a number >= 0: {m}")
    else:
        if not is_num(m.get("p")) or m["p"] <= 0:
            fail(f"{what}: price p must be a positive JSON number: {m}")
        if not is_num(m.get("s")) or m["s"] < 0:
            fail(f"{what}: size s must be a number >= 0: {m}")
    for f in ("ti", "to"):
        if f in m:
            fail(f"{what}: {f} present although the session did not ask for stamps=1: {m}")


class Session:
    def __init__(self, ws):
        self.ws = ws
        self.pending = deque()  # (message, length of its frame)
        self.cseq = 0
        self.frames = 0
        self.types = Counter()
        self.subscribed = {}  # (ch, sym) -> seq given in `subscribed`
        self.snapshot_due = set()  # (ch, sym) still waiting for its snapshot
        self.last_seq = {}  # (ch, sym) -> seq of the previous message
        self.updates = 0
        self.max_cf = 1

    async def send(self, obj):
        await self.send_text(json.dumps(obj))

    async def send_text(self, text):
        await self.ws.send(text)

    async def recv_frame(self):
        try:
            raw = await self.ws.recv()
        except ConnectionClosed as e:
            fail(f"connection closed unexpectedly: {e}")
        if not isinstance(raw, str):
            fail(f"binary frame on a JSON session: {raw[:40]!r}")
        try:
            frame = json.loads(raw)
        except ValueError as e:
            fail(f"frame is not JSON ({e}): {raw[:200]}")
        if not isinstance(frame, list):
            fail(f"frame is not a JSON array: {raw[:200]}")
        if not frame:
            fail("empty array frame")
        for m in frame:
            if not isinstance(m, dict) or not isinstance(m.get("type"), str):
                fail(f"array element is not a message object with a type: {raw[:200]}")
        self.frames += 1
        return frame

    async def next(self):
        """The next message after welcome, checked."""
        if not self.pending:
            frame = await self.recv_frame()
            self.pending.extend((m, len(frame)) for m in frame)
        m, frame_len = self.pending.popleft()
        cseq = m.get("cseq")
        if not is_int(cseq):
            fail(f"message without an integer cseq: {m}")
        if cseq != self.cseq + 1:
            fail(f"cseq must rise by exactly 1: expected {self.cseq + 1}, got {cseq}: {m}")
        self.cseq = cseq
        self.types[m["type"]] += 1
        self.check(m, frame_len)
        return m

    def check(self, m, frame_len):
        kind = m["type"]
        what = f"{kind} (cseq {m['cseq']})"
        if kind in REPLY_TYPES and frame_len != 1:
            fail(f"{what}: a reply must travel alone in an array of one, frame had {frame_len}")
        if kind == "welcome":
            fail(f"second welcome: {m}")
        elif kind == "heartbeat":
            check_time(m.get("t"), what)
        elif kind == "status":
            check_time(m.get("t"), what)
            if m.get("feed") != "live":
                fail(f"{what}: the synthetic feed should stay live: {m}")
        elif kind == "snapshot":
            ch = m.get("ch")
            if ch not in CHANNELS:
                fail(f"{what}: ch must be one of {CHANNELS}: {m}")
            check_market_fields(m, KIND[ch], what)
            key = (ch, m["sym"])
            if key not in self.subscribed:
                fail(f"{what}: snapshot for {key} which is not subscribed: {m}")
            if key not in self.snapshot_due:
                fail(
                    f"{what}: unexpected snapshot for {key} (already sent, or "
                    f"`subscribed` gave seq 0): {m}"
                )
            if m["seq"] < self.subscribed[key]:
                fail(f"{what}: snapshot seq below the seq {self.subscribed[key]} in `subscribed`: {m}")
            self.snapshot_due.discard(key)
            self.last_seq[key] = m["seq"]
        elif kind in ("q", "t"):
            check_market_fields(m, kind, what)
            key = (CHANNEL_OF[kind], m["sym"])
            if key not in self.subscribed:
                fail(f"{what}: update for {key} which is not subscribed: {m}")
            if key in self.snapshot_due:
                fail(f"{what}: update for {key} before its snapshot: {m}")
            cf = 1
            if "cf" in m:
                cf = m["cf"]
                if not is_int(cf) or cf < 2:
                    fail(f"{what}: cf must be an integer >= 2 (omitted when 1): {m}")
            prev = self.last_seq[key]
            if m["seq"] != prev + cf:
                fail(
                    f"{what}: seq of {key} must rise by exactly cf={cf} from {prev} "
                    f"(the previous message of it), got {m['seq']}: {m}"
                )
            self.last_seq[key] = m["seq"]
            self.updates += 1
            self.max_cf = max(self.max_cf, cf)
        elif kind == "overflow":
            fail(f"{what}: overflow in mode latest (it belongs to mode all): {m}")
        elif kind == "slow":
            fail(f"{what}: the server considers this client slow: {m}")
        elif kind == "shutdown":
            fail(f"{what}: server shutting down during the check: {m}")
        # Other types: a client must ignore types it does not know.

    async def until(self, pred, what, timeout=STEP_TIMEOUT_S):
        async def loop():
            while True:
                m = await self.next()
                if pred(m):
                    return m

        try:
            return await asyncio.wait_for(loop(), timeout)
        except asyncio.TimeoutError:
            fail(f"timed out after {timeout}s waiting for {what}")

    async def request(self, obj, what):
        """Sends `obj` (with an id) and returns the reply carrying that id."""
        await self.send(obj)
        return await self.until(lambda m: m.get("id") == obj["id"], what)


def check_welcome(frame):
    if len(frame) != 1 or frame[0]["type"] != "welcome":
        fail(f"the first frame must be [welcome]: {frame}")
    w = frame[0]
    if "cseq" in w:
        fail(f"welcome must not carry cseq (it is cseq 0 implicitly): {w}")
    for f in ("session", "server", "epoch"):
        if not isinstance(w.get(f), str) or not w[f]:
            fail(f"welcome.{f} must be a non-empty string: {w}")
    if w.get("time_unit") != "ms":
        fail(f"welcome.time_unit must default to ms: {w}")
    if not is_int(w.get("hb_ms")) or w["hb_ms"] <= 0:
        fail(f"welcome.hb_ms must be an integer > 0: {w}")
    limits = w.get("limits")
    if not isinstance(limits, dict):
        fail(f"welcome.limits must be an object: {w}")
    for f in ("symbols", "msgs_in_per_s", "max_message_bytes"):
        if not is_int(limits.get(f)) or limits[f] <= 0:
            fail(f"welcome.limits.{f} must be an integer > 0: {w}")
    return w


def negotiated_extensions(ws):
    """The server's Sec-WebSocket-Extensions answer ("" when none)."""
    response = getattr(ws, "response", None)  # websockets >= 13
    headers = response.headers if response is not None else ws.response_headers
    return headers.get("Sec-WebSocket-Extensions") or ""


async def run(url, expect_extension):
    started = time.monotonic()
    async with connect(url, open_timeout=5, close_timeout=2) as ws:
        extensions = negotiated_extensions(ws)
        if expect_extension == "none" and extensions:
            fail(f"expected no extension, the server answered {extensions!r}")
        if expect_extension not in (None, "none") and not extensions.startswith(expect_extension):
            fail(f"expected {expect_extension!r} negotiated, the server answered {extensions!r}")
        proto = getattr(ws, "subprotocol", None)
        if proto not in (None, "tickwire.v1.json"):
            fail(f"server picked subprotocol {proto!r} although the client offered none")
        s = Session(ws)
        w = check_welcome(await asyncio.wait_for(s.recv_frame(), STEP_TIMEOUT_S))

        # status: sent once after welcome.
        before = []
        status = await s.until(
            lambda m: before.append(m["type"]) or m["type"] == "status", "status after welcome"
        )
        if any(t not in ("heartbeat", "status") for t in before):
            fail(f"only heartbeats may precede the first status, got {before}")

        # subscribe: both channels of AAPL and MSFT, NOPE rejected.
        sub = {"type": "subscribe", "id": 1, "symbols": [*SYMBOLS, UNKNOWN]}
        r = await s.request(sub, "the reply to subscribe id 1")
        if r["type"] != "subscribed":
            fail(f"subscribe id 1 answered with {r}")
        subs = r.get("subs")
        if not isinstance(subs, list):
            fail(f"subscribed.subs must be an array: {r}")
        for e in subs:
            if not isinstance(e, dict):
                fail(f"subscribed.subs entries must be objects: {r}")
            key = (e.get("ch"), e.get("sym"))
            if key in s.subscribed:
                fail(f"subscribed lists {key} twice: {r}")
            if not is_int(e.get("seq")) or e["seq"] < 0:
                fail(f"subscribed: seq of {key} must be an integer >= 0: {r}")
            if e.get("mode") != "latest":
                fail(f"subscribed: mode of {key} must default to latest: {r}")
            if "max_hz" not in e or not (e["max_hz"] is None or is_num(e["max_hz"])):
                fail(f"subscribed: {key} must carry max_hz (none when not asked for): {r}")
            s.subscribed[key] = e["seq"]
            if e["seq"] > 0:
                s.snapshot_due.add(key)
            else:
                s.last_seq[key] = 0
        want = {(ch, sym) for ch in CHANNELS for sym in SYMBOLS}
        if set(s.subscribed) != want:
            fail(f"subscribed.subs must cover {sorted(want)}, got {sorted(s.subscribed)}: {r}")
        rej = r.get("rejected")
        if (
            not isinstance(rej, list)
            or len(rej) != 1
            or rej[0].get("sym") != UNKNOWN
            or rej[0].get("code") != 404
            or not isinstance(rej[0].get("msg"), str)
        ):
            fail(f"subscribed.rejected must be [{{sym: {UNKNOWN}, code: 404, msg}}]: {r}")
        seq0 = dict(s.subscribed)

        # snapshots, then at least MIN_UPDATES updates.
        await s.until(
            lambda m: not s.snapshot_due and s.updates >= MIN_UPDATES,
            f"the snapshots and {MIN_UPDATES} updates",
        )

        # ping -> pong, id and ts echoed.
        pong = await s.request({"type": "ping", "id": 2, "ts": 123}, "pong id 2")
        if pong["type"] != "pong" or pong.get("ts") != 123:
            fail(f"ping id 2 ts 123 must get a pong echoing ts 123: {pong}")
        check_time(pong.get("t"), "pong")

        # malformed JSON -> error 400, connection kept open.
        await s.send_text('{"type": "ping", "ts": ')
        err = await s.until(lambda m: m["type"] == "error", "error 400 for malformed JSON")
        if err.get("code") != 400:
            fail(f"malformed JSON must get error code 400: {err}")
        if not isinstance(err.get("temporary"), bool) or not isinstance(err.get("msg"), str):
            fail(f"error must carry msg (string) and temporary (bool): {err}")
        if "id" in err:
            fail(f"a request without an id gets a reply without an id: {err}")
        pong = await s.request({"type": "ping", "id": 3, "ts": 456}, "pong id 3 after the error")
        if pong["type"] != "pong" or pong.get("ts") != 456:
            fail(f"ping id 3 after the error must get a pong echoing ts 456: {pong}")

        # unsubscribe -> unsubscribed, then no more data.
        unsub = {"type": "unsubscribe", "id": 4, "symbols": list(SYMBOLS)}
        r = await s.request(unsub, "the reply to unsubscribe id 4")
        if r["type"] != "unsubscribed":
            fail(f"unsubscribe id 4 answered with {r}")
        if sorted(r.get("symbols") or []) != sorted(SYMBOLS):
            fail(f"unsubscribed.symbols must list {list(SYMBOLS)}: {r}")
        if sorted(r.get("channels") or []) != sorted(CHANNELS):
            fail(f"unsubscribed.channels must list {list(CHANNELS)}: {r}")
        s.subscribed.clear()
        hb_wait = 3 * w["hb_ms"] / 1000 + 1
        await s.until(
            lambda m: m["type"] == "heartbeat", "a heartbeat after unsubscribing", hb_wait
        )

    elapsed = time.monotonic() - started
    t = s.types
    return (
        f"client_check OK: session {w['session']} server {w['server']} epoch {w['epoch']}; "
        f"{s.frames} frames, {s.cseq} messages (cseq 1..{s.cseq} contiguous); "
        f"{t['snapshot']} snapshots, {t['q']} q + {t['t']} t updates (max cf {s.max_cf}), "
        f"{t['heartbeat']} heartbeats; subscribed seqs "
        + ", ".join(f"{ch}/{sym}={seq}" for (ch, sym), seq in sorted(seq0.items()))
        + f"; status {status['feed']}; extensions {extensions or 'none'!r}; {elapsed:.2f}s"
    )


def main():
    args = sys.argv[1:]
    if len(args) not in (1, 3) or (len(args) == 3 and args[1] != "--expect-extension"):
        print(
            "usage: client_check.py ws://HOST:PORT/ws [--expect-extension NAME|none]",
            file=sys.stderr,
        )
        return 2
    url = args[0]
    expect_extension = args[2] if len(args) == 3 else None
    try:
        summary = asyncio.run(asyncio.wait_for(run(url, expect_extension), TOTAL_TIMEOUT_S))
    except CheckFailed as e:
        print(f"client_check FAILED: {e}", file=sys.stderr)
        return 1
    except asyncio.TimeoutError:
        print(f"client_check FAILED: not done within {TOTAL_TIMEOUT_S}s", file=sys.stderr)
        return 1
    except Exception as e:  # connection refused, handshake rejected, ...
        print(f"client_check FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
