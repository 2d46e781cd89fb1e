// The profile list (`/`): name, command, date, duration, samples and a tier mini-bar per
// profile; a name filter; delete with a token (the delete buttons show only once a token
// is set: on a server with tokens nobody else may delete, and on one without, deleting is
// still a deliberate act).

import { deleteProfile, getJSON, setToken, token } from "./api.js";
import { TIERS } from "./colors.js";
import { tierBar } from "./table.js";
import { debounce, fmtDate, fmtInt, fmtSeconds, h, setChildren, showError } from "./util.js";

const PAGE = 50;

export function startList(app) {
  document.title = "prof: profiles";
  const status = h("p", { class: "muted", id: "list-status" }, "loading…");
  const tbody = h("tbody");
  const more = h("button", { type: "button", hidden: true }, "more");
  const nameInput = h("input", {
    type: "search",
    id: "name-filter",
    placeholder: "filter by name",
    "aria-label": "filter profiles by name",
  });
  const tokenInput = h("input", {
    type: "password",
    id: "token",
    placeholder: "token",
    autocomplete: "off",
    "aria-label": "bearer token for deleting (and reading private servers)",
  });
  tokenInput.value = token();
  const tokenState = h("span", { class: "muted small" }, token() ? "token set" : "");
  const saveToken = h("button", { type: "button" }, "use token");
  saveToken.addEventListener("click", () => {
    setToken(tokenInput.value.trim());
    tokenState.textContent = token() ? "token set" : "no token";
    reload();
  });

  setChildren(
    app,
    h(
      "section",
      { class: "toolbar" },
      h("h1", null, "Profiles"),
      nameInput,
      h("span", { class: "spacer" }),
      tokenInput,
      saveToken,
      tokenState,
    ),
    status,
    h(
      "table",
      { class: "profiles" },
      h(
        "thead",
        null,
        h(
          "tr",
          null,
          h("th", null, "name"),
          h("th", null, "command"),
          h("th", null, "date"),
          h("th", { class: "n" }, "duration"),
          h("th", { class: "n" }, "samples"),
          h("th", null, "tiers"),
          h("th", null, ""),
        ),
      ),
      tbody,
    ),
    more,
    h(
      "p",
      { class: "muted small" },
      "Upload with ",
      h("code", null, "prof run --web=URL -- CMD"),
      " or ",
      h("code", null, "prof upload PATH --server URL"),
      ".",
    ),
  );

  let offset = 0;
  let seq = 0;

  function row(p) {
    const tiers = p.tiers ? TIERS.map((t) => p.tiers[t] || 0) : null;
    const del = token() ? h("button", { type: "button", class: "danger small", title: "delete this profile" }, "delete") : null;
    const tr = h(
      "tr",
      null,
      h("td", null, h("a", { href: `/p/${encodeURIComponent(p.id)}` }, p.name || p.id)),
      h("td", null, h("code", { class: "cmd" }, p.command)),
      h("td", { title: p.created }, fmtDate(p.created)),
      h("td", { class: "n" }, fmtSeconds(p.duration_s)),
      h("td", { class: "n" }, fmtInt(p.samples)),
      h("td", null, tiers ? tierBar(tiers) : h("span", { class: "muted small" }, "analyzing…")),
      h("td", null, del),
    );
    if (del) del.addEventListener("click", async () => {
      if (!window.confirm(`Delete the profile "${p.name}"?`)) return;
      try {
        await deleteProfile(p.id);
        tr.remove();
        showError(null);
        reload();
      } catch (e) {
        showError(`Could not delete: ${e.message}`);
      }
    });
    return tr;
  }

  async function load(append) {
    const my = ++seq;
    const q = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
    const name = nameInput.value.trim();
    if (name) q.set("name", name);
    try {
      const page = await getJSON(`/api/v1/profiles?${q}`);
      if (my !== seq) return;
      if (!append) tbody.replaceChildren();
      for (const p of page.items) tbody.appendChild(row(p));
      offset += page.items.length;
      more.hidden = offset >= page.total;
      status.textContent =
        page.total === 0
          ? name
            ? "No profile matches."
            : "No profiles yet."
          : `${fmtInt(page.total)} profile${page.total === 1 ? "" : "s"}`;
      showError(null);
      document.body.dataset.state = "ready";
    } catch (e) {
      if (my !== seq) return;
      status.textContent = "";
      showError(`Could not list the profiles: ${e.message}`);
      document.body.dataset.state = "error";
    }
  }

  function reload() {
    offset = 0;
    load(false);
  }

  more.addEventListener("click", () => load(true));
  nameInput.addEventListener("input", debounce(reload, 250));
  reload();
}
