// The viewer of one profile (`/p/{id}`): summary with exports, filters (process, thread,
// axis, tiers), the flamegraph first (icicle by default: the widest frames on the first
// screen; legend and notes beside it; search, zoom with a one-line breadcrumb, code-only
// view), the warmup curve with its time-range brush, and the function table with the
// focused function's callers and callees beside it, and a source panel. Everything the
// user changes goes into the URL first (state.js); `render()` then brings the page in line
// with the URL, fetching what it lacks (the server aggregates, the browser only draws).
// Keyboard: `?` help, `/` search, `n`/`N` next/previous match, `Esc` reset, `i` invert,
// `c` code-only.

import { cachedJSON, getJSON } from "./api.js";
import { TIERS, TIER_CSS, TIER_LABELS, applyTheme, css, moduleRgb, themeColours } from "./colors.js";
import { FlameGraph } from "./flame.js";
import { openSource } from "./source.js";
import { DEFAULT_NODES, filterParams, markerSelected, parse, searchRegex, serialize } from "./state.js";
import { LatencyPlot, NAME_COLOURS } from "./markers.js";
import { renderTable, tierBar } from "./table.js";
import { Timeline } from "./timeline.js";
import {
  $,
  debounce,
  fmtDate,
  fmtInt,
  fmtPct,
  fmtSeconds,
  h,
  location as loc,
  setChildren,
  showError,
} from "./util.js";

const TIMELINE_BUCKETS = 200;
const TABLE_ROWS = 500;
const CALLERS_NODES = 3000;
const EXPORTS = [
  ["raw", ""],
  ["speedscope", "speedscope"],
  ["pprof", "pprof"],
  ["Firefox", "firefox"],
  ["SVG", "svg"],
  ["HTML", "html"],
  ["collapsed", "collapsed"],
];
const SHORTCUTS = [
  ["?", "show or hide this help"],
  ["/", "search functions"],
  ["n / N", "next / previous matching frame"],
  ["Esc", "close help and source, reset zoom and search"],
  ["i", "invert: callers instead of callees"],
  ["c", "code-only view on or off (runtime frames folded)"],
  ["shift-click", "a frame: open its source"],
];

