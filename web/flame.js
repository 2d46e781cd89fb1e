// The flamegraph: lays out the server's call tree (columns, nodes in depth-first preorder)
// in one pass (layout.js, shared with the HTML export) and draws it on a canvas. Drawing
// visits only what is visible: a box narrower than half a pixel is skipped with its whole
// subtree, and labels are drawn only where they fit. A zoomed view draws the zoomed
// frame's subtree only (its ancestors are the breadcrumb), and the canvas is as tall as
// the rows that have visible boxes. Hover outlines are a DOM element over the canvas, so
// hovering never redraws.

import { Palette, SHADES, hashString, themeColours } from "./colors.js";
import { forEachBox, layoutTree, nodeAt as layoutNodeAt, visibleRows } from "./layout.js";
import { frameId } from "./state.js";

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
    const L = layoutTree(nodes.parent, nodes.total, nodes.tiers, 6);
    this.L = L;
    this.n = L.n;
    const { parent, total, x, depth, end, dominant, maxDepth } = L;
    const func = Uint32Array.from(nodes.func);
    const names = tree.functions.name;
    const shade = new Uint8Array(names.length);
    for (let f = 0; f < names.length; f++) shade[f] = hashString(names[f]) % SHADES;
    Object.assign(this, { parent, total, func, x, depth, end, dominant, shade, maxDepth });
    this.zoom = 0;
    this.matched = null;
    this.highlight = null;
    this.hovered = -1;
    this.rows = 1;
    this.rowsKey = "";
    this.placeOutline();
    this.recolor();
    this.stats.layoutMs = performance.now() - t0;
    this.stats.nodes = L.n;
  }

  setColorBy(mode) {
    if (mode === this.colorBy) return;
    this.colorBy = mode;
    this.recolor();
  }

  /** Differential colouring: a change level per node (see Palette.diff). */
  setDiff(levels) {
    this.diffLevel = levels;
    this.colorBy = "diff";
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
      if (this.colorBy === "diff" && this.diffLevel) {
        colour[i] = this.palette.diff(this.diffLevel[i]);
      } else if (this.colorBy === "module") {
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

  /** Short ids (state.frameId) of the function names from the root's child down to
   * node `i`: the zoom path in URLs. */
  idPathOf(i) {
    return this.pathOf(i).map(frameId);
  }

  /** The node a path leads to, as deep as it matches; each step is a function's short
   * id or (old links) its name. */
  nodeOfPath(path) {
    let node = 0;
    const names = this.tree ? this.tree.functions.name : [];
    const ids = new Map();
    const idOf = (f) => {
      let v = ids.get(f);
      if (v === undefined) {
        v = frameId(names[f]);
        ids.set(f, v);
      }
      return v;
    };
    for (const step of path) {
      let found = -1;
      for (let c = node + 1; c < this.end[node]; c = this.end[c]) {
        const f = this.func[c];
        if (idOf(f) === step || names[f] === step) {
          found = c;
          break;
        }
      }
      if (found < 0) break;
      node = found;
    }
    return node;
  }

  /** Sizes the canvas to its container's width and the rows that have visible boxes
   * (the zoomed frame on row 0). */
  resize() {
    const w = Math.max(100, Math.floor(this.canvas.parentElement.clientWidth));
    // One pass without drawing; remembered per (tree, zoom, width), so redraws for
    // search, hover or colours do not repeat it.
    const key = `${this.zoom}:${w}`;
    if (this.rowsKey !== key) {
      this.rowsKey = key;
      this.rows = this.tree && this.n ? visibleRows(this.L, this.zoom, w, MIN_WIDTH) + 1 : 1;
    }
    const hCss = this.rows * ROW;
    const dpr = window.devicePixelRatio || 1;
    this.width = w;
    this.heightCss = hCss;
    this.dpr = dpr;
    const pw = Math.round(w * dpr);
    const ph = Math.round(hCss * dpr);
    // The box shows the visible rows; the bitmap only grows (a zoom that needs fewer
    // rows keeps it, clipped by the box): reallocating a canvas costs more than a redraw.
    const box = this.canvas.parentElement;
    box.style.height = `${hCss}px`;
    if (this.canvas.width !== pw || this.canvas.height < ph) {
      this.canvas.width = pw;
      this.canvas.height = ph;
      this.canvas.style.width = `${w}px`;
      this.canvas.style.height = `${ph / dpr}px`;
    }
  }

  /** Top of row `r` (0: the zoomed frame). */
  rowY(r) {
    return this.upward ? (this.rows - 1 - r) * ROW : r * ROW;
  }

  /** Outlines the frames of function `name` (the focused function), or none. */
  setHighlight(name) {
    if (!this.tree || !name) {
      this.highlight = null;
      return;
    }
    const f = this.tree.functions.name.indexOf(name);
    this.highlight = f >= 0 ? f : null;
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
    const { colour, matched } = this;
    const z = this.zoom;
    const fill = matched ? this.palette.faded : this.palette.fill;
    const fillMatched = this.palette.fill;
    const labels = [];
    const marked = [];
    let boxes = 0;
    let last = -1;
    const hl = this.highlight;
    forEachBox(this.L, z, this.width, MIN_WIDTH, (i, px, w, row) => {
      const c = colour[i];
      const style = matched && matched[i] ? fillMatched[c] : fill[c];
      if (style !== last) {
        ctx.fillStyle = style;
        last = style;
      }
      const y = this.rowY(row);
      ctx.fillRect(px, y, w > 2 ? w - 1 : w, ROW - 1);
      boxes++;
      if (hl !== null && this.func[i] === hl) marked.push(px, y, w);
      if (w >= this.charW * 3 + 2 * LABEL_PAD) labels.push(i, px, w);
    });
    if (marked.length) {
      ctx.strokeStyle = this.theme.selectEdge || "#0072b2";
      ctx.lineWidth = 2;
      for (let k = 0; k < marked.length; k += 3) {
        ctx.strokeRect(marked[k] + 1, marked[k + 1] + 1, Math.max(1, marked[k + 2] - 3), ROW - 3);
      }
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
      ctx.fillText(label, px + LABEL_PAD, this.rowY(this.depth[i] - this.depth[this.zoom]) + ROW / 2);
    }
  }

  /** Box of node `i` in CSS pixels relative to the canvas, or null if not drawn. */
  boxOf(i) {
    if (!this.tree || i < 0 || i >= this.n) return null;
    const z = this.zoom;
    if (i < z || i >= this.end[z]) return null;
    const scale = this.width / this.total[z];
    const px = (this.x[i] - this.x[z]) * scale;
    const w = this.total[i] * scale;
    if (w < MIN_WIDTH) return null;
    return { x: px, y: this.rowY(this.depth[i] - this.depth[z]), w, h: ROW - 1 };
  }

  /** Drawn nodes of function `name` (or matching the search when `name` is null), in
   * preorder: for `n`/`N` (next/previous match). */
  drawnNodes(pred) {
    const out = [];
    if (!this.tree) return out;
    forEachBox(this.L, this.zoom, this.width, MIN_WIDTH, (i) => {
      if (pred(i)) out.push(i);
    });
    return out;
  }

  /** Moves the hover outline to node `i` (keyboard navigation). */
  outlineNode(i) {
    this.hovered = i;
    this.placeOutline();
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
    if (!this.tree || this.n === 0) return -1;
    const r = Math.floor(py / ROW);
    const row = this.upward ? this.rows - 1 - r : r;
    return layoutNodeAt(this.L, this.zoom, this.width, MIN_WIDTH, px, row);
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
