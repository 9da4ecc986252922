#!/usr/bin/env python3
"""Measurements of the NATS bus (issue 16) that tickwire-bench's one-server
rows cannot make. Each starts its own nats-server on a free loopback port
and stops everything it started.

  tools/bench/bus.py throughput [--rate 200000] [--seconds 10]
      One `tickwire ingest` (synthetic feed, 1,000 symbols) publishing on NATS,
      no edge: NATS messages/s and bytes/s, updates per message, the ingest's
      CPU per update against `tickwire serve` at the same rate without a bus,
      and nats-server's CPU.

  tools/bench/bus.py edges [--edges 3] [--seconds 8]
      One ingest (10,000 updates/s, 1,000 symbols) and 1..N edges; each edge
      gets 100 clients from its own tickwire-bench process (bus.toml's case
      c100-r10k: mode all, ["*"], tickwire.v1.bin). Prints, for
      each count of edges, the messages delivered per second in total and
      the CPU per delivered message (edges, ingest, NATS).

Build first: cargo build --release -p tickwire -p tickwire-bench --bin tickwire --bin tickwire-bench
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target/release/tickwire")
BENCH = os.path.join(ROOT, "target/release/tickwire-bench")
TICK = os.sysconf("SC_CLK_TCK")
STARTED = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def start(args, log):
    p = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    STARTED.append(p)
    return p


def stop_all():
    for p in reversed(STARTED):
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in reversed(STARTED):
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
    STARTED.clear()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def metrics(port):
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        m = re.match(r"^([a-z_]+) ([0-9.e+]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def server(logs, name, args):
    """Starts `tickwire ARGS` on a free port; returns (process, port)."""
    port = free_port()
    p = start([BIN] + args + ["--listen", f"127.0.0.1:{port}", "--max-connections-per-ip", "100000"],
              open(os.path.join(logs, f"{name}.log"), "w"))
    wait_port(port)
    return p, port


class Cluster:
    def __init__(self, logs):
        self.logs = logs
        self.js = tempfile.mkdtemp(prefix="tickwire-bus-bench-")
        nats_bin = shutil.which("nats-server") or "/usr/sbin/nats-server"
        self.nats_port = free_port()
        self.url = f"nats://127.0.0.1:{self.nats_port}"
        self.nats = start([nats_bin, "-js", "-a", "127.0.0.1", "-p", str(self.nats_port), "-sd", self.js],
                          open(os.path.join(logs, "nats.log"), "w"))
        wait_port(self.nats_port)

    def server(self, name, args):
        return server(self.logs, name, args)

    def close(self):
        stop_all()
        shutil.rmtree(self.js, ignore_errors=True)


def throughput(a):
    logs = tempfile.mkdtemp(prefix="tickwire-bus-logs-")
    feed = ["--symbols", "1000", "--rate", str(a.rate), "--shards", "1"]
    rows = []
    # Baseline: the same feed, no bus.
    alone, port = server(logs, "serve", ["serve"] + feed)
    time.sleep(a.warmup)
    c0, m0 = cpu_seconds(alone.pid), metrics(port)
    time.sleep(a.seconds)
    c1, m1 = cpu_seconds(alone.pid), metrics(port)
    ups = (m1["tickwire_ticks_in_total"] - m0["tickwire_ticks_in_total"]) / a.seconds
    rows.append(("serve, no bus", ups, (c1 - c0) / a.seconds, None))
    stop_all()
    cl = Cluster(logs)
    try:
        ing, port = cl.server("ingest", ["ingest", "--nats", cl.url] + feed)
        time.sleep(a.warmup)
        c0, n0, m0 = cpu_seconds(ing.pid), cpu_seconds(cl.nats.pid), metrics(port)
        time.sleep(a.seconds)
        c1, n1, m1 = cpu_seconds(ing.pid), cpu_seconds(cl.nats.pid), metrics(port)
        d = {k: (m1[k] - m0.get(k, 0)) / a.seconds for k in m1 if k.startswith("tickwire_")}
        ups = d["tickwire_bus_updates_out_total"]
        msgs = d["tickwire_bus_batches_out_total"] + d["tickwire_bus_heartbeats_out_total"] + d["tickwire_bus_lvc_out_total"]
        rows.append(("ingest, publishing", ups, (c1 - c0) / a.seconds, (n1 - n0) / a.seconds))
        print(f"rate asked {a.rate}/s, measured over {a.seconds} s after {a.warmup} s (logs: {logs})")
        print(f"bus: {d['tickwire_bus_batches_out_total']:.0f} batches/s, "
              f"{ups / max(d['tickwire_bus_batches_out_total'], 1):.1f} updates per batch, "
              f"{d['tickwire_bus_bytes_out_total'] / 1e6:.2f} MB/s of batches "
              f"({d['tickwire_bus_bytes_out_total'] / max(ups, 1):.1f} B per update), "
              f"{d['tickwire_bus_lvc_out_total']:.0f} latest values/s into JetStream, "
              f"{msgs:.0f} NATS messages/s in all; "
              f"unsent {d['tickwire_bus_batches_unsent_total']:.0f}/s, ring lost {d['tickwire_bus_ring_lost_total']:.0f}/s")
        print()
        print("| process | updates/s | CPU (cores) | CPU per update | nats-server CPU (cores) |")
        print("|---|---|---|---|---|")
        for name, ups, cores, nats in rows:
            per = cores / max(ups, 1) * 1e6
            n = "" if nats is None else f"{nats:.2f}"
            print(f"| {name} | {ups:,.0f} | {cores:.2f} | {per:.2f} µs | {n} |")
    finally:
        cl.close()


def edges(a):
    logs = tempfile.mkdtemp(prefix="tickwire-bus-logs-")
    print("100 clients per edge, 10,000 updates/s over 1,000 symbols, mode all, "
          f"tickwire.v1.bin; {a.seconds} s measured (logs: {logs})")
    print()
    print("| edges | delivered msg/s (all edges) | per edge | edges' CPU (cores) | CPU per delivered msg (edges) | ingest + NATS CPU (cores) |")
    print("|---|---|---|---|---|---|")
    for n in range(1, a.edges + 1):
        cl = Cluster(logs)
        try:
            ing, iport = cl.server("ingest", ["ingest", "--nats", cl.url, "--symbols", "1000",
                                              "--rate", "10000", "--shards", "1"])
            es = [cl.server(f"edge-{i}", ["serve", "--nats", cl.url, "--node-name", f"edge-{i}"])
                  for i in range(n)]
            benches = []
            for i, (p, port) in enumerate(es):
                out = os.path.join(logs, f"bench-{n}-{i}")
                benches.append(start([BENCH, "--scenario", os.path.join(ROOT, "tools/bench/scenarios/bus.toml"),
                                      "--case", "c100-r10k", "--url", f"ws://127.0.0.1:{port}/ws",
                                      "--pid", str(p.pid), "--protocol", "binary", "--runs", "1",
                                      "--warmup", "3s", "--duration", f"{int(a.seconds) + 4}s",
                                      "--out", out, "--hard-timeout", str(int(a.seconds) + 60)],
                                     open(out + ".log", "w")))
            time.sleep(4)  # connected, subscribed, warmed up (the harness waits 3 s)
            pids = [p.pid for p, _ in es]
            c0 = [cpu_seconds(pid) for pid in pids]
            o0 = [metrics(port)["tickwire_messages_out_total"] for _, port in es]
            b0 = cpu_seconds(ing.pid) + cpu_seconds(cl.nats.pid)
            time.sleep(a.seconds)
            c1 = [cpu_seconds(pid) for pid in pids]
            o1 = [metrics(port)["tickwire_messages_out_total"] for _, port in es]
            b1 = cpu_seconds(ing.pid) + cpu_seconds(cl.nats.pid)
            for b in benches:
                b.wait(timeout=a.seconds + 90)
            delivered = (sum(o1) - sum(o0)) / a.seconds
            cores = (sum(c1) - sum(c0)) / a.seconds
            print(f"| {n} | {delivered:,.0f} | {delivered / n:,.0f} | {cores:.2f} | "
                  f"{cores / max(delivered, 1) * 1e6:.2f} µs | {(b1 - b0) / a.seconds:.2f} |", flush=True)
        finally:
            cl.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--rate", type=int, default=200_000)
    t.add_argument("--seconds", type=float, default=10)
    t.add_argument("--warmup", type=float, default=3)
    e = sub.add_parser("edges")
    e.add_argument("--edges", type=int, default=3)
    e.add_argument("--seconds", type=float, default=8)
    a = p.parse_args()
    for b in (BIN, BENCH):
        if not os.path.exists(b):
            sys.exit(f"{b} is missing: cargo build --release -p tickwire -p tickwire-bench "
                     "--bin tickwire --bin tickwire-bench")
    try:
        throughput(a) if a.cmd == "throughput" else edges(a)
    finally:
        stop_all()


if __name__ == "__main__":
    main()
