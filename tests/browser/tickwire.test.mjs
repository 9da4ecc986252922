// Unit tests of the dashboard's protocol client (src/dashboard/tickwire.js)
// against a fake WebSocket and fake timers: no server, no browser, no waiting.
// Run: node --test tests/browser/*.test.mjs

import assert from "node:assert/strict";
import { test } from "node:test";

import { State, TickwireClient, backoffDelay } from "../../src/dashboard/tickwire.js";

/** Timers driven by hand: `advance(ms)` runs whatever falls due, in order. */
class FakeClock {
  constructor() {
    this.t = 1_000_000;
    this.timers = new Map();
    this.nextId = 1;
  }
  now = () => this.t;
  setTimeout = (fn, ms) => {
    const id = this.nextId++;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  };
  clearTimeout = (id) => {
    this.timers.delete(id);
  };
  advance(ms) {
    const end = this.t + ms;
    for (;;) {
      let next = null;
      for (const [id, tm] of this.timers) {
        if (tm.at <= end && (next === null || tm.at < next[1].at)) next = [id, tm];
      }
      if (next === null) break;
      this.timers.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
    }
    this.t = end;
  }
}

/** A WebSocket whose "server side" the test plays by hand. */
class FakeSocket {
  static all = [];
  constructor(url, protocol) {
    this.url = url;
    this.protocol = protocol;
    this.sent = [];
    this.closed = null;
    this.cseq = 0;
    FakeSocket.all.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code, reason) {
    this.closed = { code, reason };
  }
  /** Delivers one frame; messages after `welcome` get the next cseq unless they carry one. */
  frame(...msgs) {
    for (const m of msgs) if (m.type !== "welcome" && m.cseq === undefined) m.cseq = ++this.cseq;
    this.onmessage({ data: JSON.stringify(msgs) });
  }
  welcome(epoch = "e-1", hb_ms = 1000, limits = undefined) {
    this.frame({ type: "welcome", session: "s-1", epoch, hb_ms, time_unit: "ms", limits });
    this.frame({ type: "status", feed: "live", t: 1 });
  }
  /** Answers the last request of `type` the client sent. */
  reply(type, msg) {
    const req = this.sent.findLast((r) => r.type === type);
    assert.ok(req, `the client sent a ${type}`);
    this.frame({ ...msg, id: req.id });
    return req;
  }
  serverClose(code = 1006, reason = "") {
    this.onclose({ code, reason });
  }
}

function setup(options = {}) {
  FakeSocket.all = [];
  const clock = new FakeClock();
  const client = new TickwireClient("ws://test/ws?stamps=1", {
    WebSocket: FakeSocket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => 0.5,
    ...options,
  });
  const events = [];
  for (const type of ["state", "quote", "trade", "gap", "seqgap", "missed", "rejected", "retry", "error", "resume", "overflow"]) {
    client.on(type, (e) => events.push([type, e]));
  }
  const of = (type) => events.filter(([t]) => t === type).map(([, e]) => e);
  const states = () => of("state").map((e) => e.state);
  const socket = () => FakeSocket.all.at(-1);
  return { clock, client, events, of, states, socket };
}

const sub = (ch, sym, seq) => ({ ch, sym, seq, mode: "latest", max_hz: null });

test("backoff doubles up to the cap, with jitter in the upper half", () => {
  assert.equal(backoffDelay(0, 250, 5000, () => 0), 125);
  assert.equal(backoffDelay(0, 250, 5000, () => 1), 250);
  assert.equal(backoffDelay(3, 250, 5000, () => 0.5), 1500);
  for (let a = 0; a < 40; a++) {
    const d = backoffDelay(a, 250, 5000, Math.random);
    assert.ok(d >= 125 && d <= 5000, `attempt ${a}: ${d}`);
  }
  assert.equal(backoffDelay(30, 250, 5000, () => 1), 5000);
});

test("contiguous cseq across frames is accepted, a gap reconnects", () => {
  const { clock, client, of, states, socket } = setup();
  client.connect();
  const first = socket();
  assert.equal(first.protocol, "tickwire.v1.json");
  first.welcome();
  first.frame({ type: "heartbeat", t: 2 }, { type: "heartbeat", t: 3 });
  assert.deepEqual(of("gap"), []);
  assert.equal(client.state, State.LIVE);

  // cseq 4 is followed by 6: message 5 was lost in transport.
  first.frame({ type: "heartbeat", t: 4 }, { type: "heartbeat", cseq: 6, t: 5 });
  assert.deepEqual(of("gap"), [{ expected: 5, got: 6 }]);
  assert.equal(first.closed.code, 4000, "the client closes the damaged connection");
  assert.equal(client.state, State.RECONNECTING);
  assert.deepEqual(states(), [State.CONNECTING, State.LIVE, State.RECONNECTING]);

  // A new connection starts counting from its own welcome again.
  clock.advance(250);
  assert.equal(FakeSocket.all.length, 2);
  socket().welcome();
  socket().frame({ type: "heartbeat", t: 6 });
  assert.equal(of("gap").length, 1);
  assert.equal(client.state, State.LIVE);
});

