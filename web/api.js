// The server's JSON API (docs/API.md), with a bearer token when the user gave one, and
// a small cache of responses so that going back and forth costs no request.

import { TIERS } from "./colors.js";

const TOKEN_KEY = "prof-token";

export function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(t) {
  if (t) localStorage.setItem(TOKEN_KEY, t);
  else localStorage.removeItem(TOKEN_KEY);
  cache.clear();
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

async function failure(res) {
  let msg = `${res.status} ${res.statusText}`;
  try {
    const body = await res.json();
    if (body && typeof body.error === "string") msg = body.error;
  } catch {
    // not JSON: keep the status line
  }
  if (res.status === 401) msg += " (set a token on the profile list page)";
  return new ApiError(res.status, msg);
}

/** GET a JSON document. Returns `{data, arrivedAt}` where `arrivedAt` is the
 * `performance.now()` when the whole body had arrived (before parsing). */
export async function getJSONTimed(url) {
  const t0 = performance.now();
  const res = await fetch(url, { headers: headers() });
  if (!res.ok) throw await failure(res);
  const text = await res.text();
  const arrivedAt = performance.now();
  const data = normalizeTiers(JSON.parse(text));
  return { data, arrivedAt, fetchMs: arrivedAt - t0, bytes: text.length };
}

/** Per-tier arrays (tree nodes, timeline counts, function rows) come in the order of the
 * response's `tiers` list, which may name only some tiers; the viewer works with all of
 * TIERS in their fixed order, so other layouts are rewritten to that. */
export function normalizeTiers(data) {
  if (!data || !Array.isArray(data.tiers)) return data;
  const from = data.tiers;
  if (from.length === TIERS.length && from.every((t, i) => t === TIERS[i])) return data;
  const map = from.map((t) => TIERS.indexOf(t));
  const k = from.length;
  const remap = (arr) => {
    if (!Array.isArray(arr) || k === 0) return arr;
    const rows = Math.floor(arr.length / k);
    const out = new Array(rows * TIERS.length).fill(0);
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < k; j++) {
        if (map[j] >= 0) out[r * TIERS.length + map[j]] = arr[r * k + j];
      }
    }
    return out;
  };
  if (data.nodes) data.nodes.tiers = remap(data.nodes.tiers);
  if (data.counts) data.counts = remap(data.counts);
  if (data.self_tiers) data.self_tiers = remap(data.self_tiers);
  if (data.total_tiers) data.total_tiers = remap(data.total_tiers);
  data.tiers = TIERS.slice();
  return data;
}

const cache = new Map();
const CACHE_MAX = 40;

/** Like `getJSONTimed`, remembered by URL (failures are not remembered). */
export function cachedJSON(url) {
  let p = cache.get(url);
  if (p) {
    cache.delete(url);
    cache.set(url, p);
    return p;
  }
  p = getJSONTimed(url);
  cache.set(url, p);
  p.catch(() => cache.delete(url));
  while (cache.size > CACHE_MAX) cache.delete(cache.keys().next().value);
  return p;
}

export async function getJSON(url) {
  return (await getJSONTimed(url)).data;
}

export async function deleteProfile(id) {
  const res = await fetch(`/api/v1/profiles/${encodeURIComponent(id)}`, {
    method: "DELETE",
    headers: headers(),
  });
  if (!res.ok) throw await failure(res);
  cache.clear();
}
