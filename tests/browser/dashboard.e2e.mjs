// The dashboard in a real browser: Debian's chromium driven by playwright-core.
//
// Starts `tickwire serve --compression on` (binary from $TICKWIRE_BIN)
// behind a TCP proxy, opens `/` through it, checks that chromium negotiated
// permessage-deflate, waits for live prices, adds a symbol through the
// search box, removes one, reloads (the watchlist must survive), switches
// mode and max_hz. Then it cuts the page's connection at the proxy: the page
// must reconnect and resume in the same epoch. It kills the server and
// restarts it on the same port with `--history 1` (a new epoch, which the
// page reports), and cuts the connection again for longer than that history
// covers: the page must say which streams were not recovered, and the notice
// must go when dismissed. Then the chart's candles: 1 s and 1 min bars of the
// charted symbol, subscribed on that one bars channel, drawn from the bars
// the server sent, and moved with the symbol and the view. Saves a
// screenshot (1 s candles) to $SCREENSHOT (default
// target/dashboard.png). Fails on any page error or console error. Every
// wait is bounded; the whole run is capped at 100 s; servers, the proxy and
// the browser are closed on every exit path.
//
// Run: TICKWIRE_BIN=target/debug/tickwire node tests/browser/dashboard.e2e.mjs
// (normally through `cargo test browser`, see tests/browser.rs).

import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

import { chromium } from "playwright-core";

import { startServer as startTickwire } from "./server.mjs";

const CHROMIUM = "/usr/bin/chromium";
const TOTAL_MS = 100_000;
const STEP_MS = 20_000;
const BIN = process.env.TICKWIRE_BIN;
const SHOT = process.env.SCREENSHOT ?? "target/dashboard.png";

const t0 = Date.now();
const servers = new Set();
const proxies = new Set();
let context = null;
let userDataDir = null;

function log(msg) {
  console.log(`[${((Date.now() - t0) / 1000).toFixed(1)} s] ${msg}`);
}

/** Kills whatever is still running; safe to call more than once. */
async function cleanup() {
  for (const s of servers) s.kill("SIGKILL");
  servers.clear();
  for (const p of proxies) p.close();
  proxies.clear();
  const ctx = context;
  context = null;
  if (ctx) await ctx.close().catch(() => {});
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
}

async function fail(err) {
  console.error(`FAIL after ${((Date.now() - t0) / 1000).toFixed(1)} s: ${err?.stack ?? err}`);
  await cleanup();
  process.exit(1);
}

const watchdog = setTimeout(() => fail(new Error(`the whole test took over ${TOTAL_MS / 1000} s`)), TOTAL_MS);
process.on("SIGINT", () => fail(new Error("interrupted")));
process.on("SIGTERM", () => fail(new Error("terminated")));

/** Starts `tickwire serve --listen <listen> ...args` (see server.mjs); killed by cleanup(). */
async function startServer(listen, args = []) {
  const server = await startTickwire(BIN, listen, args);
  servers.add(server.proc);
  server.proc.on("exit", () => servers.delete(server.proc));
  return server;
}

/**
 * A TCP proxy in front of the server: the page connects through it, so the
 * test can break the page's connections the way a network does (a reset,
 * no close frame) and refuse new ones while it is "down".
 */
function startProxy(serverPort) {
  const open = new Set();
  const proxy = { port: 0, down: false, refused: 0 };
  const server = createServer((client) => {
    if (proxy.down) {
      proxy.refused += 1;
      client.resetAndDestroy();
      return;
    }
    const upstream = connect(serverPort, "127.0.0.1");
    const pair = [client, upstream];
    open.add(pair);
    const end = () => {
      open.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const s of pair) s.on("error", end).on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  proxies.add(server);
  /** Resets every open connection and refuses new ones until `up()`. */
  proxy.cut = () => {
    proxy.down = true;
    proxy.refused = 0;
    for (const pair of open) for (const s of pair) s.resetAndDestroy();
  };
  proxy.up = () => {
    proxy.down = false;
  };
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      proxy.port = server.address().port;
      resolve(proxy);
    });
  });
}

