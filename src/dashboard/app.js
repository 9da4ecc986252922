// The dashboard: a watchlist fed by tickwire.js, rendered once per
// animation frame. Messages only update the model (`rows`) and mark rows
// dirty; `render()` writes the DOM for dirty rows that are on screen, so the
// cost per frame follows what changed on screen, not how many messages
// arrived. The table is virtualized: only the rows in view (and a few more)
// are in the DOM, because any text change in a table lays out the whole
// table, and 500 laid-out rows cost tens of milliseconds per frame.
//
// The chart shows the selected symbol's mid line (from its quotes and
// trades), or its candles: then the page subscribes to that one symbol's
// bars channel (bars_1s or bars_1m) in mode "all", so that every bar's final
// values arrive, and moves that one subscription when the symbol or the
// view changes.

import { State, TickwireClient } from "./tickwire.js";
import { Candles, History, PriceChart } from "./pricechart.js";

// The synthetic feed's ten busiest names.
const DEFAULT_WATCHLIST = ["SPY", "QQQ", "NVDA", "TSLA", "AAPL", "AMZN", "MSFT", "META", "GOOGL", "AMD"];
const STORE = { watchlist: "tickwire.watchlist", settings: "tickwire.settings", theme: "tickwire.theme" };
const NUMERIC_SORT = new Set(["bid", "bs", "ask", "as", "last", "chg", "pct", "spread", "rate"]);

const $ = (id) => document.getElementById(id);
const el = {
  conn: $("conn"),
  connState: $("conn-state"),
  connDetail: $("conn-detail"),
  rate: $("stat-rate"),
  feedLat: $("stat-feed"),
  wireLat: $("stat-wire"),
  mode: $("mode"),
  maxHz: $("max-hz"),
  theme: $("theme"),
  count: $("count"),
  add: $("add"),
  suggestions: $("suggestions"),
  banner: $("stale-banner"),
  notice: $("resume-notice"),
  noticeText: $("resume-text"),
  noticeDismiss: $("resume-dismiss"),
  table: $("watchlist"),
  tbody: $("rows"),
  wrap: $("table-wrap"),
  chartSym: $("chart-sym"),
  chartKind: $("chart-kind"),
  chartView: $("chart-view"),
  chartNote: $("chart-note"),
  legendMid: $("legend-mid"),
  legendCandles: $("legend-candles"),
  chartLast: $("chart-last"),
  chartChg: $("chart-chg"),
  canvas: $("chart"),
  endpoint: $("endpoint"),
  serverInfo: $("server-info"),
  announce: $("announce"),
};

// --- settings and persistence ------------------------------------------------

function load(key, fallback) {
  try {
    return JSON.parse(localStorage.getItem(key)) ?? fallback;
  } catch {
    return fallback;
  }
}

function save(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // Storage can be full or disabled (private mode): the URL still carries the list.
  }
}

/** `?symbols=A,B` wins (a shared link), then localStorage, then the default. */
function initialWatchlist() {
  const param = new URLSearchParams(location.search).get("symbols");
  if (param !== null) return param.split(",").map((s) => s.trim().toUpperCase()).filter(Boolean);
  const stored = load(STORE.watchlist, null);
  return Array.isArray(stored) ? stored : DEFAULT_WATCHLIST;
}

function persistWatchlist() {
  const list = [...rows.keys()];
  save(STORE.watchlist, list);
  const url = new URL(location.href);
  url.searchParams.set("symbols", list.join(","));
  history.replaceState(null, "", url);
}

const settings = { mode: "latest", max_hz: 10, chart: "mid", ...load(STORE.settings, {}) };
const subOptions = () => (settings.mode === "all" ? { mode: "all" } : { mode: "latest", max_hz: settings.max_hz });

// --- formatting ----------------------------------------------------------------

