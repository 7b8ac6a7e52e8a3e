/**
 * @shipsec/worker: run ShipSec components as workers of a shipsec-orchestrator coordinator.
 *
 * ```ts
 * import { Worker, NetworkError } from '@shipsec/worker';
 *
 * const worker = new Worker({ coordinator: 'http://10.0.0.1:7233', workerId: 'scanner-1', slots: 8, token });
 * worker.component('shipsec.subfinder.run', async ({ inputs }, ctx) => {
 *   ctx.log('info', `enumerating ${inputs.domain}`);
 *   const found = await runSubfinder(inputs.domain, { signal: ctx.signal, idempotencyKey: ctx.attemptId });
 *   return { subdomains: found };
 * });
 * await worker.start();
 * process.on('SIGTERM', () => worker.drain().then(() => process.exit(0)));
 * ```
 */

export * from './errors.js';
export * from './worker.js';
