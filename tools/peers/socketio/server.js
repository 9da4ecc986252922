// socketio peer: a reference market-data server for tickwire-bench, written
// the way Socket.IO's users write a broadcast: one room per symbol (and one,
// `*`, for everything), and `io.to(rooms).emit(...)` per update.
//
// Versions: Node.js 20 (>= 18 works), socket.io 4.8.1 (pinned in package.json
// and package-lock.json), its defaults: Engine.IO v4, polling and WebSocket
// transports (the harness opens the WebSocket transport directly), ping every
// 25 s, no per-message compression.
//
// The wire: Socket.IO wraps every message in an Engine.IO packet. The client
// connects to /socket.io/?EIO=4&transport=websocket, reads the open packet
// (`0{...}`), sends `40` (connect to the main namespace), reads `40{...}`,
// and must answer each ping (`2`) with a pong (`3`). Requests of the contract
// travel as the event `msg` (`42["msg",{"type":"subscribe",...}]`); replies
// and quotes as the event `md` carrying the contract's array
// (`42["md",[{"type":"q",...}]]`).
//
// What it does (see ../README.md for the contract): welcome; subscribe to
// `["*"]` or to named symbols (rooms); `ping` answered with `pong`. The feed
// (../common/peer.js) is open-loop: update k is due at start + k/R, and a
// 1 ms timer emits every update that is due. A broadcast is encoded once for
// all the sockets of its rooms, so a quote carries no per-connection `cseq`
// (nor do the replies), and `to` is the time of that one encoding.
//
// What it deliberately does not do: no batching of several quotes per frame,
// no conflation (`mode` and `max_hz` are ignored: every update is sent), no
// slow-consumer policy beyond Socket.IO's own (a socket's write buffer grows
// without bound), no heartbeats beyond Engine.IO's ping.

'use strict';

const http = require('http');
const { Server } = require('socket.io');
// socket.io's "exports" hide its package.json: read the installed one by path.
const SIO_VERSION = require(require('path').join(__dirname, 'node_modules/socket.io/package.json')).version;
const { parseArgs, nowNs, makeFeed, welcome, subscribedSymbols } = require('../common/peer.js');

const opts = parseArgs(process.argv.slice(2), 'node server.js');

// Engine.IO answers /socket.io/; every other path gets 404 here.
const server = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
const io = new Server(server);
let sessions = 0;

io.on('connection', (socket) => {
  sessions++;
  socket.emit('md', [welcome(sessions, `socketio/${SIO_VERSION}`)]);
  socket.on('msg', (msg) => {
    if (msg && msg.type === 'subscribe') {
      const names = subscribedSymbols(msg);
      socket.join(names === null ? '*' : names);
      socket.emit('md', [{ type: 'subscribed', id: msg.id, subs: [], rejected: [] }]);
    } else if (msg && msg.type === 'ping') {
      socket.emit('md', [{ type: 'pong', id: msg.id, ts: msg.ts, t: nowNs() }]);
    }
  });
});

function broadcast(quote) {
  delete quote.cseq;
  quote.to = nowNs();
  io.to(['*', quote.sym]).emit('md', [quote]);
}

const feed = makeFeed(opts);
const timer = setInterval(() => feed.tick(broadcast), 1);

server.listen(opts.port, opts.host, () => {
  const port = server.address().port;
  console.log(`listening on ws://${opts.host}:${port}/socket.io/?EIO=4&transport=websocket`);
});

function shutdown() {
  clearInterval(timer);
  io.disconnectSockets(true);
  io.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
