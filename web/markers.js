// Request latency over the run (issue 14): every request marker as a dot at (its place on
// the timeline's axis, its duration), a log latency axis, and per name the median of each
// run of consecutive requests as a line — the seed article's plot, request time falling as
// PyPy's JIT warms up. Dragging a rectangle selects the markers inside it (a time range and a
// latency band: "the slow requests", "the first thousand"); the viewer then narrows the
// flamegraph, the table and the warm-up curve to the samples taken inside them. A click
// without a drag clears the selection. Drawn on one canvas, like the timeline above it, with
// the same left margin so both x axes line up.

import { themeColours } from "./colors.js";
import { fitCanvas, fmtTick, niceStep } from "./util.js";

const HEIGHT = 170;
const LEFT = 44;
const RIGHT = 8;
const TOP = 8;
const BOTTOM = 34;
/** Colour-blind-safe categorical colours (Okabe–Ito), one per marker name. */
export const NAME_COLOURS = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442"];
/** Most points drawn: beyond that, an even sample of them (lines use every marker). */
const MAX_POINTS = 20000;

/** A decade for the latency axis: "100 ms", "1 s", "10 µs". */
export function decade(v) {
  if (v >= 1) return `${Math.round(v)} s`;
  if (v >= 1e-3) return `${Math.round(v * 1e3)} ms`;
  if (v >= 1e-6) return `${Math.round(v * 1e6)} µs`;
  return `${Math.round(v * 1e9)} ns`;
}

/** Median of each run of `size` consecutive values (by x), as [x, median] points. */
export function rollingMedians(xs, ys, size) {
  const out = [];
  for (let i = 0; i < xs.length; i += size) {
    const ys2 = ys.slice(i, i + size).sort((a, b) => a - b);
    const xs2 = xs.slice(i, i + size);
    if (!ys2.length) continue;
    out.push([xs2[xs2.length >> 1], ys2[ys2.length >> 1]]);
  }
  return out;
}

export class LatencyPlot {
  constructor(canvas, opts = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.onSelect = opts.onSelect || (() => {});
    this.onClear = opts.onClear || (() => {});
    this.onHover = opts.onHover || (() => {});
    this.data = null;
    this.range = null; // [start_s, end_s] of the x axis (the timeline's)
    this.sel = null; // {from, to, min, max} in seconds
    this.drag = null;
    this.hidden = new Set(); // names not drawn
    this.xTitle = "";

    canvas.addEventListener("pointerdown", (ev) => {
      if (!this.data || ev.button !== 0) return;
      const [x, y] = this.local(ev);
      if (x < LEFT || x > this.width - RIGHT || y < TOP || y > HEIGHT - BOTTOM) return;
      canvas.setPointerCapture(ev.pointerId);
      this.drag = { x0: x, y0: y, x1: x, y1: y };
      ev.preventDefault();
    });
    canvas.addEventListener("pointermove", (ev) => {
      const [x, y] = this.local(ev);
      if (this.drag) {
        this.drag.x1 = Math.max(LEFT, Math.min(this.width - RIGHT, x));
        this.drag.y1 = Math.max(TOP, Math.min(HEIGHT - BOTTOM, y));
        this.draw();
        this.onHover(null, ev);
      } else {
        this.onHover(this.pointAt(x, y), ev);
      }
    });
    canvas.addEventListener("pointerleave", (ev) => {
      if (!this.drag) this.onHover(null, ev);
    });
    const finish = (ev) => {
      if (!this.drag) return;
      const { x0, y0, x1, y1 } = this.drag;
      this.drag = null;
      if (canvas.hasPointerCapture(ev.pointerId)) canvas.releasePointerCapture(ev.pointerId);
      if (Math.abs(x1 - x0) < 3 && Math.abs(y1 - y0) < 3) {
        this.draw();
        this.onClear();
        return;
      }
      // A flat drag selects a time range of every latency; a thin tall one a latency band.
      const sel = {
        from: Math.abs(x1 - x0) < 3 ? null : this.xValue(Math.min(x0, x1)),
        to: Math.abs(x1 - x0) < 3 ? null : this.xValue(Math.max(x0, x1)),
        min: Math.abs(y1 - y0) < 3 ? null : this.yValue(Math.max(y0, y1)),
        max: Math.abs(y1 - y0) < 3 ? null : this.yValue(Math.min(y0, y1)),
      };
      this.sel = sel;
      this.draw();
      this.onSelect(sel);
    };
    canvas.addEventListener("pointerup", finish);
    canvas.addEventListener("pointercancel", (ev) => {
      this.drag = null;
      this.draw();
      this.onHover(null, ev);
    });
  }

