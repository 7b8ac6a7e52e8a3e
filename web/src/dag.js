// The DAG: laid out in layers by dagre (left to right), nodes coloured by state with an
// icon and a word, edges drawn by kind (success, error, always), dead edges dimmed, the
// edges that fired a join highlighted, joins labelled with their strategy, race losers
// marked withdrawn. Large graphs collapse wide fans (nodes of one layer with the same
// parents, children and component) into one group with counts.

import dagre from '@dagrejs/dagre';
import { svg, statusOf } from './util.js';

const NODE_W = 190;
const NODE_H = 46;
/** Graphs above this many nodes collapse their fans. */
const COLLAPSE_ABOVE = 150;
/** A fan collapses from this many members. */
const GROUP_MIN = 6;

/** The drawn items: nodes, or groups of alike nodes, and the edges between them. */
export function items(model) {
  const nodes = model.graph.nodes;
  const itemOf = new Map();
  const list = [];
  if (nodes.length > COLLAPSE_ABOVE) {
    const byKey = new Map();
    for (const def of nodes) {
      const key = [
        def.layer,
        def.componentId,
        model.parents.get(def.ref).slice().sort().join(','),
        model.children.get(def.ref).slice().sort().join(','),
      ].join('|');
      if (!byKey.has(key)) byKey.set(key, []);
      byKey.get(key).push(def.ref);
    }
    for (const refs of byKey.values()) {
      if (refs.length >= GROUP_MIN) {
        const id = `group:${list.length}`;
        list.push({ id, refs, group: true });
        for (const ref of refs) itemOf.set(ref, id);
      }
    }
  }
  for (const def of nodes) {
    if (!itemOf.has(def.ref)) {
      itemOf.set(def.ref, def.ref);
      list.push({ id: def.ref, refs: [def.ref], group: false });
    }
  }
  const edges = new Map();
  for (const edge of model.graph.edges) {
    const source = itemOf.get(edge.source);
    const target = itemOf.get(edge.target);
    const id = `${source}\u0000${target}\u0000${edge.kind}`;
    if (!edges.has(id)) edges.set(id, { id, source, target, kind: edge.kind, edges: [] });
    edges.get(id).edges.push(edge);
  }
  const order = new Map(nodes.map((d, i) => [d.ref, i]));
  list.sort((a, b) => order.get(a.refs[0]) - order.get(b.refs[0]));
  return { list, itemOf, edges: [...edges.values()] };
}

/** dagre lays out graphs of up to this many drawn items; larger ones are placed by layer. */
const DAGRE_UP_TO = 300;
const RANK_SEP = 56;
const NODE_SEP = 16;
const MARGIN = 24;

