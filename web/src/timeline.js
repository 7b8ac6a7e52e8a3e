// The timeline: one lane per node (or collapsed group) in topological order, against a
// time axis from the run's start. A lane shows the node's queued time, each attempt as
// its own segment (failed attempts and the backoff before the next visible), and the
// critical path highlighted; parallel work shows as overlapping segments.

import { svg, statusOf, duration } from './util.js';

const LABEL_W = 180;
const LANE_H = 20;
const AXIS_H = 26;

/** A step of 1, 2 or 5 × 10^n ms giving about `count` ticks over `span`. */
function tickStep(span, count) {
  const raw = span / Math.max(count, 1);
  const power = 10 ** Math.floor(Math.log10(Math.max(raw, 1)));
  for (const m of [1, 2, 5, 10]) if (m * power >= raw) return m * power;
  return 10 * power;
}

export class TimelineView {
  constructor(container, model, lanes, onSelect) {
    this.container = container;
    this.model = model;
    this.lanes = lanes; // [{id, refs, group}]
    this.onSelect = onSelect;
    this.end = null;
    this.critical = new Set();
    this.selected = null;
    this.laneEls = new Map();
    this.width = Math.max(container.clientWidth || 900, 600);
    this.root = svg('svg', { class: 'timeline', width: this.width, height: AXIS_H + lanes.length * LANE_H + 4, role: 'group', 'aria-label': 'Timeline' });
    this.axis = svg('g', { class: 'axis' });
    this.body = svg('g', { class: 'lanes', transform: `translate(0,${AXIS_H})` });
    this.root.append(this.axis, this.body);
    lanes.forEach((lane, i) => {
      const g = svg('g', { class: 'lane', transform: `translate(0,${i * LANE_H})`, 'data-lane': lane.id });
      this.body.append(g);
      this.laneEls.set(lane.id, { g, lane });
    });
    container.replaceChildren(this.root);
  }

  /** The time domain: the run's start to its end, or to a little past now while it runs. */
  domain(now) {
    const start = this.model.startedAt ?? now;
    if (this.model.completedAt !== null && this.model.status !== 'RUNNING') return [start, Math.max(this.model.completedAt, start + 1)];
    const span = Math.max(now - start, 500);
    // Headroom, so that the scale (and every lane) is redrawn only now and then.
    if (this.end === null || now > this.end) this.end = start + span * 1.5;
    return [start, this.end];
  }

  /** Redraws what changed: every lane when the scale moved, else the dirty and running ones. */
  update(now, all) {
    const [t0, t1] = this.domain(now);
    const scaleChanged = this.t0 !== t0 || this.t1 !== t1;
    this.t0 = t0;
    this.t1 = t1;
    const critical = this.model.status === 'RUNNING' ? new Set() : this.model.criticalPath();
    const criticalChanged = critical.size !== this.critical.size || [...critical].some((r) => !this.critical.has(r));
    this.critical = critical;
    if (scaleChanged) this.drawAxis();
    for (const { g, lane } of this.laneEls.values()) {
      const running = lane.refs.some((r) => {
        const s = this.model.node(r).status;
        return s === 'RUNNING' || s === 'QUEUED';
      });
      const dirty = lane.refs.some((r) => this.model.dirty.has(r));
      if (all || scaleChanged || criticalChanged || dirty || running) this.drawLane(g, lane, now);
    }
  }

  x(t) {
    const span = this.t1 - this.t0;
    return LABEL_W + ((t - this.t0) / span) * (this.width - LABEL_W - 12);
  }

  drawAxis() {
    const span = this.t1 - this.t0;
    const step = tickStep(span, Math.floor((this.width - LABEL_W) / 90));
    const height = AXIS_H + this.lanes.length * LANE_H;
    const parts = [svg('text', { x: 8, y: 16, class: 'axis-title' }, 'node')];
    for (let t = 0; t <= span; t += step) {
      const x = this.x(this.t0 + t);
      parts.push(svg('line', { x1: x, x2: x, y1: AXIS_H - 6, y2: height, class: 'grid' }));
      parts.push(svg('text', { x, y: 14, class: 'tick', 'text-anchor': 'middle' }, duration(t)));
    }
    this.axis.replaceChildren(...parts);
  }

