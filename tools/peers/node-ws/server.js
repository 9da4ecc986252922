// node-ws peer: a reference market-data server for tickwire-bench, written the
// way a typical developer writes a broadcast server with Node.js and `ws`.
//
// Versions: Node.js 20 (>= 18 works), ws 8.23.0 (pinned in package.json and
// package-lock.json; no bufferutil / utf-8-validate native add-ons).
//
// What it does: the standard workload only (see ../README.md for the
// contract): welcome, subscribe-all, and one `q` message per text frame per
// client, stamped `t` (due time), `ti` (created), `to` (serialized for this
// client), all in ns since the Unix epoch. The feed is open-loop: update k is
// due at start + k/R, and a 1 ms timer emits every update that is due.
//
// What it deliberately does not do: no batching of several quotes per frame,
// no encode-once (each client gets its own JSON.stringify, because `cseq` and
// `to` are per client), no backpressure or slow-consumer policy (`ws.send`
// queues in memory without bound, see the README), no conflation, no
// per-symbol subscriptions, no heartbeats, no HTTP routes besides the upgrade.
//
// Time stamps are JavaScript numbers (doubles) computed from ms: their
// resolution is about 0.25 us. They are printed as integers.

'use strict';

const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');
const WS_VERSION = require('ws/package.json').version;

// --- command line -----------------------------------------------------------

function parseArgs(argv) {
  const opts = { host: '127.0.0.1', port: 0, symbols: 1000, rate: 1000 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    switch (flag) {
      case '--host': opts.host = value; i++; break;
      case '--port': opts.port = Number(value); i++; break;
      case '--symbols': opts.symbols = Number(value); i++; break;
      case '--rate': opts.rate = Number(value); i++; break;
      case '-h':
      case '--help':
        console.log('usage: node server.js [--host 127.0.0.1] [--port 0] [--symbols 1000] [--rate 1000]');
        process.exit(0);
        break;
      default:
        console.error(`unknown argument: ${flag}`);
        process.exit(2);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) fail('--port must be 0..65535');
  if (!Number.isInteger(opts.symbols) || opts.symbols < 1 || opts.symbols > 10000) fail('--symbols must be 1..10000');
  if (!(opts.rate > 0)) fail('--rate must be > 0');
  return opts;
}

function fail(msg) {
  console.error(msg);
  process.exit(2);
}

const opts = parseArgs(process.argv.slice(2));

// --- clock ------------------------------------------------------------------

// Wall-clock ns since the Unix epoch for a `performance.now()` reading.
const { performance } = require('perf_hooks');
const wallNs = (perfMs) => Math.floor((performance.timeOrigin + perfMs) * 1e6);
const nowNs = () => wallNs(performance.now());

// --- the feed -----------------------------------------------------------------

// One instrument per symbol: a random walk of the mid price in cents.
const instruments = [];
for (let i = 0; i < opts.symbols; i++) {
  instruments.push({
    sym: 'S' + String(i).padStart(4, '0'),
    seq: 0,
    mid: 5000 + Math.floor(Math.random() * 20000), // cents
    spread: 1 + Math.floor(Math.random() * 3), // cents
  });
}

const lot = () => 100 * (1 + Math.floor(Math.random() * 20));

function nextQuote(k) {
  const inst = instruments[k % instruments.length]; // round-robin
  inst.mid = Math.max(100, inst.mid + Math.floor(Math.random() * 5) - 2);
  inst.seq++;
  return {
    type: 'q',
    sym: inst.sym,
    seq: inst.seq,
    cseq: 0,
    bp: inst.mid / 100,
    bs: lot(),
    ap: (inst.mid + inst.spread) / 100,
    as: lot(),
    t: 0,
    ti: 0,
    to: 0,
  };
}

// --- the server ---------------------------------------------------------------

const server = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
// `path` matches the pathname only: the query string is ignored.
const wss = new WebSocketServer({ server, path: '/ws' });
let sessions = 0;

wss.on('connection', (ws) => {
  sessions++;
  ws.cseq = 0;
  ws.subscribed = false;
  ws.send(JSON.stringify([{
    type: 'welcome',
    session: `p-${sessions}`,
    server: `node-ws/${WS_VERSION}`,
    time_unit: 'ns',
    hb_ms: 1000,
    epoch: 'peer',
  }]));
  ws.on('message', (data) => {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return; // ignore what we don't understand
    }
    if (msg && msg.type === 'subscribe') {
      ws.subscribed = true;
      ws.cseq++;
      ws.send(JSON.stringify([{ type: 'subscribed', id: msg.id, cseq: ws.cseq, subs: [], rejected: [] }]));
    }
  });
  ws.on('error', () => {});
});

function broadcast(quote) {
  wss.clients.forEach((ws) => {
    if (!ws.subscribed || ws.readyState !== WebSocket.OPEN) return;
    ws.cseq++;
    quote.cseq = ws.cseq;
    quote.to = nowNs();
    ws.send(JSON.stringify([quote]));
  });
}

// Open-loop schedule: update k is due at start + k / rate.
const startMs = performance.now();
let emitted = 0;

function tick() {
  // Updates 0..=k with k/R <= elapsed are due: floor(elapsed * R) + 1 of them.
  const due = Math.floor(((performance.now() - startMs) / 1000) * opts.rate) + 1;
  while (emitted < due) {
    const quote = nextQuote(emitted);
    quote.t = wallNs(startMs + (emitted * 1000) / opts.rate);
    quote.ti = nowNs();
    broadcast(quote);
    emitted++;
  }
}

const timer = setInterval(tick, 1);

server.listen(opts.port, opts.host, () => {
  console.log(`listening on ws://${opts.host}:${server.address().port}/ws`);
});

function shutdown() {
  clearInterval(timer);
  for (const ws of wss.clients) ws.terminate();
  wss.close();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
