// The top functions table (self, total, tier split), sortable by any column, filtered by
// the search; a row click selects the function (its callers and callees beside the
// table, its frames outlined in the flamegraph); a row's "src" button opens its source.

import { TIERS, TIER_CSS } from "./colors.js";
import { fmtInt, fmtPct, h, location, setChildren } from "./util.js";

/** A horizontal bar of tier shares: `counts` has 6 numbers. */
export function tierBar(counts, cls = "tierbar") {
  const sum = counts.reduce((a, b) => a + b, 0);
  const bar = h("span", { class: cls });
  const parts = [];
  if (sum > 0) {
    for (let t = 0; t < 6; t++) {
      if (!counts[t]) continue;
      const seg = h("span", { class: "seg" });
      seg.style.width = `${(counts[t] * 100) / sum}%`;
      seg.style.background = TIER_CSS[t];
      bar.appendChild(seg);
      parts.push(`${TIERS[t]} ${fmtPct(counts[t], sum)}`);
    }
  }
  bar.setAttribute("title", parts.join(", ") || "no samples");
  bar.setAttribute("aria-label", parts.join(", ") || "no samples");
  return bar;
}

const COLUMNS = [
  { key: "name", label: "function", numeric: false },
  { key: "module", label: "module", numeric: false },
  { key: "self", label: "self", numeric: true },
  { key: "total", label: "total", numeric: true },
];

/** Rows of a `/functions` response, as objects. */
export function rowsOf(data) {
  const f = data.functions;
  const rows = [];
  for (let i = 0; i < f.name.length; i++) {
    rows.push({
      name: f.name[i],
      module: f.module[i],
      file: f.file[i],
      line: f.line[i],
      self: data.self[i],
      total: data.total_weight[i],
      tiers: data.total_tiers.slice(6 * i, 6 * i + 6),
    });
  }
  return rows;
}

export function sortRows(rows, sort) {
  const desc = sort.startsWith("-");
  const key = sort.replace(/^-/, "");
  const numeric = key === "self" || key === "total";
  // Numbers default to descending, names to ascending; "-" flips.
  const sign = numeric ? (desc ? 1 : -1) : desc ? -1 : 1;
  const other = key === "self" ? "total" : "self";
  return rows.slice().sort((a, b) => {
    let c;
    if (numeric) c = a[key] - b[key] || a[other] - b[other];
    else c = a[key] < b[key] ? -1 : a[key] > b[key] ? 1 : 0;
    return sign * c || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  });
}

function srcButton(row, onSource) {
  const b = h("button", { type: "button", class: "small src", title: `source of ${row.name}` }, "src");
  b.addEventListener("click", (ev) => {
    ev.stopPropagation();
    onSource(row);
  });
  return b;
}

/** Fills `container` with the table. */
export function renderTable(container, data, opts) {
  const { sort, focus, match, filter, onSort, onSelect, onSource } = opts;
  const total = data.total;
  const all = sortRows(rowsOf(data), sort);
  // The search filters the table (the focused function stays, so it can be cleared).
  const rows = filter && match ? all.filter((r) => match.test(r.name) || r.name === focus) : all;
  const key = sort.replace(/^-/, "");
  const head = h(
    "tr",
    null,
    COLUMNS.map((c) => {
      const active = c.key === key;
      const arrow = active ? (sort.startsWith("-") !== c.numeric ? " ▼" : " ▲") : "";
      const th = h(
        "th",
        {
          class: c.numeric ? "n sortable" : "sortable",
          "aria-sort": active ? (arrow === " ▼" ? "descending" : "ascending") : "none",
          tabindex: "0",
          dataset: { key: c.key },
        },
        c.label + arrow,
      );
      const go = () => onSort(active ? (sort.startsWith("-") ? c.key : `-${c.key}`) : c.key);
      th.addEventListener("click", go);
      th.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") {
          ev.preventDefault();
          go();
        }
      });
      return th;
    }),
    h("th", null, "tiers (total)"),
    h("th", null, ""),
  );
  // Self/total columns get a percentage next to the count.
  head.children[2].setAttribute("colspan", "2");
  head.children[3].setAttribute("colspan", "2");
  const body = h("tbody");
  for (const r of rows) {
    const tr = h(
      "tr",
      {
        class: [r.name === focus ? "focused" : "", match && match.test(r.name) ? "match" : ""]
          .filter(Boolean)
          .join(" "),
        tabindex: "0",
        title: location(r.file, r.line) || null,
      },
      h("td", { class: "fn" }, r.name),
      h("td", { class: "mod" }, r.module),
      h("td", { class: "n" }, fmtInt(r.self)),
      h("td", { class: "n pct" }, fmtPct(r.self, total)),
      h("td", { class: "n" }, fmtInt(r.total)),
      h("td", { class: "n pct" }, fmtPct(r.total, total)),
      h("td", null, tierBar(r.tiers)),
      h("td", { class: "src-cell" }, r.file && onSource ? srcButton(r, onSource) : null),
    );
    tr.dataset.name = r.name;
    tr.addEventListener("click", () => onSelect(r.name));
    tr.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") onSelect(r.name);
    });
    body.appendChild(tr);
  }
  const table = h("table", { class: "functions" }, h("thead", null, head), body);
  let note =
    data.count > all.length
      ? `${fmtInt(all.length)} of ${fmtInt(data.count)} functions (the heaviest by self time)`
      : `${fmtInt(all.length)} functions`;
  if (rows.length !== all.length) note = `${fmtInt(rows.length)} matching the search; ${note}`;
  setChildren(container, h("p", { class: "muted small", id: "fn-count" }, note), table);
}
