// A small canvas chart of one symbol, in one of two views:
// - the mid line: the bid-ask band, the mid price as a step line, and trades
//   as dots sized by volume, over the last two minutes of receive time;
// - candles: the OHLC bars of a bars channel (bars_1s or bars_1m) on the
//   source clock, a VWAP tick on each, volume below; the open bar is drawn
//   lighter and redraws as it changes, closed bars stay.
// Drawn from scratch on each call; a few thousand points take well under a
// millisecond.

const WINDOW_MS = 120_000;
const MIN_WINDOW_MS = 20_000;
// Longer silence than this breaks the lines: the page was disconnected or
// the symbol was not trading, and a flat line would pretend otherwise.
const GAP_MS = 3_000;
/** Bars shown at most, per width: two minutes of 1 s bars, an hour of 1 min bars. */
const CANDLE_SLOTS = { 1_000: 120, 60_000: 60 };
/** Bars shown at least: a fresh chart shows a few wide candles, not slivers at the right. */
const MIN_CANDLE_SLOTS = 20;
/** Share of the plot's height under the candles that the volume bars take. */
const VOLUME_SHARE = 0.18;
/** Width of the price axis at the right, and height of the time axis. */
const AXIS_W = 64;
const AXIS_H = 20;
/** Time-axis steps to choose from (ms): at most six marks across the plot. */
const TIME_STEPS = [5_000, 10_000, 30_000, 60_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000];

export class History {
  constructor(cap = 2400) {
    this.cap = cap;
    this.quotes = []; // [time, bid, ask]
    this.trades = []; // [time, price, size, side]  side: 1 at/above mid, -1 below
  }
  addQuote(time, bid, ask) {
    push(this.quotes, [time, bid, ask], this.cap);
  }
  addTrade(time, price, size, mid) {
    push(this.trades, [time, price, size, mid === undefined || price >= mid ? 1 : -1], this.cap);
  }
}

/**
 * The bars of one bars stream (a snapshot, then every update), oldest
 * first, one per interval: {t, o, h, l, c, v, vw, x}.
 */
export class Candles {
  constructor(width, cap = 600) {
    this.width = width;
    this.cap = cap;
    this.bars = [];
  }

  /**
   * Applies a bar message (a snapshot or an update); returns whether the
   * history changed. The bar of an interval replaces its earlier state
   * while it is open; once closed it stays. A later bar means the ones
   * before it are over, closed even if their close was conflated away
   * (mode "latest").
   */
  add(m) {
    const bar = { t: m.t, o: m.o, h: m.h, l: m.l, c: m.c, v: m.v, vw: m.vw, x: m.x };
    const bars = this.bars;
    const last = bars.at(-1);
    if (last === undefined || bar.t > last.t) {
      if (last) last.x = true;
      push(bars, bar, this.cap);
      return true;
    }
    let i = bars.length - 1;
    while (i > 0 && bars[i].t > bar.t) i--;
    // An older bar than the newest that the history lacks is left out: the
    // streams are ordered, so only a bar already held can come again.
    if (bars[i].t !== bar.t || bars[i].x) return false;
    bars[i] = bar;
    return true;
  }
}

function push(arr, item, cap) {
  arr.push(item);
  // Trim in chunks so the cost of shifting is paid rarely.
  if (arr.length > cap * 1.25) arr.splice(0, arr.length - cap);
}

