// The run view against a real `shipsec serve`, in headless Chromium: a live run watched
// in dependency order with its parallel sleeps overlapping on the timeline; the cause
// chain of a skipped node; race losers withdrawn; cancel from the page; an HTML report
// opened from a file URL with no network; a 1,000-node run within its render bound and a
// 10,000-node run collapsed into groups; keyboard navigation; the API token setting.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, api, browser, drawnState, openRun, page, recordTransitions, result, shot, startRun, startServer } from '../support/helpers.mjs';

let server;
let chrome;

before(async () => {
  [server, chrome] = await Promise.all([startServer(), browser()]);
});

after(async () => {
  await Promise.all([server && server.stop(), chrome && chrome.close()]);
});

const sleep = (ref, ms, dependsOn) => ({ ref, componentId: 'core.sleep', params: { ms }, dependsOn });

/** The first time each node was drawn in each state. */
async function firstSeen(p) {
  const seen = await p.evaluate(() => window.__seen);
  const first = {};
  for (const { ref, state, at } of seen) {
    first[ref] ??= {};
    first[ref][state] ??= at;
  }
  return { first, seen };
}

/** The x range of the lane's segments of class `cls`. */
async function segment(p, lane, cls) {
  return p.$eval(`g.lane[data-lane="${lane}"] rect.${cls}`, (r) => {
    const x = Number(r.getAttribute('x'));
    return [x, x + Number(r.getAttribute('width'))];
  });
}

test('a live run: nodes go pending, running, completed in dependency order; parallel sleeps overlap', async () => {
  const p = await page(chrome);
  await recordTransitions(p);
  const runId = await startRun(server, {
    title: 'two parallel sleeps',
    actions: [sleep('gate', 2000), sleep('left', 500, ['gate']), sleep('right', 500, ['gate']), sleep('join', 300, ['left', 'right'])],
  });
  await openRun(p, server, runId);
  await p.waitForSelector('[data-run-status="COMPLETED"]', { timeout: 60_000 });
  const { first, seen } = await firstSeen(p);
  const why = JSON.stringify(seen);
  for (const ref of ['left', 'right', 'join']) {
    assert.ok(first[ref].pending !== undefined, `${ref} was drawn pending: ${why}`);
    assert.ok(first[ref].pending < first[ref].running, `${ref} pending before running: ${why}`);
    assert.ok(first[ref].running < first[ref].completed, `${ref} running before completed: ${why}`);
  }
  assert.ok(first.gate.running < first.gate.completed, why);
  for (const ref of ['left', 'right']) {
    assert.ok(first.gate.completed <= first[ref].running, `gate ended before ${ref} ran: ${why}`);
    assert.ok(first[ref].completed <= first.join.running, `${ref} ended before join ran: ${why}`);
  }
  // The two sleeps overlap on the timeline (most of their length).
  const left = await segment(p, 'left', 'seg-completed');
  const right = await segment(p, 'right', 'seg-completed');
  const overlap = Math.min(left[1], right[1]) - Math.max(left[0], right[0]);
  assert.ok(overlap > 0.8 * (left[1] - left[0]), `segments ${left} and ${right} overlap by ${overlap}`);
  // The critical path: the gate, one of the sleeps, the join.
  const critical = await p.$$eval('g.lane.critical', (lanes) => lanes.map((l) => l.getAttribute('data-lane')));
  assert.ok(critical.includes('gate') && critical.includes('join'), `critical path ${critical}`);
  await shot(p, 'live-run');
  assert.deepEqual(p.errors, []);
  await p.context().close();
});

