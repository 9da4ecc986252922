// tickwire.js: a client for the tickwire protocol v1 (JSON subprotocol, or
// the binary one `tickwire.v1.bin` with the option `binary: true`).
//
// Copy this file into your own page or Node program: it has no dependencies
// and never touches the DOM. The WebSocket constructor, the timers, the clock
// and the random source can be injected (the unit tests use fakes).
//
//   import { TickwireClient } from "./tickwire.js";
//   const tw = new TickwireClient("ws://127.0.0.1:8080/ws?stamps=1");
//   tw.on("quote", (q) => console.log(q.sym, q.bp, q.ap));
//   tw.on("bar", (b) => console.log(b.sym, b.ch, b.t, b.o, b.h, b.l, b.c, b.x ? "closed" : "open"));
//   tw.on("state", ({ state }) => console.log("now", state));
//   tw.subscribe(["AAPL", "MSFT"], { max_hz: 4 }); // quotes and trades
//   tw.subscribe(["AAPL"], { channels: ["bars_1s"], mode: "all" }); // 1 s bars too
//   tw.connect();
//
// With `{ binary: true }` the client offers `tickwire.v1.bin` and decodes
// its binary market-data frames (see docs/PROTOCOL.md) into the same message
// objects as the JSON protocol, so everything below works the same.
//
// Subscriptions are kept per (channel, symbol), as the server keeps them:
// subscribing a symbol on one channel leaves its other channels as they
// were, and unsubscribe() without `channels` removes every channel this
// client holds for the symbols.
//
// What it does for you:
// - checks `cseq` on every message; a gap means the transport lost data, so
//   it reports a "gap" event and reconnects;
// - keeps the last `seq` of every (channel, symbol) stream, drops anything
//   older than what was already applied (so a snapshot is never overwritten
//   by an older update), and reports `seq` jumps (`cf` and `overflow` taken
//   into account) as "seqgap" events;
// - reconnects with jittered exponential backoff (or after the server's
//   `shutdown.reconnect_after_ms`) and resubscribes everything; a stream
//   starts again from its snapshot, or, when the server keeps history
//   (`welcome.limits.history` > 0) and its epoch is unchanged, resumes:
//   the re-subscribe carries `resume` with the last `seq` applied of every
//   stream, and the server sends what was missed (docs/PROTOCOL.md,
//   "Resume after a reconnect"); a "resume" event then says which streams
//   were recovered and which were not;
// - treats a connection that has been silent for several heartbeat
//   intervals as stale, and later as dead;
// - folds all of this into one state: connecting, live, reconnecting,
//   stale, replay_done (or closed after close()).
//
// Events (on(type, fn) returns a function that removes the listener):
//   state    {state, previous, reason, retryAt}  whenever the state changes
//   welcome  the welcome message (epoch, hb_ms, limits, ...)
//   quote    {...q fields, ch:"quotes", snapshot, receivedAt}
//   trade    {...t fields, ch:"trades", snapshot, receivedAt}
//   bar      {...b fields, snapshot, receivedAt}: ch ("bars_1s" or "bars_1m"),
//            sym, seq, t (the bar's start), o, h, l, c, v, n, vw, x (closed),
//            optional cf, ti, to. Every update of the open bar comes as it
//            stands; x: true once it is closed and final. In mode "latest"
//            the close of a bar can be conflated into the next bar's first
//            update (a bar with a later t): subscribe bars in mode "all" to
//            see every bar's final values.
//   frame    {messages, receivedAt} after each frame was handled
//   gap      {expected, got}            cseq gap (followed by a reconnect)
//   seqgap   {ch, sym, expected, got}   a stream jumped without explanation
//   missed   {ch, sym, count}           updates missed while disconnected
//   resume   {epoch, previousEpoch, newEpoch, history, recovered, lost}
//            once per reconnect, about the streams known from before it,
//            each {ch, sym, seq} with the last seq applied. `recovered`
//            ones go on as if never cut. `lost` ones lost updates for good:
//            after a new epoch, or from a server without history, they start
//            again from a snapshot (reported at the welcome); otherwise an
//            `overflow` (mode all) or a `cf` (mode latest) stands for what
//            the server no longer held (reported once the re-subscribe
//            was answered).
//   overflow, status, slow, shutdown, unsubscribed, error: the messages
//   rejected {sym, code, msg, channels} a subscription the server refused
//                                       (channels: those of the request)
//   retry    {attempt, delayMs}         a reconnect is scheduled
//   close    {code, reason}             the socket closed

