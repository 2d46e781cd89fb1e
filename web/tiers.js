// The tiers, their labels and colours, from web/palette.json: the one definition the
// viewer, the exports and the plain pages share (issue 16).

// Read at module load (top-level await): over HTTP in the browser; from the file under
// node's test runner (web/tests), whose fetch has no file: URLs. (A JSON module import
// would do, but its syntax differs between Debian's node 18 and current browsers.)
const url = new URL("./palette.json", import.meta.url);
const palette =
  url.protocol === "file:"
    ? JSON.parse((await import("node:fs")).readFileSync(url, "utf8"))
    : await (await fetch(url)).json();

export const TIERS = palette.tiers;
export const TIER_LABELS = palette.labels;

function rgb(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

export const TIER_RGB = TIERS.map((t) => rgb(palette.colours[t]));
export const DIFF_RGB = { less: rgb(palette.diff.less), more: rgb(palette.diff.more), same: rgb(palette.diff.same) };
