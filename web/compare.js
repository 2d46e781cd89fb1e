// The comparison of two profiles (`/compare/{base}/{id}`): a differential flamegraph of
// the profile — frame widths are its own shares, colours the change of each frame's share
// against the base (blue: less, orange: more; colour-blind safe) — and the table of the
// functions whose share changed most, with the viewer's search, code-only and tier filters.
// The data is `/api/v1/profiles/{id}/diff?base={base}`.

import { cachedJSON, getJSON } from "./api.js";
import { DIFF_LEVELS, DIFF_RGB, TIERS, TIER_CSS, css } from "./colors.js";
import { FlameGraph } from "./flame.js";
import { $, debounce, escapeRegex, fmtPct, h, setChildren, showError } from "./util.js";

function signed(x) {
  const v = (x * 100).toFixed(1);
  return x > 0 ? `+${v}%` : `${v}%`;
}

export function startCompare(app, base, id) {
  const params = new URLSearchParams(window.location.search);
  const state = {
    q: params.get("q") || "",
    native: params.get("native") || "",
    tiers: (params.get("tier") || "").split(",").filter((t) => TIERS.includes(t)),
  };
  const enc = encodeURIComponent;
  const el = {
    head: h("section", { class: "summary", id: "compare-head" }),
    search: h("input", { type: "search", id: "search", placeholder: "search functions ( / )", "aria-label": "search functions" }),
    codeOnly: h("input", { type: "checkbox", id: "code-only" }),
    tiers: h("span", { class: "tiers", id: "tier-filter", role: "group", "aria-label": "tier filter" }),
    legend: h("div", { class: "legend", id: "legend" }),
    flameBox: h("div", { class: "canvas-box" }),
    flameCanvas: h("canvas", { id: "flame", "aria-label": "differential flamegraph" }),
    table: h("div", { id: "changes" }),
  };
  el.flameBox.appendChild(el.flameCanvas);
  setChildren(
    app,
    el.head,
    h(
      "section",
      { class: "panel" },
      h("div", { class: "toolbar" }, el.search, h("label", { class: "small" }, el.codeOnly, " code only"), h("span", { class: "label muted" }, "tiers:"), el.tiers),
      h("div", { class: "flame-row" }, el.flameBox, h("aside", { class: "side" }, el.legend)),
    ),
    h("section", { class: "panel" }, h("h2", null, "Biggest changes"), el.table),
  );
  const tooltip = $("tooltip");
  const graph = new FlameGraph(el.flameCanvas, {
    upward: false,
    onClick: (i) => {
      graph.setZoom(graph.zoom === i ? Math.max(0, graph.parent[i]) : i);
      graph.draw();
    },
    onHover: (i, ev) => {
      if (i < 0 || !graph.tree) {
        tooltip.hidden = true;
        return;
      }
      const n = graph.tree.nodes;
      const f = graph.info(i);
      setChildren(
        tooltip,
        h("div", { class: "tt-name" }, f.name),
        h("div", { class: "tt-mod" }, `module: ${f.module}`),
        h("div", { class: "tt-nums" }, `now ${fmtPct(n.share[i], 1)} · base ${fmtPct(n.base_share[i], 1)} · change ${signed(n.share[i] - n.base_share[i])}`),
      );
      tooltip.hidden = false;
      tooltip.style.left = `${ev.clientX + 14}px`;
      tooltip.style.top = `${ev.clientY + 14}px`;
    },
  });
  let meta = null;

  function update(patch) {
    Object.assign(state, patch);
    const p = new URLSearchParams();
    if (state.q) p.set("q", state.q);
    if (state.native) p.set("native", state.native);
    if (state.tiers.length) p.set("tier", state.tiers.join(","));
    const qs = p.toString();
    window.history.replaceState(null, "", `${window.location.pathname}${qs ? `?${qs}` : ""}`);
    render();
  }

  // The same tier filter as the viewer's: both profiles' samples of these tiers only.
  for (let t = 0; t < TIERS.length; t++) {
    const sw = h("span", { class: "swatch" });
    sw.style.background = TIER_CSS[t];
    const b = h("button", { type: "button", class: "tier small", dataset: { tier: TIERS[t] } }, sw, TIERS[t]);
    b.setAttribute("aria-pressed", state.tiers.includes(TIERS[t]) ? "true" : "false");
    b.addEventListener("click", () => {
      const set = new Set(state.tiers);
      if (set.has(TIERS[t])) set.delete(TIERS[t]);
      else set.add(TIERS[t]);
      b.setAttribute("aria-pressed", set.has(TIERS[t]) ? "true" : "false");
      update({ tiers: TIERS.filter((x) => set.has(x)) });
    });
    el.tiers.appendChild(b);
  }
  el.search.value = state.q;
  el.search.addEventListener("input", debounce(() => update({ q: el.search.value }), 200));
  el.codeOnly.addEventListener("change", () => update({ native: el.codeOnly.checked ? "hide" : "show" }));
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "/" && !(ev.target instanceof HTMLInputElement)) {
      ev.preventDefault();
      el.search.focus();
    } else if (ev.key === "Escape") {
      graph.setZoom(0);
      graph.draw();
    }
  });
  window.addEventListener("prof-theme", () => {
    graph.recolor();
    graph.draw();
  });
  window.addEventListener("resize", debounce(() => graph.draw(), 100));

  const sw = (rgb) => {
    const s = h("span", { class: "swatch" });
    s.style.background = css(rgb);
    return s;
  };
  setChildren(
    el.legend,
    h("span", { class: "item" }, sw(DIFF_RGB.less), "less than the base"),
    h("span", { class: "item" }, sw(DIFF_RGB.same), "about the same"),
    h("span", { class: "item" }, sw(DIFF_RGB.more), "more than the base"),
    h("span", { class: "muted small" }, "frame width: share in this profile; colour: change of share"),
  );

  async function render() {
    document.body.dataset.state = "loading";
    try {
      if (!meta) {
        const [a, b] = await Promise.all([getJSON(`/api/v1/profiles/${enc(id)}`), getJSON(`/api/v1/profiles/${enc(base)}`)]);
        meta = { a, b };
        document.title = `prof: ${b.name} → ${a.name}`;
        setChildren(
          el.head,
          h("h1", null, "Compare"),
          h(
            "p",
            null,
            "base ",
            h("a", { href: `/p/${enc(base)}`, id: "base-link" }, b.name),
            " → ",
            h("a", { href: `/p/${enc(id)}`, id: "profile-link" }, a.name),
          ),
        );
      }
      const native = state.native || (meta.a.mostly_program_code ? "hide" : "show");
      el.codeOnly.checked = native === "hide";
      const tier = state.tiers.length ? `&tier=${state.tiers.join(",")}` : "";
      const resp = await cachedJSON(`/api/v1/profiles/${enc(id)}/diff?base=${enc(base)}&native=${native}&limit=200${tier}`);
      const d = resp.data;
      const n = d.nodes.parent.length;
      let maxAbs = 0.01;
      for (let i = 1; i < n; i++) maxAbs = Math.max(maxAbs, Math.abs(d.nodes.share[i] - d.nodes.base_share[i]));
      const levels = new Float32Array(n);
      for (let i = 0; i < n; i++) levels[i] = ((d.nodes.share[i] - d.nodes.base_share[i]) / maxAbs) * DIFF_LEVELS;
      if (graph.tree !== d) {
        graph.setTree(d);
        graph.setDiff(levels);
      }
      let re = null;
      if (state.q) re = new RegExp(escapeRegex(state.q));
      graph.setSearch(re);
      graph.draw();
      renderChanges(d.changes, re);
      document.body.dataset.state = "ready";
    } catch (e) {
      showError(e.status === 404 ? `No such profile on this server: ${e.message}` : e.message);
      document.body.dataset.state = "error";
    }
  }

  function renderChanges(rows, re) {
    const shown = re ? rows.filter((r) => re.test(r.name)) : rows;
    const body = h("tbody");
    for (const r of shown.slice(0, 100)) {
      const ds = r.self - r.base_self;
      const tr = h(
        "tr",
        { dataset: { name: r.name } },
        h("td", { class: "fn" }, r.name),
        h("td", { class: "mod" }, r.module),
        h("td", { class: `n delta ${ds > 0 ? "more" : ds < 0 ? "less" : ""}` }, signed(ds)),
        h("td", { class: "n" }, fmtPct(r.self, 1)),
        h("td", { class: "n" }, fmtPct(r.base_self, 1)),
        h("td", { class: "n" }, signed(r.total - r.base_total)),
        h("td", { class: "n" }, fmtPct(r.total, 1)),
        h("td", { class: "n" }, fmtPct(r.base_total, 1)),
      );
      body.appendChild(tr);
    }
    setChildren(
      el.table,
      h(
        "table",
        { class: "functions changes" },
        h(
          "thead",
          null,
          h("tr", null, ["function", "module", "Δ self", "self", "base self", "Δ total", "total", "base total"].map((c, k) => h("th", { class: k > 1 ? "n" : "" }, c))),
        ),
        body,
      ),
    );
  }

  render();
}
