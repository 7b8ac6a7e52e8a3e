// The run model alone, in node (no browser): how trace events fold into a node's attempts.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { RunModel } from '../src/model.js';

const graph = {
  title: 'remote',
  nodes: [{ ref: 'scan', componentId: 'core.process', maxAttempts: 3 }],
  edges: [],
};

let seq = 0;
const event = (type, metadata, extra = {}) => ({
  id: `r:${++seq}`,
  runId: 'r',
  nodeId: 'scan',
  seq,
  type,
  level: 'info',
  timestamp: new Date(Date.UTC(2026, 11, 6, 12, 0, seq)).toISOString(),
  metadata,
  ...extra,
});

test('each attempt keeps the worker its end event names', () => {
  const model = new RunModel('r', graph);
  model.apply(event('STARTED', { attempt: 1 }));
  model.apply(
    event('RETRYING', { attempt: 1, workerId: 'w-lost' }, { error: { type: 'CrashError', message: 'lost worker `w-lost`' }, data: { delayMs: 0 } }),
  );
  model.apply(event('STARTED', { attempt: 2 }));
  assert.equal(model.node('scan').attempts[1].worker, null, 'no worker is known before the end');
  model.apply(event('COMPLETED', { attempt: 2, workerId: 'w-2' }));
  const attempts = model.node('scan').attempts;
  assert.deepEqual(
    attempts.map((a) => [a.n, a.outcome, a.worker]),
    [
      [1, 'FAILED', 'w-lost'],
      [2, 'COMPLETED', 'w-2'],
    ],
  );
  assert.equal(attempts[0].error.type, 'CrashError');
});

test('attempts run in-process name no worker', () => {
  const model = new RunModel('r', graph);
  model.apply(event('STARTED', { attempt: 1 }));
  model.apply(event('COMPLETED', { attempt: 1 }));
  assert.equal(model.node('scan').attempts[0].worker, null);
});
