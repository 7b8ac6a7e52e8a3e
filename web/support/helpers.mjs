// What the browser tests share: a real `shipsec serve` process (the binary named by
// SHIPSEC_BIN), headless Chromium driven by playwright-core (Debian's, at
// SHIPSEC_CHROMIUM or /usr/bin/chromium), the API over fetch, and screenshots kept in
// SHIPSEC_ARTEFACTS.

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

export const BIN = process.env.SHIPSEC_BIN || new URL('../../target/release/shipsec', import.meta.url).pathname;
const ARTEFACTS = process.env.SHIPSEC_ARTEFACTS || new URL('../../target/web-screenshots', import.meta.url).pathname;

/** A server on 127.0.0.1 (a port of the system's choosing), journal in a scratch dir. */
export async function startServer(extra = [], env = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'shipsec-web-'));
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'SHIPSEC_API_TOKEN' && !k.startsWith('OTEL_')));
  const child = spawn(BIN, ['serve', '--listen', '127.0.0.1:0', '--data-dir', join(dir, 'data'), '--durability', 'process', ...extra], {
    env: { ...clean, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout });
  const url = await new Promise((resolve, reject) => {
    let address = null;
    const timer = setTimeout(() => reject(new Error('the server did not get ready within 60 s')), 60_000);
    child.once('exit', (code) => reject(new Error(`the server exited with ${code}`)));
    lines.on('line', (line) => {
      const m = /^listening on (http:\/\/\S+)/.exec(line);
      if (m && !address) address = m[1];
      if (line.startsWith('ready:')) {
        clearTimeout(timer);
        resolve(address);
      }
    });
  });
  return {
    url,
    dir,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await new Promise((resolve) => child.once('exit', resolve));
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A JSON request to `server`. */
export async function api(server, method, path, body, token) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(`${server.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

/** Starts a run of `definition`; its id. */
export async function startRun(server, definition, inputs) {
  const answer = await api(server, 'POST', '/v1/runs', { definition, inputs });
  if (answer.status !== 201) throw new Error(`POST /v1/runs answered ${answer.status}: ${JSON.stringify(answer.body)}`);
  return answer.body.runId;
}

/** Waits for the run's result (up to a minute). */
export async function result(server, runId) {
  const answer = await api(server, 'GET', `/v1/runs/${runId}/result?wait=60`);
  if (answer.status !== 200) throw new Error(`the run did not end: ${JSON.stringify(answer.body)}`);
  return answer.body;
}

/** Headless Chromium, as this machine can run it. */
export async function browser() {
  return chromium.launch({
    executablePath: process.env.SHIPSEC_CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  });
}

/** A page at 1280×800 that records every console error and page error in `errors`. */
export async function page(b, options = {}) {
  const context = await b.newContext({ viewport: { width: 1280, height: 800 }, ...options });
  const p = await context.newPage();
  p.errors = [];
  p.on('console', (m) => {
    if (m.type() === 'error') p.errors.push(m.text());
  });
  p.on('pageerror', (e) => p.errors.push(String(e)));
  return p;
}

/** `p` at the page of run `runId`, once drawn; the milliseconds that took. */
export async function openRun(p, server, runId, timeout = 30_000) {
  const started = Date.now();
  await p.goto(`${server.url}/runs/${runId}`);
  await p.waitForSelector('#app[data-ready="true"]', { timeout });
  return Date.now() - started;
}

/** A screenshot of `p` kept as a CI artefact. */
export async function shot(p, name) {
  mkdirSync(ARTEFACTS, { recursive: true });
  await p.screenshot({ path: join(ARTEFACTS, `${name}.png`), fullPage: true });
}

/**
 * Records, in `window.__seen`, every state each DAG node is drawn in, in order, with the
 * time: installed before the page's own script runs.
 */
export async function recordTransitions(p) {
  await p.addInitScript(() => {
    window.__seen = [];
    const last = new Map();
    const look = (node) => {
      const ref = node.getAttribute('data-ref');
      if (!ref) return;
      const m = /\bst-(\w+)/.exec(node.getAttribute('class') || '');
      if (!m || last.get(ref) === m[1]) return;
      last.set(ref, m[1]);
      window.__seen.push({ ref, state: m[1], at: performance.now() });
    };
    new MutationObserver((records) => {
      for (const r of records) {
        if (r.type === 'attributes') look(r.target);
        for (const added of r.addedNodes || []) {
          if (added.querySelectorAll) for (const n of added.querySelectorAll('g.node[data-ref]')) look(n);
        }
      }
    }).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ['class'] });
  });
}

/** A DAG node's state as drawn (`completed`, `running`, ...). */
export async function drawnState(p, ref) {
  const cls = await p.getAttribute(`g.node[data-ref="${ref}"]`, 'class');
  return /\bst-(\w+)/.exec(cls || '')?.[1];
}
