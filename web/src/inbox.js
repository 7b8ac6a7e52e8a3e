// A gate's input request, answered from the page: its title, description and context,
// then what its kind asks for — approve or reject; pick among options (one, or several
// when `multiple`); or fill a form built from its JSON schema — sent to
// `POST /v1/inputs/{requestId}/resolve`. A refused answer shows the server's reason and,
// for a form or a selection that does not fit, the path of each problem.

import { request, ApiError } from './api.js';
import { el, clock, jsonBlock } from './util.js';

/** The request's card: what it asks and, while it is pending, how to answer it. */
export function requestCard(req, onAnswered) {
  const pending = !req.status || req.status === 'pending';
  return el(
    'div',
    { class: 'request', 'data-request': req.requestId },
    el('h4', {}, req.title || 'Input required'),
    req.description ? el('p', {}, req.description) : null,
    el('p', { class: 'muted' }, `${req.inputType} · `, req.timeoutAt ? `expires ${clock(Date.parse(req.timeoutAt))}` : 'no deadline'),
    req.contextData && Object.keys(req.contextData).length ? jsonBlock(req.contextData) : null,
    pending ? answerForm(req, onAnswered) : el('p', { class: 'request-status' }, `This request is ${req.status}.`),
  );
}

function answerForm(req, onAnswered) {
  const note = el('input', { type: 'text', name: 'responseNote', placeholder: 'a note (optional)', 'aria-label': 'Note' });
  const by = el('input', { type: 'text', name: 'respondedBy', placeholder: 'your name (optional)', 'aria-label': 'Your name' });
  const outcome = el('div', { role: 'status', 'aria-live': 'polite' });
  const fields = req.inputType === 'form' ? formFields(req.inputSchema || {}) : req.inputType === 'selection' ? optionFields(req.inputSchema || {}) : null;
  const send = async (approved) => {
    const body = { approved };
    if (note.value.trim()) body.responseNote = note.value.trim();
    if (by.value.trim()) body.respondedBy = by.value.trim();
    if (fields && approved) body.responseData = fields.read();
    outcome.replaceChildren(el('p', { class: 'muted' }, 'Sending…'));
    try {
      const answer = await request('POST', `/v1/inputs/${encodeURIComponent(req.requestId)}/resolve`, body);
      outcome.replaceChildren(el('p', { class: 'answered' }, answer.duplicate ? 'Already answered so.' : 'Answered.'));
      form.querySelectorAll('button').forEach((b) => (b.disabled = true));
      if (onAnswered) onAnswered(answer);
    } catch (error) {
      outcome.replaceChildren(refusal(error));
    }
  };
  const primary = req.inputType === 'approval' || req.inputType === 'review' ? 'Approve' : 'Submit';
  const form = el(
    'form',
    { onsubmit: (e) => e.preventDefault() },
    fields ? fields.node : null,
    by,
    note,
    el(
      'div',
      { class: 'actions' },
      el('button', { type: 'button', class: 'approve', onclick: () => send(true) }, primary),
      el('button', { type: 'button', class: 'reject danger', onclick: () => send(false) }, 'Reject'),
    ),
    outcome,
  );
  return form;
}

function refusal(error) {
  const problems = error instanceof ApiError && error.details && error.details.problems;
  return el(
    'div',
    { class: 'refused', role: 'alert' },
    el('p', { class: 'message bad' }, error.message),
    problems && problems.length ? el('ul', { class: 'problems' }, problems.map((p) => el('li', {}, el('code', {}, p.path), ' ', p.message))) : null,
  );
}

/** A selection's options: radio buttons, or check boxes when several may be chosen. */
function optionFields(schema) {
  const options = (schema.options || []).map((o) => (typeof o === 'object' && o !== null ? o : { label: String(o), value: o }));
  const multiple = schema.multiple === true;
  const inputs = options.map((o, i) =>
    el('input', { type: multiple ? 'checkbox' : 'radio', name: 'selection', value: String(i), 'data-option': String(o.value) }),
  );
  const node = el(
    'fieldset',
    { class: 'options' },
    el('legend', {}, multiple ? 'Choose one or more' : 'Choose one'),
    options.map((o, i) => el('label', {}, inputs[i], ` ${o.label ?? o.value}`)),
  );
  const read = () => {
    const chosen = inputs.filter((input) => input.checked).map((input) => options[Number(input.value)].value);
    return { selection: multiple ? chosen : chosen[0] ?? null };
  };
  return { node, read };
}

