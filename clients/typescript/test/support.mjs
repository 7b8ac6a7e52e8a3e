// Real processes for the SDK's tests: a `shipsec serve --worker-listen` coordinator started
// from this build's binary (SHIPSEC_BIN), workers of either kind, and the coordinator's
// HTTP API through fetch.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const BIN = process.env.SHIPSEC_BIN;
if (!BIN) throw new Error('SHIPSEC_BIN must name the shipsec binary (cargo test --test typescript sets it)');

const FIXTURE = fileURLToPath(new URL('./fixtures/worker.mjs', import.meta.url));
/** Heartbeats every 0.2 s, leases of 2 s. */
const WORKERS = 'workers:\n  heartbeatSeconds: 0.2\n  leaseSeconds: 2\n';

/** A process whose stdout lines can be awaited. */
class Proc {
  constructor(child) {
    this.child = child;
    this.lines = [];
    this.waiters = [];
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      this.lines.push(line);
      for (const w of [...this.waiters]) w();
    });
  }

  get pid() {
    return this.child.pid;
  }

  /** The first line (from the start) that `wanted` accepts, within a minute. */
  until(wanted, from = 0) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no line matched; got ${JSON.stringify(this.lines)}`)), 60_000);
      const look = () => {
        const index = this.lines.findIndex((l, i) => i >= from && wanted(l));
        if (index >= 0) {
          clearTimeout(timer);
          this.waiters = this.waiters.filter((w) => w !== look);
          resolve(this.lines[index]);
        }
      };
      this.waiters.push(look);
      look();
    });
  }

  signal(name) {
    this.child.kill(name);
  }

  kill() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

/** A coordinator with fast leases; `extraConfig` is appended to its configuration. */
export async function coordinator(extraConfig = '', extraArgs = [], extraEnv = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'shipsec-sdk-'));
  const config = join(dir, 'engine.yaml');
  writeFileSync(config, WORKERS + extraConfig);
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OTEL_') && k !== 'SHIPSEC_API_TOKEN'));
  Object.assign(env, extraEnv);
  const child = spawn(
    BIN,
    ['serve', '--listen', '127.0.0.1:0', '--worker-listen', '127.0.0.1:0', '--data-dir', join(dir, 'data'), '--config', config, ...extraArgs],
    { stdio: ['ignore', 'pipe', 'inherit'], env },
  );
  const proc = new Proc(child);
  const api = (await proc.until((l) => l.startsWith('listening on '))).slice('listening on '.length);
  const workers = (await proc.until((l) => l.startsWith('serving workers on '))).slice('serving workers on '.length);
  await proc.until((l) => l.startsWith('ready:'));
  return { proc, api, workers, dir, kill: () => proc.kill() };
}

/** Runs `body` against a fresh [coordinator], killed afterwards however `body` ends. */
export async function withCoordinator(extraConfig, body) {
  const coord = await coordinator(extraConfig);
  try {
    return await body(coord);
  } finally {
    coord.kill();
  }
}

/** A worker of `kind` (`rust` or `typescript`), registered. */
export async function worker(kind, coord, id, slots = 2) {
  const args = ['--coordinator', `http://${coord.workers}`, '--id', id, '--slots', String(slots), '--print-attempts'];
  const child =
    kind === 'rust'
      ? spawn(BIN, ['worker', ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
      : spawn(process.execPath, [FIXTURE, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const proc = new Proc(child);
  await proc.until((l) => l.startsWith('registered as '));
  return proc;
}

/** SIGTERM, then the tally `{acknowledged, stale, stopped}`; the worker must exit 0. */
export async function drain(proc) {
  proc.signal('SIGTERM');
  const line = await proc.until((l) => l.startsWith('stopped: '));
  const code = await proc.exited;
  const [acknowledged, stale, stopped] = line.match(/\d+/g).map(Number);
  return { acknowledged, stale, stopped, code };
}

export async function call(coord, method, path, body) {
  const response = await fetch(`${coord.api}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : undefined };
}

export async function startRun(coord, definition) {
  const answer = await call(coord, 'POST', '/v1/runs', { definition });
  if (answer.status !== 201) throw new Error(`run refused: ${JSON.stringify(answer.body)}`);
  return answer.body.runId;
}

export async function result(coord, runId) {
  const answer = await call(coord, 'GET', `/v1/runs/${runId}/result?wait=120`);
  if (answer.status !== 200) throw new Error(`no result: ${JSON.stringify(answer.body)}`);
  return answer.body;
}

export async function events(coord, runId) {
  const all = [];
  for (;;) {
    const after = all.length ? all[all.length - 1].seq : 0;
    const page = (await call(coord, 'GET', `/v1/runs/${runId}/events?after=${after}`)).body;
    if (page.length === 0) return all;
    all.push(...page);
  }
}

/** A remote node. */
export function remote(ref, componentId, params = {}, extra = {}) {
  return { ref, componentId, params, runner: { kind: 'remote' }, ...extra };
}

/** Follows the run's event stream (SSE) until an event `wanted` accepts; that event. */
export async function untilEvent(coord, runId, wanted) {
  const response = await fetch(`${coord.api}/v1/runs/${runId}/events`, {
    headers: { accept: 'text/event-stream' },
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`the run's stream ended before the event came`);
      buffered += value;
      let end;
      while ((end = buffered.indexOf('\n\n')) >= 0) {
        const frame = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        if (!frame.split('\n').includes('event: trace')) continue;
        const data = frame.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
        const event = JSON.parse(data);
        if (wanted(event)) return event;
      }
    }
  } finally {
    await reader.cancel();
  }
}
