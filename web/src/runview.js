// One run: its header (status, progress, duration, trace link, cancel and terminate),
// the DAG, the details panel and the timeline. Live from the SSE stream, or still from
// a report's data; renders at most once per animation frame, however many events came.

import { request, follow, runPath, ApiError } from './api.js';
import { RunModel } from './model.js';
import { DagView } from './dag.js';
import { TimelineView } from './timeline.js';
import { nodePanel, groupPanel } from './panel.js';
import { el, badge, duration, clock } from './util.js';

export class RunView {
  constructor(root, model, options) {
    this.root = root;
    this.model = model;
    this.options = options; // {live, jaegerUrl, onConnection}
    this.selection = null;
    this.frame = null;
    this.message = el('p', { class: 'message', role: 'alert' });
    this.header = el('div', { class: 'run-header' });
    this.dagBox = el('div', { class: 'dag-box', 'aria-label': 'Graph' });
    this.panel = el('aside', { class: 'panel', 'aria-label': 'Node details', 'aria-live': 'polite' }, el('p', { class: 'muted' }, 'Select a node (click, or Tab and Enter) to see its details.'));
    this.timelineBox = el('div', { class: 'timeline-box', 'aria-label': 'Timeline' });
    root.replaceChildren(
      this.header,
      this.message,
      el('div', { class: 'run-body' }, this.dagBox, this.panel),
      el('h2', { class: 'section-title' }, 'Timeline ', el('span', { class: 'legend' }, legend())),
      this.timelineBox,
    );
    const started = performance.now();
    const select = (what) => this.select(what);
    this.dag = new DagView(this.dagBox, model, select);
    this.timeline = new TimelineView(this.timelineBox, model, this.dag.view.list, select);
    this.render(true);
    root.dataset.renderMs = String(Math.round(performance.now() - started));
    root.dataset.ready = 'true';
    if (this.options.live) this.tick = setInterval(() => this.schedule(), 250);
  }

  /** Asks for a render at the next animation frame (one per frame at most). */
  schedule() {
    if (this.frame !== null) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.render(false);
    });
  }

  render(all) {
    const now = Date.now();
    // A running run's duration moves on every frame.
    if (all || this.model.runDirty || this.model.dirty.size || this.model.status === 'RUNNING') this.renderHeader(now);
    this.dag.update(all);
    this.timeline.update(now, all);
    if (this.selection && this.selection.ref && this.model.dirty.has(this.selection.ref)) this.showPanel();
    this.model.dirty.clear();
    this.model.runDirty = false;
    if (this.model.status !== 'RUNNING' && this.tick) {
      clearInterval(this.tick);
      this.tick = null;
    }
  }

  /** The header: built once, its facts updated in place (buttons are never replaced). */
  renderHeader(now) {
    const m = this.model;
    if (!this.facts) {
      this.facts = {
        title: el('h1', {}),
        status: el('span', {}),
        bar: el('progress', { 'aria-label': 'progress' }),
        count: el('span', {}),
        took: el('strong', {}),
        started: el('span', {}),
        trace: el('span', {}),
      };
      const f = this.facts;
      const parts = [
        f.title,
        el('div', { class: 'run-facts' },
          f.status,
          el('span', {}, f.bar, ' ', f.count),
          el('span', {}, 'took ', f.took),
          el('span', {}, 'started ', f.started),
          el('span', { class: 'muted' }, 'run ', el('code', {}, m.runId)),
          f.trace,
        ),
      ];
      if (this.options.live) {
        f.cancel = el('button', { type: 'button', id: 'cancel-run', onclick: () => this.stop('cancel') }, 'Cancel run');
        f.terminate = el('button', { type: 'button', id: 'terminate-run', class: 'danger', onclick: () => this.stop('terminate') }, 'Terminate');
        parts.push(el('div', { class: 'actions' }, f.cancel, f.terminate));
      }
      this.header.replaceChildren(...parts);
    }
    const f = this.facts;
    const { completed, total } = m.progress();
    const end = m.completedAt ?? (m.status === 'RUNNING' ? now : null);
    f.title.textContent = m.title || m.runId;
    if (f.status.dataset.runStatus !== m.status) {
      f.status.dataset.runStatus = m.status;
      f.status.replaceChildren(badge(m.status));
    }
    f.bar.max = total;
    f.bar.value = completed;
    f.count.textContent = `${completed}/${total} nodes`;
    f.took.textContent = duration(end !== null && m.startedAt !== null ? end - m.startedAt : null);
    f.started.textContent = clock(m.startedAt);
    if (m.traceId && !f.trace.childNodes.length) f.trace.replaceChildren('trace ', this.traceLink(m.traceId));
    if (f.cancel) {
      const running = m.status === 'RUNNING';
      f.cancel.disabled = !running;
      f.terminate.disabled = !running;
    }
  }

  traceLink(traceId) {
    const template = this.options.jaegerUrl;
    if (!template) return el('code', {}, traceId);
    const href = template.replaceAll('{traceId}', encodeURIComponent(traceId));
    return el('a', { href, target: '_blank', rel: 'noopener' }, el('code', {}, traceId));
  }

  async stop(kind) {
    const verb = kind === 'cancel' ? 'Cancel' : 'Terminate';
    if (kind === 'terminate' && !window.confirm('Terminate the run? Running attempts are stopped without their grace period.')) return;
    try {
      const snapshot = await request('POST', `${runPath(this.model.runId)}/${kind}`, {});
      this.model.record(snapshot);
      this.note(`${verb} requested.`);
      this.schedule();
    } catch (error) {
      this.note(error instanceof ApiError && error.status === 401 ? 'The server wants an API token: set it in Settings.' : `${verb} failed: ${error.message}`, true);
    }
  }

  note(text, bad) {
    this.message.textContent = text;
    this.message.className = bad ? 'message bad' : 'message';
  }

  select(what) {
    this.selection = what;
    const ref = what.ref || null;
    this.dag.select(ref);
    this.timeline.select(ref);
    this.showPanel();
  }

  showPanel() {
    const what = this.selection;
    const select = (ref) => this.select({ ref });
    this.panel.replaceChildren(what.group ? groupPanel(this.model, what.group, select) : nodePanel(this.model, what.ref, select));
  }
}