test("messages of a dropped socket are ignored", () => {
  const { clock, client, of, socket } = setup();
  client.connect();
  const first = socket();
  first.welcome();
  first.frame({ type: "heartbeat", cseq: 9, t: 1 });
  clock.advance(250);
  // The old socket's late messages must not reach the new connection's state.
  first.frame({ type: "heartbeat", cseq: 10, t: 2 });
  assert.equal(of("gap").length, 1);
});

test("a snapshot comes first; older or repeated updates never overwrite it", () => {
  const { client, of, socket } = setup();
  client.subscribe(["AAPL"], { max_hz: 4 });
  client.connect();
  const ws = socket();
  ws.welcome();
  // Resubscribed on welcome, with the options given.
  const req = ws.sent.find((r) => r.type === "subscribe");
  assert.deepEqual(req.symbols, ["AAPL"]);
  assert.equal(req.max_hz, 4);
  ws.reply("subscribe", { type: "subscribed", subs: [sub("quotes", "AAPL", 41), sub("trades", "AAPL", 4)], rejected: [] });

  ws.frame(
    { type: "snapshot", ch: "quotes", sym: "AAPL", seq: 41, bp: 1, bs: 1, ap: 2, as: 1, t: 1 },
    { type: "snapshot", ch: "trades", sym: "AAPL", seq: 4, p: 1.5, s: 100, t: 1 },
  );
  ws.frame(
    { type: "q", sym: "AAPL", seq: 41, bp: 9, bs: 1, ap: 9, as: 1, t: 2 }, // repeats the snapshot: dropped
    { type: "q", sym: "AAPL", seq: 40, bp: 8, bs: 1, ap: 8, as: 1, t: 2 }, // older: dropped
    { type: "q", sym: "AAPL", seq: 43, cf: 2, bp: 1.1, bs: 1, ap: 2.1, as: 1, t: 3 }, // conflated, no gap
    { type: "t", sym: "AAPL", seq: 5, p: 1.6, s: 200, t: 3 },
  );
  // An older snapshot (e.g. a late duplicate) cannot move the stream back either.
  ws.frame({ type: "snapshot", ch: "quotes", sym: "AAPL", seq: 42, bp: 7, bs: 1, ap: 7, as: 1, t: 1 });

  const quotes = of("quote").map((q) => [q.seq, q.snapshot, q.bp]);
  assert.deepEqual(quotes, [
    [41, true, 1],
    [43, false, 1.1],
  ]);
  assert.deepEqual(of("trade").map((t) => [t.seq, t.snapshot, t.ch]), [
    [4, true, "trades"],
    [5, false, "trades"],
  ]);
  assert.deepEqual(of("seqgap"), []);
  assert.equal(typeof of("quote")[0].receivedAt, "number");

  // A jump that cf does not explain is reported, and the newer value still applies.
  ws.frame({ type: "q", sym: "AAPL", seq: 50, cf: 2, bp: 1.2, bs: 1, ap: 2.2, as: 1, t: 4 });
  assert.deepEqual(of("seqgap"), [{ ch: "quotes", sym: "AAPL", expected: 45, got: 50 }]);
  assert.equal(of("quote").at(-1).seq, 50);
});

test("re-subscribing: subscribed.seq is the base of the next cf", () => {
  const { client, of, socket } = setup();
  client.subscribe(["AAPL"], { channels: ["quotes"], max_hz: 1 });
  client.connect();
  const ws = socket();
  ws.welcome();
  ws.reply("subscribe", { type: "subscribed", subs: [sub("quotes", "AAPL", 40)], rejected: [] });
  ws.frame({ type: "q", sym: "AAPL", seq: 41, bp: 1, bs: 1, ap: 2, as: 1, t: 1 });
  // New options; the server says the stream continues from 45.
  client.subscribe(["AAPL"], { channels: ["quotes"], max_hz: 4 });
  ws.reply("subscribe", { type: "subscribed", subs: [sub("quotes", "AAPL", 45)], rejected: [] });
  ws.frame({ type: "q", sym: "AAPL", seq: 47, cf: 2, bp: 1, bs: 1, ap: 2, as: 1, t: 2 });
  assert.deepEqual(of("seqgap"), []);
  assert.deepEqual(of("missed"), [], "nothing was missed on a live connection");
  assert.deepEqual(of("quote").map((q) => q.seq), [41, 47]);
});