const fmtCache = new Map();
function fmt(value, decimals, sign = false) {
  const key = decimals * 2 + (sign ? 1 : 0);
  let f = fmtCache.get(key);
  if (!f) {
    f = new Intl.NumberFormat("en-US", {
      minimumFractionDigits: decimals,
      maximumFractionDigits: decimals,
      signDisplay: sign ? "exceptZero" : "auto",
    });
    fmtCache.set(key, f);
  }
  return f.format(value);
}
/** Sub-dollar names trade in hundredths of a cent. */
const decimalsFor = (price) => (price !== undefined && price < 1 ? 4 : 2);
const dash = "–";

// --- the model -----------------------------------------------------------------

/** Watchlist rows, in watchlist order: symbol -> row state and its DOM cells. */
const rows = new Map();
/** The rows in display (sorted) order. */
let order = [];
const dirty = new Set();
let selected = null;
let sort = { key: null, dir: 1 };

/** Empty bar histories of both bars channels, by channel. */
const newCandles = () => ({ bars_1s: new Candles(1_000), bars_1m: new Candles(60_000) });

function makeRow(sym) {
  const tr = document.createElement("tr");
  tr.dataset.sym = sym;
  tr.innerHTML = `
    <th scope="row" class="left"><button type="button" class="sym" aria-pressed="false"></button></th>
    <td data-col="bid"></td><td data-col="bs" class="opt size"></td>
    <td data-col="ask"></td><td data-col="as" class="opt size"></td>
    <td data-col="last"></td><td data-col="chg" class="opt2"></td><td data-col="pct"></td>
    <td data-col="spread" class="opt"></td><td data-col="rate" class="opt"></td>
    <td class="act"><button type="button" class="remove">×</button></td>`;
  const symBtn = tr.querySelector(".sym");
  symBtn.textContent = sym;
  symBtn.setAttribute("aria-label", `${sym}: show chart`);
  tr.querySelector(".remove").setAttribute("aria-label", `Remove ${sym}`);
  const cells = {};
  for (const td of tr.querySelectorAll("td[data-col]")) {
    cells[td.dataset.col] = td;
    td.textContent = dash;
  }
  return {
    sym,
    tr,
    symBtn,
    cells,
    shown: {}, // text last written per cell: skip DOM writes that change nothing
    flash: {}, // cell -> 1 or -1, set by the model, consumed by render()
    bid: undefined,
    ask: undefined,
    bs: undefined,
    as: undefined,
    last: undefined,
    base: undefined, // first price seen: the reference for change
    count: 0, // messages this second
    rate: 0,
    attached: false, // in the DOM (in view) right now
    history: new History(),
    // Bars of the chart's candle views, kept while the symbol is on the list.
    candles: newCandles(),
  };
}

/** The row's price for change: the last trade, or the mid before any trade. */
function price(r) {
  if (r.last !== undefined) return r.last;
  if (r.bid !== undefined && r.ask !== undefined) return (r.bid + r.ask) / 2;
  return undefined;
}

function sortValue(r, key) {
  const p = price(r);
  switch (key) {
    case "chg":
      return p === undefined ? undefined : p - r.base;
    case "pct":
      return p === undefined ? undefined : (p - r.base) / r.base;
    case "spread":
      return r.bid === undefined || r.ask === undefined ? undefined : r.ask - r.bid;
    default:
      return r[key];
  }
}

function markFlash(r, col, before, after) {
  if (before !== undefined && after !== before) r.flash[col] = after > before ? 1 : -1;
}

function onQuote(q) {
  const r = rows.get(q.sym);
  if (!r) return; // an update that crossed our unsubscribe
  markFlash(r, "bid", r.bid, q.bp);
  markFlash(r, "ask", r.ask, q.ap);
  r.bid = q.bp;
  r.ask = q.ap;
  r.bs = q.bs;
  r.as = q.as;
  if (r.base === undefined) r.base = price(r);
  r.history.addQuote(q.receivedAt, q.bp, q.ap);
  update(r, q);
}

function onTrade(t) {
  const r = rows.get(t.sym);
  if (!r) return;
  markFlash(r, "last", r.last, t.p);
  r.last = t.p;
  if (r.base === undefined) r.base = t.p;
  const mid = r.bid !== undefined && r.ask !== undefined ? (r.bid + r.ask) / 2 : undefined;
  r.history.addTrade(t.receivedAt, t.p, t.s, mid);
  update(r, t);
}

