// Small DOM helpers: element building, the alert region, and formatting.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    // Through the CSSOM: the page's policy forbids style attributes.
    else if (k === 'style') el.style.cssText = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// SVG elements need their namespace.
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, v);
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// The page's one alert region: errors as the API said them.
export function showError(err) {
  const region = document.getElementById('alert');
  const msg = err && err.status ? err.status.message : String(err && err.message ? err.message : err);
  const code = err && err.code ? ` (${err.code}${err.status && err.status.reason ? ' ' + err.status.reason : ''})` : '';
  replace(region, h('div', { class: 'error' },
    h('span', {}, `Error${code}: ${msg}`),
    h('button', { type: 'button', class: 'link', 'aria-label': 'Dismiss error', onclick: () => replace(region) }, '×')));
}

export function showInfo(text) {
  const region = document.getElementById('alert');
  replace(region, h('div', { class: 'info' }, h('span', {}, text),
    h('button', { type: 'button', class: 'link', 'aria-label': 'Dismiss message', onclick: () => replace(region) }, '×')));
}

// A message that outlives the navigation that follows it (saved, then
// back to the object's page).
let keepOnce = false;
export function flash(text) { showInfo(text); keepOnce = true; }

export function clearAlert() {
  if (keepOnce) { keepOnce = false; return; }
  replace(document.getElementById('alert'));
}

export function age(ts) {
  if (!ts) return '';
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(ts)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

// Quantities: CPU in cores, memory in bytes.
const SUFFIX = { n: 1e-9, u: 1e-6, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4, Pi: 1024 ** 5, Ei: 1024 ** 6 };
export function quantity(q) {
  if (q === undefined || q === null) return 0;
  const m = String(q).match(/^([0-9.eE+-]+)([a-zA-Z]*)$/);
  if (!m) return 0;
  return parseFloat(m[1]) * (SUFFIX[m[2]] || 1);
}

export function cores(v) { return v < 1 ? `${Math.round(v * 1000)}m` : `${v.toFixed(2)}`; }
export function bytes(v) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v < 10 && i ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function link(href, text, attrs = {}) { return h('a', { href, ...attrs }, text); }

export function section(title, ...children) {
  const id = `s-${title.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
  return h('section', { 'aria-labelledby': id }, h('h2', { id }, title), ...children);
}

// A table with a caption for screen readers and a header row.
export function dataTable(caption, headers, rows, attrs = {}) {
  return h('table', attrs,
    h('caption', { class: 'sr-only' }, caption),
    h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: headers.length, class: 'empty' }, 'None'))));
}

export function button(text, onclick, attrs = {}) {
  return h('button', { type: 'button', onclick, ...attrs }, text);
}

// Runs an action, shows its error if it fails; returns whether it worked.
export async function attempt(fn) {
  try { await fn(); return true; } catch (e) { showError(e); return false; }
}
