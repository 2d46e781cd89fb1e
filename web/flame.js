// The flamegraph: lays out the server's call tree (columns, nodes in depth-first preorder)
// in one pass and draws it on a canvas. Drawing visits only what is visible: a box
// narrower than half a pixel is skipped with its whole subtree (the subtree of node i is
// the contiguous range [i, end[i]) of the preorder), and labels are drawn only where they
// fit. Hover outlines are a DOM element over the canvas, so hovering never redraws.

import { Palette, SHADES, hashString, themeColours } from "./colors.js";

export const ROW = 18;
const FONT = "12px ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace";
const MIN_WIDTH = 0.5;
const LABEL_PAD = 3;

export class FlameGraph {
  /** `canvas` sits in a positioned container; `opts.onClick(i)`, `opts.onHover(i, ev)`
   * (i = -1 when leaving a frame); `opts.upward`: root at the bottom. */
  constructor(canvas, opts = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d", { alpha: false });
    this.onClick = opts.onClick || (() => {});
    this.onHover = opts.onHover || (() => {});
    this.upward = opts.upward !== false;
    this.colorBy = "tier";
    this.tree = null;
    this.n = 0;
    this.zoom = 0;
    this.matched = null;
    this.hovered = -1;
    this.width = 0;
    this.stats = { layoutMs: 0, drawMs: 0, boxes: 0, labels: 0, nodes: 0 };
    this.outline = document.createElement("div");
    this.outline.className = "frame-outline";
    this.outline.hidden = true;
    canvas.parentElement.appendChild(this.outline);

    canvas.addEventListener("mousemove", (ev) => {
      const i = this.nodeAtEvent(ev);
      if (i !== this.hovered) {
        this.hovered = i;
        this.placeOutline();
      }
      this.onHover(i, ev);
    });
    canvas.addEventListener("mouseleave", (ev) => {
      this.hovered = -1;
      this.placeOutline();
      this.onHover(-1, ev);
    });
    canvas.addEventListener("click", (ev) => {
      const i = this.nodeAtEvent(ev);
      if (i >= 0) this.onClick(i, ev);
    });
    this.recolor();
  }

  /** Takes a tree response of `/api/v1/profiles/{id}/tree`. */
  setTree(tree) {
    const t0 = performance.now();
    this.tree = tree;
    const nodes = tree.nodes;
    const n = nodes.parent.length;
    this.n = n;
    const parent = Int32Array.from(nodes.parent);
    const total = Float64Array.from(nodes.total);
    const func = Uint32Array.from(nodes.func);
    const x = new Float64Array(n);
    const next = new Float64Array(n);
    const depth = new Uint16Array(n);
    const end = new Int32Array(n);
    const dominant = new Uint8Array(n);
    const tiers = nodes.tiers;
    let maxDepth = 0;
    for (let i = 0; i < n; i++) {
      const p = parent[i];
      if (p >= 0) {
        x[i] = next[p];
        next[p] += total[i];
        const d = depth[p] + 1;
        depth[i] = d;
        if (d > maxDepth) maxDepth = d;
      }
      next[i] = x[i];
      end[i] = i + 1;
      let best = 3;
      let bestW = -1;
      const o = 6 * i;
      for (let t = 0; t < 6; t++) {
        const w = tiers[o + t];
        if (w > bestW) {
          bestW = w;
          best = t;
        }
      }
      dominant[i] = best;
    }
    for (let i = n - 1; i > 0; i--) {
      const p = parent[i];
      if (end[i] > end[p]) end[p] = end[i];
    }
    const names = tree.functions.name;
    const shade = new Uint8Array(names.length);
    for (let f = 0; f < names.length; f++) shade[f] = hashString(names[f]) % SHADES;
    Object.assign(this, { parent, total, func, x, depth, end, dominant, shade, maxDepth });
    this.zoom = 0;
    this.matched = null;
    this.hovered = -1;
    this.placeOutline();
    this.recolor();
    this.stats.layoutMs = performance.now() - t0;
    this.stats.nodes = n;
  }

  setColorBy(mode) {
    if (mode === this.colorBy) return;
    this.colorBy = mode;
    this.recolor();
  }

  setUpward(up) {
    this.upward = up;
  }

  /** Recomputes every node's colour (after a theme or colour-mode change). */
  recolor() {
    this.theme = themeColours();
    this.palette = new Palette(this.theme.bgRgb);
    if (!this.tree) return;
    const n = this.n;
    const colour = new Uint16Array(n);
    const modules = this.tree.functions.module;
    const names = this.tree.functions.name;
    const byFunc = new Int32Array(names.length).fill(-1);
    for (let i = 0; i < n; i++) {
      const f = this.func[i];
      if (this.colorBy === "module") {
        if (byFunc[f] < 0) byFunc[f] = this.palette.module(modules[f]);
        colour[i] = byFunc[f];
      } else {
        colour[i] = this.palette.tier(this.dominant[i], this.shade[f]);
      }
    }
    this.colour = colour;
  }