/** Connection states, as shown to users. */
export const State = Object.freeze({
  CONNECTING: "connecting",
  LIVE: "live",
  RECONNECTING: "reconnecting",
  STALE: "stale",
  REPLAY_DONE: "replay_done",
  CLOSED: "closed",
});

/** The channel of an update type that does not name it (`b` does: `ch`). */
const CHANNEL_OF = { q: "quotes", t: "trades" };
/** The event that carries a channel's snapshots and updates. */
const EVENT_OF = { quotes: "quote", trades: "trade", bars_1s: "bar", bars_1m: "bar" };

/** Subprotocol names. */
export const JSON_PROTOCOL = "tickwire.v1.json";
export const BINARY_PROTOCOL = "tickwire.v1.bin";

/** Every channel, by its number in binary records (and in this order in requests). */
export const CHANNELS = Object.freeze(["quotes", "trades", "bars_1s", "bars_1m"]);
/** The channels of a `subscribe` without `channels`. */
const DEFAULT_CHANNELS = ["quotes", "trades"];
/** `limits.max_message_bytes` of a server that does not announce it. */
const DEFAULT_MAX_MESSAGE_BYTES = 65536;
const encoder = new TextEncoder();
/** Bytes of `value` as JSON text. */
const jsonBytes = (value) => encoder.encode(JSON.stringify(value)).length;
const u64 = (dv, o) => dv.getUint32(o, true) + dv.getUint32(o + 4, true) * 2 ** 32;
const i64 = (dv, o) => dv.getUint32(o, true) + dv.getInt32(o + 4, true) * 2 ** 32;

/** Bytes a bars record adds after the stamps (`o`, `h`, `l`, `vw`). */
const BAR_EXTRA = 32;

/**
 * Decodes one `tickwire.v1.bin` frame (an ArrayBuffer or a typed array /
 * Node Buffer) into the messages a JSON session would get, in order.
 * `names` maps the symbol ids announced in `subscribed` to names. Exact
 * below 2^53 (so not for `time_unit=ns`). Throws on a malformed frame.
 * Records are `record_len` bytes apart (longer on a session that takes
 * bars); records of an unknown kind, and bar records too short to hold a
 * bar, come out as `{type: "unknown", cseq}`.
 */
export function decodeBinary(data, names) {
  const dv = ArrayBuffer.isView(data)
    ? new DataView(data.buffer, data.byteOffset, data.byteLength)
    : new DataView(data);
  if (dv.byteLength < 16 || dv.getUint8(0) !== 0x54) throw new Error("not a tickwire.v1.bin frame");
  const stamps = (dv.getUint8(1) & 1) !== 0;
  const len = dv.getUint16(2, true);
  const count = dv.getUint32(4, true);
  if (len < 56 || dv.byteLength !== 16 + count * len) throw new Error("binary frame length mismatch");
  const first = u64(dv, 8);
  // Where a bar's o, h, l, vw start: right after the stamps, if any.
  const barAt = stamps ? 72 : 56;
  const bars = len >= barAt + BAR_EXTRA;
  const out = new Array(count);
  for (let i = 0, o = 16; i < count; i++, o += len) {
    const kind = dv.getUint8(o);
    const ch = CHANNELS[dv.getUint8(o + 2)];
    const cseq = first + i;
    const sym = names.get(dv.getUint32(o + 4, true));
    let m;
    if (kind === 1 || kind === 2 || (kind === 5 && bars)) {
      const flags = dv.getUint8(o + 1);
      const snapshot = (flags & 1) !== 0;
      if (snapshot) m = { type: "snapshot", ch, cseq };
      else if (kind === 5) m = { type: "b", ch, cseq };
      else m = { type: kind === 1 ? "q" : "t", cseq };
      const cf = u64(dv, o + 48);
      if (!snapshot && cf > 1) m.cf = cf;
      m.sym = sym;
      m.seq = u64(dv, o + 8);
      if (kind === 1) {
        m.bp = i64(dv, o + 24) / 1e4;
        m.bs = dv.getUint32(o + 40, true);
        m.ap = i64(dv, o + 32) / 1e4;
        m.as = dv.getUint32(o + 44, true);
      } else if (kind === 2) {
        m.p = i64(dv, o + 24) / 1e4;
        m.s = dv.getUint32(o + 40, true);
      } else {
        m.o = i64(dv, o + barAt) / 1e4;
        m.h = i64(dv, o + barAt + 8) / 1e4;
        m.l = i64(dv, o + barAt + 16) / 1e4;
        m.c = i64(dv, o + 24) / 1e4;
        m.v = u64(dv, o + 32);
        m.n = dv.getUint32(o + 40, true);
        m.vw = i64(dv, o + barAt + 24) / 1e4;
        m.x = (flags & 2) !== 0;
      }
      m.t = u64(dv, o + 16);
      if (stamps) {
        m.ti = u64(dv, o + 56);
        m.to = u64(dv, o + 64);
      }
    } else if (kind === 3) {
      m = { type: "overflow", cseq, ch, sym, lost: u64(dv, o + 32), from_seq: u64(dv, o + 24), to_seq: u64(dv, o + 8) };
    } else if (kind === 4) {
      m = { type: "heartbeat", cseq, t: u64(dv, o + 16) };
    } else {
      m = { type: "unknown", cseq };
    }
    out[i] = m;
  }
  return out;
}