test("overflow explains a gap in mode all; a jump without one is reported", () => {
  const { client, of, socket } = setup();
  client.subscribe(["MSFT"], { mode: "all", channels: ["quotes"] });
  client.connect();
  const ws = socket();
  ws.welcome();
  ws.reply("subscribe", { type: "subscribed", subs: [sub("quotes", "MSFT", 10)], rejected: [] });
  ws.frame({ type: "q", sym: "MSFT", seq: 11, bp: 1, bs: 1, ap: 2, as: 1, t: 1 });
  ws.frame({ type: "overflow", ch: "quotes", sym: "MSFT", lost: 5, from_seq: 12, to_seq: 16 });
  ws.frame({ type: "q", sym: "MSFT", seq: 17, bp: 1, bs: 1, ap: 2, as: 1, t: 2 });
  assert.deepEqual(of("seqgap"), []);
  ws.frame({ type: "q", sym: "MSFT", seq: 19, bp: 1, bs: 1, ap: 2, as: 1, t: 3 });
  assert.deepEqual(of("seqgap"), [{ ch: "quotes", sym: "MSFT", expected: 18, got: 19 }]);
});

test("reconnect: jittered backoff grows, resets after a welcome, and resubscribes", () => {
  const { clock, client, of, states, socket } = setup();
  client.subscribe(["SPY", "QQQ"], { max_hz: 10 });
  client.connect();
  assert.equal(client.state, State.CONNECTING);
  socket().welcome();
  assert.equal(client.state, State.LIVE);

  socket().serverClose(1006);
  assert.equal(client.state, State.RECONNECTING);
  // random() = 0.5: 3/4 of 250, 500, 1000 ms.
  assert.deepEqual(of("retry").map((r) => r.delayMs), [187.5]);
  assert.equal(of("state").at(-1).retryAt, clock.now() + 187.5);

  clock.advance(187);
  assert.equal(FakeSocket.all.length, 1, "no attempt before the delay");
  clock.advance(1);
  assert.equal(FakeSocket.all.length, 2);
  socket().serverClose(1006); // refused: the server is still down
  clock.advance(375);
  assert.equal(FakeSocket.all.length, 3);
  socket().serverClose(1006);
  assert.deepEqual(of("retry").map((r) => r.delayMs), [187.5, 375, 750]);
  clock.advance(750);
  assert.equal(client.state, State.RECONNECTING);

  const ws = socket();
  ws.welcome();
  assert.equal(client.state, State.LIVE);
  const req = ws.sent.find((r) => r.type === "subscribe");
  assert.deepEqual(req.symbols, ["SPY", "QQQ"]);
  assert.equal(req.max_hz, 10);

  // Live again: the next failure starts from the smallest delay.
  ws.serverClose(1006);
  assert.equal(of("retry").at(-1).delayMs, 187.5);
  assert.deepEqual([...new Set(states())], [State.CONNECTING, State.LIVE, State.RECONNECTING]);

  client.close();
  assert.equal(client.state, State.CLOSED);
  clock.advance(60_000);
  assert.equal(FakeSocket.all.length, 4, "no reconnect after close()");
});

test("shutdown's reconnect_after_ms replaces the backoff once", () => {
  const { clock, client, of, socket } = setup();
  client.connect();
  socket().welcome();
  socket().frame({ type: "shutdown", reconnect_after_ms: 1500 });
  socket().serverClose(1012, "server restarting");
  assert.deepEqual(of("retry").map((r) => r.delayMs), [1500]);
  clock.advance(1499);
  assert.equal(FakeSocket.all.length, 1);
  clock.advance(1);
  assert.equal(FakeSocket.all.length, 2);
  socket().serverClose(1006);
  assert.equal(of("retry").at(-1).delayMs, 375, "back to the backoff (attempt 1)");
});

test("stale: the feed says so, or the connection goes silent", () => {
  const { clock, client, states, socket } = setup();
  client.connect();
  const ws = socket();
  ws.welcome("e-1", 1000);
  ws.frame({ type: "status", feed: "stale", t: 2 });
  assert.equal(client.state, State.STALE);
  ws.frame({ type: "status", feed: "live", t: 3 });
  assert.equal(client.state, State.LIVE);
  ws.frame({ type: "status", feed: "replay_done", t: 4 });
  assert.equal(client.state, State.REPLAY_DONE);
  ws.frame({ type: "status", feed: "live", t: 5 });

  // Heartbeats keep it live...
  for (let i = 0; i < 5; i++) {
    clock.advance(1000);
    ws.frame({ type: "heartbeat", t: 6 + i });
  }
  assert.equal(client.state, State.LIVE);
  // ...silence for 2.5 intervals makes it stale, a message makes it live again...
  clock.advance(2500);
  assert.equal(client.state, State.STALE);
  ws.frame({ type: "heartbeat", t: 20 });
  assert.equal(client.state, State.LIVE);
  // ...and 5 silent intervals drop the connection.
  clock.advance(5000);
  assert.equal(ws.closed.code, 4000);
  assert.equal(client.state, State.RECONNECTING);
  assert.deepEqual(states(), [
    State.CONNECTING, State.LIVE, State.STALE, State.LIVE, State.REPLAY_DONE, State.LIVE,
    State.STALE, State.LIVE, State.STALE, State.RECONNECTING,
  ]);
});

