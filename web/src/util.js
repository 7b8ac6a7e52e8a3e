// Small helpers: DOM and SVG elements, statuses shown with an icon and a word (never by
// colour alone), durations and times.

const SVG = 'http://www.w3.org/2000/svg';

/** An HTML element: `el('div', {class: 'x', onclick}, child, 'text')`. */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  return fill(node, attrs, children);
}

/** An SVG element. */
export function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  return fill(node, attrs, children);
}

function fill(node, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Icon and word of each node and run status. */
const STATUS = {
  PENDING: { icon: '○', word: 'pending' },
  QUEUED: { icon: '◔', word: 'queued' },
  RUNNING: { icon: '▶', word: 'running' },
  AWAITING_INPUT: { icon: '✎', word: 'awaiting input' },
  COMPLETED: { icon: '✓', word: 'completed' },
  FAILED: { icon: '✕', word: 'failed' },
  SKIPPED: { icon: '⤼', word: 'skipped' },
  CANCELLED: { icon: '■', word: 'cancelled' },
  TERMINATED: { icon: '■', word: 'terminated' },
  TIMED_OUT: { icon: '⧗', word: 'timed out' },
  WITHDRAWN: { icon: '⌀', word: 'withdrawn' },
};

export function statusOf(status) {
  return STATUS[status] || { icon: '?', word: String(status || 'unknown').toLowerCase() };
}

/** A status badge: icon and word, coloured by class. */
export function badge(status) {
  const s = statusOf(status);
  return el('span', { class: `badge st-${String(status).toLowerCase()}` }, el('span', { 'aria-hidden': 'true' }, s.icon), ' ', s.word);
}

/** `1.2 s`, `340 ms`, `2 min 5 s`. */
export function duration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const minutes = Math.floor(ms / 60_000);
  if (minutes < 60) return `${minutes} min ${Math.round((ms % 60_000) / 1000)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** A wall-clock time, local. */
export function clock(t) {
  if (t === null || t === undefined) return '—';
  const d = new Date(t);
  return `${d.toLocaleDateString()} ${d.toLocaleTimeString()}`;
}

/** JSON, cut to `limit` characters (`null` when nothing is cut). */
export function preview(value, limit = 600) {
  const text = JSON.stringify(value, null, 2) ?? 'undefined';
  return text.length > limit ? { short: `${text.slice(0, limit)}…`, full: text } : { short: text, full: null };
}

/** A <pre> of `value`, truncated with a button to expand it. */
export function jsonBlock(value, limit) {
  const { short, full } = preview(value, limit);
  const pre = el('pre', { class: 'json' }, short);
  if (!full) return pre;
  const more = el('button', { type: 'button', class: 'link' }, `show all (${full.length.toLocaleString()} characters)`);
  more.addEventListener('click', () => {
    pre.textContent = full;
    more.remove();
  });
  return el('div', {}, pre, more);
}