/** A bar of the charted stream: only the chart shows bars. */
function onBar(b) {
  const r = rows.get(b.sym);
  if (!r || !r.candles[b.ch]?.add(b)) return;
  if (r.sym === selected && settings.chart === b.ch) {
    chartDirty = true;
    schedule();
  }
}

function update(r, m) {
  if (!m.snapshot) {
    r.count += 1;
    latency.add(m);
  }
  dirty.add(r);
  schedule();
}

// --- latency ---------------------------------------------------------------------

/**
 * Feed-to-browser latency samples of the current second, from the server's
 * stamps (the page asks for `stamps=1`): `ti`, when the server ingested the
 * update, and `to`, when it sent it. Never from the source time `t`: on a
 * replay that is the recorded exchange time, hours or years ago.
 */
const latency = {
  feed: [],
  wire: [],
  add(m) {
    // Bounded: at worst a second of a very fast feed is sampled, not stored whole.
    if (this.feed.length >= 20_000) return;
    if (m.ti !== undefined) this.feed.push(m.receivedAt - m.ti);
    if (m.to !== undefined) this.wire.push(m.receivedAt - m.to);
  },
  /** "p50 / p99 ms" of the samples so far, then starts a new second. */
  take(key) {
    const xs = this[key];
    this[key] = [];
    if (xs.length === 0) return null;
    xs.sort((a, b) => a - b);
    const q = (p) => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))];
    return `${q(0.5)} / ${q(0.99)} ms`;
  },
};

// --- rendering -------------------------------------------------------------------

let frameRequested = false;
let chartDirty = false;
let lastChartDraw = 0;

function schedule() {
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(render);
  }
}

function setText(r, col, text) {
  if (r.shown[col] !== text) {
    r.shown[col] = text;
    r.cells[col].textContent = text;
  }
}

/** "up", "down", or "" when the change rounds to zero at the shown precision. */
function direction(chg, decimals) {
  if (Math.abs(chg) < 0.5 * 10 ** -decimals) return "";
  return chg > 0 ? "up" : "down";
}

function renderRow(r) {
  const d = decimalsFor(r.bid ?? r.last);
  setText(r, "bid", r.bid === undefined ? dash : fmt(r.bid, d));
  setText(r, "ask", r.ask === undefined ? dash : fmt(r.ask, d));
  setText(r, "bs", r.bs === undefined ? dash : fmt(r.bs, 0));
  setText(r, "as", r.as === undefined ? dash : fmt(r.as, 0));
  setText(r, "last", r.last === undefined ? dash : fmt(r.last, d));
  setText(r, "spread", r.bid === undefined || r.ask === undefined ? dash : fmt(r.ask - r.bid, d));
  setText(r, "rate", fmt(r.rate, 0));
  const p = price(r);
  if (p !== undefined && r.base !== undefined) {
    const chg = p - r.base;
    setText(r, "chg", fmt(chg, d, true));
    setText(r, "pct", `${fmt((chg / r.base) * 100, 2, true)}%`);
    const dir = direction(chg, d);
    if (r.shown.dir !== dir) {
      r.shown.dir = dir;
      r.cells.chg.dataset.dir = dir;
      r.cells.pct.dataset.dir = dir;
    }
  }
  const until = performance.now() + FLASH_MS;
  for (const col in r.flash) {
    const td = r.cells[col];
    td.className = r.flash[col] > 0 ? "fu" : "fd";
    flashing.set(td, until);
  }
  r.flash = {};
}

const FLASH_MS = 500;
/** Cells showing a flash -> when it ends (performance.now() time). */
const flashing = new Map();

function endFlashes(now) {
  for (const [td, until] of flashing) {
    if (until <= now) {
      td.className = "";
      flashing.delete(td);
    }
  }
}