test("a connection attempt that never gets a welcome times out", () => {
  const { clock, client, socket } = setup();
  client.connect();
  const ws = socket();
  clock.advance(5000);
  assert.ok(ws.closed, "the hanging attempt was abandoned");
  assert.equal(client.state, State.CONNECTING, "never live yet: still connecting");
  clock.advance(250);
  assert.equal(FakeSocket.all.length, 2);
});

test("same epoch: missed updates are counted; new epoch: old seq are forgotten", () => {
  const { clock, client, of, socket } = setup();
  client.subscribe(["AAPL"], { channels: ["quotes"] });
  client.connect();
  socket().welcome("e-1");
  socket().reply("subscribe", { type: "subscribed", subs: [sub("quotes", "AAPL", 41)], rejected: [] });
  socket().frame({ type: "q", sym: "AAPL", seq: 42, bp: 1, bs: 1, ap: 2, as: 1, t: 1 });

  socket().serverClose(1006);
  clock.advance(250);
  socket().welcome("e-1");
  socket().reply("subscribe", { type: "subscribed", subs: [sub("quotes", "AAPL", 50)], rejected: [] });
  assert.deepEqual(of("missed"), [{ ch: "quotes", sym: "AAPL", count: 8 }]);

  // Restarted server: seq starts again from 1 and must not be taken as old.
  socket().serverClose(1006);
  clock.advance(250);
  socket().welcome("e-2");
  socket().reply("subscribe", { type: "subscribed", subs: [sub("quotes", "AAPL", 3)], rejected: [] });
  socket().frame({ type: "snapshot", ch: "quotes", sym: "AAPL", seq: 3, bp: 1, bs: 1, ap: 2, as: 1, t: 1 });
  socket().frame({ type: "q", sym: "AAPL", seq: 4, bp: 1, bs: 1, ap: 2, as: 1, t: 1 });
  assert.equal(of("missed").length, 1);
  assert.deepEqual(of("quote").map((q) => q.seq), [42, 3, 4]);
  assert.deepEqual(of("seqgap"), []);
});

test("requests resolve by id; rejected symbols are not resubscribed", async () => {
  const { clock, client, of, socket } = setup();
  client.subscribe(["AAPL", "NOPE"]);
  client.connect();
  const ws = socket();
  ws.welcome();
  ws.reply("subscribe", {
    type: "subscribed",
    subs: [sub("quotes", "AAPL", 1), sub("trades", "AAPL", 1)],
    rejected: [{ sym: "NOPE", code: 404, msg: "unknown symbol" }],
  });
  assert.deepEqual(of("rejected").map((r) => r.sym), ["NOPE"]);
  assert.deepEqual([...client.subs.keys()], ["AAPL"]);

  const listed = client.list("MS");
  assert.deepEqual(ws.reply("list", { type: "symbols", symbols: ["MSFT", "MSTR"] }).prefix, "MS");
  assert.deepEqual(await listed, ["MSFT", "MSTR"]);

  const pinged = client.ping();
  clock.advance(3);
  ws.reply("ping", { type: "pong", t: 123 });
  assert.deepEqual(await pinged, { rttMs: 3, serverTime: 123 });

  const bad = client.list("x");
  ws.reply("list", { type: "error", code: 400, msg: "malformed", temporary: false });
  await assert.rejects(bad, /error 400/);

  const unanswered = client.list("y");
  clock.advance(5000);
  await assert.rejects(unanswered, /no reply/);

  const cut = client.list("z");
  ws.serverClose(1006);
  await assert.rejects(cut, /connection closed/);
  await assert.rejects(client.list("z"), /not connected/);
});

test("unsubscribe forgets the streams and is not resubscribed", () => {
  const { clock, client, socket } = setup();
  client.subscribe(["AAPL", "MSFT"]);
  client.connect();
  socket().welcome();
  socket().reply("subscribe", { type: "subscribed", subs: [sub("quotes", "AAPL", 5), sub("quotes", "MSFT", 6)], rejected: [] });
  client.unsubscribe(["MSFT"]);
  socket().reply("unsubscribe", { type: "unsubscribed", symbols: ["MSFT"], channels: ["quotes", "trades"] });
  assert.deepEqual([...client.lastSeq.keys()], ["quotes:AAPL"]);
  socket().serverClose(1006);
  clock.advance(250);
  socket().welcome();
  assert.deepEqual(socket().sent.find((r) => r.type === "subscribe").symbols, ["AAPL"]);
});