  drawLane(g, lane, now) {
    const model = this.model;
    const first = model.node(lane.refs[0]);
    const critical = lane.refs.some((r) => this.critical.has(r));
    const selected = !lane.group && this.selected === lane.refs[0];
    g.setAttribute('class', `lane${critical ? ' critical' : ''}${selected ? ' selected' : ''}`);
    const name = lane.group ? `${lane.refs.length} × ${first.def.componentId}` : first.def.label || first.def.ref;
    const label = svg('text', { x: 8, y: 14, class: 'label', tabindex: 0, role: 'button' }, name.length > 24 ? `${name.slice(0, 23)}…` : name);
    const select = () => this.onSelect(lane.group ? { group: lane } : { ref: lane.refs[0] });
    label.addEventListener('click', select);
    label.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' || e.key === ' ') {
        select();
        e.preventDefault();
      }
    });
    const parts = [svg('rect', { x: 0, y: 0, width: this.width, height: LANE_H, class: 'lane-bg' }), label];
    for (const ref of lane.refs) parts.push(...this.segments(model.node(ref), now, lane.group));
    g.replaceChildren(...parts);
  }

  segments(node, now, grouped) {
    const parts = [];
    const y = 4;
    const h = LANE_H - 8;
    const bar = (from, to, cls, text) => {
      const x = this.x(from);
      const w = Math.max(this.x(to) - x, 2);
      const rect = svg('rect', { x, y, width: w, height: h, rx: 2, class: cls });
      if (text) rect.append(svg('title', {}, text));
      return rect;
    };
    const ref = node.def.ref;
    const firstStart = node.attempts.length ? node.attempts[0].start : null;
    if (node.queuedAt !== null) {
      const until = firstStart ?? (node.status === 'QUEUED' ? now : node.completedAt ?? now);
      if (until > node.queuedAt) parts.push(bar(node.queuedAt, until, 'seg seg-queued', `${ref} queued ${duration(until - node.queuedAt)}`));
    }
    node.attempts.forEach((a, i) => {
      const end = a.end ?? now;
      const outcome = a.end === null ? 'RUNNING' : a.outcome;
      const error = a.error ? `: ${a.error.type}: ${a.error.message}` : '';
      parts.push(bar(a.start, end, `seg seg-${outcome.toLowerCase()}`, `${ref} attempt ${a.n}: ${statusOf(outcome).word}, ${duration(end - a.start)}${error}`));
      const next = node.attempts[i + 1];
      if (a.end !== null && (next || a.retryAt)) {
        const until = next ? next.start : Math.min(a.retryAt, now);
        if (until > a.end) {
          const x1 = this.x(a.end);
          const x2 = this.x(until);
          const line = svg('line', { x1, x2, y1: LANE_H / 2, y2: LANE_H / 2, class: 'seg-backoff' });
          line.append(svg('title', {}, `${ref} backoff ${duration(until - a.end)} before attempt ${a.n + 1}`));
          parts.push(line);
        }
      }
    });
    if (!grouped && node.attempts.length === 0 && node.completedAt !== null && (node.status === 'SKIPPED' || node.status === 'CANCELLED')) {
      const x = this.x(node.completedAt);
      const mark = svg('text', { x, y: 14, class: `mark st-${node.status.toLowerCase()}`, 'text-anchor': 'middle' }, statusOf(node.status).icon);
      mark.append(svg('title', {}, `${ref} ${statusOf(node.status).word}: ${node.reason || ''}`));
      parts.push(mark);
    }
    return parts;
  }

  select(ref) {
    this.selected = ref;
    for (const { g, lane } of this.laneEls.values()) {
      const on = !lane.group && lane.refs[0] === ref;
      g.classList.toggle('selected', on);
      if (on && g.scrollIntoView) g.scrollIntoView({ block: 'nearest' });
    }
  }
}