test('a skipped node shows its cause chain back to the node that failed', async () => {
  const runId = await startRun(server, {
    version: 2,
    title: 'failure, handler, skipped branch',
    nodes: {},
    edges: [
      { id: 'e1', sourceRef: 'start', targetRef: 'scan' },
      { id: 'e2', sourceRef: 'scan', targetRef: 'notify', kind: 'error' },
      { id: 'e3', sourceRef: 'scan', targetRef: 'report' },
      { id: 'e4', sourceRef: 'report', targetRef: 'publish' },
    ],
    actions: [
      { ref: 'start', componentId: 'core.echo' },
      { ref: 'scan', componentId: 'core.fail', params: { message: 'target unreachable', errorType: 'ScannerError' } },
      { ref: 'notify', componentId: 'core.echo' },
      { ref: 'report', componentId: 'core.echo' },
      { ref: 'publish', componentId: 'core.echo' },
    ],
  });
  const ended = await result(server, runId);
  assert.equal(ended.nodes.publish.status, 'SKIPPED');
  const p = await page(chrome);
  await openRun(p, server, runId);
  await p.waitForSelector(`[data-run-status="${ended.status}"]`);
  await p.click('g.node[data-ref="publish"]');
  const chain = await p.$$eval('.chain > li', (items) => items.map((li) => li.querySelector('button.ref').textContent));
  assert.deepEqual(chain, ['publish', 'report', 'scan']);
  const text = await p.textContent('.chain');
  assert.match(text, /dead because report SKIPPED/);
  assert.match(text, /ScannerError: target unreachable/);
  assert.equal(await drawnState(p, 'notify'), 'completed');
  // The edge into the handler fired; the one into the skipped branch is dead.
  assert.equal(await p.$$eval('path.edge.kind-error.fired', (e) => e.length), 1);
  assert.ok((await p.$$eval('path.edge.dead', (e) => e.length)) >= 2);
  await shot(p, 'cause-chain');
  // Each node along the chain is a link that selects it.
  await p.click('.chain button.ref[data-select="scan"]');
  await p.waitForSelector('.panel-body[data-node="scan"]');
  assert.match(await p.textContent('.panel'), /target unreachable/);
  assert.match(await p.getAttribute('g.node[data-ref="scan"]', 'class'), /selected/);
  assert.deepEqual(p.errors, []);
  await p.context().close();
});

test('a first race: the losers are marked withdrawn', async () => {
  const runId = await startRun(server, {
    title: 'race',
    nodes: { fetch: { ref: 'fetch', joinStrategy: 'first' } },
    actions: [
      { ref: 'start', componentId: 'core.echo' },
      sleep('fast', 50, ['start']),
      sleep('slow-a', 30_000, ['start']),
      sleep('slow-b', 30_000, ['start']),
      { ref: 'fetch', componentId: 'core.echo', dependsOn: ['fast', 'slow-a', 'slow-b'] },
    ],
  });
  await result(server, runId);
  const p = await page(chrome);
  await openRun(p, server, runId);
  for (const loser of ['slow-a', 'slow-b']) {
    const cls = await p.getAttribute(`g.node[data-ref="${loser}"]`, 'class');
    assert.match(cls, /withdrawn/, loser);
    assert.match(await p.textContent(`g.node[data-ref="${loser}"]`), /withdrawn/);
  }
  assert.doesNotMatch(await p.getAttribute('g.node[data-ref="fast"]', 'class'), /withdrawn/);
  assert.match(await p.textContent('g.node[data-ref="fetch"]'), /first 1\/3/);
  await p.click('g.node[data-ref="slow-a"]');
  assert.match(await p.textContent('.panel'), /withdrawn: fetch fired on fast/);
  await shot(p, 'race');
  assert.deepEqual(p.errors, []);
  await p.context().close();
});

test('cancel a run from the page: it ends CANCELLED', async () => {
  const runId = await startRun(server, { title: 'long', actions: [sleep('wait', 60_000), sleep('after', 10, ['wait'])] });
  const p = await page(chrome);
  await openRun(p, server, runId);
  await p.waitForSelector('g.node[data-ref="wait"].st-running');
  await p.click('#cancel-run');
  await p.waitForSelector('[data-run-status="CANCELLED"]', { timeout: 30_000 });
  assert.equal(await drawnState(p, 'wait'), 'cancelled');
  assert.equal(await drawnState(p, 'after'), 'cancelled');
  assert.equal((await api(server, 'GET', `/v1/runs/${runId}`)).body.status, 'CANCELLED');
  assert.ok(await p.isDisabled('#cancel-run'));
  await shot(p, 'cancelled');
  assert.deepEqual(p.errors, []);
  await p.context().close();
});

test('the --html report opens from a file URL with no network and shows the same run', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shipsec-report-'));
  const html = join(dir, 'report.html');
  const definition = new URL('../../examples/retry.yaml', import.meta.url).pathname;
  const out = execFileSync(BIN, ['run', definition, '--json', '--html', html], { encoding: 'utf8' });
  const ended = JSON.parse(out);
  const p = await page(chrome);
  const requests = [];
  await p.context().route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith('file:')) return route.continue();
    requests.push(url);
    return route.abort();
  });
  await p.goto(`file://${html}`);
  await p.waitForSelector('#app[data-ready="true"]');
  for (const [ref, node] of Object.entries(ended.nodes)) {
    assert.equal(await drawnState(p, ref), node.status.toLowerCase(), ref);
  }
  assert.match(await p.textContent('.run-header'), new RegExp(ended.runId));
  assert.match(await p.textContent('g.node[data-ref="enrich"]'), /3 attempts/);
  // Failed attempts and the backoff between them are on the timeline.
  assert.equal(await p.$$eval('g.lane[data-lane="enrich"] rect.seg-failed', (r) => r.length), 2);
  assert.equal(await p.$$eval('g.lane[data-lane="enrich"] line.seg-backoff', (r) => r.length), 2);
  assert.deepEqual(requests, []);
  await shot(p, 'report');
  assert.deepEqual(p.errors, []);
  await p.context().close();
});

