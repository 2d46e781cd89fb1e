// Entry point: `/` is the profile list, `/p/{id}` the viewer of one profile.

import { initTheme } from "./colors.js";
import { startCompare } from "./compare.js";
import { startList } from "./list.js";
import { h, setChildren, showError } from "./util.js";
import { startViewer } from "./viewer.js";

// vmprof's client prints HOST/#/{id} (its own viewer's route): open the same profile here.
function openVmprofLink() {
  const legacy = /^#\/([0-9a-f]{16})\/?$/.exec(window.location.hash);
  if (window.location.pathname !== "/" || !legacy) {
    return false;
  }
  window.location.replace(`/p/${legacy[1]}`);
  return true;
}

function main() {
  initTheme(() => window.dispatchEvent(new Event("prof-theme")));
  const app = document.getElementById("app");
  if (openVmprofLink()) {
    return;
  }
  window.addEventListener("hashchange", openVmprofLink);
  const m = /^\/p\/([^/]+)\/?$/.exec(window.location.pathname);
  const c = /^\/compare\/([^/]+)\/([^/]+)\/?$/.exec(window.location.pathname);
  if (m) {
    startViewer(app, decodeURIComponent(m[1]));
  } else if (c) {
    startCompare(app, decodeURIComponent(c[1]), decodeURIComponent(c[2]));
  } else if (window.location.pathname === "/") {
    startList(app);
  } else {
    setChildren(app, h("p", null, h("a", { href: "/" }, "all profiles")));
    showError(`Nothing here: ${window.location.pathname}`);
  }
}

window.addEventListener("error", (ev) => showError(`The viewer failed: ${ev.message}`));
window.addEventListener("unhandledrejection", (ev) =>
  showError(`The viewer failed: ${ev.reason && ev.reason.message ? ev.reason.message : ev.reason}`),
);

main();