/** Lays `view` out; positions by item id and edge points. */
function layout(view, model) {
  if (view.list.length > DAGRE_UP_TO) return layered(view, model);
  const g = new dagre.graphlib.Graph({ multigraph: true });
  g.setGraph({ rankdir: 'LR', nodesep: NODE_SEP, ranksep: RANK_SEP, edgesep: 8, marginx: 20, marginy: 28 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const item of view.list) g.setNode(item.id, { width: NODE_W, height: NODE_H });
  for (const edge of view.edges) g.setEdge(edge.source, edge.target, {}, edge.id);
  dagre.layout(g);
  const at = new Map(view.list.map((item) => [item.id, g.node(item.id)]));
  const points = new Map(view.edges.map((e) => [e.id, g.edge(e.source, e.target, e.id).points]));
  const box = g.graph();
  return { at, points, width: Math.max(box.width || 0, 200), height: Math.max(box.height || 0, 80) };
}

/**
 * The layout of a large graph: dagre's crossing minimisation takes seconds past a few
 * hundred nodes (1–3 s at 1,000 here), over the view's 2 s budget. The engine already
 * gives every node its layer (longest path); each layer is ordered by four barycentre
 * sweeps against its neighbours and centred.
 */
function layered(view, model) {
  const layerOf = (item) => model.node(item.refs[0]).def.layer;
  const used = [...new Set(view.list.map(layerOf))].sort((a, b) => a - b);
  const column = new Map(used.map((l, i) => [l, i]));
  const layers = used.map(() => []);
  for (const item of view.list) layers[column.get(layerOf(item))].push(item.id);
  const ins = new Map();
  const outs = new Map();
  for (const e of view.edges) {
    if (!ins.has(e.target)) ins.set(e.target, []);
    if (!outs.has(e.source)) outs.set(e.source, []);
    ins.get(e.target).push(e.source);
    outs.get(e.source).push(e.target);
  }
  const pos = new Map();
  layers.forEach((layer) => layer.forEach((id, i) => pos.set(id, i)));
  for (let sweep = 0; sweep < 4; sweep++) {
    const down = sweep % 2 === 0;
    const order = down ? layers.slice(1) : layers.slice(0, -1).reverse();
    for (const layer of order) {
      const centre = new Map();
      for (const id of layer) {
        const near = (down ? ins : outs).get(id) || [];
        centre.set(id, near.length ? near.reduce((sum, n) => sum + pos.get(n), 0) / near.length : pos.get(id));
      }
      layer.sort((a, b) => centre.get(a) - centre.get(b));
      layer.forEach((id, i) => pos.set(id, i));
    }
  }
  const rows = Math.max(...layers.map((l) => l.length));
  const at = new Map();
  layers.forEach((layer, c) => {
    const offset = (rows - layer.length) / 2;
    layer.forEach((id, i) => {
      at.set(id, { x: MARGIN + c * (NODE_W + RANK_SEP) + NODE_W / 2, y: MARGIN + (i + offset) * (NODE_H + NODE_SEP) + NODE_H / 2 });
    });
  });
  const points = new Map();
  for (const e of view.edges) {
    const a = at.get(e.source);
    const b = at.get(e.target);
    const x1 = a.x + NODE_W / 2;
    const x2 = b.x - NODE_W / 2;
    const mid = (x1 + x2) / 2;
    points.set(e.id, [{ x: x1, y: a.y }, { x: mid, y: a.y }, { x: mid, y: b.y }, { x: x2, y: b.y }]);
  }
  return {
    at,
    points,
    width: MARGIN * 2 + layers.length * (NODE_W + RANK_SEP) - RANK_SEP,
    height: MARGIN * 2 + rows * (NODE_H + NODE_SEP),
  };
}

function joinLabel(def, model) {
  const parents = model.incoming.get(def.ref).length;
  if (parents < 2 && def.join === 'all') return null;
  switch (def.join) {
    case 'quorum':
      return `quorum ${def.quorum}/${parents}`;
    case 'all':
      return `all ${parents}/${parents}`;
    default:
      return `${def.join} 1/${parents}`;
  }
}

function path(points) {
  if (!points || !points.length) return '';
  const [first, ...rest] = points;
  if (rest.length === 0) return `M${first.x},${first.y}`;
  // A smooth curve through dagre's points.
  let d = `M${first.x},${first.y}`;
  for (let i = 0; i < rest.length - 1; i++) {
    const p = rest[i];
    const q = rest[i + 1];
    d += ` Q${p.x},${p.y} ${(p.x + q.x) / 2},${(p.y + q.y) / 2}`;
  }
  const last = rest[rest.length - 1];
  return `${d} L${last.x},${last.y}`;
}

/** The DAG of one run: draws once, then `update()` restyles what changed. */
export class DagView {
  constructor(container, model, onSelect) {
    this.model = model;
    this.onSelect = onSelect;
    this.view = items(model);
    this.geometry = layout(this.view, model);
    this.nodeEls = new Map();
    this.edgeEls = new Map();
    this.selected = null;
    const { width, height } = this.geometry;
    this.root = svg('svg', {
      class: 'dag',
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: 'group',
      'aria-label': `Graph of ${model.graph.nodes.length} nodes`,
    });
    const defs = svg('defs', {});
    for (const kind of ['success', 'error', 'always']) {
      for (const state of ['open', 'fired', 'dead']) {
        defs.append(
          svg('marker', { id: `arrow-${kind}-${state}`, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
            svg('path', { d: 'M0,0 L10,5 L0,10 z', class: `arrow kind-${kind} ${state}` })),
        );
      }
    }
    this.root.append(defs);
    const edgeLayer = svg('g', { class: 'edges' });
    for (const edge of this.view.edges) {
      const el = svg('path', { d: path(this.geometry.points.get(edge.id)), class: `edge kind-${edge.kind}` });
      el.append(svg('title', {}, edge.edges.length > 1 ? `${edge.edges.length} ${edge.kind} edges` : `${edge.edges[0].source} → ${edge.edges[0].target} (${edge.kind})`));
      this.edgeEls.set(edge.id, el);
      edgeLayer.append(el);
    }
    this.root.append(edgeLayer);
    const nodeLayer = svg('g', { class: 'nodes' });
    for (const item of this.view.list) nodeLayer.append(this.drawItem(item));
    this.root.append(nodeLayer);
    container.replaceChildren(this.root);
    this.update(true);
  }

  drawItem(item) {
    const at = this.geometry.at.get(item.id);
    const x = at.x - NODE_W / 2;
    const y = at.y - NODE_H / 2;
    const def = this.model.node(item.refs[0]).def;
    const name = item.group ? `${item.refs.length} × ${def.componentId}` : def.label || def.ref;
    const g = svg('g', {
      class: 'node',
      transform: `translate(${x},${y})`,
      tabindex: 0,
      role: 'button',
      'data-ref': item.group ? null : def.ref,
      'data-item': item.id,
    });
    const status = svg('text', { x: 30, y: 35, class: 'sub' });
    const icon = svg('text', { x: 10, y: 21, class: 'icon', 'aria-hidden': 'true' });
    g.append(
      svg('rect', { width: NODE_W, height: NODE_H, rx: 7, class: 'box' }),
      icon,
      svg('text', { x: 30, y: 19, class: 'name' }, clip(name, 24)),
      status,
    );
    if (!item.group) {
      const join = joinLabel(def, this.model);
      if (join) g.append(svg('text', { x: NODE_W - 6, y: -5, class: 'join', 'text-anchor': 'end' }, join));
    }
    const title = svg('title', {});
    g.append(title);
    g.addEventListener('click', () => this.onSelect(item.group ? { group: item } : { ref: def.ref }));
    g.addEventListener('keydown', (e) => this.key(e, item));
    this.nodeEls.set(item.id, { g, status, icon, title, item });
    return g;
  }

  key(event, item) {
    const move = (id) => {
      if (!id) return;
      const next = this.nodeEls.get(id);
      if (next) next.g.focus();
      event.preventDefault();
    };
    const ref = item.refs[0];
    const order = this.view.list;
    const at = order.indexOf(item);
    switch (event.key) {
      case 'Enter':
      case ' ':
        this.onSelect(item.group ? { group: item } : { ref });
        event.preventDefault();
        break;
      case 'ArrowDown':
        move(order[at + 1] && order[at + 1].id);
        break;
      case 'ArrowUp':
        move(order[at - 1] && order[at - 1].id);
        break;
      case 'ArrowRight':
        move(this.view.itemOf.get(this.model.children.get(ref)[0]));
        break;
      case 'ArrowLeft':
        move(this.view.itemOf.get(this.model.parents.get(ref)[0]));
        break;
      default:
        break;
    }
  }

  /** Restyles the nodes and edges the model marked dirty (all with `all`). */
  update(all) {
    const dirtyItems = new Set();
    for (const ref of all ? this.model.nodes.keys() : this.model.dirty) dirtyItems.add(this.view.itemOf.get(ref));
    for (const id of dirtyItems) {
      const drawn = this.nodeEls.get(id);
      if (drawn) this.styleItem(drawn);
    }
    for (const edge of this.view.edges) {
      if (!all && !dirtyItems.has(edge.source) && !dirtyItems.has(edge.target)) continue;
      const states = edge.edges.map((e) => this.model.edgeState(e));
      const state = states.includes('fired') ? 'fired' : states.every((s) => s === 'dead') ? 'dead' : 'open';
      const el = this.edgeEls.get(edge.id);
      el.setAttribute('class', `edge kind-${edge.kind} ${state}`);
      el.setAttribute('marker-end', `url(#arrow-${edge.kind}-${state})`);
    }
  }

  styleItem(drawn) {
    const { g, status, icon, title, item } = drawn;
    const classes = ['node'];
    if (item.group) {
      const counts = this.model.counts(item.refs);
      const main = ['FAILED', 'RUNNING', 'QUEUED', 'PENDING', 'CANCELLED', 'SKIPPED', 'COMPLETED'].find((s) => counts[s]);
      classes.push('group', `st-${main.toLowerCase()}`);
      icon.textContent = statusOf(main).icon;
      const text = Object.entries(counts).map(([s, n]) => `${n} ${statusOf(s).word}`).join(' · ');
      status.textContent = clip(text, 30);
      title.textContent = `${item.refs.length} nodes: ${text}`;
      g.setAttribute('aria-label', `group of ${item.refs.length} nodes: ${text}`);
    } else {
      const ref = item.refs[0];
      const node = this.model.node(ref);
      const withdrawn = this.model.withdrawn(ref);
      const shown = withdrawn ? 'WITHDRAWN' : node.status;
      const s = statusOf(shown);
      classes.push(`st-${node.status.toLowerCase()}`);
      if (withdrawn) classes.push('withdrawn');
      icon.textContent = s.icon;
      const attempts = node.attempts.length > 1 ? ` · ${node.attempts.length} attempts` : '';
      status.textContent = clip(`${s.word}${attempts} · ${node.def.componentId}`, 30);
      title.textContent = `${ref}: ${s.word}${node.reason ? ` (${node.reason})` : ''}`;
      g.setAttribute('aria-label', `${ref}: ${s.word}`);
      if (this.selected === ref) classes.push('selected');
    }
    g.setAttribute('class', classes.join(' '));
  }

  select(ref) {
    const before = this.selected;
    this.selected = ref;
    for (const r of [before, ref]) {
      if (!r) continue;
      const drawn = this.nodeEls.get(this.view.itemOf.get(r));
      if (drawn) this.styleItem(drawn);
    }
    const drawn = ref && this.nodeEls.get(this.view.itemOf.get(ref));
    if (drawn && drawn.g.scrollIntoView) drawn.g.scrollIntoView({ block: 'nearest', inline: 'nearest' });
  }
}

function clip(text, n) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}
