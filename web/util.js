// Small DOM and formatting helpers. Every string that reaches the page goes through
// text nodes (createTextNode / textContent), never through HTML parsing: names of
// functions, modules, files and commands come from profiled programs and may be anything.

/** Creates an element. `attrs`: `class`, `text`, `on<event>` (functions), `dataset`
 * (object), boolean or string attributes; children: nodes or strings (as text). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (k === "style" || k === "innerHTML") throw new Error(`h(): ${k} is not allowed`);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function setChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

export function $(id) {
  return document.getElementById(id);
}

const nf = new Intl.NumberFormat("en-US");

export function fmtInt(n) {
  return nf.format(Math.round(n));
}

export function fmtPct(part, whole) {
  if (!whole) return "0%";
  const p = (part * 100) / whole;
  if (p === 0) return "0%";
  if (p < 0.1) return "<0.1%";
  return `${p.toFixed(p >= 99.95 ? 0 : 1)}%`;
}

export function fmtSeconds(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "";
  if (s < 1e-3) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1e3).toFixed(s < 0.01 ? 2 : 1)} ms`;
  if (s < 120) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}

/** A time on a chart axis, with as many decimals as the step between ticks needs. */
export function fmtTick(s, step) {
  const d = step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step)));
  return `${s.toFixed(d)} s`;
}

/** A round step (1, 2 or 5 times a power of ten) giving about `target` ticks over `span`. */
export function niceStep(span, target) {
  const raw = span / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

/** Sizes a chart canvas to its box's width (at least 200 px) and `height` CSS pixels at the
 * device's pixel ratio, scales its context to CSS pixels and fills it with `bg`. Returns
 * the width. */
export function fitCanvas(canvas, ctx, height, bg) {
  const w = Math.max(200, Math.floor(canvas.parentElement.clientWidth));
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(height * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(height * dpr);
    canvas.style.width = `${w}px`;
    canvas.style.height = `${height}px`;
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = bg;
  ctx.fillRect(0, 0, w, height);
  return w;
}

export function escapeRegex(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

export function fmtDate(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** "file:line", "file", or "" from nullable parts. */
export function location(file, line) {
  if (!file) return "";
  return line ? `${file}:${line}` : file;
}

export function debounce(fn, ms) {
  let t = 0;
  const wrapped = (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(t);
  return wrapped;
}

/** Shows a message in the page's error bar; `null` hides it. */
export function showError(msg) {
  const el = $("error");
  if (!el) return;
  if (msg) {
    el.textContent = msg;
    el.hidden = false;
  } else {
    el.textContent = "";
    el.hidden = true;
  }
}