export function startViewer(app, id) {
  let state = parse(window.location.search);
  let meta = null;
  let renderSeq = 0;
  let typingUntil = 0;
  let pendingClickAt = 0;
  const lastTable = { data: null, key: "" };
  let selectorsFor = null;
  const stats = {
    firstPaintMs: null,
    firstFrameMs: null,
    fetchMs: null,
    bytes: null,
    layoutMs: null,
    drawMs: null,
    redrawMs: null,
    redraws: [],
    nodes: 0,
    boxes: 0,
    labels: 0,
  };
  const api = `/api/v1/profiles/${encodeURIComponent(id)}`;

  // --- the page ---------------------------------------------------------------------------
  const el = {
    summary: h("section", { class: "summary", id: "summary" }),
    process: h("select", { id: "process", "aria-label": "process" }),
    thread: h("select", { id: "thread", "aria-label": "thread" }),
    axis: h(
      "select",
      { id: "axis", "aria-label": "time axis" },
      h("option", { value: "" }, "default axis"),
      h("option", { value: "cpu" }, "CPU time"),
      h("option", { value: "wall" }, "wall-clock time"),
    ),
    tierButtons: h("span", { class: "tiers", id: "tier-filter", role: "group", "aria-label": "tier filter" }),
    clearTiers: h("button", { type: "button", class: "small", id: "all-tiers" }, "all tiers"),
    timelineBox: h("div", { class: "canvas-box" }),
    timelineCanvas: h("canvas", { id: "timeline", "aria-label": "tier shares over time; drag to select a time range" }),
    range: h("span", { id: "range", class: "muted" }),
    // [issue 14] Request latency under the warm-up curve (profiles with markers only).
    latencyPart: h("div", { id: "latency", hidden: true }),
    latencyBox: h("div", { class: "canvas-box" }),
    latencyCanvas: h("canvas", {
      id: "latency-plot",
      "aria-label": "request latency over time; drag a box to narrow the profile to the requests inside it",
    }),
    markerLegend: h("div", { id: "marker-legend", class: "legend marker-legend" }),
    markerSel: h("span", { id: "marker-selection", class: "muted" }),
    clearMarkers: h("button", { type: "button", class: "small", id: "clear-markers", hidden: true }, "all requests"),
    clearRange: h("button", { type: "button", class: "small", id: "clear-range", hidden: true }, "clear range"),
    search: h("input", {
      type: "search",
      id: "search",
      placeholder: "search functions ( / )",
      "aria-label": "search functions",
      autocomplete: "off",
      spellcheck: "false",
    }),
    regex: h("input", { type: "checkbox", id: "regex" }),
    matched: h("span", { id: "matched", class: "matched", "aria-live": "polite" }),
    viewBtn: h("button", { type: "button", id: "view-toggle" }),
    color: h(
      "select",
      { id: "color", "aria-label": "colour frames by" },
      h("option", { value: "tier" }, "colour: tier"),
      h("option", { value: "module" }, "colour: module"),
    ),
    reset: h("button", { type: "button", id: "reset", title: "reset zoom and search (Esc)" }, "reset"),
    codeOnly: h("input", { type: "checkbox", id: "code-only" }),
    invert: h("button", { type: "button", id: "invert", title: "callers instead of callees (i)" }, "invert"),
    help: h("button", { type: "button", id: "help-button", title: "keyboard shortcuts (?)" }, "?"),
    helpBox: h("div", { id: "help", class: "help", role: "dialog", "aria-label": "keyboard shortcuts", hidden: true }),
    source: h("section", { id: "source", class: "panel source-panel", hidden: true }),
    calleesBox: h("div", { class: "canvas-box callees" }),
    calleesCanvas: h("canvas", { id: "callees", "aria-label": "callees of the focused function" }),
    sandwich: h("aside", { id: "sandwich", class: "sandwich", hidden: true }),
    axisNote: h("p", { id: "axis-note", class: "muted small" }),
    exports: h("span", { id: "exports", class: "exports" }),
    totals: h("span", { id: "totals", class: "totals" }),
    crumbs: h("nav", { id: "breadcrumbs", class: "breadcrumbs", "aria-label": "zoom path" }),
    focusBar: h("div", { id: "focus-bar", class: "focus-bar", hidden: true }),
    callersBox: h("div", { class: "canvas-box callers", hidden: true }),
    callersCanvas: h("canvas", { id: "callers", "aria-label": "callers of the focused function" }),
    flameBox: h("div", { class: "canvas-box" }),
    flameCanvas: h("canvas", { id: "flame", "aria-label": "flamegraph" }),
    folded: h("p", { id: "folded", class: "muted small" }),
    legend: h("div", { id: "legend", class: "legend" }),
    table: h("div", { id: "functions" }),
  };
  el.timePanel = h(
    "section",
    { class: "panel", id: "time-panel" },
    h("div", { class: "panel-head" }, h("h2", null, "Tiers over time"), el.range, el.clearRange),
    el.timelineBox,
    el.axisNote,
    h("p", { class: "muted small" }, "Share of each tier per time slice; the line is how many samples the slice holds. Drag to select a time range, click to clear it."),
    el.latencyPart,
  );
  el.timelineBox.appendChild(el.timelineCanvas);
  el.latencyBox.appendChild(el.latencyCanvas);
  setChildren(
    el.latencyPart,
    h("div", { class: "panel-head" }, h("h2", null, "Request latency"), el.markerSel, el.clearMarkers),
    el.markerLegend,
    el.latencyBox,
    h(
      "p",
      { class: "muted small" },
      "Each dot is one marked request (its duration, on a log scale, at the time it started); the lines are the median of each run of requests. Drag a box to narrow the flamegraph, the table and the curve above to the samples inside those requests; click a name to keep its requests only.",
    ),
  );
  el.callersBox.appendChild(el.callersCanvas);
  el.calleesBox.appendChild(el.calleesCanvas);
  el.flameBox.appendChild(el.flameCanvas);
  setChildren(
    el.helpBox,
    h("h2", null, "Keyboard shortcuts"),
    h("table", null, h("tbody", null, SHORTCUTS.map(([k, v]) => h("tr", null, h("td", null, h("kbd", null, k)), h("td", null, v))))),
    h("p", { class: "muted small" }, "Press ? or Esc to close."),
  );
  setChildren(el.sandwich, el.focusBar, h("div", { class: "muted small" }, "callers (the focused function at the bottom)"), el.callersBox, h("div", { class: "muted small" }, "callees"), el.calleesBox);
  el.callersBox.hidden = false;
  el.focusBar.hidden = false;

  setChildren(
    app,
    el.summary,
    h(
      "section",
      { class: "toolbar filters" },
      el.process,
      el.thread,
      el.axis,
      h("span", { class: "label" }, "tiers:"),
      el.tierButtons,
      el.clearTiers,
    ),
    h(
      "section",
      { class: "panel", id: "flame-panel" },
      h(
        "div",
        { class: "toolbar" },
        el.search,
        h("label", { class: "small" }, el.regex, " regex"),
        el.matched,
        h("span", { class: "spacer" }),
        h("label", { class: "small", title: "fold the runtime's own frames into the program's (c)" }, el.codeOnly, " code only"),
        el.invert,
        el.viewBtn,
        el.color,
        el.reset,
        el.help,
      ),
      el.crumbs,
      h(
        "div",
        { class: "flame-row" },
        el.flameBox,
        h("aside", { class: "side", id: "flame-side" }, el.totals, el.legend, el.folded),
      ),
    ),
    el.timePanel,
    h(
      "section",
      { class: "panel" },
      h("h2", null, "Functions"),
      h("div", { class: "table-row" }, h("div", { class: "table-box" }, el.table), el.sandwich),
    ),
    el.source,
    el.helpBox,
  );

  const tooltip = $("tooltip");

  function showTooltip(content, ev) {
    setChildren(tooltip, content);
    tooltip.hidden = false;
    const pad = 14;
    const r = tooltip.getBoundingClientRect();
    let x = ev.clientX + pad;
    let y = ev.clientY + pad;
    if (x + r.width > window.innerWidth - 4) x = Math.max(4, ev.clientX - r.width - pad);
    if (y + r.height > window.innerHeight - 4) y = Math.max(4, ev.clientY - r.height - pad);
    tooltip.style.left = `${x}px`;
    tooltip.style.top = `${y}px`;
  }

  function hideTooltip() {
    tooltip.hidden = true;
  }

  function frameTooltip(graph, i, ev) {
    if (i < 0) {
      hideTooltip();
      return;
    }
    const f = graph.info(i);
    const where = loc(f.file, f.line);
    const shares = [];
    const sum = f.tiers.reduce((a, b) => a + b, 0);
    for (let t = 0; t < 6; t++) {
      if (f.tiers[t]) {
        const sw = h("span", { class: "swatch" });
        sw.style.background = TIER_CSS[t];
        shares.push(h("div", { class: "share" }, sw, `${TIERS[t]} ${fmtPct(f.tiers[t], sum)} (${fmtInt(f.tiers[t])})`));
      }
    }
    showTooltip(
      h(
        "div",
        { id: "tooltip-body" },
        h("div", { class: "tt-name" }, f.name),
        where ? h("div", { class: "tt-loc" }, where) : null,
        f.module ? h("div", { class: "tt-mod" }, `module: ${f.module}`) : null,
        h(
          "div",
          { class: "tt-nums" },
          `self ${fmtInt(f.self)} (${fmtPct(f.self, f.of)}) · total ${fmtInt(f.total)} (${fmtPct(f.total, f.of)})`,
        ),
        tierBar(f.tiers, "tierbar wide"),
        shares,
        h("div", { class: "tt-hint muted" }, f.file ? "click to zoom · shift-click for its source" : "click to zoom"),
      ),
      ev,
    );
  }

  // --- components -------------------------------------------------------------------------
  const graph = new FlameGraph(el.flameCanvas, {
    onClick: (i, ev) => {
      if (ev && ev.shiftKey) {
        showSource(graph.info(i));
        return;
      }
      pendingClickAt = performance.now();
      navigate({ zoom: graph.idPathOf(i) });
    },
    onHover: (i, ev) => frameTooltip(graph, i, ev),
  });
  const callers = new FlameGraph(el.callersCanvas, {
    upward: true,
    onClick: (i) => {
      const name = callers.info(i).name;
      if (i > 0 && name !== state.focus) navigate({ focus: name });
    },
    onHover: (i, ev) => frameTooltip(callers, i, ev),
  });
  const callees = new FlameGraph(el.calleesCanvas, {
    upward: false,
    onClick: (i) => {
      const name = callees.info(i).name;
      if (i > 0 && name !== state.focus) navigate({ focus: name });
    },
    onHover: (i, ev) => frameTooltip(callees, i, ev),
  });
  const timeline = new Timeline(el.timelineCanvas, {
    onBrush: (from, to) => navigate({ from: round(from), to: round(to) }),
    onClear: () => {
      if (state.from !== null) navigate({ from: null, to: null });
    },
    onHover: (b, ev) => {
      if (!b) {
        hideTooltip();
        return;
      }
      const rows = [];
      for (let t = 0; t < 6; t++) {
        if (b.counts[t]) {
          const sw = h("span", { class: "swatch" });
          sw.style.background = TIER_CSS[t];
          rows.push(h("div", { class: "share" }, sw, `${TIERS[t]} ${fmtPct(b.counts[t], b.total)}`));
        }
      }
      showTooltip(
        h(
          "div",
          null,
          h("div", { class: "tt-name" }, `${fmtSeconds(b.from)} – ${fmtSeconds(b.to)} (${b.axis} time)`),
          h("div", { class: "tt-nums" }, `${fmtInt(b.total)} samples`),
          rows,
        ),
        ev,
      );
    },
  });

  const latency = new LatencyPlot(el.latencyCanvas, {
    onSelect: (sel) =>
      navigate({
        mfrom: sel.from === null ? null : round(sel.from),
        mto: sel.to === null ? null : round(sel.to),
        mmin: sel.min === null ? null : roundLatency(sel.min),
        mmax: sel.max === null ? null : roundLatency(sel.max),
      }),
    onClear: () => {
      if (markerSelected(state)) navigate({ marker: "", mfrom: null, mto: null, mmin: null, mmax: null });
    },
    onHover: (m, ev) => {
      if (!m) {
        hideTooltip();
        return;
      }
      showTooltip(
        h(
          "div",
          null,
          h("div", { class: "tt-name" }, m.name),
          h("div", { class: "tt-nums" }, `${fmtSeconds(m.duration)}${m.cpu !== null ? `, ${fmtSeconds(m.cpu)} of it on CPU` : ""}`),
          h("div", { class: "muted" }, `started ${fmtSeconds(m.start)} after its process (pid ${m.pid}, thread ${m.tid})`),
        ),
        ev,
      );
    },
  });
  let markerTable = null;
  let markerKey = "";
  window.__latencyPlot = latency;

  function round(t) {
    return Math.round(t * 1e6) / 1e6;
  }

  /** Latency bounds keep 3 significant digits (short URLs). */
  function roundLatency(s) {
    return Number(s.toPrecision(3));
  }

  // --- navigation ---------------------------------------------------------------------------
  function navigate(patch, { replace = false } = {}) {
    const next = { ...state, ...patch };
    if ("axis" in patch && patch.axis !== state.axis) next.from = next.to = null;
    if (("native" in patch && patch.native !== state.native) || ("invert" in patch && patch.invert !== state.invert)) next.zoom = [];
    if ("process" in patch && patch.process !== state.process) {
      next.thread = "";
      next.from = next.to = null;
    }
    state = next;
    const url = `${window.location.pathname}${serialize(state)}`;
    if (url !== window.location.pathname + window.location.search) {
      if (replace) window.history.replaceState(null, "", url);
      else window.history.pushState(null, "", url);
    }
    render();
  }

  window.addEventListener("popstate", () => {
    state = parse(window.location.search);
    render();
  });

  // --- controls -----------------------------------------------------------------------------
  el.process.addEventListener("change", () => navigate({ process: el.process.value }));
  el.thread.addEventListener("change", () => navigate({ thread: el.thread.value }));
  el.axis.addEventListener("change", () => navigate({ axis: el.axis.value }));
  el.clearTiers.addEventListener("click", () => navigate({ tiers: [] }));
  el.clearRange.addEventListener("click", () => navigate({ from: null, to: null }));
  el.clearMarkers.addEventListener("click", () => navigate({ marker: "", mfrom: null, mto: null, mmin: null, mmax: null }));
  el.viewBtn.addEventListener("click", () => navigate({ view: state.view === "flame" ? "icicle" : "flame" }));
  el.color.addEventListener("change", () => navigate({ color: el.color.value }));
  el.reset.addEventListener("click", () => resetView());
  el.codeOnly.addEventListener("change", () => navigate({ native: el.codeOnly.checked ? "hide" : "show" }));
  el.invert.addEventListener("click", () => navigate({ invert: !state.invert }));
  el.help.addEventListener("click", () => toggleHelp());
  el.regex.addEventListener("change", () => navigate({ re: el.regex.checked }));
  const searchTyped = debounce(() => {
    const replace = performance.now() < typingUntil;
    typingUntil = performance.now() + 1500;
    navigate({ q: el.search.value }, { replace });
  }, 200);
  el.search.addEventListener("input", searchTyped);
  el.search.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      searchTyped.cancel();
      typingUntil = 0;
      navigate({ q: el.search.value });
    }
  });
  for (let t = 0; t < TIERS.length; t++) {
    const sw = h("span", { class: "swatch" });
    sw.style.background = TIER_CSS[t];
    const b = h(
      "button",
      { type: "button", class: "tier small", dataset: { tier: TIERS[t] }, title: `only ${TIER_LABELS[TIERS[t]]} samples (toggle)` },
      sw,
      h("span", { class: "tier-name" }, TIERS[t]),
      h("span", { class: "tier-share muted" }),
    );
    b.addEventListener("click", () => {
      const set = new Set(state.tiers);
      if (set.has(TIERS[t])) set.delete(TIERS[t]);
      else set.add(TIERS[t]);
      navigate({ tiers: TIERS.filter((x) => set.has(x)) });
    });
    el.tierButtons.appendChild(b);
  }

  function resetView() {
    searchTyped.cancel();
    el.search.value = "";
    navigate({ zoom: [], q: "" });
  }

  function toggleHelp(show = el.helpBox.hidden) {
    el.helpBox.hidden = !show;
  }

  /** Moves the keyboard cursor to the next (`dir` 1) or previous (-1) matching frame. */
  let matchCursor = -1;
  function nextMatch(dir) {
    if (!graph.matched) return;
    const nodes = graph.drawnNodes((i) => graph.matched[i] === 1);
    if (!nodes.length) return;
    const at = nodes.indexOf(matchCursor);
    const k = at < 0 ? (dir > 0 ? 0 : nodes.length - 1) : (at + dir + nodes.length) % nodes.length;
    matchCursor = nodes[k];
    graph.outlineNode(matchCursor);
    const b = graph.boxOf(matchCursor);
    const r = el.flameCanvas.getBoundingClientRect();
    if (b && (r.top + b.y < 0 || r.top + b.y + b.h > window.innerHeight)) {
      window.scrollBy(0, r.top + b.y - window.innerHeight / 2);
    }
    el.matched.dataset.cursor = String(k + 1);
    el.matched.dataset.cursorName = graph.info(matchCursor).name;
  }

  document.addEventListener("keydown", (ev) => {
    const t = ev.target;
    const typing = t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "Escape") {
      if (typing) t.blur();
      hideTooltip();
      if (!el.helpBox.hidden) {
        toggleHelp(false);
        return;
      }
      if (!el.source.hidden) el.source.hidden = true;
      resetView();
      return;
    }
    if (typing) return;
    if (ev.key === "/") {
      ev.preventDefault();
      el.search.focus();
      el.search.select();
    } else if (ev.key === "?") {
      toggleHelp();
    } else if (ev.key === "n") {
      nextMatch(1);
    } else if (ev.key === "N") {
      nextMatch(-1);
    } else if (ev.key === "i") {
      navigate({ invert: !state.invert });
    } else if (ev.key === "c") {
      navigate({ native: nativeMode() === "hide" ? "show" : "hide" });
    }
  });

  async function showSource(f) {
    if (!f || !f.file) return;
    try {
      await openSource(el.source, api, f.file, f.line);
    } catch (e) {
      showError(`No source for ${f.file}: ${e.message}`);
    }
  }

  window.addEventListener("prof-theme", () => {
    // The theme button changed it: the URL says so (theme=), for links and reloads.
    const t = document.documentElement.dataset.theme || "";
    if (t !== state.theme) navigate({ theme: t }, { replace: true });
    graph.recolor();
    callers.recolor();
    callees.recolor();
    drawAll();
  });
  window.addEventListener(
    "resize",
    debounce(() => drawAll(), 100),
  );

  function drawAll() {
    if (graph.tree) graph.draw();
    if (!el.sandwich.hidden && callers.tree) callers.draw();
    if (!el.sandwich.hidden && callees.tree) callees.draw();
    if (timeline.data) timeline.draw();
    if (latency.data) latency.draw();
  }

  // --- the summary (once) -------------------------------------------------------------------
  async function loadMeta() {
    meta = await getJSON(api);
    const s = meta.summary;
    document.title = `prof: ${meta.name}`;
    $("title").textContent = meta.name;
    const facts = [
      fmtDate(meta.created),
      fmtSeconds(meta.duration_s),
      `${fmtInt(s.processes.length)} process${s.processes.length === 1 ? "" : "es"}`,
      `${fmtInt(s.threads.length)} thread${s.threads.length === 1 ? "" : "s"}`,
      `${fmtInt(s.samples)} samples${s.lost_samples ? `, ${fmtInt(s.lost_samples)} lost` : ""}`,
      `${s.mode} mode`,
      s.timer ? `${s.timer}, ${Math.round(s.samples_per_cpu_s || 0)} samples/CPU-s` : null,
    ].filter(Boolean);
    const notes = [...(s.notices || []), ...(s.symbol_warnings || [])];
    setChildren(
      el.exports,
      "download: ",
      EXPORTS.map(([label, fmt], k) => [
        k ? " · " : "",
        h("a", { href: fmt ? `${api}/download?format=${fmt}` : `${api}/download`, dataset: { format: fmt || "raw" }, download: "" }, label),
      ]),
    );
    const plain = h("a", { href: `/plain/p/${encodeURIComponent(id)}` }, "plain page");
    setChildren(
      el.summary,
      h("h1", null, meta.name),
      h("p", null, h("code", { class: "cmd" }, meta.command)),
      h("p", { class: "muted" }, facts.join(" · "), " · ", plain),
      h("p", { class: "muted small" }, el.exports),
      tierBar(TIERS.map((t) => meta.tiers[t] || 0), "tierbar wide"),
      notes.length
        ? h(
            "details",
            { class: "notes" },
            h("summary", null, `${notes.length} note${notes.length === 1 ? "" : "s"}`),
            h("ul", null, notes.map((n) => h("li", null, n))),
          )
        : null,
    );
    setTierShares(TIERS.map((t) => meta.tiers[t] || 0));
    // A profile with request markers opens on its warm-up curve and request latencies
    // (the seed's plot), above the flamegraph.
    if (meta.has_markers) {
      el.latencyPart.hidden = false;
      const flamePanel = $("flame-panel");
      if (flamePanel) flamePanel.parentNode.insertBefore(el.timePanel, flamePanel);
    }
  }

  /** The tier chips' shares: of the whole profile, or of the selected time range. */
  function setTierShares(weights) {
    const total = weights.reduce((a, b) => a + b, 0);
    for (const b of el.tierButtons.children) {
      const w = weights[TIERS.indexOf(b.dataset.tier)] || 0;
      b.querySelector(".tier-share").textContent = ` ${fmtPct(w, total)}`;
      b.classList.toggle("empty", !w);
    }
  }

  /** Code-only ("hide") or every frame ("show"): the URL's choice, else code-only for
   * profiles that mostly run interpreted/JIT code. */
  function nativeMode() {
    if (state.native) return state.native;
    return meta && meta.mostly_program_code ? "hide" : "show";
  }

  function fillSelectors(s) {
    el.process.replaceChildren(h("option", { value: "" }, `all processes (${s.processes.length})`));
    for (const p of s.processes) {
      const label = `${p.pid} ${p.command || p.exe || ""}`;
      el.process.appendChild(h("option", { value: String(p.pid) }, label.length > 80 ? `${label.slice(0, 79)}…` : label));
    }
    const threads = s.threads.filter((t) => !state.process || String(t.pid) === state.process);
    el.thread.replaceChildren(h("option", { value: "" }, `all threads (${threads.length})`));
    for (const t of threads) {
      el.thread.appendChild(
        h("option", { value: String(t.tid) }, `${t.tid} ${t.name || ""} (${fmtInt(t.samples)})`),
      );
    }
  }

  function syncControls() {
    // Process and thread selectors (rebuilt when the process changes).
    const s = meta.summary;
    if (selectorsFor !== state.process) {
      selectorsFor = state.process;
      fillSelectors(s);
    }
    el.process.value = state.process;
    el.thread.value = state.thread;
    el.axis.value = state.axis;
    for (const b of el.tierButtons.children) {
      b.setAttribute("aria-pressed", state.tiers.includes(b.dataset.tier) ? "true" : "false");
    }
    el.clearTiers.disabled = state.tiers.length === 0;
    if (document.activeElement !== el.search) el.search.value = state.q;
    el.regex.checked = state.re;
    el.viewBtn.textContent = state.view === "flame" ? "icicle" : "flamegraph";
    el.viewBtn.title = state.view === "flame" ? "show as icicle (root on top)" : "show as flamegraph (root at the bottom)";
    el.color.value = state.color;
    el.codeOnly.checked = nativeMode() === "hide";
    el.invert.setAttribute("aria-pressed", state.invert ? "true" : "false");
    // A theme in the URL wins (a shared link); without one, the user's own setting stays.
    if (state.theme && (document.documentElement.dataset.theme || "") !== state.theme) {
      applyTheme(state.theme);
    }
    el.clearRange.hidden = state.from === null;
    el.range.textContent =
      state.from === null ? "" : `range ${fmtSeconds(state.from)} – ${fmtSeconds(state.to)}`;
  }

  // --- rendering ----------------------------------------------------------------------------
  function treeURL(search) {
    const p = filterParams(state, { focus: false, native: nativeMode() });
    p.set("max_nodes", String(state.nodes || DEFAULT_NODES));
    if (state.invert) p.set("invert", "1");
    if (search) p.set("search", search);
    return `${api}/tree?${p}`;
  }

  function setBusy(busy) {
    document.body.dataset.state = busy ? "loading" : "ready";
  }

  async function render() {
    const my = ++renderSeq;
    setBusy(true);
    try {
      if (!meta) await loadMeta();
      if (my !== renderSeq) return;
      syncControls();
      const search = searchRegex(state);
      const layoutKey = treeURL("");
      const native = nativeMode();
      const tlParams = filterParams(state, { range: false, tiers: false, focus: false, native });
      tlParams.set("buckets", String(TIMELINE_BUCKETS));
      const fnParams = filterParams(state, { focus: false, native });
      fnParams.set("limit", String(TABLE_ROWS));
      fnParams.set("sort", state.sort.replace(/^-/, "") === "total" ? "total" : "self");
      const treeP = cachedJSON(treeURL(search));
      const tlP = cachedJSON(`${api}/timeline?${tlParams}`);
      const fnP = cachedJSON(`${api}/functions?${fnParams}`);
      let callersP = null;
      let calleesP = null;
      if (state.focus) {
        const cp = filterParams(state, { native });
        cp.set("max_nodes", String(CALLERS_NODES));
        calleesP = cachedJSON(`${api}/tree?${cp}`);
        cp.set("invert", "1");
        callersP = cachedJSON(`${api}/tree?${cp}`);
      }

      // The flamegraph first: it is what the user waits for.
      let searchError = null;
      let tree;
      try {
        tree = await treeP;
      } catch (e) {
        if (!search || e.status !== 400) throw e;
        searchError = e.message;
        tree = await cachedJSON(layoutKey);
      }
      if (my !== renderSeq) return;
      drawTree(tree, layoutKey, searchError);

      const tl = await tlP;
      if (my !== renderSeq) return;
      if (timeline.data !== tl.data) timeline.setData(tl.data);
      timeline.setSelection(state.from, state.to);
      timeline.setTierMask(state.tiers.length ? TIERS.map((t) => state.tiers.includes(t)) : null);
      timeline.setAxisTitle(axisTitle(tl.data.axis));
      timeline.draw();
      setTierShares(state.from === null ? TIERS.map((t) => meta.tiers[t] || 0) : timeline.tierSums(state.from, state.to));
      renderAxisNote(tl.data);
      if (meta.has_markers) await renderMarkers(tl.data, my);
      if (my !== renderSeq) return;

      let sandwich = null;
      try {
        sandwich = callersP ? [await callersP, await calleesP] : null;
      } catch (e) {
        if (e.status !== 400) throw e;
        // The focused function is not in this view (another filter or view): no sandwich.
        sandwich = null;
      }
      if (my !== renderSeq) return;
      drawSandwich(sandwich);

      const fns = await fnP;
      if (my !== renderSeq) return;
      const tableKey = [state.sort, state.focus, state.q, state.re].join("\u0000");
      if (fns.data !== lastTable.data || tableKey !== lastTable.key) {
        lastTable.data = fns.data;
        lastTable.key = tableKey;
        renderTable(el.table, fns.data, {
          sort: state.sort,
          focus: state.focus,
          match: searchMatcher(),
          filter: true,
          onSort: (sort) => navigate({ sort }),
          onSelect: (name) => selectFunction(name),
          onSource: (row) => showSource(row),
        });
      }
      showError(null);
      setBusy(false);
    } catch (e) {
      if (my !== renderSeq) return;
      showError(e.status === 404 ? `No profile ${id} on this server.` : e.message);
      document.body.dataset.state = "error";
    }
  }

  /** [issue 14] The latency plot: every marker of the selected process/thread (the
   * selection is drawn, not fetched), its legend and the selection line. */
  async function renderMarkers(tl, my) {
    const p = new URLSearchParams();
    if (state.process) p.set("process", state.process);
    if (state.thread) p.set("thread", state.thread);
    const key = p.toString();
    if (key !== markerKey || !markerTable) {
      markerTable = (await cachedJSON(`${api}/markers?${p}`)).data;
      if (my !== renderSeq) return;
      markerKey = key;
      latency.setData(markerTable, markerTable.timeline_s);
    }
    const t = markerTable;
    // The x axis lines up with the curve above when both are one process's CPU time.
    const oneProcess = state.process || meta.summary.processes.length === 1;
    let end = 0;
    for (const x of t.timeline_s) if (x > end) end = x;
    if (tl.axis === "cpu" && oneProcess) latency.setRange(tl.start_s, Math.max(tl.end_s, end));
    else latency.setRange(0, end || 1);
    latency.setXTitle(tl.axis === "cpu" && oneProcess ? axisTitle("cpu") : "CPU time its process had used, s");
    latency.setHidden(state.marker ? t.names.filter((n) => n !== state.marker) : []);
    latency.setSelection(
      state.mfrom !== null || state.mto !== null || state.mmin !== null || state.mmax !== null
        ? { from: state.mfrom, to: state.mto, min: state.mmin, max: state.mmax }
        : null,
    );
    latency.draw();
    setChildren(
      el.markerLegend,
      t.stats.map((st) => {
        const k = t.names.indexOf(st.name);
        const sw = h("span", { class: "swatch" });
        sw.style.background = NAME_COLOURS[k % NAME_COLOURS.length];
        const on = state.marker === st.name;
        return h(
          "button",
          {
            type: "button",
            class: "chip marker-chip",
            "aria-pressed": on ? "true" : "false",
            title: `${st.name}: ${fmtInt(st.count)} requests, p50 ${fmtSeconds(st.p50_s)}, p90 ${fmtSeconds(st.p90_s)}, p99 ${fmtSeconds(st.p99_s)}, max ${fmtSeconds(st.max_s)}`,
            onclick: () => navigate({ marker: on ? "" : st.name }),
          },
          sw,
          ` ${st.name} `,
          h("span", { class: "muted" }, `${fmtInt(st.count)} · p50 ${fmtSeconds(st.p50_s)} · p99 ${fmtSeconds(st.p99_s)}`),
        );
      }),
    );
    const sel = markerSelected(state);
    el.clearMarkers.hidden = !sel;
    const parts = [];
    if (state.marker) parts.push(state.marker);
    if (state.mmin !== null || state.mmax !== null)
      parts.push(`${state.mmin !== null ? fmtSeconds(state.mmin) : "0"} – ${state.mmax !== null ? fmtSeconds(state.mmax) : "∞"} long`);
    if (state.mfrom !== null || state.mto !== null)
      parts.push(`started ${state.mfrom !== null ? fmtSeconds(state.mfrom) : "0"} – ${state.mto !== null ? fmtSeconds(state.mto) : "end"}`);
    el.markerSel.textContent = sel ? `only the samples inside requests: ${parts.join(", ") || "all"}` : "";
  }

  function searchMatcher() {
    if (!state.q) return null;
    try {
      return new RegExp(state.re ? state.q : searchRegex(state));
    } catch {
      return null;
    }
  }

  function drawTree(resp, layoutKey, searchError) {
    const data = resp.data;
    const fresh = graph.layoutKey !== layoutKey;
    if (fresh) {
      graph.setTree(data);
      graph.layoutKey = layoutKey;
    }
    graph.setUpward(state.view === "flame");
    graph.setColorBy(state.color);
    const re = searchMatcher();
    graph.setSearch(re);
    graph.setZoom(graph.nodeOfPath(state.zoom));
    graph.setHighlight(state.focus);
    matchCursor = -1;
    graph.draw();
    const now = performance.now();
    Object.assign(stats, {
      layoutMs: graph.stats.layoutMs,
      drawMs: graph.stats.drawMs,
      nodes: graph.stats.nodes,
      boxes: graph.stats.boxes,
      labels: graph.stats.labels,
    });
    if (fresh && resp.arrivedAt) {
      stats.firstPaintMs = now - resp.arrivedAt;
      stats.fetchMs = resp.fetchMs;
      stats.bytes = resp.bytes;
      const arrived = resp.arrivedAt;
      requestAnimationFrame(() => {
        stats.firstFrameMs = performance.now() - arrived;
      });
    } else if (pendingClickAt) {
      stats.redrawMs = now - pendingClickAt;
      stats.redraws.push({ drawMs: graph.stats.drawMs, sinceClickMs: stats.redrawMs, boxes: graph.stats.boxes });
    }
    pendingClickAt = 0;

    // Totals, search result, breadcrumbs, focus bar, folded note, legend.
    const all = meta.weight;
    const sel = data.total;
    const z = graph.zoom;
    if (z > 0) {
      const zw = graph.total[z];
      el.totals.textContent = `zoomed: ${fmtInt(zw)} of ${fmtInt(all)} samples (${fmtPct(zw, all)})`;
    } else {
      el.totals.textContent = `${fmtInt(sel)} of ${fmtInt(all)} samples (${fmtPct(sel, all)})`;
    }
    el.totals.dataset.total = String(sel);
    el.totals.dataset.shown = String(z > 0 ? graph.total[z] : sel);
    if (!state.q) {
      el.matched.textContent = "";
      delete el.matched.dataset.pct;
    } else if (searchError || !re) {
      el.matched.textContent = searchError || "not a valid regular expression";
      delete el.matched.dataset.pct;
    } else if (data.matched !== null && data.matched !== undefined) {
      const pct = sel ? (data.matched * 100) / sel : 0;
      el.matched.textContent = `matched ${fmtPct(data.matched, sel)} of samples (${fmtInt(data.matched)})`;
      el.matched.dataset.pct = pct.toFixed(4);
    }
    renderCrumbs();
    renderFocusBar();
    el.flameBox.dataset.rows = String(graph.rows);
    el.folded.textContent = data.folded_nodes
      ? `${fmtInt(data.folded_nodes)} smaller frames are merged into [other] boxes (node budget ${fmtInt(state.nodes || DEFAULT_NODES)}).`
      : "";
    renderLegend();
  }

  function renderCrumbs() {
    const path = graph.pathOf(graph.zoom);
    const ids = graph.idPathOf(graph.zoom);
    const items = [];
    const crumb = (label, k, current) => {
      const b = h("button", { type: "button", class: "crumb", title: label }, label);
      if (current) b.setAttribute("aria-current", "true");
      else
        b.addEventListener("click", () => {
          pendingClickAt = performance.now();
          navigate({ zoom: ids.slice(0, k) });
        });
      return b;
    };
    items.push(crumb("all", 0, path.length === 0));
    path.forEach((name, k) => {
      items.push(h("span", { class: "sep", "aria-hidden": "true" }, "›"));
      items.push(crumb(name, k + 1, k === path.length - 1));
    });
    setChildren(el.crumbs, items);
    // One line: the deepest crumbs in view.
    el.crumbs.scrollLeft = el.crumbs.scrollWidth;
    el.reset.disabled = path.length === 0 && !state.q;
  }

  function renderFocusBar() {
    if (!state.focus) {
      el.focusBar.replaceChildren();
      return;
    }
    const clear = h("button", { type: "button", class: "small", id: "clear-focus" }, "× clear");
    clear.addEventListener("click", () => navigate({ focus: "" }));
    const f = graph.tree ? graph.tree.functions.name.indexOf(state.focus) : -1;
    const file = f >= 0 ? graph.tree.functions.file[f] : null;
    const src = file ? h("button", { type: "button", class: "small", id: "focus-source" }, "source") : null;
    if (src) src.addEventListener("click", () => showSource({ file, line: graph.tree.functions.line[f] }));
    setChildren(el.focusBar, h("span", null, "Callers and callees of "), h("strong", { class: "fn" }, state.focus), " ", src, " ", clear);
  }

  /** A table row click: focus the function (its sandwich beside the table), and scroll
   * the flamegraph to its widest frame, outlined. */
  function selectFunction(name) {
    const next = name === state.focus ? "" : name;
    navigate({ focus: next });
    if (!next) return;
    requestAnimationFrame(() => {
      const i = graph.findNode(next);
      if (i < 0) return;
      const b = graph.boxOf(i);
      const r = el.flameCanvas.getBoundingClientRect();
      if (b) window.scrollBy({ top: r.top + b.y - window.innerHeight / 3, behavior: "instant" });
      graph.outlineNode(i);
    });
  }

  function drawSandwich(pair) {
    if (!pair) {
      el.sandwich.hidden = true;
      return;
    }
    el.sandwich.hidden = false;
    const [up, down] = pair;
    if (callers.tree !== up.data) callers.setTree(up.data);
    if (callees.tree !== down.data) callees.setTree(down.data);
    for (const g of [callers, callees]) {
      g.setColorBy(state.color);
      g.setSearch(searchMatcher());
      g.draw();
    }
  }

  function axisTitle(axis) {
    return axis === "wall" ? "wall-clock time (s)" : "CPU time (s, all selected threads)";
  }

  /** Says when the CPU-time axis is not the run's wall time (a busy multi-threaded run
   * has more CPU seconds than wall seconds; a mostly idle one fewer). */
  function renderAxisNote(tl) {
    const wall = meta.duration_s || 0;
    const cpu = tl.end_s - tl.start_s;
    if (tl.axis === "cpu" && wall > 0 && Math.abs(cpu - wall) > 0.1 * wall && state.from === null) {
      el.axisNote.textContent = `The axis is CPU time: ${fmtSeconds(cpu)} of CPU over the run's ${fmtSeconds(wall)} of wall-clock time. Choose wall-clock time above to see when things happened.`;
    } else {
      el.axisNote.textContent = "";
    }
  }

  function renderLegend() {
    const items = [];
    if (state.color === "module") {
      // Self weight by module, heaviest first.
      const t = graph.tree;
      const byModule = new Map();
      for (let i = 0; i < graph.n; i++) {
        const m = t.functions.module[graph.func[i]];
        byModule.set(m, (byModule.get(m) || 0) + t.nodes.self[i]);
      }
      const top = [...byModule.entries()].sort((a, b) => b[1] - a[1]).slice(0, 12);
      for (const [m, w] of top) {
        const sw = h("span", { class: "swatch" });
        sw.style.background = css(moduleRgb(m));
        items.push(h("span", { class: "item" }, sw, `${m || "(none)"} ${fmtPct(w, t.total)}`));
      }
    } else {
      for (let t = 0; t < TIERS.length; t++) {
        const sw = h("span", { class: "swatch" });
        sw.style.background = TIER_CSS[t];
        items.push(h("span", { class: "item", title: `frames where most samples are ${TIERS[t]}` }, sw, TIER_LABELS[TIERS[t]]));
      }
      items.unshift(h("span", { class: "muted" }, "frame colour = its dominant tier:"));
    }
    setChildren(el.legend, items);
  }

  // --- hooks for tests and the benchmark (bench/viewer.sh) ----------------------------------
  window.profViewer = {
    stats,
    state: () => ({ ...state }),
    /** Code-only in effect ("hide") or not ("show"). */
    nativeMode: () => nativeMode(),
    /** Rows the flamegraph canvas has (the visible depth + 1). */
    rows: () => graph.rows,
    /** Root weights of the sandwich: [callers, callees] (null without a focus). */
    sandwichTotals: () => (el.sandwich.hidden || !callers.tree ? null : [callers.tree.total, callees.tree.total]),
    timelineTitle: () => timeline.axisTitle,
    /** [issue 14] Markers the latency plot holds, and its plot box in viewport pixels. */
    latency: () => {
      if (!latency.data) return null;
      const r = el.latencyCanvas.getBoundingClientRect();
      return { markers: latency.data.n, left: r.left + 44, top: r.top + 8, right: r.right - 8, bottom: r.bottom - 34 };
    },
    /** The box of the widest drawn frame of function `name`, in viewport coordinates
     * (scrolled into view first), or null. */
    frameBox(name, which = "flame") {
      const g = which === "callers" ? callers : which === "callees" ? callees : graph;
      const i = g.findNode(name);
      if (i < 0) return null;
      let b = g.boxOf(i);
      let r = g.canvas.getBoundingClientRect();
      if (r.top + b.y < 0 || r.top + b.y + b.h > window.innerHeight) {
        window.scrollBy(0, r.top + b.y - window.innerHeight / 2);
        r = g.canvas.getBoundingClientRect();
        b = g.boxOf(i);
      }
      return { x: r.left + b.x, y: r.top + b.y, w: b.w, h: b.h };
    },
    /** Pixels of the flamegraph canvas that differ from the background. */
    paintedPixels(which = "flame") {
      const c =
        which === "latency" ? el.latencyCanvas : which === "timeline" ? el.timelineCanvas : which === "callers" ? el.callersCanvas : which === "callees" ? el.calleesCanvas : el.flameCanvas;
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      const [r0, g0, b0] = themeColours().bgRgb;
      let n = 0;
      for (let k = 0; k < d.length; k += 4) {
        if (d[k] !== r0 || d[k + 1] !== g0 || d[k + 2] !== b0) n++;
      }
      return { painted: n, of: d.length / 4 };
    },
  };

  render();
}
