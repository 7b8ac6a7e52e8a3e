// What the view knows of one run: its graph, and per node its state and attempts, folded
// from trace events (docs/semantics.md §9) and corrected by snapshots and the result.
// Rendering reads it; `dirty` names the nodes changed since the last frame.

export const TERMINAL = new Set(['COMPLETED', 'FAILED', 'SKIPPED', 'CANCELLED']);

const time = (t) => (t ? Date.parse(t) : null);

export class RunModel {
  constructor(runId, graph) {
    this.runId = runId;
    this.graph = graph;
    this.title = graph.title;
    this.status = 'RUNNING';
    this.startedAt = null;
    this.completedAt = null;
    this.traceId = null;
    this.outputs = {};
    this.result = null;
    this.nodes = new Map();
    this.index = new Map();
    this.parents = new Map();
    this.children = new Map();
    this.incoming = new Map();
    graph.nodes.forEach((def, i) => {
      this.index.set(def.ref, i);
      this.parents.set(def.ref, []);
      this.children.set(def.ref, []);
      this.incoming.set(def.ref, []);
      this.nodes.set(def.ref, {
        def,
        status: 'PENDING',
        attempts: [],
        queuedAt: null,
        startedAt: null,
        completedAt: null,
        triggeredBy: null,
        activePorts: null,
        failure: null,
        error: null,
        reason: null,
        progress: null,
      });
    });
    for (const edge of graph.edges) {
      this.parents.get(edge.target).push(edge.source);
      this.children.get(edge.source).push(edge.target);
      this.incoming.get(edge.target).push(edge);
    }
    this.dirty = new Set(this.nodes.keys());
    this.runDirty = true;
  }

  node(ref) {
    return this.nodes.get(ref);
  }

  /** Folds one trace event in. */
  apply(event) {
    const node = this.nodes.get(event.nodeId);
    const at = time(event.timestamp);
    if (this.startedAt === null || at < this.startedAt) this.startedAt = at;
    if (!node) return;
    const meta = event.metadata || {};
    if (meta.triggeredBy) node.triggeredBy = meta.triggeredBy;
    if (meta.failure) node.failure = meta.failure;
    const open = node.attempts.length ? node.attempts[node.attempts.length - 1] : null;
    const close = (outcome) => {
      if (open && open.end === null) {
        open.end = at;
        open.outcome = outcome;
        if (event.error) open.error = event.error;
        if (meta.workerId) open.worker = meta.workerId;
      }
    };
    switch (event.type) {
      case 'QUEUED':
        if (node.queuedAt === null) node.queuedAt = at;
        if (!TERMINAL.has(node.status)) node.status = 'QUEUED';
        break;
      case 'STARTED': {
        const n = meta.attempt || node.attempts.length + 1;
        if (!node.attempts.some((a) => a.n === n)) {
          node.attempts.push({ n, start: at, end: null, outcome: 'RUNNING', error: null, retryAt: null, worker: null });
        }
        if (node.startedAt === null) node.startedAt = at;
        node.status = 'RUNNING';
        break;
      }
      case 'PROGRESS':
        node.progress = event.message || (event.data && JSON.stringify(event.data)) || null;
        // A gate's request left pending (resolved, expired, cancelled).
        if (node.request && event.data && event.data.requestId === node.request.requestId) {
          node.request = { ...node.request, status: event.data.status };
        }
        break;
      case 'AWAITING_INPUT':
        // The gate's attempt returned its request; the node waits for a person.
        close('COMPLETED');
        node.status = 'AWAITING_INPUT';
        node.request = { ...(event.data || {}), status: 'pending' };
        break;
      case 'RETRYING':
        close('FAILED');
        if (open) open.retryAt = event.data && event.data.delayMs != null ? at + event.data.delayMs : null;
        node.status = 'RUNNING';
        break;
      case 'COMPLETED':
      case 'FAILED':
      case 'CANCELLED':
      case 'SKIPPED':
        close(event.type);
        node.status = event.type;
        node.completedAt = at;
        if (event.error) node.error = event.error;
        if (event.type === 'CANCELLED' || event.type === 'SKIPPED') node.reason = event.message || node.reason;
        break;
      default:
        break;
    }
    this.dirty.add(node.def.ref);
  }

  /** A status snapshot (`GET /v1/runs/{id}`) or a result: its node records win. */
  record(run) {
    // Once the result is known, a snapshot taken before it (a slow answer) changes nothing.
    if (this.result && run !== this.result) return;
    if (run.status) this.status = run.status;
    if (run.startedAt) this.startedAt = time(run.startedAt);
    if (run.completedAt) this.completedAt = time(run.completedAt);
    if (run.traceId) this.traceId = run.traceId;
    if (run.title) this.title = run.title;
    for (const [ref, rec] of Object.entries(run.nodes || {})) {
      const node = this.nodes.get(ref);
      if (!node) continue;
      node.status = rec.status;
      if (rec.startedAt) node.startedAt = time(rec.startedAt);
      if (rec.completedAt) node.completedAt = time(rec.completedAt);
      if (rec.triggeredBy) node.triggeredBy = rec.triggeredBy;
      if (rec.activePorts) node.activePorts = rec.activePorts;
      if (rec.failure) node.failure = rec.failure;
      if (rec.error) node.error = rec.error;
      if (rec.reason) node.reason = rec.reason;
      node.attemptCount = rec.attempts;
      this.dirty.add(ref);
    }
    this.runDirty = true;
  }