/** A layered DAG of `layers × width` nodes, each with up to three parents in the layer before. */
function layered(layers, width) {
  let seed = 7;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  const actions = [];
  for (let l = 0; l < layers; l++) {
    for (let i = 0; i < width; i++) {
      const parents = new Set();
      if (l > 0) for (let k = 0; k < 1 + Math.floor(random() * 3); k++) parents.add(`n${l - 1}-${Math.floor(random() * width)}`);
      actions.push({ ref: `n${l}-${i}`, componentId: 'core.echo', dependsOn: [...parents] });
    }
  }
  return { title: `${layers * width} nodes`, actions };
}

test('a 1,000-node run renders within 2 s, and the console stays clean', async () => {
  const runId = await startRun(server, layered(25, 40));
  await result(server, runId);
  const p = await page(chrome);
  const took = await openRun(p, server, runId);
  const drawn = await p.$$eval('g.node', (n) => n.length);
  assert.equal(drawn, 1000);
  assert.equal(await p.$$eval('g.lane', (n) => n.length), 1000);
  const render = Number(await p.getAttribute('#app', 'data-render-ms'));
  console.log(`1,000 nodes: page ready in ${took} ms (view drawn in ${render} ms)`);
  assert.ok(took < 2000, `ready after ${took} ms`);
  await shot(p, 'thousand-nodes');
  assert.deepEqual(p.errors, []);
  await p.context().close();
});

test('a 10,000-node run collapses its wide fan into a group and stays responsive', async () => {
  const actions = [{ ref: 'source', componentId: 'core.echo' }];
  for (let i = 0; i < 9998; i++) actions.push({ ref: `scan-${i}`, componentId: 'core.echo', dependsOn: ['source'] });
  actions.push({ ref: 'sink', componentId: 'core.echo', dependsOn: actions.slice(1).map((a) => a.ref) });
  const runId = await startRun(server, { title: '10,000 nodes', actions });
  await result(server, runId);
  const p = await page(chrome);
  const took = await openRun(p, server, runId, 60_000);
  console.log(`10,000 nodes: page ready in ${took} ms`);
  assert.equal(await p.$$eval('g.node', (n) => n.length), 3);
  assert.match(await p.textContent('g.node.group'), /9998 × core\.echo/);
  assert.match(await p.textContent('g.node.group'), /9998 completed/);
  await p.click('g.node.group');
  assert.match(await p.textContent('.panel'), /and 9698 more/);
  // Still responsive: a click is answered at once.
  const clicked = Date.now();
  await p.click('g.node[data-ref="sink"]');
  await p.waitForSelector('.panel-body[data-node="sink"]');
  assert.ok(Date.now() - clicked < 2000);
  await shot(p, 'ten-thousand-nodes');
  assert.deepEqual(p.errors, []);
  await p.context().close();
});

test('nodes can be reached and opened with the keyboard', async () => {
  const runId = await startRun(server, { title: 'keys', actions: [{ ref: 'a', componentId: 'core.echo' }, { ref: 'b', componentId: 'core.echo', dependsOn: ['a'] }] });
  await result(server, runId);
  const p = await page(chrome);
  await openRun(p, server, runId);
  await p.focus('g.node[data-ref="a"]');
  await p.keyboard.press('ArrowRight');
  await p.keyboard.press('Enter');
  await p.waitForSelector('.panel-body[data-node="b"]');
  assert.deepEqual(p.errors, []);
  await p.context().close();
});

test('with a token configured, the page asks for it and then works', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shipsec-token-'));
  writeFileSync(join(dir, 'tokens'), 'web-secret\n');
  const guarded = await startServer(['--token-file', join(dir, 'tokens')]);
  try {
    const p = await page(chrome);
    await p.goto(`${guarded.url}/`);
    await p.waitForSelector('text=The server wants an API token');
    await p.click('#settings-open');
    await p.fill('#settings-token', 'web-secret');
    await p.click('#settings-save');
    await p.waitForSelector('#app[data-ready="true"]');
    assert.match(await p.textContent('table.runs'), /No runs yet/);
    // 401 answers are expected console errors here (the page's first requests).
    await p.context().close();
  } finally {
    await guarded.stop();
  }
});
