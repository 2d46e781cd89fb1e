// The warmup curve: each tier's share of the samples in each time bucket, stacked, with
// the bucket's sample weight as a line on top (how busy the program was), a titled time
// axis with its unit, and the tier filter applied (tiers filtered out are not drawn).
// Dragging across it selects a time range (the brush); a click without a drag clears it.
// Other series (request markers, latencies) can be drawn over the plot by `overlays`:
// functions (ctx, geometry) called after the tiers, before the selection.

import { TIER_CSS } from "./colors.js";
import { fitCanvas, fmtTick, niceStep } from "./util.js";
import { themeColours } from "./colors.js";

const HEIGHT = 130;
const LEFT = 44;
const RIGHT = 8;
const TOP = 6;
const BOTTOM = 34;

export class Timeline {
  constructor(canvas, opts = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.onBrush = opts.onBrush || (() => {});
    this.onClear = opts.onClear || (() => {});
    this.onHover = opts.onHover || (() => {});
    this.data = null;
    this.sel = null;
    this.drag = null;
    this.axisTitle = "";
    this.tierMask = null;
    this.overlays = [];

    canvas.addEventListener("pointerdown", (ev) => {
      if (!this.data || ev.button !== 0) return;
      const x = this.localX(ev);
      if (x < LEFT || x > this.width - RIGHT) return;
      canvas.setPointerCapture(ev.pointerId);
      this.drag = { x0: x, x1: x };
      ev.preventDefault();
    });
    canvas.addEventListener("pointermove", (ev) => {
      const x = this.localX(ev);
      if (this.drag) {
        this.drag.x1 = Math.max(LEFT, Math.min(this.width - RIGHT, x));
        this.draw();
        this.onHover(null, ev);
      } else {
        this.onHover(this.bucketAt(x, ev), ev);
      }
    });
    canvas.addEventListener("pointerleave", (ev) => {
      if (!this.drag) this.onHover(null, ev);
    });
    const finish = (ev) => {
      if (!this.drag) return;
      const { x0, x1 } = this.drag;
      this.drag = null;
      if (canvas.hasPointerCapture(ev.pointerId)) canvas.releasePointerCapture(ev.pointerId);
      if (Math.abs(x1 - x0) < 3) {
        this.draw();
        this.onClear();
      } else {
        const a = this.timeAt(Math.min(x0, x1));
        const b = this.timeAt(Math.max(x0, x1));
        this.sel = [a, b];
        this.draw();
        this.onBrush(a, b);
      }
    };
    canvas.addEventListener("pointerup", finish);
    canvas.addEventListener("pointercancel", (ev) => {
      this.drag = null;
      this.draw();
      this.onHover(null, ev);
    });
  }

  localX(ev) {
    return ev.clientX - this.canvas.getBoundingClientRect().left;
  }

  setData(tl) {
    this.data = tl;
    const n = tl.buckets;
    const sums = new Float64Array(n);
    let max = 0;
    for (let b = 0; b < n; b++) {
      let s = 0;
      for (let t = 0; t < 6; t++) s += tl.counts[6 * b + t];
      sums[b] = s;
      if (s > max) max = s;
    }
    this.sums = sums;
    this.max = max;
  }

  /** The axis title under the ticks ("CPU time, s"). */
  setAxisTitle(text) {
    this.axisTitle = text;
  }

  /** Tiers drawn: a boolean per tier, or null for all. */
  setTierMask(mask) {
    this.tierMask = mask;
  }

  /** Tier weights of the buckets overlapping [from, to) (the whole axis when null). */
  tierSums(from, to) {
    const out = [0, 0, 0, 0, 0, 0];
    const d = this.data;
    if (!d) return out;
    for (let b = 0; b < d.buckets; b++) {
      const a = d.start_s + b * d.bucket_s;
      if (from !== null && to !== null && (a + d.bucket_s <= from || a >= to)) continue;
      for (let t = 0; t < 6; t++) out[t] += d.counts[6 * b + t];
    }
    return out;
  }

  /** The selected range in seconds, or null. */
  setSelection(from, to) {
    this.sel = from === null || to === null ? null : [from, to];
  }

  plotWidth() {
    return Math.max(1, this.width - LEFT - RIGHT);
  }

  span() {
    const d = this.data;
    return Math.max(d.end_s - d.start_s, 1e-9);
  }

  timeAt(x) {
    const d = this.data;
    const f = Math.max(0, Math.min(1, (x - LEFT) / this.plotWidth()));
    return d.start_s + f * this.span();
  }

  xAt(t) {
    return LEFT + ((t - this.data.start_s) / this.span()) * this.plotWidth();
  }

