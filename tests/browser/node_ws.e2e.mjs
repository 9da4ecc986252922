// The Node `ws` client with permessage-deflate against a real server.
//
// Starts `tickwire serve --compression on` (binary from $TICKWIRE_BIN) and
// connects twice with `ws` offering permessage-deflate (`perMessageDeflate`,
// threshold 0 so that even small requests go compressed): once on the JSON
// protocol, once on `tickwire.v1.bin`. Each time the extension must be
// negotiated (`ws.extensions`), a compressed `subscribe` to `["*"]` must be
// answered, and 200 updates must arrive with `cseq` contiguous, every frame
// inflated by `ws` itself. Every wait is bounded; the whole run is capped at
// 30 s; the server is killed on every exit path.
//
// Run: TICKWIRE_BIN=target/debug/tickwire node tests/browser/node_ws.e2e.mjs
// (normally through `cargo test browser`, see tests/browser.rs).

import WebSocket from "ws";

import { startServer } from "./server.mjs";

const BIN = process.env.TICKWIRE_BIN;
const TOTAL_MS = 30_000;
const UPDATES = 200;

let server = null;

async function fail(err) {
  console.error(`FAIL: ${err?.stack ?? err}`);
  server?.kill("SIGKILL");
  process.exit(1);
}

const watchdog = setTimeout(() => fail(new Error(`the whole test took over ${TOTAL_MS / 1000} s`)), TOTAL_MS);

/** One session on `protocol`: negotiation, a compressed subscribe, updates in order. */
function session(port, protocol) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, protocol, { perMessageDeflate: { threshold: 0 } });
    ws.binaryType = "arraybuffer";
    let cseq = 0;
    let updates = 0;
    let binaryFrames = 0;
    const check = (msg) => {
      if (msg.type === "welcome") return;
      if (msg.cseq !== cseq + 1) throw new Error(`${protocol}: cseq ${msg.cseq} after ${cseq}`);
      cseq = msg.cseq;
      if (msg.type === "q" || msg.type === "t") updates += 1;
    };
    ws.on("open", () => {
      if (!ws.extensions.startsWith("permessage-deflate")) {
        reject(new Error(`${protocol}: extension not negotiated: ${JSON.stringify(ws.extensions)}`));
        return;
      }
      ws.send(JSON.stringify({ type: "subscribe", id: 1, symbols: ["*"] }));
    });
    ws.on("message", (data, isBinary) => {
      try {
        if (isBinary) {
          // tickwire.v1.bin: first cseq and record count in the frame header.
          const v = new DataView(data);
          const count = v.getUint32(4, true);
          const first = Number(v.getBigUint64(8, true));
          if (first !== cseq + 1) throw new Error(`binary frame starts at cseq ${first} after ${cseq}`);
          cseq = first + count - 1;
          updates += count;
          binaryFrames += 1;
        } else {
          for (const msg of JSON.parse(Buffer.from(data).toString())) check(msg);
        }
      } catch (e) {
        reject(e);
        return;
      }
      if (updates >= UPDATES) {
        ws.close(1000);
        resolve({ protocol, extensions: ws.extensions, updates, cseq, binaryFrames });
      }
    });
    ws.on("error", reject);
    ws.on("close", (code) => {
      if (updates < UPDATES) reject(new Error(`${protocol}: closed (${code}) after ${updates} updates`));
    });
  });
}

async function main() {
  let port;
  ({ proc: server, port } = await startServer(BIN, "127.0.0.1:0", ["--compression", "on", "--symbols", "100", "--rate", "2000"]));
  for (const protocol of ["tickwire.v1.json", "tickwire.v1.bin"]) {
    const r = await session(port, protocol);
    if (protocol === "tickwire.v1.bin" && r.binaryFrames === 0) throw new Error("no binary frame");
    console.log(`${r.protocol}: ${r.extensions}; ${r.updates} updates, cseq 1..${r.cseq} contiguous`);
  }
}

main().then(() => {
  clearTimeout(watchdog);
  server?.kill("SIGKILL");
  console.log("PASS");
}, fail);