function render(now) {
  frameRequested = false;
  if (layoutNeeded) {
    layoutNeeded = false;
    layoutRows();
  }
  for (const r of dirty) {
    if (r.attached) renderRow(r);
    if (r.sym === selected) chartDirty = true;
  }
  dirty.clear();
  endFlashes(now);
  // The chart scrolls with time, so it is redrawn 10 times a second while
  // shown, and up to 20 while its symbol changes: more costs more than it shows.
  const since = now - lastChartDraw;
  if (selected && ((chartDirty && since >= 50) || since >= 100)) {
    drawChart();
    lastChartDraw = now;
    chartDirty = false;
  }
  if (selected || flashing.size) schedule();
}

// --- the virtual table -----------------------------------------------------------

const OVERSCAN = 6;
let rowH = 0; // measured from the first attached row
let layoutNeeded = true;
let shownRange = "";
const spacer = () => {
  const tr = document.createElement("tr");
  tr.className = "spacer";
  tr.setAttribute("aria-hidden", "true");
  tr.innerHTML = '<td colspan="11"></td>';
  return tr;
};
const spacerTop = spacer();
const spacerBottom = spacer();

function relayout() {
  layoutNeeded = true;
  schedule();
}

/** Puts the rows in view (plus OVERSCAN each side) into the tbody, between two spacers. */
function layoutRows() {
  const h = rowH || 36;
  const top = Math.max(0, el.wrap.scrollTop - el.table.tHead.offsetHeight);
  const first = Math.max(0, Math.floor(top / h) - OVERSCAN);
  const last = Math.min(order.length, Math.ceil((top + el.wrap.clientHeight) / h) + OVERSCAN);
  const want = order.slice(first, last);
  const key = `${first}:${want.map((r) => r.sym).join(",")}`;
  if (key === shownRange) return;
  shownRange = key;
  const keep = new Set(want);
  for (const r of rows.values()) {
    if (r.attached && !keep.has(r)) {
      r.attached = false;
      for (const col of ["bid", "ask", "last"]) {
        r.cells[col].className = "";
        flashing.delete(r.cells[col]);
      }
    }
  }
  want.forEach((r, i) => {
    r.tr.setAttribute("aria-rowindex", String(first + i + 2));
    if (!r.attached) {
      r.attached = true;
      // Changes made while out of view are not news: show them without a flash.
      r.flash = {};
      renderRow(r);
    }
  });
  spacerTop.firstChild.style.height = `${first * h}px`;
  spacerBottom.firstChild.style.height = `${(order.length - last) * h}px`;
  el.tbody.replaceChildren(spacerTop, ...want.map((r) => r.tr), spacerBottom);
  el.table.setAttribute("aria-rowcount", String(order.length + 1));
  if (!rowH && want.length) {
    rowH = want[0].tr.offsetHeight;
    shownRange = "";
    layoutRows();
  }
}

el.wrap.addEventListener("scroll", relayout, { passive: true });
addEventListener("resize", relayout);

const chart = new PriceChart(el.canvas);

function drawChart() {
  const r = rows.get(selected);
  if (!r) return;
  const d = decimalsFor(r.bid ?? r.last);
  if (settings.chart === "mid") {
    chart.draw(r.history, Date.now(), d);
  } else {
    const candles = r.candles[settings.chart];
    const drawn = chart.drawCandles(candles, d);
    // What the chart shows, for tests and tools that read the page.
    el.canvas.dataset.candles = String(drawn.candles);
    el.canvas.dataset.closed = String(drawn.closed);
    el.canvas.dataset.newest = String(candles.bars.at(-1)?.t ?? "");
  }
  const p = price(r);
  el.chartLast.textContent = p === undefined ? dash : fmt(p, d);
  if (p !== undefined && r.base !== undefined) {
    const chg = p - r.base;
    el.chartChg.textContent = `${fmt(chg, d, true)} (${fmt((chg / r.base) * 100, 2, true)}%)`;
    el.chartChg.dataset.dir = direction(chg, d);
  }
}

