// The details of the selected node: status, attempts with their errors, inputs and
// outputs (truncated, expandable), triggeredBy, the failure it handled, and for a
// skipped or cancelled node the whole cause chain (docs/semantics.md §10), each node
// along it a link that selects it.

import { el, badge, duration, clock, jsonBlock, statusOf } from './util.js';
import { request } from './api.js';
import { requestCard } from './inbox.js';

/** A waiting gate's request, read whole (context, schema) and answerable from the panel. */
function waiting(asked) {
  const box = el('div', { class: 'waiting' }, requestCard({ ...asked, status: 'pending', loading: true }));
  request('GET', `/v1/inputs/${encodeURIComponent(asked.requestId)}`)
    .then((whole) => box.replaceChildren(requestCard(whole)))
    .catch(() => {
      // The event's fields are enough to answer an approval; keep what is shown.
    });
  return box;
}

const refLink = (ref, select) =>
  el('button', { type: 'button', class: 'ref', 'data-select': ref, onclick: () => select(ref) }, ref);

/** `text` with each ref it names turned into a link. */
function linked(text, refs, select) {
  if (!text) return [];
  const names = [...new Set(refs)].filter(Boolean).sort((a, b) => b.length - a.length);
  if (!names.length) return [text];
  const escaped = names.map((n) => n.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  const parts = text.split(new RegExp(`(?<![\\w-])(${escaped.join('|')})(?![\\w-])`));
  return parts.map((part, i) => (i % 2 === 1 ? refLink(part, select) : part));
}

function section(title, ...body) {
  return el('section', {}, el('h3', {}, title), ...body);
}

export function nodePanel(model, ref, select) {
  const node = model.node(ref);
  if (!node) return el('p', {}, `No node ${ref}.`);
  const def = node.def;
  const withdrawn = model.withdrawn(ref);
  const parts = [
    el('h2', {}, def.label || ref, def.label ? el('span', { class: 'muted' }, ` ${ref}`) : null),
    el('p', {}, badge(node.status), withdrawn ? el('span', { class: 'badge st-withdrawn' }, '⌀ withdrawn (lost the race)') : null,
      ' ', el('code', {}, def.componentId)),
  ];
  const facts = el('dl', { class: 'facts' });
  const fact = (k, ...v) => facts.append(el('dt', {}, k), el('dd', {}, ...v));
  fact('join', def.join === 'quorum' ? `quorum ${def.quorum}/${model.incoming.get(ref).length}` : `${def.join} (${model.incoming.get(ref).length} parents)`);
  if (node.queuedAt !== null) fact('queued', clock(node.queuedAt));
  if (node.startedAt !== null) fact('started', clock(node.startedAt));
  if (node.completedAt !== null) fact('ended', clock(node.completedAt), node.startedAt !== null ? ` (${duration(node.completedAt - node.startedAt)})` : '');
  if (node.triggeredBy && node.triggeredBy.length) fact('triggered by', ...node.triggeredBy.flatMap((r, i) => (i ? [', ', refLink(r, select)] : [refLink(r, select)])));
  if (def.groupId) fact('group', def.groupId);
  parts.push(facts);
  if (node.progress) parts.push(section('Progress', el('p', {}, node.progress)));

  if (node.reason || node.status === 'SKIPPED' || node.status === 'CANCELLED') {
    const chain = model.causeChain(ref);
    const all = [...model.nodes.keys()];
    parts.push(
      section(
        'Why it did not run',
        el(
          'ol',
          { class: 'chain' },
          chain.map((step) =>
            el(
              'li',
              {},
              refLink(step.ref, select),
              ' ',
              badge(step.status),
              step.reason ? el('div', { class: 'reason' }, ...linked(step.reason, all.filter((r) => step.reason.includes(r)), select)) : null,
              step.error ? el('div', { class: 'error' }, `${step.error.type}: ${step.error.message}`) : null,
            ),
          ),
        ),
      ),
    );
  }
  if (node.failure) {
    const f = node.failure;
    const reason = f.reason || {};
    parts.push(
      section(
        'Handled failure',
        el('p', {}, 'from ', f.at ? refLink(f.at, select) : '—', ': ', el('code', {}, reason.name || 'Error'), ' ', reason.message || ''),
      ),
    );
  }
  if (node.request && node.status === 'AWAITING_INPUT') parts.push(section('Waiting for input', waiting(node.request)));
  if (node.error) parts.push(section('Error', el('p', { class: 'error' }, el('code', {}, node.error.type), ' ', node.error.message)));

  const attempts = node.attempts;
  // The worker column shows only when a remote worker ran one of them.
  const remote = attempts.some((a) => a.worker);
  if (attempts.length) {
    parts.push(
      section(
        `Attempts (${attempts.length} of at most ${def.maxAttempts})`,
        el(
          'table',
          { class: 'attempts' },
          el(
            'thead',
            {},
            el('tr', {}, el('th', {}, '#'), el('th', {}, 'outcome'), el('th', {}, 'took'), remote ? el('th', {}, 'worker') : null, el('th', {}, 'error')),
          ),
          el(
            'tbody',
            {},
            attempts.map((a) =>
              el(
                'tr',
                {},
                el('td', {}, String(a.n)),
                el('td', {}, badge(a.end === null ? 'RUNNING' : a.outcome)),
                el('td', {}, duration((a.end ?? Date.now()) - a.start)),
                remote ? el('td', {}, a.worker ? el('code', {}, a.worker) : '') : null,
                el('td', {}, a.error ? `${a.error.type}: ${a.error.message}` : ''),
              ),
            ),
          ),
        ),
      ),
    );
  } else if (node.attemptCount) {
    parts.push(section('Attempts', el('p', {}, `${node.attemptCount}`)));
  }
  const inputs = model.inputs(ref);
  if (Object.keys(inputs).length) parts.push(section('Inputs', jsonBlock(inputs)));
  if (def.params && Object.keys(def.params).length) parts.push(section('Params', jsonBlock(def.params)));
  if (model.outputs[ref] !== undefined) parts.push(section('Output', jsonBlock(model.outputs[ref])));
  else if (node.status === 'COMPLETED' && !model.result) parts.push(section('Output', el('p', { class: 'muted' }, 'shown once the run has ended')));
  const parents = model.parents.get(ref);
  const children = model.children.get(ref);
  if (parents.length) parts.push(section('Parents', el('p', {}, ...parents.flatMap((r, i) => (i ? [' ', refLink(r, select)] : [refLink(r, select)])))));
  if (children.length) parts.push(section('Children', el('p', {}, ...children.flatMap((r, i) => (i ? [' ', refLink(r, select)] : [refLink(r, select)])))));
  return el('div', { class: 'panel-body', 'data-node': ref }, ...parts);
}

export function groupPanel(model, group, select) {
  const counts = model.counts(group.refs);
  const shown = group.refs.slice(0, 300);
  return el(
    'div',
    { class: 'panel-body' },
    el('h2', {}, `${group.refs.length} × ${model.node(group.refs[0]).def.componentId}`),
    el('p', {}, Object.entries(counts).map(([s, n]) => el('span', { class: 'count' }, badge(s), ` ${n}`))),
    el('p', { class: 'muted' }, 'Nodes of one layer with the same parents, children and component, drawn as one.'),
    el(
      'ul',
      { class: 'members' },
      shown.map((ref) => el('li', {}, refLink(ref, select), ' ', el('span', { class: 'muted' }, statusOf(model.node(ref).status).word))),
    ),
    group.refs.length > shown.length ? el('p', { class: 'muted' }, `and ${group.refs.length - shown.length} more`) : null,
  );
}
