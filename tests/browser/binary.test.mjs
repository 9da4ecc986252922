// Unit tests of the binary subprotocol `tickwire.v1.bin` in the dashboard's
// protocol client (src/dashboard/tickwire.js): the decoder against frames
// built from the tables in docs/PROTOCOL.md and against the server encoder's
// pinned bytes (bars included: their longer records), and the client with
// `binary: true` on a fake WebSocket.
// Run: node --test tests/browser/*.test.mjs

import assert from "node:assert/strict";
import { test } from "node:test";

import { BINARY_PROTOCOL, TickwireClient, decodeBinary } from "../../src/dashboard/tickwire.js";

// The same frame as `GOLDEN` in src/protocol/binary.rs, encoded by the server:
// a quote (cf 6), a trades snapshot, an overflow and a heartbeat, with stamps.
const GOLDEN =
  "54014800040000000900000000000000010000000700000017040000000000005e24f0be9a0100001c581d0000000000fbffffffffffffff2c0100006400000006000000000000005f24f0be9a0100006024f0be9a01000002010100030000000c000000000000005e24f0be9a01000015270000000000000000000000000000090000000000000000000000000000005f24f0be9a0100006024f0be9a0100000300010003000000140000000000000000000000000000000d0000000000000008000000000000000000000000000000000000000000000000000000000000000000000000000000040000000000000000000000000000004828f0be9a010000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

// The same frames as `GOLDEN_BARS` in src/protocol/binary.rs, without and
// with stamps: a session that takes bars, so every record is 32 bytes longer.
// A bars_1s update (cf 3), a closed bars_1m snapshot, a quote, a bars_1s overflow.
const GOLDEN_BARS = [
  "54005800040000001500000000000000050002000700000005000000000000000023f0be9a010000e4581d0000000000b004000000000000040000000000000003000000000000001c581d0000000000ac591d000000000054571d000000000090581d00000000000503030003000000280000000000000080eaeebe9a010000422700000000000088130000000000000c00000000000000000000000000000015270000000000007427000000000000ac260000000000002427000000000000010000000700000017040000000000005e24f0be9a0100001c581d0000000000e4581d00000000002c010000640000000100000000000000000000000000000000000000000000000000000000000000000000000000000003000200070000000900000000000000000000000000000006000000000000000400000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
  "54016800040000001500000000000000050002000700000005000000000000000023f0be9a010000e4581d0000000000b004000000000000040000000000000003000000000000005f24f0be9a0100006024f0be9a0100001c581d0000000000ac591d000000000054571d000000000090581d00000000000503030003000000280000000000000080eaeebe9a010000422700000000000088130000000000000c0000000000000000000000000000005f24f0be9a0100006024f0be9a01000015270000000000007427000000000000ac260000000000002427000000000000010000000700000017040000000000005e24f0be9a0100001c581d0000000000e4581d00000000002c0100006400000001000000000000005f24f0be9a0100006024f0be9a01000000000000000000000000000000000000000000000000000000000000000000000300020007000000090000000000000000000000000000000600000000000000040000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
];

/**
 * Builds a frame from the documented offsets (little-endian, 16-byte
 * header); `bars`: the longer records of a session that takes bars, with
 * `r.bar` = [o, h, l, vw] after the stamps.
 */