function select(sym) {
  if (selected) rows.get(selected)?.symBtn.setAttribute("aria-pressed", "false");
  selected = sym;
  const r = sym && rows.get(sym);
  el.chartSym.textContent = sym ?? dash;
  const view = CHART_VIEWS[settings.chart];
  el.canvas.setAttribute("aria-label", sym ? `${sym}: ${view.label}, ${view.span}` : "Price chart");
  syncBars();
  if (r) {
    r.symBtn.setAttribute("aria-pressed", "true");
    drawChart();
    schedule();
  } else {
    el.chartLast.textContent = dash;
    el.chartChg.textContent = "";
    chart.draw({ quotes: [], trades: [] }, Date.now(), 2);
  }
}

/** The chart's views: what the title, the note and the canvas's label say. */
const CHART_VIEWS = {
  mid: { label: "mid price and trades", title: "mid & trades", span: "last 2 minutes", note: "Last 2 minutes." },
  bars_1s: {
    label: "1 s candles",
    title: "1 s candles",
    span: "up to 2 minutes of bars",
    note: "Up to 2 minutes of 1 s bars on the feed's clock, volume below.",
  },
  bars_1m: {
    label: "1 min candles",
    title: "1 min candles",
    span: "up to an hour of bars",
    note: "Up to an hour of 1 min bars on the feed's clock, volume below.",
  },
};

/** The bars stream the page holds for the chart: {sym, ch}, or null. */
let barsSub = null;

/**
 * Moves the page's one bars subscription to the selected symbol and view:
 * unsubscribes the old stream (that channel only: the watchlist keeps the
 * symbol's quotes and trades), subscribes the new one. Its snapshot starts
 * the candles' history; bars already held for the symbol stay.
 */
function syncBars() {
  const ch = settings.chart === "mid" ? null : settings.chart;
  const want = ch && selected && rows.has(selected) ? { sym: selected, ch } : null;
  if (want?.sym === barsSub?.sym && want?.ch === barsSub?.ch) return;
  if (barsSub) client.unsubscribe([barsSub.sym], { channels: [barsSub.ch] });
  barsSub = want;
  if (want) client.subscribe([want.sym], { channels: [want.ch], mode: "all" });
}

/** Shows the chart as `view` ("mid", "bars_1s" or "bars_1m"). */
function setChartView(view) {
  settings.chart = view;
  el.chartView.value = view;
  const v = CHART_VIEWS[view];
  el.chartKind.textContent = v.title;
  el.legendMid.hidden = view !== "mid";
  el.legendCandles.hidden = view === "mid";
  el.chartNote.textContent = `${v.note} Click a symbol in the watchlist to chart it.`;
  el.canvas.dataset.view = view;
  for (const key of ["candles", "closed", "newest"]) delete el.canvas.dataset[key];
  select(selected);
}

function applySort() {
  order = [...rows.values()];
  if (sort.key) {
    const { key, dir } = sort;
    order.sort((a, b) => {
      const x = sortValue(a, key);
      const y = sortValue(b, key);
      // Rows without a value yet go last in either direction.
      if (x === undefined || y === undefined) return (x === undefined) - (y === undefined);
      return (typeof x === "string" ? x.localeCompare(y) : x - y) * dir;
    });
  }
  for (const th of el.table.tHead.rows[0].cells) {
    if (!th.dataset.key) continue;
    if (th.dataset.key === sort.key) th.setAttribute("aria-sort", sort.dir > 0 ? "ascending" : "descending");
    else th.removeAttribute("aria-sort");
  }
  relayout();
}

// --- watchlist edits -------------------------------------------------------------

let maxSymbols = 1000;

function addSymbols(symbols, { subscribe = true } = {}) {
  const fresh = symbols.filter((s) => !rows.has(s)).slice(0, Math.max(0, maxSymbols - rows.size));
  for (const sym of fresh) rows.set(sym, makeRow(sym));
  if (fresh.length === 0) return fresh;
  if (subscribe) client.subscribe(fresh, subOptions());
  applySort();
  el.count.textContent = `(${rows.size})`;
  persistWatchlist();
  return fresh;
}

