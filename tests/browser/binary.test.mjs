// Unit tests of the binary subprotocol `tickwire.v1.bin` in the dashboard's
// protocol client (src/dashboard/tickwire.js): the decoder against frames
// built from the tables in docs/PROTOCOL.md and against the server encoder's
// pinned bytes, and the client with `binary: true` on a fake WebSocket.
// Run: node --test tests/browser/*.test.mjs

import assert from "node:assert/strict";
import { test } from "node:test";

import { BINARY_PROTOCOL, TickwireClient, decodeBinary } from "../../src/dashboard/tickwire.js";

// The same frame as `GOLDEN` in src/writer/binary.rs, encoded by the server:
// a quote (cf 6), a trades snapshot, an overflow and a heartbeat, with stamps.
const GOLDEN =
  "54014800040000000900000000000000010000000700000017040000000000005e24f0be9a0100001c581d0000000000fbffffffffffffff2c0100006400000006000000000000005f24f0be9a0100006024f0be9a01000002010100030000000c000000000000005e24f0be9a01000015270000000000000000000000000000090000000000000000000000000000005f24f0be9a0100006024f0be9a0100000300010003000000140000000000000000000000000000000d0000000000000008000000000000000000000000000000000000000000000000000000000000000000000000000000040000000000000000000000000000004828f0be9a010000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

/** Builds a frame from the documented offsets (little-endian, 16-byte header). */
function frame(firstCseq, records, stamps = false) {
  const len = stamps ? 72 : 56;
  const buf = new ArrayBuffer(16 + records.length * len);
  const dv = new DataView(buf);
  dv.setUint8(0, 0x54);
  dv.setUint8(1, stamps ? 1 : 0);
  dv.setUint16(2, len, true);
  dv.setUint32(4, records.length, true);
  dv.setBigUint64(8, BigInt(firstCseq), true);
  records.forEach((r, i) => {
    const o = 16 + i * len;
    dv.setUint8(o, r.kind);
    dv.setUint8(o + 1, r.snapshot ? 1 : 0);
    dv.setUint8(o + 2, r.ch ?? 0);
    dv.setUint32(o + 4, r.sym ?? 0, true);
    dv.setBigUint64(o + 8, BigInt(r.seq ?? 0), true);
    dv.setBigUint64(o + 16, BigInt(r.t ?? 0), true);
    dv.setBigInt64(o + 24, BigInt(r.p1 ?? 0), true);
    dv.setBigInt64(o + 32, BigInt(r.p2 ?? 0), true);
    dv.setUint32(o + 40, r.s1 ?? 0, true);
    dv.setUint32(o + 44, r.s2 ?? 0, true);
    dv.setBigUint64(o + 48, BigInt(r.cf ?? 0), true);
    if (stamps) {
      dv.setBigUint64(o + 56, BigInt(r.ti ?? 0), true);
      dv.setBigUint64(o + 64, BigInt(r.to ?? 0), true);
    }
  });
  return buf;
}

test("the server's pinned frame decodes to the JSON protocol's messages", () => {
  const bytes = Buffer.from(GOLDEN, "hex");
  // A Node Buffer is a view into a larger pool: the decoder must honour its offset.
  const names = new Map([[7, "AAPL"], [3, "MSFT"]]);
  assert.deepEqual(decodeBinary(bytes, names), [
    { type: "q", cseq: 9, cf: 6, sym: "AAPL", seq: 1047, bp: 192.31, bs: 300, ap: -0.0005, as: 100,
      t: 1764140000350, ti: 1764140000351, to: 1764140000352 },
    { type: "snapshot", ch: "trades", cseq: 10, sym: "MSFT", seq: 12, p: 1.0005, s: 9,
      t: 1764140000350, ti: 1764140000351, to: 1764140000352 },
    { type: "overflow", cseq: 11, ch: "trades", sym: "MSFT", lost: 8, from_seq: 13, to_seq: 20 },
    { type: "heartbeat", cseq: 12, t: 1764140001352 },
  ]);
});

