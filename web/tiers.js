// The tiers, their labels and colours, from web/palette.json: the one definition the
// viewer, the exports and the plain pages share (issue 16).

import palette from "./palette.json" with { type: "json" };

export const TIERS = palette.tiers;
export const TIER_LABELS = palette.labels;

function rgb(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

export const TIER_RGB = TIERS.map((t) => rgb(palette.colours[t]));
export const DIFF_RGB = { less: rgb(palette.diff.less), more: rgb(palette.diff.more), same: rgb(palette.diff.same) };
