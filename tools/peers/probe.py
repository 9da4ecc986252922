#!/usr/bin/env python3
"""A quick probe of one reference peer: does it keep up, and what does it do
when a client stops reading? Not the benchmark (that is tickwire-bench): this
is the experiment behind the "on overload" column of tools/peers/README.md.

It starts the peer with `--symbols 1000 --rate R`, connects one reading
client (Python `websockets`, subscribe-all) and, with `--stall`, a second
client that subscribes and then never reads; with `--pause T`, the reader
stops reading for T seconds in second 3 (then catches up). Every second it prints what the
reader got (messages, seq gaps, cseq gaps, p50/p99 of receive time - `t`) and
the peer's RSS and CPU. A peer that keeps up delivers R msg/s with a
latency that stays flat; a peer that falls behind shows latency growing.

    python3 tools/peers/probe.py node-ws --rate 10000 --seconds 10
    python3 tools/peers/probe.py tokio-broadcast --rate 10000 --seconds 30 --stall
    python3 tools/peers/probe.py tokio-broadcast --rate 10000 --seconds 6 --pause 2
"""

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# The peers that speak plain WebSocket at /ws with a per-connection cseq,
# started (and provisioned once) by tools/peers/run.
COMMANDS = {
    name: [os.path.join(HERE, "run"), name]
    for name in ("node-ws", "python-websockets", "tokio-broadcast", "django-channels")
}
SUBSCRIBE = json.dumps({"type": "subscribe", "symbols": ["*"], "mode": "all", "id": 1})


def stalled_client(port):
    """Handshake, subscribe, then never read: a client whose reader froze."""
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /ws?stamps=1&time_unit=ns HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    payload = SUBSCRIBE.encode()
    mask = os.urandom(4)
    frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    s.sendall(frame)
    return s


def proc_stats(pid):
    """(RSS in MiB, CPU seconds) of a process, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss_kib / 1024, (int(fields[11]) + int(fields[12])) / ticks


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


async def main():
    from websockets.asyncio.client import connect

    ap = argparse.ArgumentParser(description="probe one reference peer")
    ap.add_argument("peer", choices=sorted(COMMANDS))
    ap.add_argument("--rate", type=float, default=10000)
    ap.add_argument("--symbols", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--stall", action="store_true", help="add a client that never reads")
    ap.add_argument("--pause", type=float, default=0, help="the reader stops reading for this long in second 3")
    args = ap.parse_args()

    proc = subprocess.Popen(
        COMMANDS[args.peer] + ["--port", "0", "--symbols", str(args.symbols), "--rate", str(args.rate)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(proc.stdout.readline().rsplit(":", 1)[1].split("/")[0])
        async with connect(f"ws://127.0.0.1:{port}/ws?stamps=1&time_unit=ns") as ws:
            await ws.recv()
            await ws.send(SUBSCRIBE)
            await ws.recv()
            stalled = stalled_client(port) if args.stall else None
            last_seq, last_cseq = {}, 1
            print(f"{args.peer} R={args.rate:g} S={args.symbols}{' +1 stalled client' if stalled else ''}")
            print(" s   msgs  seq_gaps cseq_gaps  p50_ms   p99_ms  rss_MiB cpu_%")
            _, cpu0 = proc_stats(proc.pid)
            t_end = time.monotonic() + args.seconds
            for sec in range(1, args.seconds + 1):
                n = seq_gaps = cseq_gaps = 0
                lat = []
                if sec == 3 and args.pause:
                    # The client library stops reading the socket once 16 frames wait: backpressure.
                    await asyncio.sleep(args.pause)
                    t_end += args.pause
                    deadline = time.monotonic() + 1
                deadline = min(t_end, time.monotonic() + 1)
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        frame = await asyncio.wait_for(ws.recv(), left)
                    except asyncio.TimeoutError:
                        break
                    now = time.time_ns()
                    for q in json.loads(frame):
                        if q.get("type") != "q":
                            continue
                        n += 1
                        lat.append((now - q["t"]) / 1e6)
                        prev = last_seq.get(q["sym"])
                        seq_gaps += prev is not None and q["seq"] != prev + 1
                        last_seq[q["sym"]] = q["seq"]
                        cseq_gaps += q["cseq"] != last_cseq + 1
                        last_cseq = q["cseq"]
                rss, cpu = proc_stats(proc.pid)
                print(
                    f"{sec:2d} {n:6d} {seq_gaps:9d} {cseq_gaps:9d} {pct(lat, 50):7.1f} {pct(lat, 99):8.1f}"
                    f" {rss:8.1f} {100 * (cpu - cpu0):5.0f}",
                    flush=True,
                )
                cpu0 = cpu
            if stalled:
                # Let the peer see the stalled client go (and report what it skipped, if it does).
                stalled.close()
                await asyncio.sleep(0.5)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    asyncio.run(main())