// --- resume (docs/PROTOCOL.md, "Resume after a reconnect") ---------------------

/** `welcome.limits` of a server that keeps `history` updates per stream. */
const limits = (history, max_message_bytes = 65536) => ({ symbols: 1000, msgs_in_per_s: 50, max_message_bytes, history });
const q = (sym, seq, extra = {}) => ({ type: "q", sym, seq, bp: 1, bs: 1, ap: 2, as: 1, t: 1, ...extra });
/** Lets the promise callbacks queued so far run (the "resume" event waits for every reply). */
const settle = () => new Promise((resolve) => setImmediate(resolve));

/** Connects, subscribes AAPL and MSFT quotes (mode all), applies a few updates, then drops the socket. */
function streamThenDrop(history = 256) {
  const t = setup();
  t.client.subscribe(["AAPL", "MSFT"], { channels: ["quotes"], mode: "all" });
  t.client.connect();
  t.socket().welcome("e-1", 1000, limits(history));
  const first = t.socket().sent.find((r) => r.type === "subscribe");
  // The first connection has nothing to resume.
  assert.equal(first.resume, undefined);
  t.socket().reply("subscribe", { type: "subscribed", subs: [sub("quotes", "AAPL", 40), sub("quotes", "MSFT", 7)], rejected: [] });
  t.socket().frame(q("AAPL", 41), q("AAPL", 42), q("MSFT", 8));
  t.socket().serverClose(1006);
  t.clock.advance(250);
  return t;
}

test("a reconnect in the same epoch resumes every stream from the last seq applied", async () => {
  const { client, of, socket } = streamThenDrop();
  const ws = socket();
  ws.welcome("e-1", 1000, limits(256));
  const req = ws.sent.find((r) => r.type === "subscribe");
  assert.deepEqual(req.symbols, ["AAPL", "MSFT"]);
  assert.equal(req.mode, "all");
  // The previous welcome's epoch, and per (channel, symbol) the last seq applied.
  assert.deepEqual(req.resume, { epoch: "e-1", from: { quotes: { AAPL: 42, MSFT: 8 } } });

  // The server continues both: no snapshot, the missed updates in order.
  ws.reply("subscribe", {
    type: "subscribed",
    rejected: [],
    subs: [{ ...sub("quotes", "AAPL", 42), recovered: true }, { ...sub("quotes", "MSFT", 8), recovered: true }],
  });
  ws.frame(q("AAPL", 43), q("MSFT", 9), q("AAPL", 44));
  await settle();
  assert.deepEqual(of("resume"), [{
    epoch: "e-1", previousEpoch: "e-1", newEpoch: false, history: 256,
    recovered: [{ ch: "quotes", sym: "AAPL", seq: 42 }, { ch: "quotes", sym: "MSFT", seq: 8 }],
    lost: [],
  }]);
  // One stream across both connections: every seq once, no gap, nothing counted as missed.
  assert.deepEqual(of("quote").filter((m) => m.sym === "AAPL").map((m) => m.seq), [41, 42, 43, 44]);
  assert.deepEqual([of("seqgap"), of("missed")], [[], []]);
  assert.equal(client.lastSeq.get("quotes:MSFT"), 9);
});

test("recovered:false is reported, and the overflow before the rest accounts for the gap", async () => {
  const { of, socket } = streamThenDrop(4);
  const ws = socket();
  ws.welcome("e-1", 1000, limits(4));
  ws.reply("subscribe", {
    type: "subscribed",
    rejected: [],
    subs: [{ ...sub("quotes", "AAPL", 42), recovered: false }, { ...sub("quotes", "MSFT", 8), recovered: true }],
  });
  // AAPL moved on to 50 while we were away; the server holds the last 4.
  ws.frame({ type: "overflow", ch: "quotes", sym: "AAPL", lost: 4, from_seq: 43, to_seq: 46 });
  ws.frame(q("AAPL", 47), q("AAPL", 48), q("AAPL", 49), q("AAPL", 50));
  await settle();
  const [report] = of("resume");
  assert.deepEqual(report.recovered, [{ ch: "quotes", sym: "MSFT", seq: 8 }]);
  assert.deepEqual(report.lost, [{ ch: "quotes", sym: "AAPL", seq: 42 }]);
  assert.equal(report.newEpoch, false);
  assert.deepEqual(of("overflow").map((o) => [o.from_seq, o.to_seq]), [[43, 46]]);
  assert.deepEqual(of("seqgap"), []);
});