  /** Marks frames whose function name matches `re` (a RegExp), or clears with null.
   * Returns the weight of samples with a matching frame, counted once per sample
   * (exact unless the server folded matching frames away). */
  setSearch(re) {
    if (!this.tree || !re) {
      this.matched = null;
      return null;
    }
    const names = this.tree.functions.name;
    const fm = new Uint8Array(names.length);
    for (let f = 0; f < names.length; f++) fm[f] = re.test(names[f]) ? 1 : 0;
    const matched = new Uint8Array(this.n);
    let weight = 0;
    // A node is counted when it matches and no ancestor did: the subtree below holds
    // exactly those samples.
    const covered = new Uint8Array(this.n);
    for (let i = 0; i < this.n; i++) {
      const f = this.func[i];
      matched[i] = fm[f];
      const p = this.parent[i];
      const up = p >= 0 ? covered[p] : 0;
      if (fm[f] && !up) weight += this.total[i];
      covered[i] = up | fm[f];
    }
    this.matched = matched;
    return weight;
  }

  setZoom(i) {
    this.zoom = i >= 0 && i < this.n ? i : 0;
  }

  /** Function names from the root's child down to node `i`. */
  pathOf(i) {
    const names = [];
    while (i > 0) {
      names.push(this.tree.functions.name[this.func[i]]);
      i = this.parent[i];
    }
    return names.reverse();
  }

  /** The node a path of names leads to, as deep as it matches. */
  nodeOfPath(path) {
    let node = 0;
    const names = this.tree ? this.tree.functions.name : [];
    for (const name of path) {
      let found = -1;
      for (let c = node + 1; c < this.end[node]; c = this.end[c]) {
        if (names[this.func[c]] === name) {
          found = c;
          break;
        }
      }
      if (found < 0) break;
      node = found;
    }
    return node;
  }

  /** Sizes the canvas to its container's width and the tree's depth. */
  resize() {
    const w = Math.max(100, Math.floor(this.canvas.parentElement.clientWidth));
    const rows = (this.tree ? this.maxDepth : 0) + 1;
    const hCss = rows * ROW;
    const dpr = window.devicePixelRatio || 1;
    this.width = w;
    this.heightCss = hCss;
    this.dpr = dpr;
    const pw = Math.round(w * dpr);
    const ph = Math.round(hCss * dpr);
    if (this.canvas.width !== pw || this.canvas.height !== ph) {
      this.canvas.width = pw;
      this.canvas.height = ph;
      this.canvas.style.width = `${w}px`;
      this.canvas.style.height = `${hCss}px`;
    }
  }

  rowY(d) {
    return this.upward ? (this.maxDepth - d) * ROW : d * ROW;
  }

  draw() {
    const t0 = performance.now();
    this.resize();
    const ctx = this.ctx;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.fillStyle = this.theme.bg;
    ctx.fillRect(0, 0, this.width, this.heightCss);
    if (!this.tree || this.n === 0 || this.total[0] === 0) {
      this.stats.drawMs = performance.now() - t0;
      this.stats.boxes = this.stats.labels = 0;
      return;
    }
    ctx.font = FONT;
    ctx.textBaseline = "middle";
    if (!this.charW) this.charW = ctx.measureText("MMMMMMMMMM").width / 10;
    const { total, x, depth, end, colour, matched } = this;
    const z = this.zoom;
    const x0 = x[z];
    const scale = this.width / total[z];
    const fill = matched ? this.palette.faded : this.palette.fill;
    const fillMatched = this.palette.fill;
    const labels = [];
    let boxes = 0;
    let last = -1;
    const box = (i, px, w) => {
      const c = colour[i];
      const style = matched && matched[i] ? fillMatched[c] : fill[c];
      if (style !== last) {
        ctx.fillStyle = style;
        last = style;
      }
      const y = this.rowY(depth[i]);
      ctx.fillRect(px, y, w > 2 ? w - 1 : w, ROW - 1);
      boxes++;
      if (w >= this.charW * 3 + 2 * LABEL_PAD) labels.push(i, px, w);
    };
    // The zoomed frame's ancestors span the whole width.
    for (let a = this.parent[z]; a >= 0; a = this.parent[a]) box(a, 0, this.width);
    // The zoomed subtree; narrow subtrees are skipped whole.
    for (let i = z; i < end[z]; ) {
      const w = total[i] * scale;
      if (w < MIN_WIDTH) {
        i = end[i];
        continue;
      }
      box(i, (x[i] - x0) * scale, w);
      i++;
    }
    this.drawLabels(labels);
    this.placeOutline();
    this.stats.boxes = boxes;
    this.stats.labels = labels.length / 3;
    this.stats.drawMs = performance.now() - t0;
  }

