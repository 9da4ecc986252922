// What the two Node.js peers (node-ws, socketio) share: the command line,
// the wall clock, and the open-loop quote feed of the peer contract
// (../README.md). Each peer keeps its own server code, written the way its
// library's users write a broadcast; only the parts the contract fixes live
// here.

'use strict';

const { performance } = require('perf_hooks');

// --- command line -------------------------------------------------------------

/** Parses `--host --port --symbols --rate --zipf` (see the contract). */
function parseArgs(argv, usage) {
  const opts = { host: '127.0.0.1', port: 0, symbols: 1000, rate: 1000, zipf: 0 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    switch (flag) {
      case '--host': opts.host = value; i++; break;
      case '--port': opts.port = Number(value); i++; break;
      case '--symbols': opts.symbols = Number(value); i++; break;
      case '--rate': opts.rate = Number(value); i++; break;
      case '--zipf': opts.zipf = Number(value); i++; break;
      case '-h':
      case '--help':
        console.log(`usage: ${usage} [--host 127.0.0.1] [--port 0] [--symbols 1000] [--rate 1000] [--zipf S]`);
        process.exit(0);
        break;
      default:
        fail(`unknown argument: ${flag}`);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) fail('--port must be 0..65535');
  if (!Number.isInteger(opts.symbols) || opts.symbols < 1 || opts.symbols > 10000) fail('--symbols must be 1..10000');
  if (!(opts.rate > 0)) fail('--rate must be > 0');
  if (!(opts.zipf >= 0)) fail('--zipf must be >= 0');
  return opts;
}

function fail(msg) {
  console.error(msg);
  process.exit(2);
}

// --- clock --------------------------------------------------------------------

// `performance.timeOrigin + performance.now()` is monotonic and fine-grained,
// but its origin is not the realtime clock's: in Node 20 here it runs 0.9 to
// 1.3 ms ahead of it (FIELD-NOTES, "Node's clock"), which read as that much
// less latency. So the origin is calibrated once, at start, against
// `Date.now()` (the realtime clock, whole milliseconds): right after
// `Date.now()` steps to a new millisecond m, the realtime clock reads m
// (plus the few hundred ns the spin takes), so `timeOrigin + now() - m` is
// the offset. The median over 9 such edges is within ~10 us.
function calibrate() {
  const offsets = [];
  for (let edge = 0; edge < 9; edge++) {
    const before = Date.now();
    let m = before;
    // Bounded spin: a millisecond edge comes within ~1 ms; 10^7 reads is far more.
    for (let i = 0; i < 1e7 && m === before; i++) m = Date.now();
    offsets.push(performance.timeOrigin + performance.now() - m);
  }
  offsets.sort((a, b) => a - b);
  return offsets[4];
}

const originMs = performance.timeOrigin - calibrate();

/** Wall-clock ns since the Unix epoch for a `performance.now()` reading
 * (a double: about 0.25 us resolution at today's epoch). */
const wallNs = (perfMs) => Math.floor((originMs + perfMs) * 1e6);
const nowNs = () => wallNs(performance.now());

// --- the feed -----------------------------------------------------------------

/**
 * The contract's open-loop feed: update k is due at start + k/rate; `tick()`
 * (called from a ~1 ms timer) hands every due update to `emit(quote)`, whether
 * or not the timer woke on time. Symbols are S0000.. chosen round-robin, or,
 * with `zipf` s > 0, at random with probability proportional to 1/(i+1)^s.
 */
function makeFeed(opts) {
  const instruments = [];
  for (let i = 0; i < opts.symbols; i++) {
    instruments.push({
      sym: 'S' + String(i).padStart(4, '0'),
      seq: 0,
      mid: 5000 + Math.floor(Math.random() * 20000), // cents
      spread: 1 + Math.floor(Math.random() * 3), // cents
    });
  }
  // Cumulative Zipf weights, searched by bisection per update.
  let cumulative = null;
  if (opts.zipf > 0) {
    cumulative = new Float64Array(opts.symbols);
    let sum = 0;
    for (let i = 0; i < opts.symbols; i++) {
      sum += 1 / Math.pow(i + 1, opts.zipf);
      cumulative[i] = sum;
    }
    for (let i = 0; i < opts.symbols; i++) cumulative[i] /= sum;
  }
  const pick = (k) => {
    if (!cumulative) return instruments[k % instruments.length];
    const u = Math.random();
    let lo = 0;
    let hi = cumulative.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cumulative[mid] < u) lo = mid + 1; else hi = mid;
    }
    return instruments[lo];
  };
  const lot = () => 100 * (1 + Math.floor(Math.random() * 20));
  const startMs = performance.now();
  let emitted = 0;
  return {
    instruments,
    tick(emit) {
      // Updates 0..=k with k/R <= elapsed are due: floor(elapsed * R) + 1 of them.
      const due = Math.floor(((performance.now() - startMs) / 1000) * opts.rate) + 1;
      while (emitted < due) {
        const inst = pick(emitted);
        inst.mid = Math.max(100, inst.mid + Math.floor(Math.random() * 5) - 2);
        inst.seq++;
        emit({
          type: 'q',
          sym: inst.sym,
          seq: inst.seq,
          cseq: 0,
          bp: inst.mid / 100,
          bs: lot(),
          ap: (inst.mid + inst.spread) / 100,
          as: lot(),
          t: wallNs(startMs + (emitted * 1000) / opts.rate),
          ti: nowNs(),
          to: 0,
        });
        emitted++;
      }
    },
  };
}

/** The contract's `welcome`. */
function welcome(session, server) {
  return { type: 'welcome', session: `p-${session}`, server, time_unit: 'ns', hb_ms: 1000, epoch: 'peer' };
}

/** The symbols a `subscribe` names: null for `["*"]` (everything). */
function subscribedSymbols(msg) {
  const s = Array.isArray(msg.symbols) ? msg.symbols.filter((x) => typeof x === 'string') : ['*'];
  return s.includes('*') ? null : s;
}

module.exports = { parseArgs, nowNs, makeFeed, welcome, subscribedSymbols };
