// Gates in the run view, against a real `shipsec serve` in headless Chromium: a waiting
// gate's request shown in its node panel and answered there (an approval; a form whose
// answer must fit its schema, each problem named); the Inputs page listing pending
// requests across runs as they come and answering a selection.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { browser, openRun, page, result, shot, startRun, startServer } from '../support/helpers.mjs';

let server;
let chrome;

before(async () => {
  [server, chrome] = await Promise.all([startServer(), browser()]);
});

after(async () => {
  await Promise.all([server && server.stop(), chrome && chrome.close()]);
});

test('a waiting gate is answered from its node panel; a form names what does not fit its schema', async () => {
  const p = await page(chrome);
  const runId = await startRun(server, {
    title: 'triage',
    actions: [
      { ref: 'approve', componentId: 'core.manual_action.approval', params: { title: 'Deploy to {{env}}?', env: 'prod' } },
      {
        ref: 'ticket',
        componentId: 'core.manual_action.form',
        params: {
          title: 'File a ticket',
          schema: {
            type: 'object',
            required: ['ticket'],
            properties: {
              ticket: { type: 'string', pattern: '^SEC-[0-9]+$' },
              severity: { type: 'integer', minimum: 1, maximum: 5 },
            },
          },
        },
      },
      { ref: 'done', componentId: 'core.echo' },
    ],
    edges: [
      { sourceRef: 'approve', targetRef: 'ticket', sourceHandle: 'approved' },
      { sourceRef: 'ticket', targetRef: 'done', sourceHandle: 'approved' },
    ],
  });
  await openRun(p, server, runId);
  await p.waitForSelector('g.node[data-ref="approve"].st-awaiting_input', { timeout: 30_000 });
  await p.click('g.node[data-ref="approve"]');
  await p.waitForSelector('.request h4:has-text("Deploy to prod?")');
  await p.click('.request button.approve');
  // Answered, the gate completes (and its panel no longer asks).
  await p.waitForSelector('g.node[data-ref="approve"].st-completed', { timeout: 30_000 });

  // The form asks next; an answer that does not fit is refused with each problem's path.
  await p.waitForSelector('g.node[data-ref="ticket"].st-awaiting_input', { timeout: 30_000 });
  await p.click('g.node[data-ref="ticket"]');
  await p.waitForSelector('.request input[name="ticket"]');
  await p.fill('.request input[name="ticket"]', 'JIRA-1');
  await p.fill('.request input[name="severity"]', '9');
  await p.click('.request button.approve');
  await p.waitForSelector('.request .problems li');
  const paths = await p.$$eval('.request .problems code', (codes) => codes.map((c) => c.textContent).sort());
  assert.deepEqual(paths, ['responseData/severity', 'responseData/ticket']);
  await shot(p, 'gate-form-refused');
  await p.fill('.request input[name="ticket"]', 'SEC-42');
  await p.fill('.request input[name="severity"]', '2');
  await p.click('.request button.approve');
  await p.waitForSelector('[data-run-status="COMPLETED"]', { timeout: 30_000 });
  const ended = await result(server, runId);
  assert.equal(ended.outputs.ticket.ticket, 'SEC-42');
  assert.equal(ended.outputs.ticket.severity, 2);
  assert.equal(ended.nodes.done.status, 'COMPLETED');
  // The browser logs the refused answer's 422 itself; nothing else went wrong.
  assert.deepEqual(p.errors.filter((e) => !e.includes('status of 422')), []);
  await p.context().close();
});

test('the Inputs page lists requests as they come, across runs, and answers a selection', async () => {
  const p = await page(chrome);
  await p.goto(`${server.url}/inputs`);
  await p.waitForSelector('#app[data-ready="true"]');
  const runId = await startRun(server, {
    title: 'pick',
    actions: [
      { ref: 'pick', componentId: 'core.manual_action.selection', params: { title: 'Which severity?', options: [{ label: 'Low', value: 'low' }, 'high'] } },
      { ref: 'low', componentId: 'core.echo' },
      { ref: 'high', componentId: 'core.echo' },
    ],
    edges: [
      { sourceRef: 'pick', targetRef: 'low', sourceHandle: 'option:low' },
      { sourceRef: 'pick', targetRef: 'high', sourceHandle: 'option:high' },
    ],
  });
  const row = `tr:has(a[href="/runs/${runId}"])`;
  await p.waitForSelector(`${row} .request h4:has-text("Which severity?")`, { timeout: 30_000 });
  await shot(p, 'inputs-page');
  await p.check(`${row} input[data-option="high"]`);
  await p.click(`${row} button.approve`);
  await p.waitForSelector(row, { state: 'detached', timeout: 30_000 });
  const ended = await result(server, runId);
  assert.equal(ended.nodes.high.status, 'COMPLETED');
  assert.equal(ended.nodes.low.status, 'SKIPPED');
  assert.deepEqual(ended.outputs.pick.selection, 'high');
  assert.deepEqual(p.errors, []);
  await p.context().close();
});