test("cf 1 is omitted, unknown kinds keep their cseq, bad frames throw", () => {
  const names = new Map([[1, "IBM"]]);
  const f = frame(5, [
    { kind: 2, ch: 1, sym: 1, seq: 3, t: 7, p1: 1_500_000, s1: 10, cf: 1 },
    { kind: 9 },
  ]);
  assert.deepEqual(decodeBinary(f, names), [
    { type: "t", cseq: 5, sym: "IBM", seq: 3, p: 150, s: 10, t: 7 },
    { type: "unknown", cseq: 6 },
  ]);
  assert.throws(() => decodeBinary(f.slice(0, f.byteLength - 1), names), /length/);
  assert.throws(() => decodeBinary(new TextEncoder().encode("[]"), names), /not a tickwire/);
});

/** A WebSocket whose server side the test plays; it sends text or binary frames. */
class FakeSocket {
  static all = [];
  constructor(url, protocol) {
    this.url = url;
    this.protocol = protocol;
    this.sent = [];
    this.binaryType = "blob";
    FakeSocket.all.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code, reason) {
    this.closed = { code, reason };
  }
  text(...msgs) {
    this.onmessage({ data: JSON.stringify(msgs) });
  }
  binary(buf) {
    this.onmessage({ data: buf });
  }
}

function setup() {
  FakeSocket.all = [];
  const timers = { setTimeout: () => 0, clearTimeout: () => {} };
  const client = new TickwireClient("ws://test/ws", { WebSocket: FakeSocket, binary: true, now: () => 1, ...timers });
  const events = [];
  for (const type of ["quote", "trade", "overflow", "gap", "seqgap", "error"]) {
    client.on(type, (e) => events.push([type, e]));
  }
  const of = (type) => events.filter(([t]) => t === type).map(([, e]) => e);
  return { client, of, socket: () => FakeSocket.all.at(-1) };
}

test("binary: true offers tickwire.v1.bin and turns records into the usual events", () => {
  const { client, of, socket } = setup();
  client.subscribe(["AAPL"], { mode: "all" });
  client.connect();
  const ws = socket();
  // The subprotocol is offered and frames are asked for as ArrayBuffers.
  assert.equal(ws.protocol, BINARY_PROTOCOL);
  assert.equal(ws.binaryType, "arraybuffer");
  ws.text({ type: "welcome", session: "s-1", epoch: "e-1", hb_ms: 1000, time_unit: "ms" });
  ws.text({ type: "status", cseq: 1, feed: "live", t: 1 });
  const req = ws.sent.find((r) => r.type === "subscribe");
  ws.text({
    type: "subscribed", id: req.id, cseq: 2, rejected: [],
    subs: [
      { ch: "quotes", sym: "AAPL", id: 4, seq: 10, mode: "all", max_hz: null },
      { ch: "trades", sym: "AAPL", id: 4, seq: 2, mode: "all", max_hz: null },
    ],
  });
  // Snapshot, update and overflow in one binary frame; cseq continues from the text frames.
  ws.binary(frame(3, [
    { kind: 1, snapshot: true, sym: 4, seq: 10, t: 5, p1: 1_900_000, p2: 1_900_200, s1: 1, s2: 2 },
    { kind: 1, sym: 4, seq: 11, t: 6, p1: 1_900_100, p2: 1_900_300, s1: 3, s2: 4, cf: 1 },
    { kind: 3, ch: 1, sym: 4, seq: 9, p1: 3, p2: 7 },
  ]));
  const quotes = of("quote");
  assert.deepEqual(quotes.map((q) => [q.sym, q.seq, q.snapshot, q.bp, q.ap]), [
    ["AAPL", 10, true, 190, 190.02],
    ["AAPL", 11, false, 190.01, 190.03],
  ]);
  assert.deepEqual(of("overflow").map((o) => [o.sym, o.from_seq, o.to_seq, o.lost]), [["AAPL", 3, 9, 7]]);
  assert.deepEqual([of("gap"), of("seqgap"), of("error")], [[], [], []]);
  // A binary frame whose first_cseq skips one is a transport gap like any other.
  ws.binary(frame(7, [{ kind: 4, t: 9 }]));
  assert.deepEqual(of("gap"), [{ expected: 6, got: 7 }]);
});
