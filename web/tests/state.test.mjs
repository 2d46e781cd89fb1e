// Unit tests of state.js (the URL is the viewer's state): `node --test web/tests/`.
import assert from "node:assert/strict";
import { test } from "node:test";

import { defaults, filterParams, frameId, parse, searchRegex, serialize } from "../state.js";

test("defaults serialize to an empty query and parse back", () => {
  assert.equal(serialize(defaults()), "");
  assert.deepEqual(parse(""), defaults());
  assert.equal(defaults().view, "icicle", "the icicle is the first screen");
});

test("every field round-trips through the URL", () => {
  const s = {
    ...defaults(),
    view: "flame",
    color: "module",
    q: "a(b",
    re: true,
    zoom: [frameId("main"), frameId("std::vector<int>::push_back(int const&)")],
    from: 1.5,
    to: 2.25,
    axis: "wall",
    process: "42",
    thread: "43",
    tiers: ["warmup", "jit"],
    focus: "<module>",
    sort: "-total",
    nodes: 5000,
    native: "hide",
    invert: true,
    theme: "dark",
  };
  const q = serialize(s);
  assert.deepEqual(parse(q), s);
  // Zoom paths are short ids, not C++ names.
  const z = new URLSearchParams(q).get("z");
  assert.match(z, /^[0-9a-z]{1,7}\.[0-9a-z]{1,7}$/);
  assert.ok(!q.includes("push_back"));
});

test("old links with one z= name per level still parse (as names)", () => {
  const s = parse("?z=main&z=work%20loop");
  assert.deepEqual(s.zoom, ["main", "work loop"]);
  // Serialized again, names become ids — but for a name that reads as an id ("main"),
  // which the graph resolves by name or id alike.
  assert.equal(new URLSearchParams(serialize(s)).get("z"), `main.${frameId("work loop")}`);
});

test("garbage is dropped, not kept", () => {
  const s = parse("?view=x&native=maybe&theme=blue&from=-1&to=2&tier=jit,bogus&process=12a&nodes=1&sort=evil");
  assert.equal(s.view, "icicle");
  assert.equal(s.native, "");
  assert.equal(s.theme, "");
  assert.equal(s.from, null);
  assert.deepEqual(s.tiers, ["jit"]);
  assert.equal(s.process, "");
  assert.equal(s.nodes, 0);
  assert.equal(s.sort, "self");
});

test("frame ids are stable and short", () => {
  assert.equal(frameId("main"), frameId("main"));
  assert.notEqual(frameId("main"), frameId("mainx"));
  assert.ok(frameId("x".repeat(2000)).length <= 7);
});

test("filter parameters and the search regex", () => {
  const s = { ...parse("?tier=jit&from=1&to=2&focus=f&q=a.b"), native: "" };
  assert.equal(filterParams(s).toString(), "tier=jit&from=1&to=2&focus=f");
  assert.equal(filterParams(s, { range: false, focus: false, native: "hide" }).toString(), "native=hide&tier=jit");
  assert.equal(searchRegex(s), "a\\.b");
});