function frame(firstCseq, records, stamps = false, bars = false) {
  const base = stamps ? 72 : 56;
  const len = base + (bars ? 32 : 0);
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
    dv.setUint8(o + 1, (r.snapshot ? 1 : 0) | (r.closed ? 2 : 0));
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
    if (bars) (r.bar ?? [0, 0, 0, 0]).forEach((p, k) => dv.setBigInt64(o + base + 8 * k, BigInt(p), true));
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

test("the server's pinned bars frames decode to b messages and bar snapshots", () => {
  const names = new Map([[7, "AAPL"], [3, "MSFT"]]);
  for (const [i, hex] of GOLDEN_BARS.entries()) {
    const stamps = i === 1 ? { ti: 1764140000351, to: 1764140000352 } : {};
    // The header's record_len says 88 (104 with stamps): the decoder steps by it.
    const bytes = Buffer.from(hex, "hex");
    assert.equal(bytes.readUInt16LE(2), 88 + 16 * i);
    assert.deepEqual(decodeBinary(bytes, names), [
      { type: "b", ch: "bars_1s", cseq: 21, cf: 3, sym: "AAPL", seq: 5, o: 192.31, h: 192.35, l: 192.29, c: 192.33,
        v: 1200, n: 4, vw: 192.3216, x: false, t: 1764140000000, ...stamps },
      { type: "snapshot", ch: "bars_1m", cseq: 22, sym: "MSFT", seq: 40, o: 1.0005, h: 1.01, l: 0.99, c: 1.005,
        v: 5000, n: 12, vw: 1.002, x: true, t: 1764139920000, ...stamps },
      // Other kinds in the longer records read as before.
      { type: "q", cseq: 23, sym: "AAPL", seq: 1047, bp: 192.31, bs: 300, ap: 192.33, as: 100, t: 1764140000350, ...stamps },
      { type: "overflow", cseq: 24, ch: "bars_1s", sym: "AAPL", lost: 4, from_seq: 6, to_seq: 9 },
    ]);
  }
  // The same bar as JSON, as a JSON session gets it, reads the same.
  const json = JSON.parse('[{"type":"b","ch":"bars_1s","cseq":21,"cf":3,"sym":"AAPL","seq":5,"o":192.31,"h":192.35,"l":192.29,"c":192.33,"v":1200,"n":4,"vw":192.3216,"x":false,"t":1764140000000}]');
  assert.deepEqual(decodeBinary(Buffer.from(GOLDEN_BARS[0], "hex"), names).slice(0, 1), json);
});

test("a bar record in records too short for bars is skipped as unknown, keeping its cseq", () => {
  const f = frame(3, [{ kind: 5, ch: 2, sym: 1, seq: 4 }, { kind: 4, t: 8 }]);
  assert.deepEqual(decodeBinary(f, new Map([[1, "IBM"]])), [
    { type: "unknown", cseq: 3 },
    { type: "heartbeat", cseq: 4, t: 8 },
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
  for (const type of ["quote", "trade", "bar", "overflow", "gap", "seqgap", "error"]) {
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

test("binary bars: the longer records become bar events, seq and cf checked per bars stream", () => {
  const { client, of, socket } = setup();
  client.subscribe(["AAPL"], { channels: ["bars_1s"], mode: "latest" });
  client.connect();
  const ws = socket();
  ws.text({ type: "welcome", session: "s-1", epoch: "e-1", hb_ms: 1000, time_unit: "ms" });
  ws.text({ type: "status", cseq: 1, feed: "live", t: 1 });
  const req = ws.sent.find((r) => r.type === "subscribe");
  assert.deepEqual(req.channels, ["bars_1s"]);
  ws.text({ type: "subscribed", id: req.id, cseq: 2, rejected: [],
    subs: [{ ch: "bars_1s", sym: "AAPL", id: 4, seq: 10, mode: "latest", max_hz: null }] });
  const bar = (seq, closed, c, extra = {}) =>
    ({ kind: 5, ch: 2, sym: 4, seq, t: 1000, p1: c, p2: 300, s1: seq, closed, bar: [1_900_000, 1_905_000, 1_899_000, 1_901_234], ...extra });
  ws.binary(frame(3, [
    { ...bar(10, false, 1_902_000), snapshot: true },
    bar(11, false, 1_903_000, { cf: 1 }),
    bar(14, true, 1_904_000, { cf: 3 }), // three updates in one: the bar closed meanwhile
  ], false, true));
  assert.deepEqual(of("bar").map((b) => [b.ch, b.sym, b.seq, b.snapshot, b.o, b.h, b.l, b.c, b.v, b.n, b.vw, b.x, b.cf]), [
    ["bars_1s", "AAPL", 10, true, 190, 190.5, 189.9, 190.2, 300, 10, 190.1234, false, undefined],
    ["bars_1s", "AAPL", 11, false, 190, 190.5, 189.9, 190.3, 300, 11, 190.1234, false, undefined],
    ["bars_1s", "AAPL", 14, false, 190, 190.5, 189.9, 190.4, 300, 14, 190.1234, true, 3],
  ]);
  assert.deepEqual([of("quote"), of("trade"), of("gap"), of("seqgap"), of("error")], [[], [], [], [], []]);
  // A jump cf does not explain is a gap of the bars stream like any other.
  ws.binary(frame(6, [bar(17, false, 1_905_000, { cf: 2 })], false, true));
  assert.deepEqual(of("seqgap"), [{ ch: "bars_1s", sym: "AAPL", expected: 16, got: 17 }]);
});