function removeSymbol(sym) {
  const r = rows.get(sym);
  if (!r) return;
  client.unsubscribe([sym]);
  const at = order.indexOf(r);
  dropRow(r);
  // Keep keyboard focus in the table instead of dropping it on <body>.
  const next = order[at] ?? order[at - 1];
  if (next) {
    layoutRows();
    next.tr.querySelector(".remove").focus();
  }
  say(`Removed ${sym}`);
}

function dropRow(r) {
  // The row's unsubscribe (or its rejection) ended its bars stream too.
  if (barsSub?.sym === r.sym) barsSub = null;
  rows.delete(r.sym);
  dirty.delete(r);
  order = order.filter((x) => x !== r);
  r.tr.remove();
  r.attached = false;
  el.count.textContent = `(${rows.size})`;
  persistWatchlist();
  if (selected === r.sym) select(order[0]?.sym ?? null);
  relayout();
}

function say(text) {
  el.announce.textContent = text;
}

// --- the search box: a combobox completing from `list` ----------------------------

let known = [];
let active = -1;

function suggest() {
  const q = el.add.value.trim().toUpperCase();
  const starts = [];
  const contains = [];
  if (q) {
    for (const s of known) {
      if (rows.has(s)) continue;
      if (s.startsWith(q)) starts.push(s);
      else if (s.includes(q)) contains.push(s);
      if (starts.length >= 8) break;
    }
  }
  const matches = [...starts, ...contains].slice(0, 8);
  el.suggestions.replaceChildren(
    ...matches.map((s, i) => {
      const li = document.createElement("li");
      li.id = `opt-${i}`;
      li.setAttribute("role", "option");
      li.dataset.sym = s;
      li.textContent = s;
      return li;
    }),
  );
  active = matches.length ? 0 : -1;
  highlight();
  const open = matches.length > 0;
  el.suggestions.hidden = !open;
  el.add.setAttribute("aria-expanded", String(open));
}

function highlight() {
  [...el.suggestions.children].forEach((li, i) => li.setAttribute("aria-selected", String(i === active)));
  if (active >= 0) el.add.setAttribute("aria-activedescendant", `opt-${active}`);
  else el.add.removeAttribute("aria-activedescendant");
}

function closeSuggestions() {
  el.suggestions.hidden = true;
  el.add.setAttribute("aria-expanded", "false");
  el.add.removeAttribute("aria-activedescendant");
  active = -1;
}

function addFromSearch(sym) {
  sym = sym.trim().toUpperCase();
  if (!sym) return;
  el.add.value = "";
  closeSuggestions();
  if (rows.has(sym)) {
    say(`${sym} is already on the watchlist`);
  } else if (addSymbols([sym]).length) {
    say(`Added ${sym}`);
  } else {
    say(`The watchlist is full (${maxSymbols} symbols)`);
  }
  select(sym);
  reveal(rows.get(sym));
}

/** Scrolls the table so that `r` is in view. */
function reveal(r) {
  const at = order.indexOf(r);
  if (at < 0 || !rowH) return;
  const top = at * rowH;
  const view = el.wrap.clientHeight - el.table.tHead.offsetHeight;
  if (top < el.wrap.scrollTop || top + rowH > el.wrap.scrollTop + view) el.wrap.scrollTop = top - view / 2;
}

el.add.addEventListener("input", suggest);
el.add.addEventListener("keydown", (e) => {
  const n = el.suggestions.children.length;
  if (e.key === "ArrowDown" && n) {
    active = (active + 1) % n;
    highlight();
  } else if (e.key === "ArrowUp" && n) {
    active = (active - 1 + n) % n;
    highlight();
  } else if (e.key === "Enter") {
    const choice = !el.suggestions.hidden && active >= 0 ? el.suggestions.children[active].dataset.sym : el.add.value;
    addFromSearch(choice);
  } else if (e.key === "Escape") {
    closeSuggestions();
  } else {
    return;
  }
  e.preventDefault();
});
el.add.addEventListener("blur", closeSuggestions);
// mousedown, not click, and no default: the input keeps focus, so its blur
// does not close the list before the choice is taken.
el.suggestions.addEventListener("mousedown", (e) => {
  const li = e.target.closest("li[data-sym]");
  if (li) {
    e.preventDefault();
    addFromSearch(li.dataset.sym);
  }
});