export class PriceChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.colors = null;
  }

  /** Re-reads the theme's colours (after a theme switch). */
  refreshColors() {
    const css = getComputedStyle(this.canvas);
    const v = (name) => css.getPropertyValue(name).trim();
    this.colors = {
      grid: v("--grid"),
      text: v("--muted"),
      mid: v("--accent"),
      band: v("--band"),
      up: v("--up"),
      down: v("--down"),
      label: v("--accent-ink"),
      font: `11px ${css.fontFamily}`,
    };
  }

  /**
   * Draws the mid-line view of `history` for the window that ends at `now`
   * (ms since the epoch).
   */
  draw(history, now, decimals) {
    const size = this._begin();
    if (!size) return;
    const { ctx, colors: c } = this;
    // Up to two minutes; less while there is less history, so a freshly
    // opened page shows a full chart instead of a sliver at the right.
    const oldest = Math.min(history.quotes[0]?.[0] ?? now, history.trades[0]?.[0] ?? now);
    const span = Math.min(WINDOW_MS, Math.max(MIN_WINDOW_MS, now - oldest + 1_000));
    const t0 = now - span;
    const quotes = visible(history.quotes, t0);
    const trades = visible(history.trades, t0);
    let lo = Infinity;
    let hi = -Infinity;
    for (const [, b, a] of quotes) {
      lo = Math.min(lo, b);
      hi = Math.max(hi, a);
    }
    for (const [, p] of trades) {
      lo = Math.min(lo, p);
      hi = Math.max(hi, p);
    }
    const plot = this._axes(size, { t0, span, lo, hi, decimals, text: "waiting for data…" });
    if (!plot) return;
    const { x, y } = plot;

    // The bid-ask band and the mid line, as steps: a quote holds until the next.
    this._clip(plot);
    for (const run of runs(quotes, now)) {
      ctx.beginPath();
      stepPath(ctx, run, x, (q) => y(q[2]), false);
      stepPath(ctx, run, x, (q) => y(q[1]), true);
      ctx.closePath();
      ctx.fillStyle = c.band;
      ctx.fill();
      ctx.beginPath();
      stepPath(ctx, run, x, (q) => y((q[1] + q[2]) / 2), false);
      ctx.strokeStyle = c.mid;
      ctx.lineWidth = 1.75;
      ctx.stroke();
    }
    for (const [t, p, s, side] of trades) {
      ctx.beginPath();
      ctx.arc(x(t), y(p), Math.min(7, 1.5 + Math.sqrt(s) / 12), 0, Math.PI * 2);
      ctx.fillStyle = side > 0 ? c.up : c.down;
      ctx.globalAlpha = 0.8;
      ctx.fill();
      ctx.globalAlpha = 1;
    }
    ctx.restore();

    // The current mid, tagged on the price axis.
    if (quotes.length) {
      const [, b, a] = quotes[quotes.length - 1];
      this._tag(plot, (b + a) / 2, c.mid);
    }
  }

  /**
   * Draws the candle view of `candles` (a Candles): the newest bars up to
   * the end of the newest, on the source clock. Returns what it drew:
   * {candles, closed} (bars in the window, and of those the closed ones).
   */
  drawCandles(candles, decimals) {
    const drawn = { candles: 0, closed: 0 };
    const size = this._begin();
    if (!size) return drawn;
    const { ctx, colors: c } = this;
    const { width, bars } = candles;
    const newest = bars.at(-1);
    const end = newest ? newest.t + width : 0;
    const slots = CANDLE_SLOTS[width] ?? 60;
    const have = newest ? (end - bars[0].t) / width : 0;
    const span = Math.min(slots, Math.max(MIN_CANDLE_SLOTS, have)) * width;
    const t0 = end - span;
    const shown = bars.filter((b) => b.t >= t0);
    let lo = Infinity;
    let hi = -Infinity;
    let vmax = 0;
    for (const b of shown) {
      lo = Math.min(lo, b.l);
      hi = Math.max(hi, b.h);
      vmax = Math.max(vmax, b.v);
    }
    const plot = this._axes(size, { t0, span, lo, hi, decimals, text: "waiting for bars…", volume: true });
    if (!plot) return drawn;
    const { x, y, plotH } = plot;
    const slotW = x(t0 + width) - x(t0);
    const bodyW = Math.max(1, Math.min(14, slotW * 0.7));
    const volH = plotH * VOLUME_SHARE;

    this._clip(plot);
    for (const b of shown) {
      const cx = x(b.t + width / 2);
      const color = b.c >= b.o ? c.up : c.down;
      // Volume from the bottom of the plot, faint.
      ctx.globalAlpha = 0.3;
      ctx.fillStyle = color;
      const vh = vmax > 0 ? (b.v / vmax) * volH : 0;
      ctx.fillRect(cx - bodyW / 2, plotH - vh, bodyW, vh);
      // The open bar is lighter: it still changes.
      ctx.globalAlpha = b.x ? 1 : 0.55;
      ctx.strokeStyle = color;
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(Math.round(cx) + 0.5, y(b.h));
      ctx.lineTo(Math.round(cx) + 0.5, y(b.l));
      ctx.stroke();
      const top = y(Math.max(b.o, b.c));
      ctx.fillRect(cx - bodyW / 2, top, bodyW, Math.max(1, y(Math.min(b.o, b.c)) - top));
      // The VWAP, as a tick across the body.
      ctx.fillStyle = c.mid;
      ctx.fillRect(cx - bodyW / 2 - 1, Math.round(y(b.vw)) - 0.5, bodyW + 2, 1.5);
      ctx.globalAlpha = 1;
      drawn.candles += 1;
      if (b.x) drawn.closed += 1;
    }
    ctx.restore();

    // The last close, tagged on the price axis.
    if (newest) this._tag(plot, newest.c, newest.c >= newest.o ? c.up : c.down);
    return drawn;
  }

  /** Sizes the canvas to its box and clears it; null when it is not shown. */
  _begin() {
    if (!this.colors) this.refreshColors();
    const { canvas, ctx } = this;
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (w === 0 || h === 0) return null;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = this.colors.font;
    return { w, h };
  }

  /**
   * Draws the grid and both axes for prices lo..hi (padded) over the times
   * t0..t0+span, with room under the prices for volume bars if `volume`.
   * Returns the plot: {x, y, plotW, plotH, h, decimals}; or null after
   * writing `text` in the middle when there is nothing to draw.
   */
  _axes({ w, h }, { t0, span, lo, hi, decimals, text, volume = false }) {
    const { ctx, colors: c } = this;
    const plotW = w - AXIS_W;
    const plotH = h - AXIS_H;
    if (lo === Infinity) {
      ctx.fillStyle = c.text;
      ctx.textAlign = "center";
      ctx.fillText(text, plotW / 2, plotH / 2);
      return null;
    }
    const pad = Math.max((hi - lo) * 0.12, hi * 0.0002);
    lo -= pad;
    hi += pad;
    if (volume) lo -= ((hi - lo) * VOLUME_SHARE) / (1 - VOLUME_SHARE);
    const x = (t) => ((t - t0) / span) * plotW;
    const y = (p) => plotH - ((p - lo) / (hi - lo)) * plotH;

    // Grid: about five price levels at round steps, and time marks.
    ctx.strokeStyle = c.grid;
    ctx.lineWidth = 1;
    ctx.fillStyle = c.text;
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    const step = niceStep((hi - lo) / 5);
    for (let p = Math.ceil(lo / step) * step; p <= hi; p += step) {
      const yy = Math.round(y(p)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(0, yy);
      ctx.lineTo(plotW, yy);
      ctx.stroke();
      ctx.fillText(p.toFixed(decimals), plotW + 8, yy);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "alphabetic";
    const tick = TIME_STEPS.find((s) => span / s <= 6) ?? TIME_STEPS.at(-1);
    for (let t = Math.ceil(t0 / tick) * tick; t <= t0 + span; t += tick) {
      const xx = Math.round(x(t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(xx, 0);
      ctx.lineTo(xx, plotH);
      ctx.stroke();
      // A label cut by the plot's edge reads as a different time: leave it out.
      if (xx > 28 && xx < plotW - 28) ctx.fillText(new Date(t).toLocaleTimeString([], { hour12: false }), xx, h - 4);
    }
    return { x, y, plotW, plotH, decimals };
  }

  /** Saves the context and clips drawing to the plot. */
  _clip({ plotW, plotH }) {
    const { ctx } = this;
    ctx.save();
    ctx.beginPath();
    ctx.rect(0, 0, plotW, plotH);
    ctx.clip();
  }

  /** Tags `price` on the price axis, on a label of `color`. */
  _tag({ y, plotW, plotH, decimals }, price, color) {
    const { ctx, colors: c } = this;
    const yy = Math.max(9, Math.min(plotH - 9, y(price)));
    ctx.fillStyle = color;
    ctx.fillRect(plotW + 2, yy - 9, AXIS_W - 2, 18);
    ctx.fillStyle = c.label;
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    ctx.fillText(price.toFixed(decimals), plotW + 8, yy);
  }
}

/** The points with time >= t0, plus the one before (it is still in force at t0). */
function visible(arr, t0) {
  let i = arr.length;
  while (i > 0 && arr[i - 1][0] >= t0) i--;
  return arr.slice(Math.max(0, i - 1));
}

/** Splits quotes into runs without a gap longer than GAP_MS; the last run extends to `now`. */
function runs(quotes, now) {
  const out = [];
  let cur = [];
  for (const q of quotes) {
    if (cur.length && q[0] - cur[cur.length - 1][0] > GAP_MS) {
      out.push(cur);
      cur = [];
    }
    cur.push(q);
  }
  if (cur.length) {
    const last = cur[cur.length - 1];
    if (now - last[0] <= GAP_MS) cur.push([now, last[1], last[2]]);
    out.push(cur);
  }
  return out;
}

/** Adds a step line through `run` to the current path, forwards or backwards. */
function stepPath(ctx, run, x, y, backwards) {
  const pts = backwards ? [...run].reverse() : run;
  pts.forEach((q, i) => {
    if (i === 0) {
      if (backwards) ctx.lineTo(x(q[0]), y(q));
      else ctx.moveTo(x(q[0]), y(q));
      return;
    }
    const prev = pts[i - 1];
    // Forwards a value holds until the next time; backwards the step comes first.
    if (backwards) {
      ctx.lineTo(x(prev[0]), y(q));
      ctx.lineTo(x(q[0]), y(q));
    } else {
      ctx.lineTo(x(q[0]), y(prev));
      ctx.lineTo(x(q[0]), y(q));
    }
  });
}

/** 1, 2 or 5 times a power of ten, at least `raw`. */
function niceStep(raw) {
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}