  /** The bucket under x with its counts, for the tooltip. */
  bucketAt(x) {
    const d = this.data;
    if (!d || x < LEFT || x > this.width - RIGHT) return null;
    const b = Math.min(d.buckets - 1, Math.floor(((x - LEFT) / this.plotWidth()) * d.buckets));
    if (b < 0) return null;
    return {
      from: d.start_s + b * d.bucket_s,
      to: d.start_s + (b + 1) * d.bucket_s,
      counts: d.counts.slice(6 * b, 6 * b + 6),
      total: this.sums[b],
      axis: d.axis,
    };
  }

  draw() {
    const ctx = this.ctx;
    const th = themeColours();
    this.width = fitCanvas(this.canvas, ctx, HEIGHT, th.bg);
    const ph = HEIGHT - TOP - BOTTOM;
    const pw = this.plotWidth();
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    ctx.fillStyle = th.muted;
    ctx.strokeStyle = th.grid;
    ctx.lineWidth = 1;
    for (const f of [0, 0.5, 1]) {
      const y = Math.round(TOP + ph * (1 - f)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(LEFT, y);
      ctx.lineTo(LEFT + pw, y);
      ctx.stroke();
      ctx.textAlign = "right";
      ctx.fillText(`${f * 100}%`, LEFT - 6, y);
    }
    const d = this.data;
    if (!d) return;
    // Stacked shares.
    const bw = pw / d.buckets;
    for (let b = 0; b < d.buckets; b++) {
      const s = this.sums[b];
      if (!s) continue;
      let y = TOP + ph;
      const x = LEFT + b * bw;
      for (let t = 0; t < 6; t++) {
        const c = d.counts[6 * b + t];
        if (!c) continue;
        const hgt = (c / s) * ph;
        if (!this.tierMask || this.tierMask[t]) {
          ctx.fillStyle = TIER_CSS[t];
          ctx.fillRect(x, y - hgt, bw + 0.5, hgt);
        }
        y -= hgt;
      }
    }
    // Activity: samples per bucket, relative to the busiest, kept below the top edge (on
    // the CPU axis every slice holds about as many samples: a line on the frame would be
    // invisible) and drawn with a halo so it reads on every tier colour.
    if (this.max > 0) {
      const path = () => {
        ctx.beginPath();
        for (let b = 0; b < d.buckets; b++) {
          const x = LEFT + (b + 0.5) * bw;
          const y = TOP + 4 + (ph - 4) * (1 - (0.85 * this.sums[b]) / this.max);
          if (b === 0) ctx.moveTo(x, y);
          else ctx.lineTo(x, y);
        }
      };
      ctx.lineJoin = "round";
      ctx.strokeStyle = th.bg;
      ctx.lineWidth = 4;
      path();
      ctx.stroke();
      ctx.strokeStyle = th.fg;
      ctx.lineWidth = 1.5;
      path();
      ctx.stroke();
      ctx.lineWidth = 1;
      ctx.fillStyle = th.muted;
      ctx.textAlign = "right";
      ctx.fillText(`line: samples per slice (max ${Math.round(this.max)})`, LEFT + pw, TOP + ph + 26);
    }
    for (const draw of this.overlays) draw(ctx, { left: LEFT, top: TOP, width: pw, height: ph, xAt: (t) => this.xAt(t) });
    // Time axis.
    const span = this.span();
    const step = niceStep(span, Math.max(2, Math.floor(pw / 90)));
    ctx.fillStyle = th.muted;
    ctx.textAlign = "center";
    for (let t = Math.ceil(d.start_s / step) * step; t <= d.end_s + 1e-9; t += step) {
      const x = this.xAt(t);
      ctx.fillRect(Math.round(x), TOP + ph, 1, 4);
      ctx.fillText(fmtTick(t, step), x, TOP + ph + 12);
    }
    if (this.axisTitle) {
      ctx.textAlign = "left";
      ctx.fillStyle = th.fg;
      ctx.fillText(this.axisTitle, LEFT, TOP + ph + 26);
    }
    // Selection (committed, or being dragged).
    let range = null;
    if (this.drag) range = [Math.min(this.drag.x0, this.drag.x1), Math.max(this.drag.x0, this.drag.x1)];
    else if (this.sel) range = [this.xAt(this.sel[0]), this.xAt(this.sel[1])];
    if (range) {
      const [a, b] = [Math.max(LEFT, range[0]), Math.min(LEFT + pw, range[1])];
      ctx.fillStyle = th.bg;
      ctx.globalAlpha = 0.6;
      ctx.fillRect(LEFT, TOP, Math.max(0, a - LEFT), ph);
      ctx.fillRect(b, TOP, Math.max(0, LEFT + pw - b), ph);
      ctx.globalAlpha = 1;
      ctx.strokeStyle = th.selectEdge;
      ctx.lineWidth = 2;
      ctx.strokeRect(a, TOP + 1, Math.max(1, b - a), ph - 2);
      ctx.lineWidth = 1;
    }
  }
}