// --- table interactions ----------------------------------------------------------

el.tbody.addEventListener("click", (e) => {
  const tr = e.target.closest("tr[data-sym]");
  if (!tr) return;
  if (e.target.closest(".remove")) removeSymbol(tr.dataset.sym);
  else select(tr.dataset.sym);
});

el.table.tHead.addEventListener("click", (e) => {
  const th = e.target.closest("th[data-key]");
  if (!th) return;
  const key = th.dataset.key;
  // First click: biggest first for numbers, A to Z for names; again: reverse.
  sort = sort.key === key ? { key, dir: -sort.dir } : { key, dir: NUMERIC_SORT.has(key) ? -1 : 1 };
  applySort();
});

// --- header: controls, theme -----------------------------------------------------

el.mode.value = settings.mode;
el.maxHz.value = settings.max_hz == null ? "" : String(settings.max_hz);
el.maxHz.disabled = settings.mode === "all";
el.mode.addEventListener("change", () => {
  settings.mode = el.mode.value;
  el.maxHz.disabled = settings.mode === "all";
  applySettings();
});
el.chartView.addEventListener("change", () => {
  setChartView(el.chartView.value);
  save(STORE.settings, settings);
});
el.maxHz.addEventListener("change", () => {
  settings.max_hz = el.maxHz.value === "" ? null : Number(el.maxHz.value);
  applySettings();
});

function applySettings() {
  save(STORE.settings, settings);
  // Subscribing again replaces the options (and brings fresh snapshots).
  client.subscribe([...rows.keys()], subOptions());
}

