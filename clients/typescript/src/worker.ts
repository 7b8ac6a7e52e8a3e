/**
 * A worker of shipsec-orchestrator's coordinator (`shipsec serve --worker-listen`), over gRPC
 * `shipsec.worker.v1`: it registers its component functions, long-polls for attempts within
 * its free slots, heartbeats the attempts it holds, and completes each with the fence it was
 * given.
 *
 * - Cancellation: an attempt the coordinator names to cancel has its `signal` aborted; the
 *   function's outcome (usually a `CancelledError`) is still reported.
 * - Stale leases: an attempt named stale (reassigned, or ended by the engine) has its signal
 *   aborted and its outcome dropped: it is no longer this worker's.
 * - A worker that gets no heartbeat answered for a whole lease stops all its attempts the same
 *   way: by then the coordinator has given them to other workers.
 * - A completion is sent until it is answered `ACK` or `STALE`.
 * - `drain()` takes no new attempt, lets the held ones finish and reports them, then closes.
 */

import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

import { CANCELLED_ERROR, classify } from './errors.js';

/** The protocol version this SDK speaks. */
export const PROTOCOL_VERSION = 1;
const SDK = 'typescript/0.1.0';
const POLL_WAIT_MS = 20_000;
const COMPLETE_TIMEOUT_MS = 40_000;
const MAX_BACKOFF_MS = 2_000;
const MAX_MESSAGE = 64 << 20;

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

/** What a component function receives first. */
export interface Payload {
  /** The node's resolved inputs. */
  inputs: JsonObject;
  /** The node's params. */
  params: JsonObject;
}

/** The failure a node reached through an `error` edge handles. */
export interface HandledFailure {
  at: string;
  reason: { message: string; name: string };
}

/** Everything a component function may know about its attempt, and its channels back. */
export interface AttemptContext {
  /** `<runId>/<nodeRef>/<attempt>`: stable across re-runs of the attempt, an idempotency key. */
  attemptId: string;
  runId: string;
  nodeRef: string;
  componentId: string;
  /** From 1. */
  attempt: number;
  streamId: string;
  joinStrategy: string;
  triggeredBy: string[];
  failure?: HandledFailure;
  /** W3C trace context of the attempt's span, for spans of the component's own. */
  traceparent: string;
  /** Milliseconds since the epoch by which the attempt must end; undefined: none. */
  deadline?: number;
  /** The id of the worker running it. */
  workerId: string;
  /** Aborts on cancellation, on a stale lease and when the worker loses its coordinator. */
  signal: AbortSignal;
  /** Reports progress (sent with the next heartbeat; the latest wins). */
  progress(text: string): void;
  /** A log line for the attempt's span (sent with the next heartbeat). */
  log(level: 'debug' | 'info' | 'warn' | 'error', message: string): void;
}

/** An output that activates only some ports; see {@link routed}. */
export interface Routed {
  readonly output: JsonObject;
  readonly activePorts: string[];
  readonly [ROUTED]: true;
}
const ROUTED = Symbol('shipsec.routed');

/** An output that activates only `activePorts` (a branching component). */
export function routed(output: JsonObject, activePorts: string[]): Routed {
  return { output, activePorts, [ROUTED]: true };
}

export type ComponentFn = (payload: Payload, context: AttemptContext) => Promise<JsonObject | Routed>;

export interface WorkerOptions {
  /** The coordinator: `http://host:port`, or `https://host:port` with {@link WorkerOptions.ca}. */
  coordinator: string;
  /** The CA certificate (PEM) an `https://` coordinator's certificate must chain to. */
  ca?: string | Buffer;
  /** This worker's bearer token, when the coordinator has tokens. */
  token?: string;
  /** Unique among the coordinator's workers. */
  workerId: string;
  /** Attempts run at once (default 4). */
  slots?: number;
  /** Queues served; none: the default queue. */
  queues?: string[];
  labels?: Record<string, string>;
  /** Called with each attempt's id as it starts on this worker. */
  onStart?: (attemptId: string) => void;
}

/** What the worker did. */
export interface WorkerSummary {
  acknowledged: number;
  stale: number;
  stopped: number;
}

interface Held {
  attemptId: string;
  fence: string;
  abort: AbortController;
  /** Dropped: its outcome is not to be sent. */
  stopped: boolean;
  /** Its function returned; its completion is on the way. */
  completing: boolean;
  progress: string;
  logs: { level: string; message: string; unixMs: number }[];
}