test("a new epoch starts fresh: no resume sent, every stream reported lost, old seq forgotten", () => {
  const { client, of, socket } = streamThenDrop();
  const ws = socket();
  ws.welcome("e-2", 1000, limits(256));
  const req = ws.sent.find((r) => r.type === "subscribe");
  assert.equal(req.resume, undefined, "seq of another epoch mean nothing to this server");
  assert.deepEqual(of("resume"), [{
    epoch: "e-2", previousEpoch: "e-1", newEpoch: true, history: 256, recovered: [],
    lost: [{ ch: "quotes", sym: "AAPL", seq: 42 }, { ch: "quotes", sym: "MSFT", seq: 8 }],
  }]);
  assert.deepEqual([...client.lastSeq.keys()], []);
  // Numbering starts again: a low seq is new data, not an old update.
  ws.reply("subscribe", { type: "subscribed", subs: [sub("quotes", "AAPL", 2)], rejected: [] });
  ws.frame({ type: "snapshot", ch: "quotes", sym: "AAPL", seq: 2, bp: 1, bs: 1, ap: 2, as: 1, t: 1 }, q("AAPL", 3));
  assert.deepEqual(of("quote").map((m) => m.seq).slice(-2), [2, 3]);
});

test("a server without history gets no resume, as before; the streams are reported lost", () => {
  const { of, socket } = streamThenDrop();
  const ws = socket();
  ws.welcome("e-1"); // no limits.history: an older server
  assert.equal(ws.sent.find((r) => r.type === "subscribe").resume, undefined);
  assert.deepEqual(of("resume").map((r) => [r.history, r.recovered.length, r.lost.length]), [[0, 0, 2]]);
  ws.reply("subscribe", { type: "subscribed", subs: [sub("quotes", "AAPL", 50), sub("quotes", "MSFT", 8)], rejected: [] });
  // What was missed is still counted from `subscribed`.
  assert.deepEqual(of("missed"), [{ ch: "quotes", sym: "AAPL", count: 8 }]);
});

test("resume is split over several subscribes to fit limits.max_message_bytes; one report", async () => {
  const { clock, client, of, socket } = setup();
  const names = Array.from({ length: 40 }, (_, i) => `SYM${i}`);
  client.subscribe(names, { mode: "all" });
  client.subscribe(["*"], { channels: ["trades"] });
  client.connect();
  socket().welcome("e-1", 1000, limits(256, 400));
  for (const r of socket().sent) {
    socket().frame({ type: "subscribed", id: r.id, rejected: [],
      subs: r.symbols.flatMap((s) => (s === "*" ? ["W1", "W2"] : [s]).map((n) => sub(s === "*" ? "trades" : "quotes", n, 1000 + n.length))) });
  }
  socket().serverClose(1006);
  clock.advance(250);
  const ws = socket();
  ws.welcome("e-1", 1000, limits(256, 400));
  const reqs = ws.sent.filter((r) => r.type === "subscribe");
  assert.ok(reqs.length > 2, `40 names and their seq do not fit in 400 bytes: ${reqs.length} requests`);
  for (const r of reqs) {
    const bytes = new TextEncoder().encode(JSON.stringify(r)).length;
    assert.ok(bytes <= 400, `${bytes} bytes: ${JSON.stringify(r)}`);
    // Each request resumes exactly the streams of its own symbols.
    for (const [ch, streams] of Object.entries(r.resume.from)) {
      for (const sym of Object.keys(streams)) {
        assert.ok(r.symbols.includes(ch === "trades" ? "*" : sym), `${ch}:${sym} in ${r.symbols}`);
      }
    }
  }
  // Every name once, in order, and the "*" last, on its own channel.
  assert.deepEqual(reqs.flatMap((r) => r.symbols), [...names, "*"]);
  assert.deepEqual(reqs.at(-1).resume.from, { trades: { W1: 1002, W2: 1002 } });
  const named = Object.assign({}, ...reqs.slice(0, -1).map((r) => r.resume.from.quotes));
  assert.equal(Object.keys(named).length, 40);
  assert.equal(named.SYM7, 1004);

  // The report waits for every reply.
  for (const r of reqs.slice(0, -1)) {
    ws.frame({ type: "subscribed", id: r.id, rejected: [], subs: r.symbols.map((s) => ({ ...sub("quotes", s, named[s]), recovered: true })) });
  }
  await settle();
  assert.deepEqual(of("resume"), []);
  ws.frame({ type: "subscribed", id: reqs.at(-1).id, rejected: [],
    subs: [{ ...sub("trades", "W1", 1002), recovered: true }, { ...sub("trades", "W2", 1002), recovered: false }] });
  await settle();
  const [report] = of("resume");
  assert.equal(report.recovered.length, 41);
  assert.deepEqual(report.lost, [{ ch: "trades", sym: "W2", seq: 1002 }]);
});

