// The flamegraph layout, shared by the viewer (flame.js) and the self-contained HTML
// export (prof_analysis inlines this file into it): pure functions over the call tree's
// preorder columns, no DOM.
//
// Node i's subtree is the contiguous preorder range [i, end[i]); x[i] is its left edge in
// weight units; depth[i] its row below the root. A zoomed view draws only the zoomed
// node's subtree (its ancestors are the breadcrumb), the zoomed node on row 0.

/** Lays out a tree: `parent` (-1 for the root), `total` weights, `tiers` (`ntiers`
 * weights per node: the dominant tier of each node is the heaviest). */
export function layoutTree(parentIn, totalIn, tiers, ntiers) {
  const n = parentIn.length;
  const parent = Int32Array.from(parentIn);
  const total = Float64Array.from(totalIn);
  const x = new Float64Array(n);
  const next = new Float64Array(n);
  const depth = new Uint16Array(n);
  const end = new Int32Array(n);
  const dominant = new Uint8Array(n);
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
    let best = 0;
    let bestW = -1;
    const o = ntiers * i;
    for (let t = 0; t < ntiers; t++) {
      const w = tiers ? tiers[o + t] : 0;
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
  return { n, parent, total, x, depth, end, dominant, maxDepth };
}

/** Calls `box(i, px, w, row)` for every node of `z`'s subtree at least `minWidth` pixels
 * wide when `z` spans `width` pixels (narrow subtrees are skipped whole), preorder.
 * Returns the deepest row drawn (0: only `z`). */
export function forEachBox(L, z, width, minWidth, box) {
  if (!L.n || !(L.total[z] > 0)) return 0;
  const { total, x, depth, end } = L;
  const x0 = x[z];
  const d0 = depth[z];
  const scale = width / total[z];
  let deepest = 0;
  for (let i = z; i < end[z]; ) {
    const w = total[i] * scale;
    if (w < minWidth) {
      i = end[i];
      continue;
    }
    const row = depth[i] - d0;
    if (row > deepest) deepest = row;
    if (box) box(i, (x[i] - x0) * scale, w, row);
    i++;
  }
  return deepest;
}

/** The deepest row of `z`'s subtree with a box at least `minWidth` wide: the rows a
 * canvas needs (plus one) — the visible depth, not the deepest stack. */
export function visibleRows(L, z, width, minWidth) {
  return forEachBox(L, z, width, minWidth, null);
}

/** The node drawn at horizontal offset `px` (0..width) on row `row` of the view zoomed
 * at `z`, or -1. */
export function nodeAt(L, z, width, minWidth, px, row) {
  if (!L.n || row < 0 || px < 0 || px >= width || !(L.total[z] > 0)) return -1;
  const { total, x, depth, end } = L;
  const scale = width / total[z];
  const xs = x[z] + px / scale;
  const d = depth[z] + row;
  let node = z;
  while (depth[node] < d) {
    let found = -1;
    for (let c = node + 1; c < end[node]; c = end[c]) {
      if (xs >= x[c] && xs < x[c] + total[c]) {
        found = c;
        break;
      }
    }
    if (found < 0) return -1;
    node = found;
  }
  return total[node] * scale >= minWidth ? node : -1;
}

/** Is `a` an ancestor of (or equal to) `i`? */
export function contains(L, a, i) {
  return i >= a && i < L.end[a];
}