const TRANSIENT = new Set([
  grpc.status.UNAVAILABLE,
  grpc.status.UNKNOWN,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.CANCELLED,
  grpc.status.ABORTED,
  grpc.status.INTERNAL,
  grpc.status.RESOURCE_EXHAUSTED,
]);

/** The coordinator refused the worker for good (a bad token, another protocol version). */
export class RefusedError extends Error {
  readonly code: grpc.status;
  constructor(error: grpc.ServiceError) {
    super(`the coordinator refused the worker: ${error.details} (${grpc.status[error.code]})`);
    this.name = 'RefusedError';
    this.code = error.code;
  }
}

type Rpc = (request: object, metadata: grpc.Metadata, options: grpc.CallOptions, callback: (error: grpc.ServiceError | null, answer: any) => void) => void;

function loadService(): grpc.ServiceClientConstructor {
  const path = fileURLToPath(new URL('../proto/worker.proto', import.meta.url));
  const definition = protoLoader.loadSync(path, { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true });
  const loaded = grpc.loadPackageDefinition(definition) as any;
  return loaded.shipsec.worker.v1.Worker as grpc.ServiceClientConstructor;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Doubling pauses between tries, from 50 ms up to {@link MAX_BACKOFF_MS}. */
class Backoff {
  private ms = 50;

  async wait(): Promise<void> {
    await sleep(this.ms);
    this.ms = Math.min(this.ms * 2, MAX_BACKOFF_MS);
  }

  reset(): void {
    this.ms = 50;
  }
}

export class Worker {
  readonly workerId: string;
  readonly slots: number;
  private readonly options: WorkerOptions;
  private readonly components = new Map<string, { fn: ComponentFn; summary: string }>();
  private client?: grpc.Client;
  private readonly held = new Map<string, Held>();
  private readonly running = new Set<Promise<void>>();
  private heartbeatMs = 2_000;
  private leaseMs = 10_000;
  private registrations = 0;
  private registering?: Promise<void>;
  private draining = false;
  private closed = false;
  private slotFreed: () => void = () => {};
  private loops: Promise<void>[] = [];
  private failure?: Error;
  readonly summary: WorkerSummary = { acknowledged: 0, stale: 0, stopped: 0 };

  constructor(options: WorkerOptions) {
    if (!options.workerId) throw new TypeError('workerId must not be empty');
    const slots = options.slots ?? 4;
    if (!Number.isInteger(slots) || slots < 1) throw new TypeError(`slots must be a positive integer, got ${slots}`);
    this.options = options;
    this.workerId = options.workerId;
    this.slots = slots;
  }

  /** Hosts `fn` as component `id`. */
  component(id: string, fn: ComponentFn, summary = ''): this {
    if (this.client) throw new Error('components are registered before start()');
    this.components.set(id, { fn, summary });
    return this;
  }

  /** Registers with the coordinator (trying again while it cannot be reached), then serves it. */
  async start(): Promise<void> {
    if (this.components.size === 0) throw new Error('a worker hosts at least one component');
    const Service = loadService();
    const secure = this.options.coordinator.startsWith('https://');
    if (secure && !this.options.ca) throw new TypeError('an https:// coordinator needs the CA that signed its certificate (ca)');
    if (!secure && this.options.ca) throw new TypeError('ca is for an https:// coordinator');
    const credentials = secure
      ? grpc.credentials.createSsl(Buffer.from(this.options.ca as string | Buffer))
      : grpc.credentials.createInsecure();
    const target = this.options.coordinator.replace(/^https?:\/\//, '');
    this.client = new Service(target, credentials, {
      'grpc.max_receive_message_length': MAX_MESSAGE,
      'grpc.max_send_message_length': MAX_MESSAGE,
      'grpc.keepalive_time_ms': 1_000,
      'grpc.keepalive_timeout_ms': 2_000,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1_000,
    });
    await this.register(0);
    this.loops = [this.pollLoop(), this.heartbeatLoop()];
  }

  /** Takes no new attempt, finishes those held, and closes. */
  async drain(): Promise<WorkerSummary> {
    if (!this.draining) {
      this.draining = true;
      this.slotFreed();
      await this.tellDrain();
    }
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
    this.closed = true;
    await Promise.allSettled(this.loops);
    this.client?.close();
    if (this.failure) throw this.failure;
    return { ...this.summary };
  }

  /** Resolves when the worker stopped by itself (refused by its coordinator). */
  async stopped(): Promise<void> {
    await Promise.all(this.loops);
  }

  private call<T>(method: string, request: object, timeoutMs: number): Promise<T> {
    const metadata = new grpc.Metadata();
    if (this.options.token) metadata.set('authorization', `Bearer ${this.options.token}`);
    const rpc = (this.client as any)[method] as Rpc;
    return new Promise((resolve, reject) => {
      rpc.call(this.client, request, metadata, { deadline: Date.now() + timeoutMs }, (error, answer) => {
        if (error) reject(error);
        else resolve(answer as T);
      });
    });
  }

  private async register(seen: number): Promise<void> {
    while (this.registering) await this.registering;
    if (this.registrations > seen) return;
    this.registering = (async () => {
      const request = {
        workerId: this.workerId,
        sdk: SDK,
        protocolVersion: PROTOCOL_VERSION,
        components: [...this.components].map(([id, c]) => ({ id, summary: c.summary })),
        slots: this.slots,
        labels: this.options.labels ?? {},
        queues: this.options.queues ?? [],
      };
      const backoff = new Backoff();
      for (;;) {
        try {
          const answer = await this.call<{ heartbeatIntervalMs: number; leaseMs: number }>('register', request, 5_000);
          this.heartbeatMs = Math.max(10, answer.heartbeatIntervalMs);
          this.leaseMs = Math.max(20, answer.leaseMs);
          this.registrations += 1;
          return;
        } catch (error) {
          if (this.closed) return;
          if (!TRANSIENT.has((error as grpc.ServiceError).code)) throw new RefusedError(error as grpc.ServiceError);
          await backoff.wait();
        }
      }
    })();
    try {
      await this.registering;
    } finally {
      this.registering = undefined;
    }
  }

  private async pollLoop(): Promise<void> {
    const backoff = new Backoff();
    while (!this.draining && !this.closed) {
      const free = this.slots - this.held.size;
      if (free <= 0) {
        await new Promise<void>((resolve) => (this.slotFreed = resolve));
        continue;
      }
      const seen = this.registrations;
      try {
        const answer = await this.call<{ attempts: any[] }>(
          'pollAttempts',
          { workerId: this.workerId, freeSlots: free, waitMs: POLL_WAIT_MS },
          POLL_WAIT_MS + 5_000,
        );
        backoff.reset();
        for (const attempt of answer.attempts) this.begin(attempt);
      } catch (error) {
        const code = (error as grpc.ServiceError).code;
        if (code === grpc.status.FAILED_PRECONDITION) {
          await this.registerOrFail(seen);
        } else if (TRANSIENT.has(code)) {
          await backoff.wait();
        } else {
          this.fail(new RefusedError(error as grpc.ServiceError));
        }
      }
    }
  }

  private async registerOrFail(seen: number): Promise<void> {
    try {
      await this.register(seen);
    } catch (error) {
      this.fail(error as Error);
    }
  }

  private fail(error: Error): void {
    this.failure ??= error;
    this.draining = true;
    this.stopAll('the coordinator refused the worker');
  }

  private async tellDrain(): Promise<void> {
    const giveUp = Date.now() + this.leaseMs;
    const backoff = new Backoff();
    for (;;) {
      try {
        await this.call('drain', { workerId: this.workerId }, 5_000);
        return;
      } catch (error) {
        if (!TRANSIENT.has((error as grpc.ServiceError).code) || Date.now() > giveUp) return;
        await backoff.wait();
      }
    }
  }

  private begin(attempt: any): void {
    if (this.held.size >= this.slots) return; // never more than the slots; it expires there
    const held: Held = {
      attemptId: attempt.attemptId,
      fence: attempt.fence,
      abort: new AbortController(),
      stopped: false,
      completing: false,
      progress: '',
      logs: [],
    };
    this.held.set(held.attemptId, held);
    this.options.onStart?.(held.attemptId);
    const run = this.run(attempt, held).finally(() => {
      if (this.held.get(held.attemptId) === held) this.held.delete(held.attemptId);
      this.running.delete(run);
      this.slotFreed();
    });
    this.running.add(run);
  }

  private context(attempt: any, held: Held): AttemptContext {
    const metadata = attempt.metadata ?? {};
    const deadline = Number(attempt.deadlineUnixMs);
    return {
      attemptId: attempt.attemptId,
      runId: attempt.runId,
      nodeRef: attempt.nodeRef,
      componentId: attempt.componentId,
      attempt: attempt.attempt,
      streamId: metadata.streamId ?? '',
      joinStrategy: metadata.joinStrategy ?? '',
      triggeredBy: metadata.triggeredBy ?? [],
      failure: metadata.failureJson ? JSON.parse(metadata.failureJson) : undefined,
      traceparent: attempt.traceparent,
      deadline: deadline > 0 ? deadline : undefined,
      workerId: this.workerId,
      signal: held.abort.signal,
      progress: (text) => {
        held.progress = text;
      },
      log: (level, message) => {
        held.logs.push({ level, message, unixMs: Date.now() });
      },
    };
  }

  private async run(attempt: any, held: Held): Promise<void> {
    let outcome: object;
    try {
      const component = this.components.get(attempt.componentId);
      if (!component) throw new Error(`worker ${this.workerId} does not host ${attempt.componentId}`);
      const payload: Payload = {
        inputs: attempt.inputsJson ? JSON.parse(attempt.inputsJson) : {},
        params: attempt.paramsJson ? JSON.parse(attempt.paramsJson) : {},
      };
      const result = await component.fn(payload, this.context(attempt, held));
      const routedResult = (result as Routed)[ROUTED] === true ? (result as Routed) : undefined;
      outcome = {
        success: {
          outputJson: JSON.stringify(routedResult ? routedResult.output : result),
          activePorts: routedResult ? routedResult.activePorts : [],
          routes: routedResult !== undefined,
        },
      };
    } catch (thrown) {
      const failure = classify(thrown, held.abort.signal);
      outcome = {
        failure: {
          type: failure.type,
          message: failure.message,
          retryable: failure.retryable,
          detailsJson: failure.details === undefined ? '' : JSON.stringify(failure.details),
        },
      };
    }
    if (held.stopped) return;
    held.completing = true;
    await this.complete({ attemptId: held.attemptId, fence: held.fence, workerId: this.workerId, ...outcome });
  }

  private async complete(request: { attemptId: string; [field: string]: unknown }): Promise<void> {
    const backoff = new Backoff();
    for (;;) {
      try {
        const answer = await this.call<{ verdict: string }>('complete', request, COMPLETE_TIMEOUT_MS);
        if (answer.verdict === 'STALE') this.summary.stale += 1;
        else this.summary.acknowledged += 1;
        return;
      } catch (error) {
        if (!TRANSIENT.has((error as grpc.ServiceError).code) || this.closed) return;
        await backoff.wait();
      }
    }
  }

  private async heartbeatLoop(): Promise<void> {
    let answered = Date.now();
    while (!this.closed) {
      await sleep(this.heartbeatMs);
      if (this.closed) return;
      const sent = Date.now();
      const seen = this.registrations;
      const attempts = [...this.held.values()]
        .filter((h) => !h.completing && !h.stopped)
        .map((h) => {
          const logs = h.logs.splice(0);
          return { attemptId: h.attemptId, fence: h.fence, progress: h.progress, logs };
        });
      try {
        const answer = await this.call<{ cancel: string[]; stale: string[] }>(
          'heartbeat',
          { workerId: this.workerId, attempts },
          Math.max(500, this.heartbeatMs),
        );
        answered = sent;
        for (const id of answer.cancel) {
          this.held.get(id)?.abort.abort(Object.assign(new Error('the attempt was cancelled'), { name: 'AbortError' }));
        }
        for (const id of answer.stale) this.stop(id, 'its lease is gone');
      } catch (error) {
        const code = (error as grpc.ServiceError).code;
        if (code === grpc.status.FAILED_PRECONDITION) {
          answered = sent;
          this.stopAll('the coordinator no longer knows this worker');
          await this.registerOrFail(seen);
        } else if (!TRANSIENT.has(code)) {
          this.fail(new RefusedError(error as grpc.ServiceError));
        }
      }
      if (Date.now() - answered >= this.leaseMs) this.stopAll('no heartbeat answered for a whole lease');
    }
  }

  private stop(id: string, why: string): void {
    const held = this.held.get(id);
    if (!held || held.completing || held.stopped) return;
    console.warn(`shipsec worker ${this.workerId}: attempt ${id} stopped: ${why}`);
    // It keeps its slot until its function returns: a function that ignores its signal
    // still runs, and the worker never runs more than its slots.
    held.stopped = true;
    this.summary.stopped += 1;
    held.abort.abort(Object.assign(new Error(`stopped: ${why}`), { name: 'AbortError', type: CANCELLED_ERROR }));
  }

  private stopAll(why: string): void {
    for (const id of [...this.held.keys()]) this.stop(id, why);
  }
}