/** SIGKILL, like a crash: no `shutdown` message, the sockets just close. */
function crash(proc) {
  return new Promise((resolve) => {
    proc.once("exit", resolve);
    proc.kill("SIGKILL");
  });
}

/** Resolves with `get()`'s first truthy value (checked every 20 ms); rejects after STEP_MS. */
function until(what, get) {
  const deadline = Date.now() + STEP_MS;
  return new Promise((resolve, reject) => {
    const check = () => {
      const value = get();
      if (value) resolve(value);
      else if (Date.now() > deadline) reject(new Error(`waited ${STEP_MS / 1000} s for ${what}`));
      else setTimeout(check, 20);
    };
    check();
  });
}

/** Text of a watchlist column, for every row: {SYM: text}. */
const column = (page, col) =>
  page.$$eval(`#rows tr[data-sym]`, (trs, c) => Object.fromEntries(trs.map((tr) => [tr.dataset.sym, tr.querySelector(`td[data-col="${c}"]`).textContent])), col);

/** Waits until some row's bid differs from `before` (and is a price). */
async function pricesChange(page, before) {
  await page.waitForFunction(
    (prev) =>
      [...document.querySelectorAll("#rows tr[data-sym]")].some((tr) => {
        const bid = tr.querySelector('td[data-col="bid"]').textContent;
        return /\d/.test(bid) && prev[tr.dataset.sym] !== undefined && bid !== prev[tr.dataset.sym];
      }),
    before,
    { timeout: STEP_MS },
  );
}

