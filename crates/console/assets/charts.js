// Pictures: usage over time, rollout progress, and relationship graphs,
// drawn as SVG with a text description for screen readers.

import { h, svg } from './dom.js';

// A line of values over time (newest right), scaled to `max` (or the
// largest value).
export function sparkline(values, { label, max, width = 160, height = 32, format = String } = {}) {
  const top = Math.max(max || 0, ...values, 1e-9);
  const n = values.length;
  const pts = values.map((v, i) => {
    const x = n <= 1 ? width : (i / (n - 1)) * width;
    const y = height - 2 - (v / top) * (height - 4);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  const last = n ? values[n - 1] : undefined;
  const desc = `${label}: ${n ? format(last) : 'no data yet'}${n > 1 ? ` (${n} samples)` : ''}`;
  return svg('svg', { class: 'spark', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': desc },
    svg('title', {}, desc),
    svg('rect', { x: 0, y: 0, width, height, class: 'spark-bg' }),
    n > 1 ? svg('polyline', { points: pts.join(' '), class: 'spark-line' }) : null,
    n === 1 ? svg('circle', { cx: width - 2, cy: pts[0].split(',')[1], r: 2, class: 'spark-dot' }) : null);
}

// A rollout: how many of the desired replicas are updated and ready.
export function progress({ desired, updated, ready, available }, label = 'Rollout') {
  const d = Math.max(desired, 1);
  const pct = (v) => `${Math.min(100, (v / d) * 100).toFixed(1)}%`;
  const text = `${label}: ${ready}/${desired} ready, ${updated} updated, ${available} available`;
  return h('div', { class: 'progress', role: 'img', 'aria-label': text, title: text },
    h('div', { class: 'bar updated', style: `width:${pct(updated)}` }),
    h('div', { class: 'bar ready', style: `width:${pct(ready)}` }));
}

// Columns of boxes with edges between them: [{title, nodes: [{id, label,
// href, cls}]}], edges: [[fromId, toId]].
export function graph(columns, edges, label) {
  const colW = 210, boxW = 180, boxH = 26, gapY = 10, top = 28;
  const pos = new Map();
  let rows = 1;
  columns.forEach((c, ci) => {
    rows = Math.max(rows, c.nodes.length);
    c.nodes.forEach((n, ri) => pos.set(n.id, { x: ci * colW + 10, y: top + ri * (boxH + gapY) }));
  });
  const width = columns.length * colW;
  const height = top + rows * (boxH + gapY) + 10;
  const lines = edges.filter(([a, b]) => pos.has(a) && pos.has(b)).map(([a, b]) => {
    const p = pos.get(a), q = pos.get(b);
    return svg('path', { class: 'edge', d: `M${p.x + boxW},${p.y + boxH / 2} C${p.x + boxW + 20},${p.y + boxH / 2} ${q.x - 20},${q.y + boxH / 2} ${q.x},${q.y + boxH / 2}` });
  });
  const boxes = columns.flatMap((c, ci) => [
    svg('text', { x: ci * colW + 10, y: 16, class: 'col-title' }, c.title),
    ...c.nodes.map((n) => {
      const p = pos.get(n.id);
      const text = n.label.length > 24 ? `${n.label.slice(0, 23)}…` : n.label;
      const box = svg('g', { class: `node ${n.cls || ''}` },
        svg('title', {}, n.label),
        svg('rect', { x: p.x, y: p.y, width: boxW, height: boxH, rx: 4 }),
        svg('text', { x: p.x + 8, y: p.y + 17 }, text));
      return n.href ? svg('a', { href: n.href }, box) : box;
    }),
  ]);
  const desc = `${label}: ` + columns.map((c) => `${c.title} ${c.nodes.map((n) => n.label).join(', ') || 'none'}`).join('; ');
  return svg('svg', { class: 'graph', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': desc },
    svg('title', {}, desc), ...lines, ...boxes);
}
