// One conformance suite, two workers: the Rust `shipsec worker` and this SDK's (the fixture
// hosts core.echo, core.sleep and core.fail as the Rust built-ins behave). Each case runs
// against a real coordinator with real worker processes and real signals, and both kinds
// must pass it alike.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { call, drain, events, remote, result, startRun, untilEvent, withCoordinator, worker } from './support.mjs';

const RETRY = { maxAttempts: 3, initialIntervalSeconds: 0.01 };

for (const kind of ['rust', 'typescript']) {
  describe(`the ${kind} worker`, () => {
    test('runs a component with the params and mapped inputs sent, and its output is the node\'s', async () => {
      await withCoordinator('', async (coord) => {
        const w = await worker(kind, coord, `${kind}-echo`);
        const runId = await startRun(coord, {
          title: 'echo',
          actions: [
            { ref: 'root', componentId: 'core.echo', params: { target: 'example.com', ports: [80, 443], text: 'héllo ✓' } },
            remote('scan', 'core.echo', { mode: 'fast', nested: { deep: [1, { x: null }] } }, {
              dependsOn: ['root'],
              inputMappings: {
                target: { sourceRef: 'root', sourceHandle: 'target' },
                ports: { sourceRef: 'root', sourceHandle: 'ports' },
                text: { sourceRef: 'root', sourceHandle: 'text' },
              },
            }),
          ],
        });
        const ended = await result(coord, runId);
        assert.equal(ended.status, 'COMPLETED', JSON.stringify(ended));
        assert.deepEqual(ended.outputs.scan, {
          mode: 'fast',
          nested: { deep: [1, { x: null }] },
          target: 'example.com',
          ports: [80, 443],
          text: 'héllo ✓',
        });
        assert.equal(ended.nodes.scan.attempts, 1);
        assert.deepEqual(await drain(w), { acknowledged: 1, stale: 0, stopped: 0, code: 0 });
      });
    });

    test('a component that returns a pending marker makes its node a gate, answered over HTTP', async () => {
      await withCoordinator('', async (coord) => {
        const w = await worker(kind, coord, `${kind}-gate`);
        const runId = await startRun(coord, {
          title: 'gate',
          actions: [
            remote('ask', 'core.echo', { pending: true, inputType: 'approval', title: 'Ship it?', timeout: '1h' }),
            { ref: 'yes', componentId: 'core.echo' },
            { ref: 'no', componentId: 'core.echo' },
          ],
          edges: [
            { sourceRef: 'ask', targetRef: 'yes', sourceHandle: 'approved' },
            { sourceRef: 'ask', targetRef: 'no', sourceHandle: 'rejected' },
          ],
        });
        const asked = await untilEvent(coord, runId, (e) => e.type === 'AWAITING_INPUT');
        assert.equal(asked.nodeId, 'ask');
        assert.equal(asked.data.title, 'Ship it?');
        const requestId = asked.data.requestId;
        const listed = await call(coord, 'GET', `/v1/inputs?runId=${runId}&status=pending`);
        assert.deepEqual(listed.body.inputs.map((r) => r.requestId), [requestId]);
        const answer = await call(coord, 'POST', `/v1/inputs/${requestId}/resolve`, { approved: false, respondedBy: 'ana' });
        assert.equal(answer.status, 200, JSON.stringify(answer.body));
        const ended = await result(coord, runId);
        assert.equal(ended.status, 'COMPLETED', JSON.stringify(ended));
        assert.equal(ended.nodes.no.status, 'COMPLETED');
        assert.equal(ended.nodes.yes.status, 'SKIPPED');
        assert.equal(ended.outputs.ask.respondedBy, 'ana');
        assert.equal(ended.nodes.ask.attempts, 1);
        assert.deepEqual(await drain(w), { acknowledged: 1, stale: 0, stopped: 0, code: 0 });
      });
    });

    test('reports error types and retryability: a fatal one fails at once, a retryable one is retried', async () => {
      await withCoordinator('', async (coord) => {
        const w = await worker(kind, coord, `${kind}-errors`);
        const fatal = await startRun(coord, {
          title: 'fatal',
          actions: [remote('bad', 'core.fail', { errorType: 'ValidationError', message: 'the domain is not one', retryable: false }, { retryPolicy: RETRY })],
        });
        const flaky = await startRun(coord, {
          title: 'retryable',
          actions: [remote('flaky', 'core.fail', { errorType: 'NetworkError', message: 'connection reset', retryable: true }, { retryPolicy: RETRY })],
        });
        const fatalEnd = await result(coord, fatal);
        assert.equal(fatalEnd.status, 'FAILED');
        assert.equal(fatalEnd.nodes.bad.attempts, 1);
        const failed = (await events(coord, fatal)).find((e) => e.type === 'FAILED' && e.nodeId === 'bad');
        assert.deepEqual(failed.error, { type: 'ValidationError', message: 'the domain is not one' });
        const flakyEnd = await result(coord, flaky);
        assert.equal(flakyEnd.status, 'FAILED');
        assert.equal(flakyEnd.nodes.flaky.attempts, 3);
        const retried = (await events(coord, flaky)).filter((e) => e.type === 'RETRYING');
        assert.equal(retried.length, 2);
        assert.equal(retried[0].error.type, 'NetworkError');
        assert.deepEqual(await drain(w), { acknowledged: 4, stale: 0, stopped: 0, code: 0 });
      });
    });

    test('a cancellation reaches the running component, which ends well within the grace', async () => {
      await withCoordinator('cancelGraceSeconds: 60\n', async (coord) => {
        const w = await worker(kind, coord, `${kind}-cancel`);
        const runId = await startRun(coord, { title: 'cancel', actions: [remote('long', 'core.sleep', { ms: 600_000 })] });
        await w.until((l) => l.startsWith(`started ${runId}/long/1`));
        const asked = Date.now();
        assert.equal((await call(coord, 'POST', `/v1/runs/${runId}/cancel`)).status, 202);
        const ended = await result(coord, runId);
        assert.equal(ended.status, 'CANCELLED', JSON.stringify(ended));
        // It heard within a heartbeat or so; ignoring it would have taken the whole 60 s.
        assert.ok(Date.now() - asked < 30_000, `${Date.now() - asked} ms`);
        // Its CancelledError was its completion, acknowledged: not stopped, not stale.
        assert.deepEqual(await drain(w), { acknowledged: 1, stale: 0, stopped: 0, code: 0 });
      });
    });

    test('killed with SIGKILL, its attempt goes to another worker and runs a second time', async () => {
      await withCoordinator('', async (coord) => {
        const doomed = await worker(kind, coord, `${kind}-doomed`, 1);
        const runId = await startRun(coord, { title: 'kill', actions: [remote('work', 'core.sleep', { ms: 1_500, done: true }, { retryPolicy: RETRY })] });
        await doomed.until((l) => l.startsWith(`started ${runId}/work/1`));
        const survivor = await worker(kind, coord, `${kind}-survivor`, 1);
        doomed.signal('SIGKILL');
        await doomed.exited;
        await survivor.until((l) => l.startsWith(`started ${runId}/work/2`));
        const ended = await result(coord, runId);
        assert.equal(ended.status, 'COMPLETED', JSON.stringify(ended));
        assert.equal(ended.nodes.work.attempts, 2);
        assert.deepEqual(ended.outputs.work, { done: true });
        const crash = (await events(coord, runId)).find((e) => e.type === 'RETRYING');
        assert.equal(crash.error.type, 'CrashError');
        assert.match(crash.error.message, new RegExp(`${kind}-doomed`));
        assert.deepEqual(await drain(survivor), { acknowledged: 1, stale: 0, stopped: 0, code: 0 });
      });
    });

    test('SIGTERM drains it: the attempt it holds finishes there, and it takes no other', async () => {
      await withCoordinator('', async (coord) => {
        const draining = await worker(kind, coord, `${kind}-draining`, 2);
        const runId = await startRun(coord, {
          title: 'drain',
          actions: [remote('first', 'core.sleep', { ms: 1_000 }), remote('second', 'core.echo', {}, { dependsOn: ['first'] })],
        });
        await draining.until((l) => l.startsWith(`started ${runId}/first/1`));
        assert.deepEqual(await drain(draining), { acknowledged: 1, stale: 0, stopped: 0, code: 0 });
        assert.ok(!draining.lines.some((l) => l.includes('/second/')), draining.lines.join('\n'));
        const next = await worker(kind, coord, `${kind}-next`, 1);
        const ended = await result(coord, runId);
        assert.equal(ended.status, 'COMPLETED');
        assert.equal(ended.nodes.first.attempts, 1);
        assert.equal(ended.nodes.second.attempts, 1);
        assert.deepEqual(await drain(next), { acknowledged: 1, stale: 0, stopped: 0, code: 0 });
      });
    });

    test('stopped past its lease, its late work is never counted: stale or stopped by itself', async () => {
      await withCoordinator('', async (coord) => {
        const hung = await worker(kind, coord, `${kind}-hung`, 1);
        const runId = await startRun(coord, { title: 'hang', actions: [remote('work', 'core.sleep', { ms: 1_000, by: 'whoever' }, { retryPolicy: RETRY })] });
        await hung.until((l) => l.startsWith(`started ${runId}/work/1`));
        hung.signal('SIGSTOP');
        const other = await worker(kind, coord, `${kind}-other`, 1);
        await other.until((l) => l.startsWith(`started ${runId}/work/2`));
        hung.signal('SIGCONT');
        const ended = await result(coord, runId);
        assert.equal(ended.status, 'COMPLETED');
        assert.equal(ended.nodes.work.attempts, 2);
        const tally = await drain(hung);
        assert.equal(tally.acknowledged, 0);
        assert.equal(tally.stale + tally.stopped, 1, JSON.stringify(tally));
        assert.equal((await drain(other)).acknowledged, 1);
      });
    });
  });
}
