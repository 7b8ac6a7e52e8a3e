// The SDK in this process against a real coordinator: what a component function receives,
// routed outputs, cancellation through its AbortSignal, refusals; and the error
// classification on its own.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { describe, test } from 'node:test';

import {
  classify,
  ComponentError,
  NetworkError,
  RefusedError,
  routed,
  ValidationError,
  Worker,
} from '../dist/index.js';
import { call, coordinator, events, remote, result, startRun } from './support.mjs';

function sdkWorker(coord, id, options = {}) {
  return new Worker({ coordinator: `http://${coord.workers}`, workerId: id, slots: 2, ...options });
}

describe('a component function', () => {
  test('receives its payload and its attempt: ids, metadata, trace context, its worker', async () => {
    // Spans are recorded only with an exporter: one whose receiver is absent will do.
    const coord = await coordinator('', [], { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9' });
    const seen = [];
    const worker = sdkWorker(coord, 'ctx').component('ts.inspect', async (payload, ctx) => {
      ctx.progress('half way');
      ctx.log('info', `inspecting ${payload.inputs.target}`);
      seen.push({ payload, ctx: { ...ctx, signal: undefined, progress: undefined, log: undefined } });
      return { ok: true };
    });
    try {
      await worker.start();
      const runId = await startRun(coord, {
        title: 'inspect',
        actions: [
          { ref: 'root', componentId: 'core.echo', params: { target: 'example.com' } },
          remote('look', 'ts.inspect', { depth: 2 }, {
            dependsOn: ['root'],
            inputMappings: { target: { sourceRef: 'root', sourceHandle: 'target' } },
          }),
        ],
        nodes: { look: { ref: 'look', joinStrategy: 'any', streamId: 'lane-1', timeoutSeconds: 30 } },
      });
      const ended = await result(coord, runId);
      assert.equal(ended.status, 'COMPLETED', JSON.stringify(ended));
      assert.deepEqual(ended.outputs.look, { ok: true });
      assert.equal(seen.length, 1);
      const [{ payload, ctx }] = seen;
      assert.deepEqual(payload, { inputs: { target: 'example.com' }, params: { depth: 2 } });
      assert.equal(ctx.attemptId, `${runId}/look/1`);
      assert.equal(ctx.runId, runId);
      assert.equal(ctx.nodeRef, 'look');
      assert.equal(ctx.componentId, 'ts.inspect');
      assert.equal(ctx.attempt, 1);
      assert.deepEqual(ctx.triggeredBy, ['root']);
      assert.equal(ctx.joinStrategy, 'any');
      assert.equal(ctx.streamId, 'lane-1');
      assert.equal(ctx.workerId, 'ctx');
      // The attempt's deadline: its start plus the node's 30 s timeout.
      const started = Date.parse(ended.nodes.look.startedAt);
      assert.ok(ctx.deadline >= started + 29_000 && ctx.deadline <= started + 31_000, `${ctx.deadline} vs ${started}`);
      // The attempt's trace context is in the run's trace.
      const [, traceId] = ctx.traceparent.match(/^00-([0-9a-f]{32})-[0-9a-f]{16}-0[01]$/) ?? [];
      const status = (await call(coord, 'GET', `/v1/runs/${runId}`)).body;
      assert.equal(traceId, status.traceId, `${ctx.traceparent} in ${JSON.stringify(status)}`);
      // As the engine decided the join.
      const startedEvent = (await events(coord, runId)).find((e) => e.nodeId === 'look' && e.type === 'STARTED');
      assert.deepEqual(startedEvent.metadata.triggeredBy, ['root']);
    } finally {
      await worker.drain().catch(() => {});
      coord.kill();
    }
  });

  test('routes: an output with its active ports runs only their edges', async () => {
    const coord = await coordinator();
    const worker = sdkWorker(coord, 'router').component('ts.route', async ({ params }) => routed({ chose: params.pick }, [params.pick]));
    try {
      await worker.start();
      const runId = await startRun(coord, {
        version: 2,
        title: 'route',
        entrypoint: { ref: 'route' },
        actions: [
          remote('route', 'ts.route', { pick: 'yes' }),
          { ref: 'onYes', componentId: 'core.echo' },
          { ref: 'onNo', componentId: 'core.echo' },
        ],
        edges: [
          { sourceRef: 'route', targetRef: 'onYes', sourceHandle: 'yes' },
          { sourceRef: 'route', targetRef: 'onNo', sourceHandle: 'no' },
        ],
      });
      const ended = await result(coord, runId);
      assert.equal(ended.status, 'COMPLETED', JSON.stringify(ended));
      assert.deepEqual(ended.outputs.route, { chose: 'yes' });
      assert.equal(ended.nodes.onYes.status, 'COMPLETED');
      assert.equal(ended.nodes.onNo.status, 'SKIPPED');
    } finally {
      await worker.drain().catch(() => {});
      coord.kill();
    }
  });

  test('hears a cancellation through its signal, and its CancelledError ends the attempt', async () => {
    const coord = await coordinator('cancelGraceSeconds: 60\n');
    let started;
    const running = new Promise((resolve) => (started = resolve));
    const worker = sdkWorker(coord, 'cancel').component('ts.wait', async (_payload, ctx) => {
      started();
      await new Promise((_resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)));
    });
    try {
      await worker.start();
      const runId = await startRun(coord, { title: 'cancel', actions: [remote('wait', 'ts.wait')] });
      await running;
      assert.equal((await call(coord, 'POST', `/v1/runs/${runId}/cancel`)).status, 202);
      const ended = await result(coord, runId);
      assert.equal(ended.status, 'CANCELLED');
      const summary = await worker.drain();
      assert.deepEqual(summary, { acknowledged: 1, stale: 0, stopped: 0 });
    } finally {
      coord.kill();
    }
  });

  test('speaks TLS to a coordinator serving workers over TLS', async () => {
    const tls = fileURLToPath(new URL('../../../tests/tls/', import.meta.url));
    const coord = await coordinator('', ['--worker-tls-cert', join(tls, 'coordinator.pem'), '--worker-tls-key', join(tls, 'coordinator.key')]);
    const ca = readFileSync(join(tls, 'ca.pem'));
    const worker = new Worker({ coordinator: `https://${coord.workers}`, workerId: 'sealed', ca })
      .component('ts.sealed', async ({ params }) => ({ sealed: params.n }));
    try {
      await worker.start();
      const runId = await startRun(coord, { title: 'tls', actions: [remote('s', 'ts.sealed', { n: 7 })] });
      const ended = await result(coord, runId);
      assert.deepEqual(ended.outputs.s, { sealed: 7 });
      assert.deepEqual(await worker.drain(), { acknowledged: 1, stale: 0, stopped: 0 });
      const trustless = new Worker({ coordinator: `https://${coord.workers}`, workerId: 'x' }).component('a', async () => ({}));
      await assert.rejects(trustless.start(), TypeError);
    } finally {
      coord.kill();
    }
  });

  test('a worker without its token is refused for good', async () => {
    const coord0 = await coordinator();
    const tokens = join(coord0.dir, 'workers.tokens');
    coord0.kill();
    writeFileSync(tokens, 'w1 secret-1\n');
    const coord = await coordinator('', ['--worker-token-file', tokens]);
    try {
      const anonymous = sdkWorker(coord, 'w1').component('ts.x', async () => ({}));
      await assert.rejects(anonymous.start(), (e) => e instanceof RefusedError && e.code === 16);
      const impostor = sdkWorker(coord, 'w2', { token: 'secret-1' }).component('ts.x', async () => ({}));
      await assert.rejects(impostor.start(), (e) => e instanceof RefusedError && e.code === 7);
      const rightful = sdkWorker(coord, 'w1', { token: 'secret-1' }).component('ts.x', async () => ({}));
      await rightful.start();
      assert.deepEqual(await rightful.drain(), { acknowledged: 0, stale: 0, stopped: 0 });
    } finally {
      coord.kill();
    }
  });
});

describe('error classification', () => {
  test('follows ShipSec: typed errors say it, other errors go by their name', () => {
    assert.deepEqual(classify(new NetworkError('reset')), { type: 'NetworkError', message: 'reset', retryable: true, details: undefined });
    assert.equal(classify(new ValidationError('bad')).retryable, false);
    assert.equal(classify(new ValidationError('bad', { retryable: true })).retryable, true);
    const named = Object.assign(new Error('slow down'), { name: 'RateLimitError' });
    assert.deepEqual(classify(named), { type: 'RateLimitError', message: 'slow down', retryable: true });
    assert.deepEqual(classify(new TypeError('x is undefined')), { type: 'TypeError', message: 'x is undefined', retryable: false });
    assert.deepEqual(classify('just text'), { type: 'Error', message: 'just text', retryable: false });
    const custom = new ComponentError('ContainerError', 'exit 137', { details: { exitCode: 137 } });
    assert.deepEqual(classify(custom), { type: 'ContainerError', message: 'exit 137', retryable: false, details: { exitCode: 137 } });
    const aborted = new AbortController();
    aborted.abort();
    assert.equal(classify(aborted.signal.reason, aborted.signal).type, 'CancelledError');
  });
});
