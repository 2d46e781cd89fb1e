// The viewer of one profile (`/p/{id}`): summary, filters (process, thread, axis, tiers),
// the warmup curve with its time-range brush, the flamegraph (search, zoom, breadcrumbs,
// callers/callees of a focused function) and the function table. Everything the user
// changes goes into the URL first (state.js); `render()` then brings the page in line
// with the URL, fetching what it lacks (the server aggregates, the browser only draws).

import { cachedJSON, getJSON } from "./api.js";
import { TIERS, TIER_CSS, TIER_LABELS, css, moduleRgb, themeColours } from "./colors.js";
import { FlameGraph } from "./flame.js";
import { DEFAULT_NODES, filterParams, parse, searchRegex, serialize } from "./state.js";
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
  el.timelineBox.appendChild(el.timelineCanvas);
  el.callersBox.appendChild(el.callersCanvas);
  el.flameBox.appendChild(el.flameCanvas);

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
      { class: "panel" },
      h("div", { class: "panel-head" }, h("h2", null, "Tiers over time"), el.range, el.clearRange),
      el.timelineBox,
      h("p", { class: "muted small" }, "Share of each tier per time slice; the line is how many samples the slice holds. Drag to select a time range, click to clear it."),
    ),
    h(
      "section",
      { class: "panel" },
      h(
        "div",
        { class: "toolbar" },
        el.search,
        h("label", { class: "small" }, el.regex, " regex"),
        el.matched,
        h("span", { class: "spacer" }),
        el.totals,
        el.viewBtn,
        el.color,
        el.reset,
      ),
      el.crumbs,
      el.focusBar,
      el.callersBox,
      el.flameBox,
      el.folded,
      el.legend,
    ),
    h("section", { class: "panel" }, h("h2", null, "Functions"), el.table),
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
        h("div", { class: "tt-hint muted" }, "click to zoom"),
      ),
      ev,
    );
  }

  // --- components -------------------------------------------------------------------------
  const graph = new FlameGraph(el.flameCanvas, {
    onClick: (i) => {
      pendingClickAt = performance.now();
      navigate({ zoom: graph.pathOf(i) });
    },
    onHover: (i, ev) => frameTooltip(graph, i, ev),
  });
  const callers = new FlameGraph(el.callersCanvas, {
    upward: true,
    onClick: (i) => {
      const name = callers.info(i).name;
      if (i > 0 && name !== state.focus) navigate({ focus: name, zoom: [] });
    },
    onHover: (i, ev) => frameTooltip(callers, i, ev),
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

  function round(t) {
    return Math.round(t * 1e6) / 1e6;
  }

  // --- navigation ---------------------------------------------------------------------------
  function navigate(patch, { replace = false } = {}) {
    const next = { ...state, ...patch };
    if ("focus" in patch && patch.focus !== state.focus && !("zoom" in patch)) next.zoom = [];
    if ("axis" in patch && patch.axis !== state.axis) next.from = next.to = null;
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
  el.viewBtn.addEventListener("click", () => navigate({ view: state.view === "flame" ? "icicle" : "flame" }));
  el.color.addEventListener("change", () => navigate({ color: el.color.value }));
  el.reset.addEventListener("click", () => resetView());
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

  document.addEventListener("keydown", (ev) => {
    const t = ev.target;
    const typing = t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement;
    if (ev.key === "/" && !typing && !ev.ctrlKey && !ev.metaKey && !ev.altKey) {
      ev.preventDefault();
      el.search.focus();
      el.search.select();
    } else if (ev.key === "Escape") {
      if (typing) t.blur();
      hideTooltip();
      resetView();
    }
  });

  window.addEventListener("prof-theme", () => {
    graph.recolor();
    callers.recolor();
    drawAll();
  });
  window.addEventListener(
    "resize",
    debounce(() => drawAll(), 100),
  );

  function drawAll() {
    if (graph.tree) graph.draw();
    if (!el.callersBox.hidden && callers.tree) callers.draw();
    if (timeline.data) timeline.draw();
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
    const download = h("a", { href: `${api}/download` }, "download");
    const plain = h("a", { href: `/plain/p/${encodeURIComponent(id)}` }, "plain page");
    setChildren(
      el.summary,
      h("h1", null, meta.name),
      h("p", null, h("code", { class: "cmd" }, meta.command)),
      h("p", { class: "muted" }, facts.join(" · "), " · ", download, " · ", plain),
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
    const total = TIERS.reduce((a, t) => a + (meta.tiers[t] || 0), 0);
    for (const b of el.tierButtons.children) {
      const w = meta.tiers[b.dataset.tier] || 0;
      b.querySelector(".tier-share").textContent = ` ${fmtPct(w, total)}`;
      if (!w) b.classList.add("empty");
    }
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
    el.clearRange.hidden = state.from === null;
    el.range.textContent =
      state.from === null ? "" : `range ${fmtSeconds(state.from)} – ${fmtSeconds(state.to)}`;
  }

  // --- rendering ----------------------------------------------------------------------------
  function treeURL(search) {
    const p = filterParams(state);
    p.set("max_nodes", String(state.nodes || DEFAULT_NODES));
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
      const tlParams = filterParams(state, { range: false, tiers: false });
      tlParams.set("buckets", String(TIMELINE_BUCKETS));
      const fnParams = filterParams(state);
      fnParams.set("limit", String(TABLE_ROWS));
      fnParams.set("sort", state.sort.replace(/^-/, "") === "total" ? "total" : "self");
      const treeP = cachedJSON(treeURL(search));
      const tlP = cachedJSON(`${api}/timeline?${tlParams}`);
      const fnP = cachedJSON(`${api}/functions?${fnParams}`);
      let callersP = null;
      if (state.focus) {
        const cp = filterParams(state);
        cp.set("invert", "1");
        cp.set("max_nodes", String(CALLERS_NODES));
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
      timeline.draw();

      const callersTree = callersP ? await callersP : null;
      if (my !== renderSeq) return;
      drawCallers(callersTree);

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
        onSort: (sort) => navigate({ sort }),
        onSelect: (name) => navigate({ focus: name === state.focus ? "" : name }),
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
    el.totals.textContent = `${fmtInt(sel)} of ${fmtInt(all)} samples (${fmtPct(sel, all)})`;
    el.totals.dataset.total = String(sel);
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
    el.folded.textContent = data.folded_nodes
      ? `${fmtInt(data.folded_nodes)} smaller frames are merged into [other] boxes (node budget ${fmtInt(state.nodes || DEFAULT_NODES)}).`
      : "";
    renderLegend();
  }

  function renderCrumbs() {
    const path = graph.pathOf(graph.zoom);
    const items = [];
    const crumb = (label, k, current) => {
      const b = h("button", { type: "button", class: "crumb", title: label }, label);
      if (current) b.setAttribute("aria-current", "true");
      else
        b.addEventListener("click", () => {
          pendingClickAt = performance.now();
          navigate({ zoom: path.slice(0, k) });
        });
      return b;
    };
    items.push(crumb(state.focus ? "all (focused)" : "all", 0, path.length === 0));
    path.forEach((name, k) => {
      items.push(h("span", { class: "sep", "aria-hidden": "true" }, "›"));
      items.push(crumb(name, k + 1, k === path.length - 1));
    });
    setChildren(el.crumbs, items);
    el.reset.disabled = path.length === 0 && !state.q;
  }

  function renderFocusBar() {
    if (!state.focus) {
      el.focusBar.hidden = true;
      el.focusBar.replaceChildren();
      return;
    }
    el.focusBar.hidden = false;
    const clear = h("button", { type: "button", class: "small", id: "clear-focus" }, "× clear focus");
    clear.addEventListener("click", () => navigate({ focus: "" }));
    setChildren(
      el.focusBar,
      h("span", null, "Callers (above) and callees (below) of "),
      h("strong", { class: "fn" }, state.focus),
      " ",
      clear,
    );
  }

  function drawCallers(resp) {
    if (!resp) {
      el.callersBox.hidden = true;
      return;
    }
    el.callersBox.hidden = false;
    if (callers.tree !== resp.data) callers.setTree(resp.data);
    callers.setColorBy(state.color);
    callers.setSearch(searchMatcher());
    callers.draw();
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
    /** The box of the widest drawn frame of function `name`, in viewport coordinates
     * (scrolled into view first), or null. */
    frameBox(name, which = "flame") {
      const g = which === "callers" ? callers : graph;
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
      const c = which === "timeline" ? el.timelineCanvas : which === "callers" ? el.callersCanvas : el.flameCanvas;
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