/** A form from its JSON schema's top-level properties: text, numbers, yes/no, choices. */
function formFields(schema) {
  const properties = schema.properties || {};
  const required = new Set(schema.required || []);
  const readers = [];
  const rows = Object.entries(properties).map(([name, prop]) => {
    const label = `${prop.title || name}${required.has(name) ? ' *' : ''}`;
    let input;
    let read;
    if (Array.isArray(prop.enum)) {
      input = el('select', { name }, el('option', { value: '' }, '—'), prop.enum.map((v, i) => el('option', { value: String(i) }, String(v))));
      read = () => (input.value === '' ? undefined : prop.enum[Number(input.value)]);
    } else if (prop.type === 'boolean') {
      input = el('input', { type: 'checkbox', name });
      read = () => input.checked;
    } else if (prop.type === 'integer' || prop.type === 'number') {
      input = el('input', { type: 'number', name, step: prop.type === 'integer' ? '1' : 'any' });
      read = () => (input.value === '' ? undefined : Number(input.value));
    } else {
      input = el('input', { type: 'text', name });
      read = () => (input.value === '' ? undefined : input.value);
    }
    readers.push([name, read]);
    return el('label', {}, label, input, prop.description ? el('span', { class: 'muted' }, prop.description) : null);
  });
  const read = () => {
    const data = {};
    for (const [name, value] of readers.map(([n, r]) => [n, r()])) if (value !== undefined) data[name] = value;
    return data;
  };
  return { node: el('div', { class: 'fields' }, rows), read };
}

/** The "Inputs" page: pending requests across runs, kept live; each answerable here. */
export async function inputsPage(app, crumbs, problem) {
  crumbs.replaceChildren(el('a', { href: '/' }, 'Runs'), ' / ', el('span', {}, 'Inputs'));
  const body = el('tbody', {});
  const message = el('div', {});
  app.replaceChildren(
    el('div', { class: 'runs-head' }, el('h1', {}, 'Waiting for input')),
    message,
    el('table', { class: 'runs inputs' },
      el('thead', {}, el('tr', {}, ['Request', 'Run', 'Node', 'Asked'].map((h) => el('th', { scope: 'col' }, h)))),
      body),
  );
  const shown = new Map();
  let stopped = false;
  let timer = null;
  const refresh = async () => {
    try {
      const page = await request('GET', '/v1/inputs?status=pending&limit=100');
      message.replaceChildren();
      const ids = new Set(page.inputs.map((r) => r.requestId));
      // Rows stay while their request is pending, so a half-filled answer is not lost.
      for (const [id, row] of shown) {
        if (!ids.has(id)) {
          row.remove();
          shown.delete(id);
        }
      }
      for (const req of page.inputs) {
        if (shown.has(req.requestId)) continue;
        const row = el('tr', { 'data-request-row': req.requestId },
          el('td', {}, requestCard(req, () => refresh())),
          el('td', {}, el('a', { href: `/runs/${encodeURIComponent(req.runId)}` }, req.runId)),
          el('td', {}, el('code', {}, req.nodeRef)),
          el('td', {}, clock(Date.parse(req.createdAt))));
        shown.set(req.requestId, row);
        body.append(row);
      }
      const empty = body.querySelector('tr.empty');
      if (!shown.size && !empty) body.append(el('tr', { class: 'empty' }, el('td', { colspan: 4, class: 'muted' }, 'Nothing is waiting for input.')));
      if (shown.size && empty) empty.remove();
      app.dataset.ready = 'true';
    } catch (error) {
      message.replaceChildren(problem(error));
    }
  };
  const loop = async () => {
    await refresh();
    if (!stopped) timer = setTimeout(loop, 1000);
  };
  await loop();
  return {
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