  /** The run's result (the terminal message). */
  finish(result) {
    this.result = result;
    this.outputs = result.outputs || {};
    this.record(result);
    this.completedAt = time(result.completedAt);
    // Attempts still open when the run ended (a resumed or terminated run) end with it.
    for (const node of this.nodes.values()) {
      for (const a of node.attempts) {
        if (a.end === null) {
          a.end = node.completedAt || this.completedAt;
          a.outcome = node.status;
        }
      }
    }
  }

  /** Whether `edge` is satisfied by its source's state (docs/semantics.md §1). */
  satisfied(edge) {
    const source = this.nodes.get(edge.source);
    switch (edge.kind) {
      case 'error':
        return source.status === 'FAILED';
      case 'always':
        return source.status === 'COMPLETED' || source.status === 'FAILED' || source.status === 'SKIPPED';
      default:
        return (
          source.status === 'COMPLETED' &&
          (!edge.sourceHandle || !source.activePorts || source.activePorts.includes(edge.sourceHandle))
        );
    }
  }

  /** `dead` (can never be satisfied), `fired` (it started its target), or `open`. */
  edgeState(edge) {
    const source = this.nodes.get(edge.source);
    const target = this.nodes.get(edge.target);
    if (this.satisfied(edge)) {
      const ran = target.attempts.length > 0 || target.status === 'COMPLETED' || target.status === 'FAILED';
      if (!ran) return 'open';
      if (target.triggeredBy && !target.triggeredBy.includes(edge.source)) return 'open';
      return 'fired';
    }
    return TERMINAL.has(source.status) ? 'dead' : 'open';
  }

  /** A race loser: cancelled because another parent fired its join first. */
  withdrawn(ref) {
    const node = this.nodes.get(ref);
    return node.status === 'CANCELLED' && !!node.reason && node.reason.startsWith('withdrawn:');
  }

  /** How many of `refs` are in each state. */
  counts(refs) {
    const counts = {};
    for (const ref of refs) {
      const s = this.nodes.get(ref).status;
      counts[s] = (counts[s] || 0) + 1;
    }
    return counts;
  }

  /** Completed nodes over all. */
  progress() {
    let done = 0;
    for (const node of this.nodes.values()) if (TERMINAL.has(node.status)) done += 1;
    return { completed: done, total: this.nodes.size };
  }

  /**
   * The critical path: from the node that ended last, back through the parent whose end
   * let each node start (the latest parent to end before it).
   */
  criticalPath() {
    let last = null;
    for (const node of this.nodes.values()) {
      const end = node.completedAt;
      // Ties go to the later node in topological order (a child ending as its parent did).
      if (end !== null && node.startedAt !== null && (last === null || end >= last.completedAt)) last = node;
    }
    const path = new Set();
    let current = last;
    while (current && !path.has(current.def.ref)) {
      path.add(current.def.ref);
      const start = current.queuedAt !== null ? current.queuedAt : current.startedAt;
      let best = null;
      for (const ref of this.parents.get(current.def.ref)) {
        const parent = this.nodes.get(ref);
        if (parent.completedAt === null || parent.startedAt === null) continue;
        if (start !== null && parent.completedAt > start + 1) continue;
        if (best === null || parent.completedAt > best.completedAt) best = parent;
      }
      current = best;
    }
    return path;
  }

  /**
   * Why `ref` did not run, as a chain back to its origin (docs/semantics.md §10): each
   * step a node, its status and its reason; the refs each reason names.
   */
  causeChain(ref) {
    const chain = [];
    const seen = new Set();
    let current = ref;
    while (current && !seen.has(current) && this.nodes.has(current)) {
      seen.add(current);
      const node = this.nodes.get(current);
      const step = { ref: current, status: node.status, reason: node.reason, error: node.error, mentions: [] };
      chain.push(step);
      const reason = node.reason || '';
      let next = null;
      let m;
      if ((m = /dead because (\S+) (COMPLETED|FAILED|SKIPPED|CANCELLED)(?: \(origin: (\S+?)\))?/.exec(reason))) {
        step.mentions = [m[1]].concat(m[3] ? [m[3]] : []);
        next = m[1];
      } else if ((m = /^withdrawn: (\S+) fired on (\S+)/.exec(reason))) {
        step.mentions = [m[1], m[2]];
        next = m[2];
      } else if ((m = /failRun after (\S+) FAILED/.exec(reason))) {
        step.mentions = [m[1]];
        next = m[1];
      }
      current = next;
    }
    return chain;
  }

  /** The values of `ref`'s inputs as far as known: overrides, then parents' outputs. */
  inputs(ref) {
    const def = this.nodes.get(ref).def;
    const values = { ...(def.inputOverrides || {}) };
    for (const input of def.inputs || []) {
      const output = this.outputs[input.sourceRef];
      if (output === undefined) {
        values[input.name] = { pending: `${input.sourceRef}.${input.sourceHandle}` };
      } else {
        values[input.name] = input.sourceHandle === '__self__' ? output : output[input.sourceHandle];
      }
    }
    return values;
  }
}