test("a resume the server refuses (400) is sent again without it; its streams are lost", async () => {
  const { of, socket } = streamThenDrop();
  const ws = socket();
  ws.welcome("e-1", 1000, limits(256));
  const first = ws.reply("subscribe", { type: "error", code: 400, msg: "resume must be ...", temporary: false });
  assert.ok(first.resume);
  await settle();
  const again = ws.sent.filter((r) => r.type === "subscribe");
  assert.equal(again.length, 2);
  assert.equal(again[1].resume, undefined);
  assert.deepEqual(again[1].symbols, ["AAPL", "MSFT"]);
  ws.reply("subscribe", { type: "subscribed", subs: [sub("quotes", "AAPL", 50), sub("quotes", "MSFT", 8)], rejected: [] });
  await settle();
  assert.deepEqual(of("resume").map((r) => r.lost.map((s) => s.sym)), [["AAPL", "MSFT"]]);
  assert.deepEqual(of("error"), []);
});

// --- bars (docs/PROTOCOL.md, "Bars") -------------------------------------------

/** A `b` message of (ch, AAPL) at `seq`: the bar of time `t` as it stands. */
const b = (ch, seq, t, c, extra = {}) =>
  ({ type: "b", ch, sym: "AAPL", seq, o: 190, h: Math.max(190, c), l: Math.min(190, c), c, v: 100 * seq, n: seq, vw: 190.05, x: false, t, ...extra });

test("bars: snapshots and b messages become bar events, each bars stream numbered on its own", () => {
  const { client, events, of, socket } = setup();
  client.on("bar", (e) => events.push(["bar", e]));
  client.subscribe(["AAPL"], { channels: ["bars_1s", "bars_1m"], mode: "all" });
  client.connect();
  const ws = socket();
  ws.welcome();
  const req = ws.sent.find((r) => r.type === "subscribe");
  assert.deepEqual([req.symbols, req.channels, req.mode], [["AAPL"], ["bars_1s", "bars_1m"], "all"]);
  ws.reply("subscribe", { type: "subscribed", subs: [sub("bars_1s", "AAPL", 7), sub("bars_1m", "AAPL", 30)], rejected: [] });
  ws.frame(
    { ...b("bars_1s", 7, 5000, 190.1), type: "snapshot" },
    { ...b("bars_1m", 30, 0, 190.2), type: "snapshot" },
  );
  ws.frame(
    b("bars_1s", 7, 5000, 190.9), // repeats the snapshot's position: dropped
    b("bars_1s", 8, 5000, 190.3),
    b("bars_1m", 31, 0, 190.3),
    b("bars_1s", 9, 5000, 190.3, { x: true }), // the close: one more update
    b("bars_1s", 10, 6000, 190.4),
  );
  assert.deepEqual(of("bar").map((m) => [m.ch, m.seq, m.snapshot, m.t, m.c, m.x]), [
    ["bars_1s", 7, true, 5000, 190.1, false],
    ["bars_1m", 30, true, 0, 190.2, false],
    ["bars_1s", 8, false, 5000, 190.3, false],
    ["bars_1m", 31, false, 0, 190.3, false],
    ["bars_1s", 9, false, 5000, 190.3, true],
    ["bars_1s", 10, false, 6000, 190.4, false],
  ]);
  // Every field of the message is on the event, with its channel and when it came.
  const last = of("bar").at(-1);
  assert.deepEqual([last.o, last.h, last.l, last.v, last.n, last.vw, typeof last.receivedAt], [190, 190.4, 190, 1000, 10, 190.05, "number"]);
  assert.deepEqual([of("quote"), of("trade"), of("seqgap")], [[], [], []]);
  // An overflow of a bars stream accounts for its gap; a jump without one is reported.
  ws.frame({ type: "overflow", ch: "bars_1s", sym: "AAPL", lost: 3, from_seq: 11, to_seq: 13 }, b("bars_1s", 14, 7000, 190));
  ws.frame(b("bars_1m", 33, 0, 190));
  assert.deepEqual(of("seqgap"), [{ ch: "bars_1m", sym: "AAPL", expected: 32, got: 33 }]);
  assert.deepEqual([client.lastSeq.get("bars_1s:AAPL"), client.lastSeq.get("bars_1m:AAPL")], [14, 33]);
});

