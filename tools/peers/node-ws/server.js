// node-ws peer: a reference market-data server for tickwire-bench, written the
// way a typical developer writes a broadcast server with Node.js and `ws`.
//
// Versions: Node.js 20 (>= 18 works), ws 8.23.0 (pinned in package.json and
// package-lock.json; no bufferutil / utf-8-validate native add-ons).
//
// What it does (see ../README.md for the contract): welcome; subscribe to
// `["*"]` or to named symbols (a Set of sockets per symbol); `ping` answered
// with `pong`; one `q` message per text frame per client, stamped `t` (due
// time), `ti` (created), `to` (serialized for this client), all in ns since
// the Unix epoch. The feed (../common/peer.js) is open-loop: update k is due
// at start + k/R, and a 1 ms timer emits every update that is due.
//
// What it deliberately does not do: no batching of several quotes per frame,
// no encode-once (each client gets its own JSON.stringify, because `cseq` and
// `to` are per client), no backpressure or slow-consumer policy (`ws.send`
// queues in memory without bound, see the README), no conflation (`mode` and
// `max_hz` are ignored: every update is sent), no heartbeats, no HTTP routes
// besides the upgrade.

'use strict';

const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');
const WS_VERSION = require('ws/package.json').version;
const { parseArgs, nowNs, makeFeed, welcome, subscribedSymbols } = require('../common/peer.js');

const opts = parseArgs(process.argv.slice(2), 'node server.js');

const server = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
// `path` matches the pathname only: the query string is ignored.
const wss = new WebSocketServer({ server, path: '/ws' });
let sessions = 0;
// Sockets subscribed to ["*"], and sockets per symbol for named subscriptions.
const everything = new Set();
const bySymbol = new Map();

function reply(ws, msg) {
  ws.cseq++;
  msg.cseq = ws.cseq;
  ws.send(JSON.stringify([msg]));
}

wss.on('connection', (ws) => {
  sessions++;
  ws.cseq = 0;
  ws.symbols = [];
  ws.send(JSON.stringify([welcome(sessions, `node-ws/${WS_VERSION}`)]));
  ws.on('message', (data) => {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return; // ignore what we don't understand
    }
    if (msg && msg.type === 'subscribe') {
      const names = subscribedSymbols(msg);
      if (names === null) {
        everything.add(ws);
      } else {
        for (const sym of names) {
          if (!bySymbol.has(sym)) bySymbol.set(sym, new Set());
          bySymbol.get(sym).add(ws);
          ws.symbols.push(sym);
        }
      }
      reply(ws, { type: 'subscribed', id: msg.id, subs: [], rejected: [] });
    } else if (msg && msg.type === 'ping') {
      reply(ws, { type: 'pong', id: msg.id, ts: msg.ts, t: nowNs() });
    }
  });
  ws.on('close', () => {
    everything.delete(ws);
    for (const sym of ws.symbols) bySymbol.get(sym).delete(ws);
  });
  ws.on('error', () => {});
});

function send(ws, quote) {
  if (ws.readyState !== WebSocket.OPEN) return;
  ws.cseq++;
  quote.cseq = ws.cseq;
  quote.to = nowNs();
  ws.send(JSON.stringify([quote]));
}

function broadcast(quote) {
  everything.forEach((ws) => send(ws, quote));
  const subs = bySymbol.get(quote.sym);
  if (subs) subs.forEach((ws) => send(ws, quote));
}

const feed = makeFeed(opts);
const timer = setInterval(() => feed.tick(broadcast), 1);

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