function legend() {
  const item = (cls, text) => el('span', { class: 'legend-item' }, el('span', { class: `swatch ${cls}` }), text);
  return [
    item('seg-queued', 'queued'),
    item('seg-running', 'running'),
    item('seg-completed', 'completed'),
    item('seg-failed', 'failed attempt'),
    item('seg-backoff-swatch', 'backoff'),
    item('crit', 'critical path'),
  ];
}

/** Opens run `runId` from the server, live. */
export async function openRun(root, runId, config, onConnection) {
  root.replaceChildren(el('p', { class: 'muted' }, 'Loading the run…'));
  const [graph, snapshot] = await Promise.all([request('GET', `${runPath(runId)}/graph`), request('GET', runPath(runId))]);
  const model = new RunModel(runId, graph);
  model.record(snapshot);
  const view = new RunView(root, model, { live: true, jaegerUrl: config.jaegerUrl });
  const controller = new AbortController();
  follow(
    runId,
    {
      trace: (event) => {
        model.apply(event);
        view.schedule();
      },
      status: (status) => {
        if (status.status && !model.result) model.status = status.status;
        model.runDirty = true;
        view.schedule();
      },
      terminal: (result) => {
        model.finish(result);
        view.schedule();
      },
      connection: onConnection,
    },
    controller.signal,
  ).catch((error) => view.note(`The event stream failed: ${error.message}`, true));
  return { view, stop: () => controller.abort() };
}

/** Shows a report's run (no server): the graph, the result and the events it carries. */
export function showReport(root, data, config) {
  const graph = data.graph || graphFromResult(data.result);
  const model = new RunModel(data.result.runId, graph);
  for (const event of data.events || []) model.apply(event);
  model.finish(data.result);
  if (data.traceId) model.traceId = data.traceId;
  return new RunView(root, model, { live: false, jaegerUrl: config.jaegerUrl });
}

/** Without the definition: the nodes of the result, no edges. */
function graphFromResult(result) {
  const nodes = Object.keys(result.nodes || {}).map((ref) => ({
    ref,
    componentId: '',
    join: 'all',
    parents: 0,
    layer: 0,
    maxAttempts: 1,
    params: {},
    inputOverrides: {},
    inputs: [],
  }));
  return { title: result.title, nodes, edges: [] };
}
