// The dashboard in a real browser: Debian's chromium driven by playwright-core.
//
// Starts `tickwire serve --compression on` (binary from $TICKWIRE_BIN), opens
// `/`, checks that chromium negotiated permessage-deflate, waits for live
// prices, adds a symbol through the search box, removes one, reloads
// (the watchlist must survive), switches mode and max_hz, kills the server and restarts it on the same
// port, and waits for the page to reconnect and stream again. Saves a
// screenshot to $SCREENSHOT (default target/dashboard.png). Fails on any page
// error or console error. Every wait is bounded; the whole run is capped at
// 60 s; servers and the browser are killed on every exit path.
//
// Run: TICKWIRE_BIN=target/debug/tickwire node tests/browser/dashboard.e2e.mjs
// (normally through `cargo test browser`, see tests/browser.rs).

import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";

import { chromium } from "playwright-core";

const CHROMIUM = "/usr/bin/chromium";
const TOTAL_MS = 100_000;
const STEP_MS = 20_000;
const BIN = process.env.TICKWIRE_BIN;
const SHOT = process.env.SCREENSHOT ?? "target/dashboard.png";

const t0 = Date.now();
const servers = new Set();
let context = null;
let userDataDir = null;

function log(msg) {
  console.log(`[${((Date.now() - t0) / 1000).toFixed(1)} s] ${msg}`);
}

/** Kills whatever is still running; safe to call more than once. */
async function cleanup() {
  for (const s of servers) s.kill("SIGKILL");
  servers.clear();
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

/** Starts `tickwire serve --listen <listen>` and resolves with its port once it printed its URL. */
function startServer(listen) {
  return new Promise((resolve, reject) => {
    const proc = spawn(BIN, ["serve", "--listen", listen, "--compression", "on"], { stdio: ["ignore", "pipe", "pipe"] });
    servers.add(proc);
    let stderr = "";
    proc.stderr.on("data", (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => reject(new Error(`${BIN} printed no URL within 10 s; stderr: ${stderr}`)), 10_000);
    proc.on("error", (e) => reject(new Error(`cannot start ${BIN}: ${e.message}`)));
    proc.on("exit", (code, signal) => {
      servers.delete(proc);
      clearTimeout(timer);
      reject(new Error(`server exited (${code ?? signal}) before printing its URL; stderr: ${stderr}`));
    });
    createInterface({ input: proc.stdout }).on("line", (line) => {
      const m = line.match(/http:\/\/127\.0\.0\.1:(\d+)\//);
      if (m) {
        clearTimeout(timer);
        resolve({ proc, port: Number(m[1]) });
      }
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
  let { port } = await startServer("127.0.0.1:0");
  const url = `http://127.0.0.1:${port}/`;
  log(`server on ${url}`);

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

  // Crash the server; the page must say so and keep the last prices.
  const [first] = servers;
  await crash(first);
  await page.waitForSelector('#conn[data-state="reconnecting"]');
  await page.waitForSelector("#stale-banner:not([hidden])");
  log("server killed; page shows reconnecting");

  // Same port, new process (and a new epoch).
  ({ port } = await startServer(`127.0.0.1:${port}`));
  await page.waitForSelector('#conn[data-state="live"]', { timeout: 15_000 });
  await page.waitForSelector("#stale-banner", { state: "hidden" });
  await pricesChange(page, await column(page, "bid"));
  log("restarted on the same port; page live again and prices change");

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
