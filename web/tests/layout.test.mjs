// Unit tests of layout.js, the flamegraph layout the viewer and the HTML export share.
import assert from "node:assert/strict";
import { test } from "node:test";

import { contains, forEachBox, layoutTree, nodeAt, visibleRows } from "../layout.js";

// all(10) -> a(6) -> b(4) -> c(1)
//         -> d(4)
const parent = [-1, 0, 1, 2, 0];
const total = [10, 6, 4, 1, 4];
const tiers = [
  [0, 0, 10, 0, 0, 0],
  [6, 0, 0, 0, 0, 0],
  [0, 0, 4, 0, 0, 0],
  [0, 0, 0, 1, 0, 0],
  [0, 0, 0, 0, 4, 0],
].flat();

test("positions, depths, subtree ranges and dominant tiers", () => {
  const L = layoutTree(parent, total, tiers, 6);
  assert.deepEqual([...L.x], [0, 0, 0, 0, 6]);
  assert.deepEqual([...L.depth], [0, 1, 2, 3, 1]);
  assert.deepEqual([...L.end], [5, 4, 4, 4, 5]);
  assert.deepEqual([...L.dominant], [2, 0, 2, 3, 4]);
  assert.equal(L.maxDepth, 3);
  assert.ok(contains(L, 1, 3) && !contains(L, 1, 4));
});

test("boxes of the whole tree and of a zoomed subtree", () => {
  const L = layoutTree(parent, total, tiers, 6);
  const boxes = [];
  const deepest = forEachBox(L, 0, 100, 0.5, (i, px, w, row) => boxes.push([i, px, w, row]));
  assert.equal(deepest, 3);
  assert.deepEqual(boxes, [
    [0, 0, 100, 0],
    [1, 0, 60, 1],
    [2, 0, 40, 2],
    [3, 0, 10, 3],
    [4, 60, 40, 1],
  ]);
  // Zoomed on b: b spans the width on row 0, its ancestors are not drawn.
  const z = [];
  forEachBox(L, 2, 100, 0.5, (i, px, w, row) => z.push([i, px, w, row]));
  assert.deepEqual(z, [
    [2, 0, 100, 0],
    [3, 0, 25, 1],
  ]);
});

test("the canvas follows the visible depth, not the deepest stack", () => {
  const L = layoutTree(parent, total, tiers, 6);
  assert.equal(visibleRows(L, 0, 100, 0.5), 3);
  // At 10 px, c is 1 px wide; at 4 px it is 0.4 px: not drawn, one row less.
  assert.equal(visibleRows(L, 0, 4, 0.5), 2);
});

test("hit testing", () => {
  const L = layoutTree(parent, total, tiers, 6);
  assert.equal(nodeAt(L, 0, 100, 0.5, 5, 0), 0);
  assert.equal(nodeAt(L, 0, 100, 0.5, 65, 1), 4);
  assert.equal(nodeAt(L, 0, 100, 0.5, 5, 3), 3);
  assert.equal(nodeAt(L, 0, 100, 0.5, 50, 3), -1);
  assert.equal(nodeAt(L, 2, 100, 0.5, 20, 1), 3);
  assert.equal(nodeAt(L, 0, 100, 0.5, 100, 0), -1);
});

test("an empty tree draws nothing", () => {
  const L = layoutTree([], [], [], 6);
  assert.equal(forEachBox(L, 0, 100, 0.5, () => assert.fail()), 0);
  assert.equal(nodeAt(L, 0, 100, 0.5, 1, 0), -1);
});