  local(ev) {
    const r = this.canvas.getBoundingClientRect();
    return [ev.clientX - r.left, ev.clientY - r.top];
  }

  /** `table`: the /markers answer; `x` (seconds per marker) the x values to plot. */
  setData(table, xs) {
    const n = table.name.length;
    const ys = table.duration_s;
    let lo = Infinity;
    let hi = 0;
    for (let i = 0; i < n; i++) {
      const d = ys[i];
      if (d === null || !(d > 0)) continue;
      if (d < lo) lo = d;
      if (d > hi) hi = d;
    }
    if (!Number.isFinite(lo)) {
      lo = 1e-6;
      hi = 1;
    }
    // Whole decades, so the ticks are 1 ms, 10 ms, ...
    this.yLo = 10 ** Math.floor(Math.log10(lo));
    this.yHi = 10 ** Math.ceil(Math.log10(hi * 1.0001));
    if (this.yHi <= this.yLo) this.yHi = this.yLo * 10;
    this.data = { table, xs, n };
    // Per name, the markers in x order, for the median lines.
    const byName = table.names.map(() => []);
    for (let i = 0; i < n; i++) if (ys[i] !== null) byName[table.name[i]].push(i);
    for (const list of byName) list.sort((a, b) => xs[a] - xs[b]);
    this.byName = byName;
  }

  setRange(start_s, end_s) {
    this.range = [start_s, Math.max(end_s, start_s + 1e-9)];
  }

  setSelection(sel) {
    this.sel = sel;
  }

  setHidden(names) {
    this.hidden = new Set(names);
  }

  setXTitle(text) {
    this.xTitle = text;
  }

  plotWidth() {
    return Math.max(1, this.width - LEFT - RIGHT);
  }

  plotHeight() {
    return HEIGHT - TOP - BOTTOM;
  }

  xAt(s) {
    const [a, b] = this.range;
    return LEFT + ((s - a) / (b - a)) * this.plotWidth();
  }

  xValue(px) {
    const [a, b] = this.range;
    return a + Math.max(0, Math.min(1, (px - LEFT) / this.plotWidth())) * (b - a);
  }

  yAt(d) {
    const f = (Math.log10(Math.max(d, this.yLo)) - Math.log10(this.yLo)) / (Math.log10(this.yHi) - Math.log10(this.yLo));
    return TOP + (1 - f) * this.plotHeight();
  }

  yValue(py) {
    const f = 1 - (py - TOP) / this.plotHeight();
    return 10 ** (Math.log10(this.yLo) + f * (Math.log10(this.yHi) - Math.log10(this.yLo)));
  }

  /** The marker nearest to (x, y) within 6 px, for the tooltip. */
  pointAt(x, y) {
    const d = this.data;
    if (!d || !this.range) return null;
    let best = null;
    let bestD = 36;
    const t = d.table;
    for (let i = 0; i < d.n; i++) {
      const dur = t.duration_s[i];
      if (dur === null || this.hidden.has(t.names[t.name[i]])) continue;
      const dx = this.xAt(d.xs[i]) - x;
      if (dx * dx > bestD) continue;
      const dy = this.yAt(dur) - y;
      const dd = dx * dx + dy * dy;
      if (dd < bestD) {
        bestD = dd;
        best = i;
      }
    }
    if (best === null) return null;
    return {
      name: t.names[t.name[best]],
      duration: t.duration_s[best],
      cpu: t.cpu_s[best],
      start: t.start_s[best],
      x: d.xs[best],
      pid: t.pid[best],
      tid: t.tid[best],
    };
  }

