// The viewer's state lives in the URL's query string, so a link reopens exactly the
// same view and the browser's back/forward buttons walk through it.
//
//   view=flame             flamegraph (root at the bottom) instead of the icicle (root on
//                          top, the default: the widest frames are on the first screen)
//   color=module           colour frames by module instead of by dominant tier
//   q=REGEX  re=1          search (a substring unless re=1)
//   z=ID.ID.ID             zoomed frame: short ids (frameId) of the function names from the
//                          root down; old links with one `z=NAME` per level still open
//   native=hide|show       code-only view (runtime frames folded) or every frame; default:
//                          code-only for profiles that mostly run interpreted/JIT code
//   invert=1               callers view (stacks read from the leaf)
//   theme=light|dark       colour scheme (default: the system's)
//   from=S  to=S  axis=A   time range on the timeline's axis (cpu or wall)
//   process=PID thread=TID tier=jit,warmup
//   focus=NAME             the function whose callers and callees are shown
//   sort=total|-name|...   function table order
//   nodes=N                node budget asked of the server
//   marker=NAME mfrom=S mto=S mmin=S mmax=S
//                          request markers selected on the latency plot (name, start on
//                          the timeline's axis, duration): only samples inside them count

import { TIERS } from "./tiers.js";
import { escapeRegex } from "./util.js";

export const DEFAULT_NODES = 20000;

export function defaults() {
  return {
    view: "icicle",
    color: "tier",
    q: "",
    re: false,
    zoom: [],
    from: null,
    to: null,
    axis: "",
    process: "",
    thread: "",
    tiers: [],
    focus: "",
    sort: "self",
    nodes: 0,
    native: "",
    invert: false,
    theme: "",
    marker: "",
    mfrom: null,
    mto: null,
    mmin: null,
    mmax: null,
  };
}

/** Whether `s` selects request markers (the marker filter is on). */
export function markerSelected(s) {
  return Boolean(s.marker) || s.mfrom !== null || s.mto !== null || s.mmin !== null || s.mmax !== null;
}

/** A short stable id of a function name (for zoom paths in URLs): 32 bits of FNV-1a in
 * base 36, at most 7 characters. */
export function frameId(name) {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  return (h >>> 0).toString(36);
}

const ID_PATH = /^[0-9a-z]{1,7}(\.[0-9a-z]{1,7})*$/;

const SORTS = ["self", "total", "name", "module"];

function num(v) {
  if (v === null || v === "") return null;
  const x = Number(v);
  return Number.isFinite(x) && x >= 0 ? x : null;
}

function int(v) {
  return /^\d{1,10}$/.test(v || "") ? v : "";
}

export function parse(search) {
  const p = new URLSearchParams(search);
  const s = defaults();
  if (p.get("view") === "flame") s.view = "flame";
  if (p.get("color") === "module") s.color = "module";
  s.q = p.get("q") || "";
  s.re = p.get("re") === "1";
  const z = p.getAll("z").filter((v) => v !== "");
  s.zoom = z.length === 1 && ID_PATH.test(z[0]) ? z[0].split(".") : z;
  const native = p.get("native");
  if (native === "hide" || native === "show") s.native = native;
  s.invert = p.get("invert") === "1";
  const theme = p.get("theme");
  if (theme === "light" || theme === "dark") s.theme = theme;
  s.from = num(p.get("from"));
  s.to = num(p.get("to"));
  if (s.from !== null && s.to !== null && s.to <= s.from) s.from = s.to = null;
  if (s.from === null || s.to === null) s.from = s.to = null;
  const axis = p.get("axis");
  if (axis === "cpu" || axis === "wall") s.axis = axis;
  s.process = int(p.get("process"));
  s.thread = int(p.get("thread"));
  s.tiers = (p.get("tier") || "")
    .split(",")
    .filter((t) => TIERS.includes(t))
    .sort((a, b) => TIERS.indexOf(a) - TIERS.indexOf(b));
  s.focus = p.get("focus") || "";
  const sort = p.get("sort") || "self";
  if (SORTS.includes(sort.replace(/^-/, ""))) s.sort = sort;
  s.marker = p.get("marker") || "";
  for (const k of ["mfrom", "mto", "mmin", "mmax"]) s[k] = num(p.get(k));
  const nodes = Number(p.get("nodes"));
  if (Number.isInteger(nodes) && nodes >= 2 && nodes <= 1000000) s.nodes = nodes;
  return s;
}

/** The query string of `s` ("" or "?..."), listing only what differs from the defaults. */
export function serialize(s) {
  const p = new URLSearchParams();
  if (s.process) p.set("process", s.process);
  if (s.thread) p.set("thread", s.thread);
  if (s.tiers.length) p.set("tier", s.tiers.join(","));
  if (s.axis) p.set("axis", s.axis);
  if (s.from !== null && s.to !== null) {
    p.set("from", String(s.from));
    p.set("to", String(s.to));
  }
  if (s.focus) p.set("focus", s.focus);
  if (s.q) p.set("q", s.q);
  if (s.q && s.re) p.set("re", "1");
  if (s.view !== "icicle") p.set("view", s.view);
  if (s.native) p.set("native", s.native);
  if (s.invert) p.set("invert", "1");
  if (s.theme) p.set("theme", s.theme);
  if (s.color !== "tier") p.set("color", s.color);
  if (s.sort !== "self") p.set("sort", s.sort);
  if (s.nodes) p.set("nodes", String(s.nodes));
  if (s.marker) p.set("marker", s.marker);
  for (const k of ["mfrom", "mto", "mmin", "mmax"]) if (s[k] !== null) p.set(k, String(s[k]));
  if (s.zoom.length) p.set("z", s.zoom.map((z) => (ID_PATH.test(z) ? z : frameId(z))).join("."));
  const q = p.toString();
  return q ? `?${q}` : "";
}

/** The regular expression the server gets for the search box (a substring is escaped). */
export function searchRegex(s) {
  if (!s.q) return "";
  return s.re ? s.q : escapeRegex(s.q);
}

/** The API's sample filter for `s`: which samples count. `range` and `focus` say whether
 * the time range and the focused function apply. */
export function filterParams(s, { range = true, focus = true, tiers = true, native = "", markers = true } = {}) {
  const p = new URLSearchParams();
  if (native) p.set("native", native);
  if (s.process) p.set("process", s.process);
  if (s.thread) p.set("thread", s.thread);
  if (tiers && s.tiers.length) p.set("tier", s.tiers.join(","));
  if (s.axis) p.set("axis", s.axis);
  if (range && s.from !== null && s.to !== null) {
    p.set("from", String(s.from));
    p.set("to", String(s.to));
  }
  if (focus && s.focus) p.set("focus", s.focus);
  if (markers) markerParams(s, p);
  return p;
}

/** The API's marker selection parameters of `s` (added to `p`). */
export function markerParams(s, p = new URLSearchParams()) {
  if (!markerSelected(s)) return p;
  p.set("marker", s.marker || "*");
  if (s.mfrom !== null) p.set("marker_from", String(s.mfrom));
  if (s.mto !== null) p.set("marker_to", String(s.mto));
  if (s.mmin !== null) p.set("marker_min", String(s.mmin));
  if (s.mmax !== null) p.set("marker_max", String(s.mmax));
  return p;
}
