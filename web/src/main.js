// The run view's entry: `/` lists the runs, `/runs/{id}` opens one live; a report file
// (its data embedded) shows its run without a server.

import { request, token, setToken, ApiError } from './api.js';
import { openRun, showReport } from './runview.js';
import { inputsPage } from './inbox.js';
import { el, badge, duration, clock } from './util.js';

function readJson(id) {
  const node = document.getElementById(id);
  if (!node) return null;
  try {
    return JSON.parse(node.textContent);
  } catch {
    return null;
  }
}

const config = readJson('shipsec-config') || {};
const app = document.getElementById('app');
const crumbs = document.getElementById('crumbs');
const connection = document.getElementById('connection');

function setConnection(state) {
  const words = { live: '● live', reconnecting: '◌ reconnecting…', ended: '' };
  connection.textContent = words[state] ?? '';
  connection.dataset.state = state;
}

function settings() {
  const dialog = document.getElementById('settings');
  const input = document.getElementById('settings-token');
  const open = document.getElementById('settings-open');
  if (!dialog || !open) return;
  open.addEventListener('click', () => {
    input.value = token();
    dialog.showModal();
  });
  dialog.addEventListener('close', () => {
    if (dialog.returnValue === 'save') {
      setToken(input.value.trim());
      route();
    }
  });
}

function problem(error) {
  if (error instanceof ApiError && error.status === 401) {
    return el('p', { class: 'message bad', role: 'alert' }, 'The server wants an API token: set it in ', el('button', { type: 'button', class: 'link', onclick: () => document.getElementById('settings-open').click() }, 'Settings'), '.');
  }
  if (error instanceof ApiError && error.code === 'RUN_NOT_FOUND') {
    return el('p', { class: 'message bad', role: 'alert' }, 'No such run on this server (it may have been forgotten past retention).');
  }
  return el('p', { class: 'message bad', role: 'alert' }, `Could not load: ${error.message}`);
}

const STATUSES = ['', 'RUNNING', 'AWAITING_INPUT', 'COMPLETED', 'FAILED', 'CANCELLED', 'TERMINATED', 'TIMED_OUT'];
const LIVE = new Set(['RUNNING', 'AWAITING_INPUT']);

let current = null;

async function runsPage() {
  crumbs.replaceChildren(el('span', {}, 'Runs'));
  const params = new URLSearchParams(location.search);
  const status = params.get('status') || '';
  const filter = el('select', { id: 'status-filter', 'aria-label': 'Filter by status' },
    STATUSES.map((s) => el('option', { value: s, selected: s === status }, s ? s.toLowerCase() : 'every status')));
  filter.addEventListener('change', () => {
    const next = filter.value ? `/?status=${filter.value}` : '/';
    history.pushState(null, '', next);
    route();
  });
  const body = el('tbody', {});
  const table = el('table', { class: 'runs' },
    el('thead', {}, el('tr', {}, ['Status', 'Title', 'Progress', 'Duration', 'Started'].map((h) => el('th', { scope: 'col' }, h)))),
    body);
  const message = el('div', {});
  app.replaceChildren(el('div', { class: 'runs-head' }, el('h1', {}, 'Runs'), el('label', {}, 'Status ', filter)), message, table);
  let stopped = false;
  let timer = null;
  const progress = new Map();
  const load = async () => {
    try {
      const query = new URLSearchParams({ limit: '100' });
      if (status) query.set('status', status);
      const page = await request('GET', `/v1/runs?${query}`);
      message.replaceChildren();
      // Progress of the runs still going (their snapshots).
      await Promise.all(
        page.runs.filter((r) => LIVE.has(r.status)).slice(0, 50).map(async (r) => {
          try {
            const s = await request('GET', `/v1/runs/${encodeURIComponent(r.runId)}`);
            progress.set(r.runId, s.progress);
          } catch {
            progress.delete(r.runId);
          }
        }),
      );
      const now = Date.now();
      body.replaceChildren(
        ...page.runs.map((r) => {
          const started = Date.parse(r.startedAt);
          const end = r.completedAt ? Date.parse(r.completedAt) : now;
          const p = progress.get(r.runId);
          return el('tr', { 'data-run': r.runId },
            el('td', {}, badge(r.status)),
            el('td', {}, el('a', { href: `/runs/${encodeURIComponent(r.runId)}` }, r.title || r.runId)),
            el('td', {}, LIVE.has(r.status) && p ? [el('progress', { max: p.total, value: p.completed }), ` ${p.completed}/${p.total}`] : LIVE.has(r.status) ? '…' : 'ended'),
            el('td', {}, duration(end - started)),
            el('td', {}, clock(started)));
        }),
      );
      if (!page.runs.length) body.replaceChildren(el('tr', {}, el('td', { colspan: 5, class: 'muted' }, 'No runs yet.')));
      app.dataset.ready = 'true';
    } catch (error) {
      message.replaceChildren(problem(error));
    }
    if (!stopped) timer = setTimeout(load, 2000);
  };
  await load();
  return {
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

async function runPage(runId) {
  crumbs.replaceChildren(el('a', { href: '/' }, 'Runs'), ' / ', el('span', {}, runId));
  try {
    return await openRun(app, runId, config, setConnection);
  } catch (error) {
    app.replaceChildren(problem(error));
    return null;
  }
}

async function route() {
  if (current && current.stop) current.stop();
  current = null;
  delete app.dataset.ready;
  setConnection('');
  const match = /^\/runs\/([^/]+)\/?$/.exec(location.pathname);
  if (/^\/inputs\/?$/.test(location.pathname)) current = await inputsPage(app, crumbs, problem);
  else current = match ? await runPage(decodeURIComponent(match[1])) : await runsPage();
}

const report = readJson('shipsec-report');
if (report) {
  document.body.classList.add('report');
  crumbs.replaceChildren(el('span', {}, 'Report'));
  showReport(app, report, config);
} else {
  settings();
  document.addEventListener('click', (event) => {
    const link = event.target.closest && event.target.closest('a[href^="/"]');
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || link.target) return;
    event.preventDefault();
    history.pushState(null, '', link.getAttribute('href'));
    route();
  });
  window.addEventListener('popstate', route);
  route();
}
