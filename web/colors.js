// Tier colours, frame shades and the light/dark theme.
//
// Tiers use the Okabe-Ito palette, which stays distinguishable with the common forms of
// colour blindness; no pair of tiers is told apart by red versus green alone. Frames of
// one tier vary slightly in lightness (by function name) so neighbours stay separable.

import { DIFF_RGB, TIERS, TIER_LABELS, TIER_RGB } from "./tiers.js";

export { DIFF_RGB, TIERS, TIER_LABELS, TIER_RGB };

/** Levels of the differential colours on each side of "no change". */
export const DIFF_LEVELS = 8;

export function css([r, g, b]) {
  return `rgb(${r | 0},${g | 0},${b | 0})`;
}

export const TIER_CSS = TIER_RGB.map(css);

/** Relative luminance (sRGB), 0..1. */
function luminance([r, g, b]) {
  const f = (c) => {
    c /= 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
}

/** Black or white, whichever reads better on `rgb`. */
export function textOn(rgb) {
  return luminance(rgb) > 0.2 ? "#111" : "#fff";
}

function mix(a, b, t) {
  return [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t];
}

export function hashString(s) {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  return h >>> 0;
}

export const SHADES = 6;

function hslToRgb(h, s, l) {
  const a = s * Math.min(l, 1 - l);
  const f = (n) => {
    const k = (n + h / 30) % 12;
    return 255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1)));
  };
  return [f(0), f(8), f(4)];
}

/** A colour for a module name: evenly spread hues by hash. */
export function moduleRgb(name) {
  if (!name) return [0xa8, 0xa8, 0xa8];
  const h = hashString(name);
  return hslToRgb((h % 360 + 360) % 360, 0.55, 0.6 + ((h >>> 9) % 3) * 0.05);
}

/** A palette for drawing: `fill[i]`, `faded[i]` (for frames a search did not match) and
 * `text[i]` for each colour `i`, given the page background. */
export class Palette {
  constructor(background) {
    this.background = background;
    this.rgb = [];
    this.fill = [];
    this.faded = [];
    this.text = [];
    this.index = new Map();
  }

  /** Index of colour `rgb` (added on first use), keyed by `key`. */
  add(key, rgb) {
    let i = this.index.get(key);
    if (i !== undefined) return i;
    i = this.rgb.length;
    this.index.set(key, i);
    this.rgb.push(rgb);
    this.fill.push(css(rgb));
    this.faded.push(css(mix(rgb, this.background, 0.75)));
    this.text.push(textOn(rgb));
    return i;
  }

  /** Colour index of tier `t` in shade `s` (0..SHADES-1). */
  tier(t, s) {
    const base = TIER_RGB[t];
    const k = (s - (SHADES - 1) / 2) * 0.05;
    const rgb = k >= 0 ? mix(base, [255, 255, 255], k) : mix(base, [0, 0, 0], -k);
    return this.add(`t${t}.${s}`, rgb);
  }

  module(name) {
    return this.add(`m${name}`, moduleRgb(name));
  }

  /** Colour index of a change `level` (-DIFF_LEVELS: much less, 0: same, +DIFF_LEVELS:
   * much more) on the colour-blind-safe diverging scale of palette.json. */
  diff(level) {
    const k = Math.max(-DIFF_LEVELS, Math.min(DIFF_LEVELS, Math.round(level)));
    const end = k < 0 ? DIFF_RGB.less : DIFF_RGB.more;
    return this.add(`d${k}`, mix(DIFF_RGB.same, end, Math.abs(k) / DIFF_LEVELS));
  }
}

// --- theme ------------------------------------------------------------------------------

const THEME_KEY = "prof-theme";
const THEMES = ["auto", "light", "dark"];

export function themeSetting() {
  const t = localStorage.getItem(THEME_KEY);
  return THEMES.includes(t) ? t : "auto";
}

export function applyTheme(setting) {
  const root = document.documentElement;
  if (setting === "auto") delete root.dataset.theme;
  else root.dataset.theme = setting;
  const btn = document.getElementById("theme");
  if (btn) btn.textContent = `theme: ${setting}`;
}

export function isDark() {
  const t = document.documentElement.dataset.theme;
  if (t) return t === "dark";
  return window.matchMedia("(prefers-color-scheme: dark)").matches;
}

/** Wires the theme button; `onChange` runs whenever the effective theme changes. */
export function initTheme(onChange) {
  applyTheme(themeSetting());
  const btn = document.getElementById("theme");
  if (btn) {
    btn.addEventListener("click", () => {
      const next = THEMES[(THEMES.indexOf(themeSetting()) + 1) % THEMES.length];
      localStorage.setItem(THEME_KEY, next);
      applyTheme(next);
      onChange();
    });
  }
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
    if (themeSetting() === "auto") onChange();
  });
}

/** Colours the canvases need, read from the CSS custom properties of the theme. */
export function themeColours() {
  const s = getComputedStyle(document.documentElement);
  const v = (name, dflt) => s.getPropertyValue(name).trim() || dflt;
  const bg = v("--bg", "#ffffff");
  return {
    bg,
    bgRgb: parseRgb(bg),
    fg: v("--fg", "#222222"),
    muted: v("--muted", "#777777"),
    grid: v("--grid", "#dddddd"),
    select: v("--select", "rgba(0,114,178,0.18)"),
    selectEdge: v("--select-edge", "#0072b2"),
    highlight: v("--highlight", "#000000"),
  };
}

function parseRgb(c) {
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(c);
  if (m) return [parseInt(m[1], 16), parseInt(m[2], 16), parseInt(m[3], 16)];
  const n = /rgba?\((\d+)[ ,]+(\d+)[ ,]+(\d+)/.exec(c);
  if (n) return [+n[1], +n[2], +n[3]];
  return [255, 255, 255];
}
