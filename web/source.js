// The source panel: one file's lines with per-line self and total bars, from
// `/api/v1/profiles/{id}/lines?file=PATH` (the text is there when `prof run` stored it;
// otherwise only the lines that have samples are listed).

import { getJSON } from "./api.js";
import { fmtInt, fmtPct, h, setChildren } from "./util.js";

function bar(value, max, cls) {
  const b = h("span", { class: `linebar ${cls}` });
  b.style.width = `${max > 0 ? Math.max(value > 0 ? 1 : 0, (value * 60) / max) : 0}px`;
  return b;
}

/** Shows file `file` in `panel` (a hidden section), scrolled to line `line`. */
export async function openSource(panel, api, file, line, onClose) {
  const data = await getJSON(`${api}/lines?file=${encodeURIComponent(file)}`);
  const costs = data.lines || {};
  let maxSelf = 0;
  let maxTotal = 0;
  for (const k of Object.keys(costs)) {
    maxSelf = Math.max(maxSelf, costs[k].self);
    maxTotal = Math.max(maxTotal, costs[k].total);
  }
  const numbers = data.source
    ? data.source.map((_, i) => i + 1)
    : Object.keys(costs)
        .map(Number)
        .sort((a, b) => a - b);
  const rows = numbers.map((n) => {
    const c = costs[String(n)] || { self: 0, total: 0 };
    const text = data.source ? data.source[n - 1] : "";
    const tr = h(
      "tr",
      { class: c.total ? "hot" : "", dataset: { line: String(n) } },
      h("td", { class: "n ln" }, String(n)),
      h("td", { class: "n", title: `self ${fmtInt(c.self)} (${fmtPct(c.self, data.total)})` }, c.self ? fmtPct(c.self, data.total) : ""),
      h("td", null, bar(c.self, maxSelf, "self")),
      h("td", { class: "n", title: `total ${fmtInt(c.total)} (${fmtPct(c.total, data.total)})` }, c.total ? fmtPct(c.total, data.total) : ""),
      h("td", null, bar(c.total, maxTotal, "total")),
      h("td", { class: "code" }, h("pre", null, text)),
    );
    if (n === line) tr.classList.add("current");
    return tr;
  });
  const close = h("button", { type: "button", class: "small", id: "close-source" }, "× close");
  close.addEventListener("click", () => {
    panel.hidden = true;
    if (onClose) onClose();
  });
  setChildren(
    panel,
    h(
      "div",
      { class: "panel-head" },
      h("h2", null, "Source"),
      h("code", { id: "source-file" }, file),
      h("span", { class: "spacer" }),
      close,
    ),
    data.source
      ? null
      : h("p", { class: "muted small" }, "The profile has no copy of this file (prof run stores the program's own script files unless --no-source): only its sampled lines are listed."),
    h(
      "div",
      { class: "source-scroll" },
      h(
        "table",
        { class: "source", id: "source-lines" },
        h("thead", null, h("tr", null, h("th", { class: "n" }, "line"), h("th", { colspan: "2" }, "self"), h("th", { colspan: "2" }, "total"), h("th", null, "code"))),
        h("tbody", null, rows),
      ),
    ),
  );
  panel.hidden = false;
  const cur = panel.querySelector("tr.current");
  if (cur) cur.scrollIntoView({ block: "center" });
  panel.scrollIntoView({ block: "nearest" });
  return data;
}