/**
 * Reconnect delay for the given attempt (0-based): exponential up to
 * `maxMs`, with "equal jitter" (half fixed, half random) so a crowd of
 * clients spreads out after a restart but nobody retries in a tight loop.
 */
export function backoffDelay(attempt, initialMs, maxMs, random) {
  const cap = Math.min(maxMs, initialMs * 2 ** attempt);
  return cap / 2 + (random() * cap) / 2;
}

export class TickwireClient {
  /**
   * @param {string} url  e.g. "ws://host:8080/ws?stamps=1"
   * @param {object} [options]
   *   binary (false): offer `tickwire.v1.bin` and decode its binary frames;
   *   WebSocket, setTimeout, clearTimeout, now, random: injectable globals;
   *   initialBackoffMs (250), maxBackoffMs (5000), requestTimeoutMs (5000);
   *   staleAfterHeartbeats (2.5) and deadAfterHeartbeats (5): silence, in
   *   heartbeat intervals, after which the connection is shown as stale and
   *   then dropped and reopened.
   */
  constructor(url, options = {}) {
    this.url = url;
    const g = globalThis;
    this.opt = {
      WebSocket: options.WebSocket ?? g.WebSocket,
      setTimeout: options.setTimeout ?? ((fn, ms) => g.setTimeout(fn, ms)),
      clearTimeout: options.clearTimeout ?? ((id) => g.clearTimeout(id)),
      now: options.now ?? (() => Date.now()),
      random: options.random ?? Math.random,
      initialBackoffMs: options.initialBackoffMs ?? 250,
      maxBackoffMs: options.maxBackoffMs ?? 5000,
      requestTimeoutMs: options.requestTimeoutMs ?? 5000,
      staleAfterHeartbeats: options.staleAfterHeartbeats ?? 2.5,
      deadAfterHeartbeats: options.deadAfterHeartbeats ?? 5,
      binary: options.binary ?? false,
    };
    /** Symbol names by the ids `subscribed` announced (binary protocol). */
    this.names = new Map();
    this.listeners = new Map();
    /**
     * Wanted subscriptions, kept across reconnects: symbol -> (channel ->
     * options {mode, max_hz}), one entry per (channel, symbol) as the server
     * keeps them.
     */
    this.subs = new Map();
    /** Last applied `seq` per "channel:symbol", kept across reconnects within one epoch. */
    this.lastSeq = new Map();
    this.epoch = null;
    /** `welcome.limits` of the latest connection (`history` > 0: it can resume). */
    this.limits = {};
    this.state = State.CLOSED;
    this.feed = "live";
    this.ws = null;
    this.welcomed = false;
    this.everWelcomed = false;
    this.userClosed = true;
    this.silent = false;
    this.hbMs = 1000;
    this.attempt = 0;
    this.retryAt = null;
    this.shownRetryAt = null;
    this.retryTimer = null;
    this.watchTimer = null;
    this.shutdownHintMs = null;
    this.pending = new Map();
    this.nextId = 1;
  }