  draw() {
    const ctx = this.ctx;
    const th = themeColours();
    this.width = fitCanvas(this.canvas, ctx, HEIGHT, th.bg);
    const d = this.data;
    if (!d || !this.range) return;
    const pw = this.plotWidth();
    const ph = this.plotHeight();
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    // Latency axis: one line per decade.
    ctx.strokeStyle = th.grid;
    ctx.fillStyle = th.muted;
    ctx.textAlign = "right";
    ctx.lineWidth = 1;
    for (let v = this.yLo; v <= this.yHi * 1.0001; v *= 10) {
      const y = Math.round(this.yAt(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(LEFT, y);
      ctx.lineTo(LEFT + pw, y);
      ctx.stroke();
      ctx.fillText(decade(v), LEFT - 4, y);
    }
    const t = d.table;
    const inSel = (i) => {
      const s = this.sel;
      if (!s) return true;
      const x = d.xs[i];
      const dur = t.duration_s[i];
      return (s.from === null || x >= s.from) && (s.to === null || x < s.to) && (s.min === null || dur >= s.min) && (s.max === null || dur < s.max);
    };
    // Points (an even sample of them past MAX_POINTS), faint when outside the selection.
    const step = Math.max(1, Math.ceil(d.n / MAX_POINTS));
    for (let i = 0; i < d.n; i += step) {
      const dur = t.duration_s[i];
      const name = t.names[t.name[i]];
      if (dur === null || this.hidden.has(name)) continue;
      ctx.globalAlpha = inSel(i) ? 0.55 : 0.12;
      ctx.fillStyle = NAME_COLOURS[t.name[i] % NAME_COLOURS.length];
      ctx.fillRect(this.xAt(d.xs[i]) - 1.5, this.yAt(dur) - 1.5, 3, 3);
    }
    ctx.globalAlpha = 1;
    // Per name, the median of each run of requests (about 60 runs across the plot).
    this.byName.forEach((list, k) => {
      if (list.length < 4 || this.hidden.has(t.names[k])) return;
      const size = Math.max(2, Math.ceil(list.length / 60));
      const pts = rollingMedians(
        list.map((i) => d.xs[i]),
        list.map((i) => t.duration_s[i]),
        size,
      );
      const path = () => {
        ctx.beginPath();
        pts.forEach(([x, y], j) => {
          if (j === 0) ctx.moveTo(this.xAt(x), this.yAt(y));
          else ctx.lineTo(this.xAt(x), this.yAt(y));
        });
      };
      ctx.lineJoin = "round";
      ctx.strokeStyle = th.bg;
      ctx.lineWidth = 4;
      path();
      ctx.stroke();
      ctx.strokeStyle = NAME_COLOURS[k % NAME_COLOURS.length];
      ctx.lineWidth = 2;
      path();
      ctx.stroke();
    });
    ctx.lineWidth = 1;
    // The x axis: the timeline's.
    const [a, b] = this.range;
    const xstep = niceStep(b - a, Math.max(2, Math.floor(pw / 90)));
    ctx.fillStyle = th.muted;
    ctx.textAlign = "center";
    for (let s = Math.ceil(a / xstep) * xstep; s <= b + 1e-9; s += xstep) {
      const x = this.xAt(s);
      ctx.fillRect(Math.round(x), TOP + ph, 1, 4);
      ctx.fillText(fmtTick(s, xstep), x, TOP + ph + 12);
    }
    ctx.textAlign = "left";
    ctx.fillStyle = th.fg;
    ctx.fillText(this.xTitle || "time", LEFT, TOP + ph + 26);
    ctx.fillStyle = th.muted;
    ctx.textAlign = "right";
    ctx.fillText("dots: requests; lines: medians (log scale)", LEFT + pw, TOP + ph + 26);
    // The selection (committed, or being dragged).
    let box = null;
    if (this.drag) {
      box = [Math.min(this.drag.x0, this.drag.x1), Math.min(this.drag.y0, this.drag.y1), Math.max(this.drag.x0, this.drag.x1), Math.max(this.drag.y0, this.drag.y1)];
    } else if (this.sel) {
      const s = this.sel;
      box = [
        s.from === null ? LEFT : this.xAt(s.from),
        s.max === null ? TOP : this.yAt(s.max),
        s.to === null ? LEFT + pw : this.xAt(s.to),
        s.min === null ? TOP + ph : this.yAt(s.min),
      ];
    }
    if (box) {
      ctx.strokeStyle = th.selectEdge;
      ctx.lineWidth = 2;
      ctx.strokeRect(box[0], box[1], Math.max(1, box[2] - box[0]), Math.max(1, box[3] - box[1]));
      ctx.lineWidth = 1;
    }
  }
}
