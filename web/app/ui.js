// Small DOM helpers shared by the views.

export const $ = (id) => document.getElementById(id);

/** Creates an element: el("div", {class: "x", text: "hi"}, child, …). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

/** Keeps a scrolling box pinned to the bottom if it was at the bottom before `change()`. */
export function stickToBottom(box, change) {
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 8;
  change();
  if (atBottom) box.scrollTop = box.scrollHeight;
}

export function time(ts) {
  const d = ts ? new Date(ts) : new Date();
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** A stable colour for a name, from the palette in style.css. */
export function colorFor(name) {
  let h = 0;
  for (const ch of String(name)) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return `var(--c${(h % 5) + 1})`;
}

export function errorText(err) {
  if (!err) return "unknown error";
  return err.code ? `${err.code}: ${err.message}` : String(err.message || err);
}

/** Compact number: 1234 → 1.23k. */
export function num(n, digits = 1) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  const a = Math.abs(n);
  if (a >= 1e9) return `${(n / 1e9).toFixed(2)}G`;
  if (a >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return Number.isInteger(n) ? String(n) : n.toFixed(digits);
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(2)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} B`;
}