  /** Adds a listener; returns a function that removes it. */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type).delete(fn);
  }

  /** Opens the connection (and keeps it open until close()). */
  connect() {
    if (!this.userClosed) return;
    this.userClosed = false;
    this._open();
  }

  /** Closes the connection for good (until connect() again). */
  close() {
    this.userClosed = true;
    this._clearTimer("retryTimer");
    if (this.ws) this._drop("closed by the client", 1000);
    this._setState();
  }

  /**
   * Subscribes `symbols` on `options.channels` (default quotes and trades;
   * "bars_1s", "bars_1m" too) with `options` {mode, max_hz}, replacing the
   * options of those (channel, symbol) streams only; they are resubscribed
   * after every reconnect. Resolves with the `subscribed` reply, or null
   * when offline (the subscription is sent on connect).
   */
  subscribe(symbols, options = {}) {
    const opts = {};
    for (const k of ["mode", "max_hz"]) if (options[k] != null) opts[k] = options[k];
    for (const s of symbols) {
      if (!this.subs.has(s)) this.subs.set(s, new Map());
      for (const ch of options.channels ?? DEFAULT_CHANNELS) this.subs.get(s).set(ch, opts);
    }
    if (!this.welcomed || symbols.length === 0) return Promise.resolve(null);
    const channels = options.channels != null ? { channels: options.channels } : {};
    return this._request({ type: "subscribe", symbols: [...symbols], ...channels, ...opts });
  }

  /**
   * Removes subscriptions on `options.channels`; by default on every
   * channel this client holds for `symbols` (`"*"`: for any symbol, as the
   * server removes named subscriptions too). Resolves with `unsubscribed`,
   * or null when offline.
   */
  unsubscribe(symbols, options = {}) {
    const names = new Set(symbols);
    const mine = [...this.subs].filter(([sym]) => names.has("*") || names.has(sym));
    const held = new Set(mine.flatMap(([, byCh]) => [...byCh.keys()]));
    const channels = options.channels ?? (held.size > 0 ? CHANNELS.filter((ch) => held.has(ch)) : DEFAULT_CHANNELS);
    for (const [sym, byCh] of mine) {
      for (const ch of channels) byCh.delete(ch);
      if (byCh.size === 0) this.subs.delete(sym);
    }
    if (!this.welcomed || symbols.length === 0) return Promise.resolve(null);
    return this._request({ type: "unsubscribe", symbols: [...symbols], channels: [...channels] });
  }

  /** Known symbols starting with `prefix` (sorted). Rejects when offline. */
  async list(prefix = "") {
    const reply = await this._request({ type: "list", prefix });
    return reply.symbols;
  }

  /** Application-level round trip; resolves with {rttMs, serverTime}. */
  async ping() {
    const sent = this.opt.now();
    const reply = await this._request({ type: "ping", ts: sent });
    return { rttMs: this.opt.now() - sent, serverTime: reply.t };
  }

  // --- transport -----------------------------------------------------------

  _open() {
    this.retryTimer = null;
    this.retryAt = null;
    this.welcomed = false;
    this.lastCseq = 0;
    // Streams subscribed on this connection (the others, when `subscribed`
    // names them, were missed while away).
    this.active = new Set();
    this.lastMessageAt = this.opt.now();
    let ws;
    try {
      ws = new this.opt.WebSocket(this.url, this.opt.binary ? BINARY_PROTOCOL : JSON_PROTOCOL);
      if (this.opt.binary) ws.binaryType = "arraybuffer";
    } catch (e) {
      this._emit("error", { code: 0, msg: `cannot open ${this.url}: ${e.message}` });
      this._scheduleRetry();
      return;
    }
    this.ws = ws;
    // Handlers check `this.ws === ws` so that a socket we already gave up on
    // (dropped, replaced) can no longer touch the client's state.
    ws.onmessage = (ev) => {
      if (this.ws === ws) this._onFrame(ev.data);
    };
    ws.onclose = (ev) => {
      if (this.ws === ws) this._onClosed(ev.code, ev.reason);
    };
    ws.onerror = () => {}; // always followed by a close event
    this._armWatchdog();
    this._setState();
  }

  /** Gives up on the current socket now, without waiting for its close handshake. */
  _drop(reason, code = 4000) {
    const ws = this.ws;
    try {
      ws.close(code, reason);
    } catch {
      // Already closing or closed: nothing more to do with it.
    }
    this._onClosed(code, reason);
  }

  _onClosed(code, reason) {
    this.ws = null;
    this.welcomed = false;
    this.silent = false;
    this._clearTimer("watchTimer");
    for (const [, p] of this.pending) {
      this.opt.clearTimeout(p.timer);
      p.reject(new Error(`connection closed (${code})`));
    }
    this.pending.clear();
    this._emit("close", { code, reason });
    if (this.userClosed) this._setState();
    else this._scheduleRetry();
  }

  _scheduleRetry() {
    let delayMs;
    if (this.shutdownHintMs != null) {
      // The server announced a restart and already jittered this delay.
      delayMs = this.shutdownHintMs;
      this.shutdownHintMs = null;
    } else {
      delayMs = backoffDelay(this.attempt, this.opt.initialBackoffMs, this.opt.maxBackoffMs, this.opt.random);
    }
    this.attempt += 1;
    this.retryAt = this.opt.now() + delayMs;
    this.retryTimer = this.opt.setTimeout(() => this._open(), delayMs);
    this._emit("retry", { attempt: this.attempt, delayMs });
    this._setState("disconnected");
  }

  /**
   * Checks every half heartbeat how long the connection has been silent.
   * The server sends a heartbeat whenever it had nothing else to send for
   * `hb_ms`, so silence means a stalled network or a dead peer. Before the
   * welcome this doubles as the connect timeout.
   */
  _armWatchdog() {
    this._clearTimer("watchTimer");
    this.watchTimer = this.opt.setTimeout(() => {
      this.watchTimer = null;
      const silence = this.opt.now() - this.lastMessageAt;
      if (silence >= this.hbMs * this.opt.deadAfterHeartbeats) {
        this._drop(`no message for ${silence} ms`);
        return;
      }
      if (!this.silent && silence >= this.hbMs * this.opt.staleAfterHeartbeats) {
        this.silent = true;
        this._setState(`no message for ${silence} ms`);
      }
      this._armWatchdog();
    }, this.hbMs / 2);
  }

  // --- requests ------------------------------------------------------------

  _request(msg) {
    if (!this.welcomed) return Promise.reject(new Error("not connected"));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = this.opt.setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`no reply to ${msg.type} within ${this.opt.requestTimeoutMs} ms`));
      }, this.opt.requestTimeoutMs);
      this.pending.set(id, { resolve, reject, timer, msg });
      this.ws.send(JSON.stringify({ ...msg, id }));
    });
  }

  _settle(m, ok) {
    const p = m.id != null && this.pending.get(m.id);
    if (!p) return false;
    this.pending.delete(m.id);
    this.opt.clearTimeout(p.timer);
    if (ok) p.resolve(m);
    else p.reject(Object.assign(new Error(`error ${m.code}: ${m.msg}`), { code: m.code }));
    return true;
  }

  /**
   * The wanted subscriptions as groups of one option set and one channel
   * list each (in the order they were first asked for), with the streams
   * of each group whose last `seq` is known: `streams` maps a name of
   * `symbols` to the [channel, symbol, seq] it covers. A stream is listed
   * once: under its own name, else under a `"*"`.
   */
  _plan() {
    const groups = new Map();
    for (const [sym, byCh] of this.subs) {
      // This symbol's channels, by the options they share.
      const sets = new Map();
      for (const ch of CHANNELS) {
        const opts = byCh.get(ch);
        if (opts === undefined) continue;
        const key = JSON.stringify(opts);
        if (!sets.has(key)) sets.set(key, { opts, channels: [] });
        sets.get(key).channels.push(ch);
      }
      for (const { opts, channels } of sets.values()) {
        const key = JSON.stringify([opts, channels]);
        if (!groups.has(key)) groups.set(key, { opts, channels, symbols: [], streams: new Map() });
        groups.get(key).symbols.push(sym);
      }
    }
    const listed = new Set();
    const add = (g, name, ch, sym) => {
      const key = `${ch}:${sym}`;
      const seq = this.lastSeq.get(key);
      if (seq === undefined || listed.has(key)) return;
      listed.add(key);
      if (!g.streams.has(name)) g.streams.set(name, []);
      g.streams.get(name).push([ch, sym, seq]);
    };
    for (const g of groups.values()) {
      for (const sym of g.symbols) if (sym !== "*") for (const ch of g.channels) add(g, sym, ch, sym);
    }
    for (const g of groups.values()) {
      if (!g.symbols.includes("*")) continue;
      const wild = new Set(g.channels);
      for (const key of this.lastSeq.keys()) {
        const [ch, sym] = key.split(/:(.*)/s);
        if (wild.has(ch)) add(g, "*", ch, sym);
      }
    }
    return [...groups.values()];
  }

  /**
   * Splits a group into `subscribe` requests of at most `limit` bytes. With
   * an `epoch` each request carries `resume` for the streams of its
   * symbols; a `"*"` goes whole into one request and names as many of its
   * streams as fit (the others start again from a snapshot).
   */
  _pack(group, epoch, limit) {
    const base = { type: "subscribe", channels: group.channels, ...group.opts };
    const empty = {};
    for (const ch of group.channels) empty[ch] = {};
    // Everything but the symbols and the streams, with the longest id.
    const overhead = jsonBytes({
      ...base,
      symbols: [],
      ...(epoch !== null && { resume: { epoch, from: empty } }),
      id: Number.MAX_SAFE_INTEGER,
    });
    // `"SYM",` in `symbols` and `"SYM":SEQ,` in `from`: an upper bound of
    // what each adds.
    const entryBytes = (sym, seq) => jsonBytes(sym) + String(seq).length + 2;
    const chunks = [];
    let chunk = null;
    for (const sym of group.symbols) {
      const named = epoch === null ? [] : (group.streams.get(sym) ?? []);
      let bytes = jsonBytes(sym) + 1;
      for (const [, name, seq] of named) bytes += entryBytes(name, seq);
      if (chunk !== null && chunk.bytes + bytes > limit) chunk = null;
      if (chunk === null) {
        chunk = { bytes: overhead, symbols: [], from: [] };
        chunks.push(chunk);
      }
      chunk.symbols.push(sym);
      if (chunk.bytes + bytes <= limit) {
        chunk.bytes += bytes;
        chunk.from.push(...named);
        continue;
      }
      // Too large even alone (a "*" over a large universe): name what fits.
      chunk.bytes += jsonBytes(sym) + 1;
      for (const stream of named) {
        const entry = entryBytes(stream[1], stream[2]);
        if (chunk.bytes + entry > limit) break;
        chunk.bytes += entry;
        chunk.from.push(stream);
      }
    }
    return chunks.map(({ symbols, from }) => {
      const msg = { ...base, symbols };
      if (from.length > 0) {
        msg.resume = { epoch, from: {} };
        for (const [ch, sym, seq] of from) (msg.resume.from[ch] ??= {})[sym] = seq;
      }
      return msg;
    });
  }

  /**
   * Sends every wanted subscription after a welcome: one `subscribe` per
   * distinct option set, split to fit `limits.max_message_bytes`. When the
   * server keeps history and the epoch is the one of `plan`'s `seq`, the
   * requests resume every stream of the plan. Reports the outcome for
   * those streams as a "resume" event.
   */
  _resubscribe(plan, previousEpoch) {
    const newEpoch = previousEpoch !== null && previousEpoch !== this.epoch;
    const history = this.limits.history > 0 ? this.limits.history : 0;
    const resume = previousEpoch !== null && !newEpoch && history > 0;
    const limit = this.limits.max_message_bytes > 0 ? this.limits.max_message_bytes : DEFAULT_MAX_MESSAGE_BYTES;
    const held = [];
    for (const g of plan) for (const named of g.streams.values()) for (const [ch, sym, seq] of named) held.push({ ch, sym, seq });
    const replies = [];
    for (const g of plan) {
      for (const msg of this._pack(g, resume ? this.epoch : null, limit)) {
        const reply = this._request(msg)
          .catch((e) => {
            if (e.code !== 400 || !msg.resume) throw e;
            // A server that cannot take this resume still serves the
            // subscription: again without it (those streams start afresh).
            const { resume: _, ...plain } = msg;
            return this._request(plain);
          })
          .catch((e) => {
            this._emit("error", { code: e.code ?? 0, msg: `resubscribe failed: ${e.message}` });
            return null;
          });
        replies.push(reply);
      }
    }
    if (held.length === 0) return;
    const report = { epoch: this.epoch, previousEpoch, newEpoch, history };
    if (!resume) {
      // Nothing can be continued: every stream starts again.
      this._emit("resume", { ...report, recovered: [], lost: held });
      return;
    }
    const ws = this.ws;
    Promise.all(replies).then((replies) => {
      // A connection that dropped meanwhile resumes again on the next one.
      if (this.ws !== ws) return;
      const ok = new Set();
      for (const r of replies) for (const s of r?.subs ?? []) if (s.recovered === true) ok.add(`${s.ch}:${s.sym}`);
      const recovered = held.filter((s) => ok.has(`${s.ch}:${s.sym}`));
      const lost = held.filter((s) => !ok.has(`${s.ch}:${s.sym}`));
      this._emit("resume", { ...report, recovered, lost });
    });
  }

  // --- messages ------------------------------------------------------------

  _onFrame(data) {
    const receivedAt = this.opt.now();
    this.lastMessageAt = receivedAt;
    let frame;
    try {
      frame = typeof data === "string" ? JSON.parse(data) : decodeBinary(data, this.names);
    } catch (e) {
      this._emit("error", { code: 0, msg: `a frame that cannot be decoded: ${e.message}` });
      return;
    }
    if (!Array.isArray(frame)) frame = [frame];
    if (this.silent) {
      this.silent = false;
      this._setState("messages again");
    }
    for (const m of frame) {
      if (m.type !== "welcome") {
        if (m.cseq !== this.lastCseq + 1) {
          this._emit("gap", { expected: this.lastCseq + 1, got: m.cseq });
          this._drop(`cseq gap: expected ${this.lastCseq + 1}, got ${m.cseq}`);
          return;
        }
        this.lastCseq = m.cseq;
      }
      this._handle(m, receivedAt);
      if (this.ws === null) return; // a handler gave up on this socket
    }
    this._emit("frame", { messages: frame.length, receivedAt });
  }

  _handle(m, receivedAt) {
    switch (m.type) {
      case "welcome": {
        // What to resume, from the seq of the previous epoch.
        const plan = this._plan();
        const previousEpoch = this.epoch;
        if (previousEpoch !== null && m.epoch !== previousEpoch) {
          // A new numbering run: the seq we remember mean nothing any more.
          this.lastSeq.clear();
        }
        this.epoch = m.epoch;
        this.limits = m.limits ?? {};
        this.hbMs = m.hb_ms > 0 ? m.hb_ms : 1000;
        this.welcomed = true;
        this.everWelcomed = true;
        this.attempt = 0;
        this._emit("welcome", m);
        this._resubscribe(plan, previousEpoch);
        this._setState();
        break;
      }
      case "status":
        this.feed = m.feed;
        this._emit("status", m);
        this._setState();
        break;
      case "subscribed": {
        // The channels this reply's rejections are about: its request's.
        const asked = (m.id != null && this.pending.get(m.id)?.msg.channels) || DEFAULT_CHANNELS;
        for (const s of m.subs) {
          if (s.id !== undefined) this.names.set(s.id, s.sym);
          const key = `${s.ch}:${s.sym}`;
          const last = this.lastSeq.get(key);
          if (!this.active.has(key) && last !== undefined && s.seq > last) {
            // Known from an earlier connection of this epoch: the difference
            // is what happened while we were away.
            this._emit("missed", { ch: s.ch, sym: s.sym, count: s.seq - last });
          }
          // `seq` here is the base of the stream's next `cf`, for new and
          // re-subscribed streams alike.
          this.lastSeq.set(key, s.seq);
          this.active.add(key);
        }
        for (const r of m.rejected) {
          // A refused (channel, symbol) would be refused again on every reconnect.
          const byCh = this.subs.get(r.sym);
          for (const ch of asked) byCh?.delete(ch);
          if (byCh?.size === 0) this.subs.delete(r.sym);
          this._emit("rejected", { ...r, channels: asked });
        }
        this._settle(m, true);
        break;
      }
      case "snapshot":
      case "q":
      case "t":
      case "b":
        this._data(m, receivedAt);
        break;
      case "overflow": {
        const key = `${m.ch}:${m.sym}`;
        const last = this.lastSeq.get(key);
        if (last !== undefined && m.from_seq !== last + 1) {
          this._emit("seqgap", { ch: m.ch, sym: m.sym, expected: last + 1, got: m.from_seq });
        }
        this.lastSeq.set(key, m.to_seq);
        this._emit("overflow", m);
        break;
      }
      case "unsubscribed":
        for (const ch of m.channels) {
          for (const key of [...this.lastSeq.keys()]) {
            const [kch, sym] = key.split(/:(.*)/s);
            if (kch === ch && (m.symbols.includes("*") || m.symbols.includes(sym))) {
              this.lastSeq.delete(key);
              this.active.delete(key);
            }
          }
        }
        this._settle(m, true);
        this._emit("unsubscribed", m);
        break;
      case "pong":
      case "symbols":
        this._settle(m, true);
        break;
      case "error":
        if (!this._settle(m, false)) this._emit("error", m);
        break;
      case "shutdown":
        this.shutdownHintMs = m.reconnect_after_ms;
        this._emit("shutdown", m);
        break;
      case "slow":
        this._emit("slow", m);
        break;
      default:
        // heartbeat (its arrival already fed the watchdog) and types added
        // to v1 later, which a client must ignore.
        break;
    }
  }

  /** A snapshot, quote, trade or bar: ordered per stream, checked, then emitted. */
  _data(m, receivedAt) {
    const snapshot = m.type === "snapshot";
    const ch = m.ch ?? CHANNEL_OF[m.type];
    const key = `${ch}:${m.sym}`;
    const last = this.lastSeq.get(key);
    if (last !== undefined) {
      // A snapshot may repeat the position `subscribed` announced; an update
      // must be newer than everything applied, or it would overwrite newer
      // data (the snapshot-then-update guarantee, enforced on our side too).
      if (snapshot ? m.seq < last : m.seq <= last) return;
      const expected = last + (m.cf ?? 1);
      if (!snapshot && m.seq !== expected) {
        this._emit("seqgap", { ch, sym: m.sym, expected, got: m.seq });
      }
    }
    this.lastSeq.set(key, m.seq);
    this.active.add(key);
    // The parsed message is ours: annotate it rather than copy it (thousands per second).
    m.ch = ch;
    m.snapshot = snapshot;
    m.receivedAt = receivedAt;
    // A channel added to v1 later is numbered like the others but not emitted.
    if (EVENT_OF[ch]) this._emit(EVENT_OF[ch], m);
  }

  // --- state ---------------------------------------------------------------

  _setState(reason) {
    let state;
    if (this.userClosed) state = State.CLOSED;
    else if (!this.welcomed) state = this.everWelcomed ? State.RECONNECTING : State.CONNECTING;
    else if (this.silent || this.feed === "stale") state = State.STALE;
    else if (this.feed === "replay_done") state = State.REPLAY_DONE;
    else state = State.LIVE;
    // A new retry time is news too: pages show a countdown.
    if (state === this.state && this.retryAt === this.shownRetryAt) return;
    const previous = this.state;
    this.state = state;
    this.shownRetryAt = this.retryAt;
    this._emit("state", { state, previous, reason, retryAt: this.retryAt });
  }

  _clearTimer(name) {
    if (this[name] !== null) {
      this.opt.clearTimeout(this[name]);
      this[name] = null;
    }
  }

  _emit(type, payload) {
    const set = this.listeners.get(type);
    if (set) for (const fn of set) fn(payload);
  }
}