  drawLabels(labels) {
    const ctx = this.ctx;
    const names = this.tree.functions.name;
    const text = this.palette.text;
    const faded = !!this.matched;
    let last = "";
    for (let k = 0; k < labels.length; k += 3) {
      const i = labels[k];
      const px = labels[k + 1];
      const w = labels[k + 2];
      const name = names[this.func[i]];
      const fit = Math.floor((w - 2 * LABEL_PAD) / this.charW);
      const label = name.length <= fit ? name : `${name.slice(0, fit - 1)}…`;
      const style = faded && !this.matched[i] ? this.theme.muted : text[this.colour[i]];
      if (style !== last) {
        ctx.fillStyle = style;
        last = style;
      }
      ctx.fillText(label, px + LABEL_PAD, this.rowY(this.depth[i]) + ROW / 2);
    }
  }

  /** Box of node `i` in CSS pixels relative to the canvas, or null if not drawn. */
  boxOf(i) {
    if (!this.tree || i < 0 || i >= this.n) return null;
    const z = this.zoom;
    const scale = this.width / this.total[z];
    let px;
    let w;
    if (this.depth[i] < this.depth[z]) {
      // Drawn only if it is an ancestor of the zoomed frame.
      let a = this.parent[z];
      while (a >= 0 && a !== i) a = this.parent[a];
      if (a < 0) return null;
      px = 0;
      w = this.width;
    } else {
      if (i < z || i >= this.end[z]) return null;
      px = (this.x[i] - this.x[z]) * scale;
      w = this.total[i] * scale;
      if (w < MIN_WIDTH) return null;
    }
    return { x: px, y: this.rowY(this.depth[i]), w, h: ROW - 1 };
  }

  /** The widest drawn node of function `name`, or -1. */
  findNode(name) {
    if (!this.tree) return -1;
    const names = this.tree.functions.name;
    let best = -1;
    let bestW = 0;
    for (let i = 0; i < this.n; i++) {
      if (names[this.func[i]] !== name) continue;
      const b = this.boxOf(i);
      if (b && b.w > bestW) {
        best = i;
        bestW = b.w;
      }
    }
    return best;
  }

  nodeAtEvent(ev) {
    const r = this.canvas.getBoundingClientRect();
    return this.nodeAt(ev.clientX - r.left, ev.clientY - r.top);
  }

  /** The node drawn at (px, py), CSS pixels relative to the canvas, or -1. */
  nodeAt(px, py) {
    if (!this.tree || this.n === 0 || px < 0 || px >= this.width) return -1;
    const row = Math.floor(py / ROW);
    const d = this.upward ? this.maxDepth - row : row;
    if (d < 0 || d > this.maxDepth) return -1;
    const z = this.zoom;
    if (d < this.depth[z]) {
      let a = z;
      while (a >= 0 && this.depth[a] > d) a = this.parent[a];
      return a;
    }
    const scale = this.width / this.total[z];
    const xs = this.x[z] + px / scale;
    let node = z;
    while (this.depth[node] < d) {
      let found = -1;
      for (let c = node + 1; c < this.end[node]; c = this.end[c]) {
        if (xs >= this.x[c] && xs < this.x[c] + this.total[c]) {
          found = c;
          break;
        }
      }
      if (found < 0) return -1;
      node = found;
    }
    return this.total[node] * scale >= MIN_WIDTH ? node : -1;
  }

  placeOutline() {
    const b = this.hovered >= 0 ? this.boxOf(this.hovered) : null;
    if (!b) {
      this.outline.hidden = true;
      return;
    }
    const o = this.outline;
    o.hidden = false;
    o.style.left = `${this.canvas.offsetLeft + b.x}px`;
    o.style.top = `${this.canvas.offsetTop + b.y}px`;
    o.style.width = `${Math.max(1, b.w - 1)}px`;
    o.style.height = `${b.h}px`;
  }

  /** What the tooltip shows about node `i`. */
  info(i) {
    const f = this.tree.functions;
    const fi = this.func[i];
    return {
      name: f.name[fi],
      module: f.module[fi],
      file: f.file[fi],
      line: f.line[fi],
      self: this.tree.nodes.self[i],
      total: this.total[i],
      tiers: this.tree.nodes.tiers.slice(6 * i, 6 * i + 6),
      of: this.tree.total,
    };
  }
}