async function main() {
  if (!BIN) throw new Error("set TICKWIRE_BIN to the tickwire binary");
  const { port } = await startServer("127.0.0.1:0", ["--compression", "on"]);
  const proxy = await startProxy(port);
  const url = `http://127.0.0.1:${proxy.port}/`;
  log(`server on port ${port}, the page on ${url}`);

  userDataDir = mkdtempSync(join(tmpdir(), "tickwire-chromium-"));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1440, height: 900 },
    colorScheme: "dark",
    timeout: STEP_MS,
  });
  context.setDefaultTimeout(STEP_MS);
  const page = context.pages()[0] ?? (await context.newPage());
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.stack ?? e}`));
  page.on("console", (msg) => {
    // Chromium itself logs each refused WebSocket attempt while the server
    // is down; that is the outage this test causes, not a page bug.
    if (msg.type() === "error" && !/^WebSocket connection to '.*' failed/.test(msg.text())) {
      problems.push(`console error: ${msg.text()}`);
    }
  });
  page.on("requestfailed", (r) => {
    if (!r.url().includes("/ws")) problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
  });
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.url()}`);
  });
  // The page's requests, the server's welcomes and subscribed replies, and
  // the bars it sent (updates and snapshots).
  const requests = [];
  const replies = [];
  const bars = [];
  page.on("websocket", (ws) => {
    ws.on("framesent", ({ payload }) => requests.push(JSON.parse(payload)));
    ws.on("framereceived", ({ payload }) => {
      if (typeof payload !== "string") return;
      for (const m of JSON.parse(payload)) {
        if (m.type === "welcome" || m.type === "subscribed") replies.push(m);
        if (m.ch?.startsWith("bars_")) bars.push(m);
      }
    });
  });
  /** Waits for the page's next request of `type` on `ch` for `sym` (after index `after`). */
  const nextRequest = (after, type, ch, sym) =>
    until(`${type} ${ch} ${sym}`, () =>
      requests.slice(after).find((r) => r.type === type && r.channels?.length === 1 && r.channels[0] === ch && r.symbols.join() === sym));
  /** Waits until the chart shows `view` with at least `candles` candles, `closed` of them closed; returns its data. */
  const chartShows = async (view, candles, closed = 0) => {
    await page.waitForFunction(
      ([v, n, k]) => {
        const d = document.getElementById("chart").dataset;
        return d.view === v && Number(d.candles) >= n && Number(d.closed) >= k;
      },
      [view, candles, closed],
      { timeout: STEP_MS },
    );
    return page.$eval("#chart", (c) => ({ ...c.dataset }));
  };
  /** Checks that the chart's newest candle is a bar of (ch, sym) that the server sent. */
  const drawnFromServer = (data, ch, sym) => {
    const sent = bars.filter((m) => m.ch === ch && m.sym === sym);
    if (!sent.some((m) => m.t === Number(data.newest))) {
      throw new Error(`the chart's newest ${ch} candle (t ${data.newest}) is not among the ${sent.length} ${sym} bars the server sent`);
    }
  };
  /** Waits for the page's next `subscribe` with `resume` and the server's reply to it. */
  const nextResume = async (after) => {
    const req = await until("a subscribe with resume", () => requests.slice(after).find((r) => r.type === "subscribe" && r.resume));
    const reply = await until("its subscribed", () => replies.find((m) => m.type === "subscribed" && m.id === req.id));
    return { req, reply };
  };
  const epoch = () => replies.findLast((m) => m.type === "welcome").epoch;

  // What the server answered to each WebSocket upgrade (chromium's own
  // view, through the DevTools protocol).
  const upgrades = [];
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  cdp.on("Network.webSocketHandshakeResponseReceived", ({ response }) => upgrades.push(response));

  await page.goto(url);
  await page.waitForSelector('#conn[data-state="live"]');
  const extensions = (r) =>
    Object.entries(r.headers).find(([k]) => k.toLowerCase() === "sec-websocket-extensions")?.[1] ?? "";
  if (upgrades.length === 0 || !extensions(upgrades[0]).startsWith("permessage-deflate")) {
    throw new Error(`chromium did not negotiate permessage-deflate: ${JSON.stringify(upgrades.map((r) => r.headers))}`);
  }
  log(`page live, over ${extensions(upgrades[0])}`);
  const rows = await page.$$eval("#rows tr[data-sym]", (trs) => trs.map((tr) => tr.dataset.sym));
  if (rows.length !== 10 || !rows.includes("SPY")) throw new Error(`default watchlist: ${rows}`);
  await page.waitForFunction(() => /\d/.test(document.querySelector('#rows tr[data-sym] td[data-col="bid"]').textContent));
  await pricesChange(page, await column(page, "bid"));
  log("prices change");

  // Add a symbol through the search box: type a prefix, take the completion.
  await page.getByRole("combobox", { name: "Add a symbol" }).fill("NFL");
  await page.getByRole("option", { name: "NFLX" }).waitFor();
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => /\d/.test(document.querySelector('#rows tr[data-sym="NFLX"] td[data-col="bid"]')?.textContent));
  log("added NFLX through the search box; it streams");

  // Remove one.
  await page.getByRole("button", { name: "Remove AMD" }).click();
  await page.locator('#rows tr[data-sym="AMD"]').waitFor({ state: "detached" });
  log("removed AMD");

  // The watchlist survives a reload.
  await page.reload();
  await page.waitForSelector('#conn[data-state="live"]');
  const after = await page.$$eval("#rows tr[data-sym]", (trs) => trs.map((tr) => tr.dataset.sym));
  if (!after.includes("NFLX") || after.includes("AMD") || after.length !== 10) {
    throw new Error(`watchlist after reload: ${after}`);
  }
  log("watchlist kept across reload");

  // The header's controls resubscribe with new options, and data keeps coming.
  await page.getByLabel("mode").selectOption("all");
  await page.waitForSelector("#max-hz:disabled");
  await pricesChange(page, await column(page, "bid"));
  await page.getByLabel("mode").selectOption("latest");
  await page.getByLabel("max_hz").selectOption("4");
  await pricesChange(page, await column(page, "bid"));
  log("mode and max_hz controls work");

  // The theme toggle flips to light and back.
  await page.getByRole("button", { name: "Switch to light theme" }).click();
  await page.waitForSelector('html[data-theme="light"]');
  await page.getByRole("button", { name: "Switch to dark theme" }).click();
  await page.waitForSelector('html[data-theme="dark"]');

  // Chart a symbol, so the screenshot shows one.
  await page.getByRole("button", { name: "NVDA: show chart" }).click();

  // Cut the connection like a network would: the page reconnects at once
  // and resumes every stream of the same epoch from the last seq it applied.
  const epochA = epoch();
  let mark = requests.length;
  proxy.cut();
  await page.waitForSelector('#conn[data-state="reconnecting"]');
  proxy.up();
  await page.waitForSelector('#conn[data-state="live"]', { timeout: 15_000 });
  const first = await nextResume(mark);
  if (first.req.resume.epoch !== epochA || !(first.req.resume.from.quotes?.SPY > 0)) {
    throw new Error(`resume after the cut: ${JSON.stringify(first.req)} (epoch ${epochA})`);
  }
  // Updates after the reply: the page has taken it in.
  await pricesChange(page, await column(page, "bid"));
  const lostA = first.reply.subs.filter((s) => s.recovered === false);
  // The default history (256 per stream) covers so short an outage, but the
  // notice must tell the truth either way.
  if ((await page.isVisible("#resume-notice")) !== lostA.length > 0) {
    throw new Error(`resume notice ${await page.textContent("#resume-notice")} for ${JSON.stringify(first.reply.subs)}`);
  }
  log(`connection cut; page resumed epoch ${epochA}: ${first.reply.subs.length - lostA.length} of ${first.reply.subs.length} streams recovered`);

  // Crash the server; the page must say so and keep the last prices.
  const [crashed] = servers;
  await crash(crashed);
  await page.waitForSelector('#conn[data-state="reconnecting"]');
  await page.waitForSelector("#stale-banner:not([hidden])");
  log("server killed; page shows reconnecting");

  // Same port, new process: a new epoch, nothing to resume. It keeps only
  // the newest update of each stream, for the next step.
  await startServer(`127.0.0.1:${port}`, ["--compression", "on", "--history", "1"]);
  await page.waitForSelector('#conn[data-state="live"]', { timeout: 15_000 });
  await page.waitForSelector("#stale-banner", { state: "hidden" });
  await pricesChange(page, await column(page, "bid"));
  await page.waitForFunction(() => /new epoch/.test(document.getElementById("resume-text").textContent));
  await page.waitForSelector("#resume-notice:not([hidden])");
  log("restarted on the same port; page live again, prices change, the new epoch is reported");

  // Cut again and keep the page out until it was refused twice (half a
  // second or more): the busiest streams move on by more than the one update
  // the server keeps, so the resume cannot be complete, and the page says so.
  const epochB = epoch();
  mark = requests.length;
  proxy.cut();
  await page.waitForSelector('#conn[data-state="reconnecting"]');
  await until("two refused reconnects", () => proxy.refused >= 2);
  proxy.up();
  await page.waitForSelector('#conn[data-state="live"]', { timeout: 15_000 });
  const second = await nextResume(mark);
  if (epochB === epochA || second.req.resume.epoch !== epochB) {
    throw new Error(`resume after the restart: ${JSON.stringify(second.req)} (epochs ${epochA}, ${epochB})`);
  }
  const lostB = second.reply.subs.filter((s) => s.recovered === false);
  if (lostB.length === 0) throw new Error(`every stream recovered past a history of 1: ${JSON.stringify(second.reply.subs)}`);
  await page.waitForFunction(() => /Resume not complete/.test(document.getElementById("resume-text").textContent));
  const notice = await page.textContent("#resume-text");
  if (!notice.includes(`${lostB[0].sym} ${lostB[0].ch}`) || !notice.includes(`${lostB.length} of ${second.reply.subs.length}`)) {
    throw new Error(`notice "${notice}" for ${JSON.stringify(lostB)}`);
  }
  log(`cut past the history: "${notice}"`);
  await page.getByRole("button", { name: "Dismiss this notice" }).click();
  await page.waitForSelector("#resume-notice", { state: "hidden" });
  await pricesChange(page, await column(page, "bid"));
  log("notice dismissed; prices change");

  // Candles of the charted symbol: its bars_1s stream alone (the watchlist
  // keeps its quotes and trades), in mode all, drawn from the snapshot and
  // every update; open bars redraw, closed ones stay.
  const chartView = page.getByRole("combobox", { name: "Chart" });
  mark = requests.length;
  await chartView.selectOption("bars_1s");
  const barsReq = await nextRequest(mark, "subscribe", "bars_1s", "NVDA");
  if (barsReq.mode !== "all") throw new Error(`bars subscription: ${JSON.stringify(barsReq)}`);
  const seconds = await chartShows("bars_1s", 3, 2);
  drawnFromServer(seconds, "bars_1s", "NVDA");
  log(`1 s candles of NVDA: ${seconds.candles} drawn, ${seconds.closed} closed`);

  // The minute view moves the subscription to bars_1m.
  mark = requests.length;
  await chartView.selectOption("bars_1m");
  await nextRequest(mark, "unsubscribe", "bars_1s", "NVDA");
  await nextRequest(mark, "subscribe", "bars_1m", "NVDA");
  drawnFromServer(await chartShows("bars_1m", 1), "bars_1m", "NVDA");
  // Another symbol: the bars stream follows it; NVDA's quotes keep coming.
  mark = requests.length;
  await page.getByRole("button", { name: "SPY: show chart" }).click();
  await nextRequest(mark, "unsubscribe", "bars_1m", "NVDA");
  await nextRequest(mark, "subscribe", "bars_1m", "SPY");
  const spyBar = await until("a bars_1m bar of SPY", () => bars.find((m) => m.ch === "bars_1m" && m.sym === "SPY"));
  await page.waitForFunction((t) => Number(document.getElementById("chart").dataset.newest) >= t, spyBar.t, { timeout: STEP_MS });
  drawnFromServer(await chartShows("bars_1m", 1), "bars_1m", "SPY");
  const nvdaBid = (await column(page, "bid")).NVDA;
  await page.waitForFunction((prev) => document.querySelector('#rows tr[data-sym="NVDA"] td[data-col="bid"]').textContent !== prev, nvdaBid, { timeout: STEP_MS });
  // Back to the mid line: no bars stream left.
  mark = requests.length;
  await chartView.selectOption("mid");
  await nextRequest(mark, "unsubscribe", "bars_1m", "SPY");
  await page.waitForSelector('#chart[data-view="mid"]');
  log("1 min candles of NVDA, then of SPY, then the mid line: the bars subscription followed");

  // The screenshot shows NVDA's 1 s candles.
  await page.getByRole("button", { name: "NVDA: show chart" }).click();
  await chartView.selectOption("bars_1s");
  await chartShows("bars_1s", 1);

  // Let the chart and the header statistics fill in for the screenshot.
  await page.waitForFunction(() => /\d/.test(document.getElementById("stat-feed").textContent));
  await page.waitForTimeout(6_000);
  if (problems.length) throw new Error(`problems in the page:\n${problems.join("\n")}`);

  mkdirSync(dirname(SHOT), { recursive: true });
  await page.screenshot({ path: SHOT });
  log(`screenshot saved to ${SHOT}`);
}

main().then(
  async () => {
    clearTimeout(watchdog);
    await cleanup();
    log("PASS");
  },
  fail,
);
