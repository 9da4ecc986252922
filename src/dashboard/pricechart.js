// A small canvas chart of one symbol: the bid-ask band, the mid price as a
// step line, and trades as dots sized by volume. Drawn from scratch on each
// call to draw(); a few thousand points take well under a millisecond.

const WINDOW_MS = 120_000;
const MIN_WINDOW_MS = 20_000;
// Longer silence than this breaks the lines: the page was disconnected or
// the symbol was not trading, and a flat line would pretend otherwise.
const GAP_MS = 3_000;

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

  /** Draws `history` for the window that ends at `now` (ms since the epoch). */
  draw(history, now, decimals) {
    if (!this.colors) this.refreshColors();
    const { canvas, ctx, colors: c } = this;
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (w === 0 || h === 0) return;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = c.font;

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
    const axisW = 64;
    const plotW = w - axisW;
    const plotH = h - 20;
    if (lo === Infinity) {
      ctx.fillStyle = c.text;
      ctx.textAlign = "center";
      ctx.fillText("waiting for data…", plotW / 2, plotH / 2);
      return;
    }
    const pad = Math.max((hi - lo) * 0.12, hi * 0.0002);
    lo -= pad;
    hi += pad;
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
    const tick = span > 60_000 ? 30_000 : span > 30_000 ? 10_000 : 5_000;
    for (let t = Math.ceil(t0 / tick) * tick; t <= now; t += tick) {
      const xx = Math.round(x(t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(xx, 0);
      ctx.lineTo(xx, plotH);
      ctx.stroke();
      // A label cut by the plot's edge reads as a different time: leave it out.
      if (xx > 28 && xx < plotW - 28) ctx.fillText(new Date(t).toLocaleTimeString([], { hour12: false }), xx, h - 4);
    }

    // The bid-ask band and the mid line, as steps: a quote holds until the next.
    ctx.save();
    ctx.beginPath();
    ctx.rect(0, 0, plotW, plotH);
    ctx.clip();
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
      const mid = (b + a) / 2;
      const yy = Math.max(9, Math.min(plotH - 9, y(mid)));
      ctx.fillStyle = c.mid;
      ctx.fillRect(plotW + 2, yy - 9, axisW - 2, 18);
      ctx.fillStyle = c.label;
      ctx.textAlign = "left";
      ctx.textBaseline = "middle";
      ctx.fillText(mid.toFixed(decimals), plotW + 8, yy);
    }
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
