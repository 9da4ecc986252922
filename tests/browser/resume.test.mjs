// Resume against a real server: tickwire.js (src/dashboard/tickwire.js) on
// Node's WebSocket, subscribed to every stream of a synthetic feed in
// mode "all", loses its connection and reconnects by itself; every stream
// must go on across both connections with each seq once and in order (or an
// exact `overflow` for what the server's history no longer held).
// Run: TICKWIRE_BIN=target/debug/tickwire node --experimental-websocket --test tests/browser/resume.test.mjs
// (Node 22+ needs no flag; normally through `cargo test browser`, see tests/browser.rs).

import assert from "node:assert/strict";
import { test } from "node:test";

import { TickwireClient } from "../../src/dashboard/tickwire.js";
import { startServer } from "./server.mjs";
import { until } from "./until.mjs";

/** Each test's bound; a run takes about a second. */
const TEST_MS = 30_000;
/** Bound of each wait inside a test. */
const WAIT_MS = 10_000;
/** Updates every stream gets on each connection before the test moves on. */
const PER_CONNECTION = 20;
/** The reconnect delay (the outage): updates pile up meanwhile. */
const OUTAGE_MS = 200;

/**
 * Streams every quote and trade of a 5-symbol feed at 1,000 updates/s in
 * mode "all" through tickwire.js against `tickwire serve --history
 * HISTORY`, closes the socket under the client, and returns what the client
 * saw once every stream had PER_CONNECTION updates on the new connection.
 */
async function dropAndResume(history) {
  const { proc, port } = await startServer(process.env.TICKWIRE_BIN, "127.0.0.1:0", [
    "--symbols", "5", "--rate", "1000", "--history", String(history),
  ]);
  try {
    assert.equal(typeof WebSocket, "function", "a global WebSocket: Node 22+, or Node 20 with --experimental-websocket");
    const sockets = [];
    class Recorded extends WebSocket {
      constructor(...args) {
        super(...args);
        this.openedAt = Date.now();
        sockets.push(this);
      }
    }
    const client = new TickwireClient(`ws://127.0.0.1:${port}/ws?stamps=1`, {
      WebSocket: Recorded,
      initialBackoffMs: OUTAGE_MS,
      random: () => 1, // the backoff is exactly OUTAGE_MS
    });
    // Per "channel:symbol": what arrived, in order, tagged with its connection.
    const seen = new Map();
    const log = (key, entry) => {
      if (!seen.has(key)) seen.set(key, []);
      seen.get(key).push({ conn: sockets.length, ...entry });
    };
    const problems = [];
    const reports = [];
    client.on("quote", (m) => log(`quotes:${m.sym}`, { seq: m.seq, snapshot: m.snapshot, ti: m.ti }));
    client.on("trade", (m) => log(`trades:${m.sym}`, { seq: m.seq, snapshot: m.snapshot, ti: m.ti }));
    client.on("overflow", (m) => log(`${m.ch}:${m.sym}`, { from: m.from_seq, to: m.to_seq }));
    client.on("resume", (r) => reports.push(r));
    for (const type of ["seqgap", "gap", "missed", "error"]) client.on(type, (e) => problems.push([type, e]));
    const updates = (conn) => [...seen.values()].map((xs) => xs.filter((x) => x.conn === conn && x.seq !== undefined && !x.snapshot).length);

    client.subscribe(["*"], { mode: "all" });
    client.connect();
    await until("10 streams with updates", () => seen.size === 10 && Math.min(...updates(1)) >= PER_CONNECTION, WAIT_MS);
    sockets[0].close(); // the connection goes away under the client
    await until("a resume report", () => reports.length > 0, WAIT_MS);
    await until("updates on the new connection", () => Math.min(...updates(2)) >= PER_CONNECTION, WAIT_MS);
    client.close();
    assert.equal(sockets.length, 2, "one reconnect");
    assert.deepEqual(problems, []);
    return { seen, report: reports[0], reports, reopenedAt: sockets[1].openedAt };
  } finally {
    proc.kill("SIGKILL");
  }
}

/** Checks that every stream went on exactly: seq + 1 each time, or an overflow naming the gap. */
function assertContiguous(seen) {
  for (const [key, xs] of seen) {
    // A snapshot first, or none for a stream without a value yet (its first
    // update is seq 1).
    let last = xs[0].snapshot ? xs[0].seq : 0;
    for (const x of xs.slice(xs[0].snapshot ? 1 : 0)) {
      if (x.from !== undefined) {
        assert.equal(x.from, last + 1, `${key}: overflow adjacent to ${last}`);
        last = x.to;
      } else {
        assert.equal(x.seq, last + 1, `${key}: after ${last} (connection ${x.conn})`);
        last = x.seq;
      }
    }
  }
}

test("mode all goes on across a dropped connection: every update once, in order", { timeout: TEST_MS }, async () => {
  const { seen, report, reports, reopenedAt } = await dropAndResume(4096);
  assertContiguous(seen);
  // Every stream was resumed and recovered; nothing was reported lost.
  assert.equal(reports.length, 1);
  assert.equal(report.newEpoch, false);
  assert.equal(report.recovered.length, 10);
  assert.deepEqual(report.lost, []);
  assert.ok([...seen.values()].every((xs) => xs.every((x) => x.from === undefined)), "no overflow");
  // Updates the server ingested before the second connection existed came
  // on it: the missed ones, from the history.
  const replayed = [...seen.values()].flat().filter((x) => x.conn === 2 && x.ti < reopenedAt).length;
  assert.ok(replayed > 0, "updates missed during the outage were replayed");
});

test("past the history: recovered false, an exact overflow, then every update the server held", { timeout: TEST_MS }, async () => {
  const { seen, report } = await dropAndResume(1);
  assertContiguous(seen);
  // The busiest stream (about 390 quotes/s) missed more than one update in
  // the outage; the history held only the newest.
  assert.ok(report.lost.some((s) => s.ch === "quotes"), JSON.stringify(report));
  for (const s of report.lost) {
    const xs = seen.get(`${s.ch}:${s.sym}`);
    const at = xs.findIndex((x) => x.conn === 2);
    // On the new connection the stream starts with the overflow from where it stopped.
    assert.equal(xs[at].from, s.seq + 1, `${s.ch}:${s.sym}: ${JSON.stringify(xs.slice(at, at + 2))}`);
  }
});