test("bars in mode latest: cf counts the updates a bar message stands for, a close included", () => {
  const { client, events, of, socket } = setup();
  client.on("bar", (e) => events.push(["bar", e]));
  client.subscribe(["AAPL"], { channels: ["bars_1s"], max_hz: 2 });
  client.connect();
  socket().welcome();
  socket().reply("subscribe", { type: "subscribed", subs: [sub("bars_1s", "AAPL", 3)], rejected: [] });
  // seq 4..6 (two trades and the close) in one; then seq 7..8 (the next bar's
  // close conflated into the one after it: a later t stands for that close).
  socket().frame(b("bars_1s", 6, 1000, 190.2, { cf: 3, x: true }), b("bars_1s", 8, 3000, 190.1, { cf: 2 }));
  assert.deepEqual(of("bar").map((m) => [m.seq, m.cf, m.t, m.x]), [[6, 3, 1000, true], [8, 2, 3000, false]]);
  assert.deepEqual(of("seqgap"), []);
});

test("subscriptions are kept per (channel, symbol): bars beside quotes and trades, both resumed", async () => {
  const { clock, client, of, socket } = setup();
  client.subscribe(["AAPL", "MSFT"], { max_hz: 4 });
  client.subscribe(["AAPL"], { channels: ["bars_1m"], mode: "all" });
  client.connect();
  socket().welcome("e-1", 1000, limits(256));
  const first = socket().sent.filter((r) => r.type === "subscribe");
  // One request per option set and channel list; AAPL's quotes and trades keep max_hz 4.
  assert.deepEqual(first.map((r) => [r.symbols, r.channels, r.mode, r.max_hz]), [
    [["AAPL", "MSFT"], ["quotes", "trades"], undefined, 4],
    [["AAPL"], ["bars_1m"], "all", undefined],
  ]);
  socket().frame({ type: "subscribed", id: first[0].id, rejected: [],
    subs: [sub("quotes", "AAPL", 40), sub("trades", "AAPL", 4), sub("quotes", "MSFT", 9), sub("trades", "MSFT", 2)] });
  socket().frame({ type: "subscribed", id: first[1].id, rejected: [], subs: [sub("bars_1m", "AAPL", 4)] });
  socket().frame(b("bars_1m", 5, 0, 190.3), q("AAPL", 41));

  socket().serverClose(1006);
  clock.advance(250);
  const ws = socket();
  ws.welcome("e-1", 1000, limits(256));
  const again = ws.sent.filter((r) => r.type === "subscribe");
  assert.deepEqual(again.map((r) => [r.symbols, r.channels, r.resume.from]), [
    [["AAPL", "MSFT"], ["quotes", "trades"], { quotes: { AAPL: 41, MSFT: 9 }, trades: { AAPL: 4, MSFT: 2 } }],
    [["AAPL"], ["bars_1m"], { bars_1m: { AAPL: 5 } }],
  ]);
  for (const r of again) {
    ws.frame({ type: "subscribed", id: r.id, rejected: [],
      subs: Object.entries(r.resume.from).flatMap(([ch, s]) => Object.entries(s).map(([sym, seq]) => ({ ...sub(ch, sym, seq), recovered: true }))) });
  }
  await settle();
  assert.equal(of("resume")[0].recovered.length, 5);

  // Unsubscribing one channel leaves the others; without channels, every one held goes.
  client.unsubscribe(["AAPL"], { channels: ["bars_1m"] });
  assert.deepEqual(ws.sent.at(-1).channels, ["bars_1m"]);
  assert.deepEqual([...client.subs.get("AAPL").keys()], ["quotes", "trades"]);
  client.subscribe(["MSFT"], { channels: ["bars_1s"] });
  client.unsubscribe(["MSFT"]);
  assert.deepEqual(ws.sent.at(-1), { type: "unsubscribe", symbols: ["MSFT"], channels: ["quotes", "trades", "bars_1s"], id: ws.sent.at(-1).id });
  assert.deepEqual([...client.subs.keys()], ["AAPL"]);
});

test("a refused bars subscription drops that channel only, and says which", () => {
  const { clock, client, of, socket } = setup();
  client.subscribe(["AAPL"]);
  client.connect();
  socket().welcome();
  socket().reply("subscribe", { type: "subscribed", subs: [sub("quotes", "AAPL", 1), sub("trades", "AAPL", 1)], rejected: [] });
  // A key entitled to quotes and trades only: the bars request is refused.
  client.subscribe(["AAPL"], { channels: ["bars_1s"] });
  socket().reply("subscribe", { type: "subscribed", subs: [], rejected: [{ sym: "AAPL", code: 403, msg: "not entitled to these channels" }] });
  assert.deepEqual(of("rejected"), [{ sym: "AAPL", code: 403, msg: "not entitled to these channels", channels: ["bars_1s"] }]);
  assert.deepEqual([...client.subs.get("AAPL").keys()], ["quotes", "trades"]);
  socket().serverClose(1006);
  clock.advance(250);
  socket().welcome();
  assert.deepEqual(socket().sent.filter((r) => r.type === "subscribe").map((r) => r.channels), [["quotes", "trades"]]);
});