function setTheme(theme) {
  if (theme) document.documentElement.dataset.theme = theme;
  const dark = (theme ?? (matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark")) === "dark";
  el.theme.setAttribute("aria-label", dark ? "Switch to light theme" : "Switch to dark theme");
  chart.refreshColors();
  chartDirty = true;
  schedule();
}
el.theme.addEventListener("click", () => {
  const next = el.theme.getAttribute("aria-label").includes("light") ? "light" : "dark";
  save(STORE.theme, next);
  setTheme(next);
});
matchMedia("(prefers-color-scheme: light)").addEventListener("change", () => setTheme(load(STORE.theme, null)));

// --- connection --------------------------------------------------------------------

const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws?stamps=1`;
el.endpoint.textContent = wsUrl;
// A server with authentication on: open the page as /?token=KEY and the
// token travels with the upgrade (it is not shown on the page).
const token = new URLSearchParams(location.search).get("token");
const client = new TickwireClient(token ? `${wsUrl}&token=${encodeURIComponent(token)}` : wsUrl);

const STATE_TEXT = {
  [State.CONNECTING]: "connecting",
  [State.LIVE]: "live",
  [State.RECONNECTING]: "reconnecting",
  [State.STALE]: "stale feed",
  [State.REPLAY_DONE]: "replay done",
  [State.CLOSED]: "closed",
};
let retryAt = null;

client.on("state", ({ state, retryAt: at }) => {
  el.conn.dataset.state = state;
  el.connState.textContent = STATE_TEXT[state];
  retryAt = at;
  const stale = state !== State.LIVE && state !== State.REPLAY_DONE;
  el.table.classList.toggle("is-stale", stale);
  el.banner.hidden = !stale;
  updateBanner();
});

function updateBanner() {
  const state = client.state;
  const wait = retryAt ? Math.max(0, retryAt - Date.now()) : 0;
  el.connDetail.textContent = wait > 0 ? `retry in ${(wait / 1000).toFixed(1)} s` : "";
  if (state === State.STALE) {
    el.banner.textContent = "The feed is stale: prices below may be old.";
  } else if (state === State.RECONNECTING || state === State.CONNECTING) {
    const when = wait > 0 ? `retrying in ${(wait / 1000).toFixed(1)} s` : "connecting now";
    el.banner.textContent = `Disconnected from the server: showing the last known prices, ${when}.`;
  }
}

let epoch = null;

client.on("welcome", (w) => {
  maxSymbols = w.limits?.symbols ?? maxSymbols;
  if (epoch !== null && w.epoch !== epoch) {
    // A new numbering run (a restart, or a looping replay starting over,
    // whose source times begin again): the bars held are of another run.
    for (const r of rows.values()) r.candles = newCandles();
  }
  epoch = w.epoch;
  el.serverInfo.textContent = `${w.server} · epoch ${w.epoch} · session ${w.session}`;
  client.list("").then(
    (symbols) => {
      known = symbols;
      if (document.activeElement === el.add) suggest();
    },
    // The connection dropped before the answer; the next welcome asks again.
    () => {},
  );
});
client.on("quote", onQuote);
client.on("trade", onTrade);
client.on("bar", onBar);
client.on("rejected", (r) => {
  if (r.channels.every((ch) => ch.startsWith("bars_"))) {
    // The symbol stays on the list; only its candles are not available (a
    // key without the bars channels, say).
    if (barsSub?.sym === r.sym) barsSub = null;
    setChartView("mid");
    el.chartNote.textContent = `Candles of ${r.sym} are not available: ${r.msg} (${r.code}).`;
    say(el.chartNote.textContent);
    return;
  }
  const row = rows.get(r.sym);
  if (row) dropRow(row);
  say(`${r.sym} was not added: ${r.msg} (${r.code})`);
});
client.on("error", (e) => console.warn(`tickwire error ${e.code}: ${e.msg}`));

// --- after a reconnect: what tickwire.js could not resume ---------------------

/** How long the notice stays unless dismissed. */
const NOTICE_MS = 30_000;
/** Streams named in the notice; the rest are counted. */
const NOTICE_NAMES = 6;
let noticeTimer = null;

client.on("resume", ({ newEpoch, history, recovered, lost }) => {
  if (lost.length === 0) {
    hideNotice(); // every stream went on where it stopped
    return;
  }
  const names = lost.slice(0, NOTICE_NAMES).map((s) => `${s.sym} ${s.ch}`);
  if (lost.length > NOTICE_NAMES) names.push(`${lost.length - NOTICE_NAMES} more`);
  let text;
  if (newEpoch) {
    text = "The server restarted its numbering (a new epoch): every stream started again from its current value.";
  } else if (history === 0) {
    text = `This server keeps no history: updates missed while disconnected are not shown (${names.join(", ")}).`;
  } else {
    const of = lost.length + recovered.length;
    text = `Resume not complete: ${lost.length} of ${of} streams lost updates while disconnected (the server no longer held them): ${names.join(", ")}.`;
  }
  el.noticeText.textContent = text;
  el.notice.hidden = false;
  say(text);
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(hideNotice, NOTICE_MS);
});

function hideNotice() {
  clearTimeout(noticeTimer);
  el.notice.hidden = true;
}
el.noticeDismiss.addEventListener("click", hideNotice);

let messages = 0;
client.on("frame", ({ messages: n }) => {
  messages += n;
});

// Once a second: rates, latency percentiles, the retry countdown, and a
// re-sort when the order depends on live values.
setInterval(() => {
  el.rate.textContent = fmt(messages, 0);
  messages = 0;
  el.feedLat.textContent = latency.take("feed") ?? dash;
  el.wireLat.textContent = latency.take("wire") ?? dash;
  for (const r of rows.values()) {
    if (r.rate !== r.count) {
      r.rate = r.count;
      dirty.add(r);
    }
    r.count = 0;
  }
  if (sort.key && sort.key !== "sym") applySort();
  updateBanner();
  schedule();
}, 1000);

// --- start -----------------------------------------------------------------------

setTheme(load(STORE.theme, null));
addSymbols(initialWatchlist(), { subscribe: false });
client.subscribe([...rows.keys()], subOptions());
el.count.textContent = `(${rows.size})`;
selected = order[0]?.sym ?? null;
setChartView(CHART_VIEWS[settings.chart] ? settings.chart : "mid");
client.connect();
