// The service's HTTP API as the pages use it: JSON requests carrying the token kept in
// this browser, and the run's SSE stream read through fetch (EventSource cannot send a
// bearer token), resumed from the last id whenever it ends before the run does.

const TOKEN_KEY = 'shipsec.apiToken';

export function token() {
  try {
    return localStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(value) {
  try {
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage refused (a file URL in some browsers): the token lasts for this page.
  }
}

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || null;
  }
}

function headers(extra) {
  const all = { ...extra };
  const t = token();
  if (t) all.authorization = `Bearer ${t}`;
  return all;
}

/** A JSON request; 2xx answers give their body, others throw an ApiError. */
export async function request(method, path, body) {
  const init = { method, headers: headers({ accept: 'application/json' }) };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    const error = json && json.error;
    throw new ApiError(
      response.status,
      (error && error.code) || `HTTP_${response.status}`,
      (error && error.message) || text || response.statusText,
      error && error.details,
    );
  }
  return json;
}

export const runPath = (id) => `/v1/runs/${encodeURIComponent(id)}`;

/**
 * Follows a run's event stream to its end. `on.trace(event)`, `on.status(status)` and
 * `on.terminal(result)` are called as messages come; `on.connection(state)` with
 * `live`, `reconnecting` or `ended`. Resolves once the terminal message came, or when
 * `signal` aborts.
 */
export async function follow(runId, on, signal) {
  let last = 0;
  let failures = 0;
  for (;;) {
    const extra = { accept: 'text/event-stream' };
    if (last) extra['last-event-id'] = String(last);
    let ended = false;
    try {
      const response = await fetch(`${runPath(runId)}/events`, { headers: headers(extra), signal });
      if (!response.ok) {
        const text = await response.text();
        let code = `HTTP_${response.status}`;
        let message = text;
        try {
          const error = JSON.parse(text).error;
          code = error.code;
          message = error.message;
        } catch {
          // not JSON: keep the text
        }
        // Past the subscriber limits the server says when to retry; anything else is final.
        if (response.status !== 429 && response.status !== 503) throw new ApiError(response.status, code, message);
      } else {
        on.connection && on.connection('live');
        failures = 0;
        ended = await read(response.body, (kind, id, data) => {
          if (kind === 'trace') {
            const event = JSON.parse(data);
            last = event.seq;
            on.trace(event);
          } else if (kind === 'status') {
            on.status && on.status(JSON.parse(data));
          } else if (kind === 'terminal') {
            on.terminal && on.terminal(JSON.parse(data));
          }
        });
      }
    } catch (error) {
      if (signal && signal.aborted) return;
      if (error instanceof ApiError) throw error;
    }
    if (ended) {
      on.connection && on.connection('ended');
      return;
    }
    if (signal && signal.aborted) return;
    // The stream ended before the run did (this page fell behind, or the server
    // restarted): resume after the last event, backing off while it keeps failing.
    on.connection && on.connection('reconnecting');
    failures += 1;
    await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 200 * 2 ** Math.min(failures, 5))));
  }
}

/** Reads SSE messages off `body`; true once a `terminal` message was read. */
async function read(body, message) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let terminal = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return terminal;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let kind = 'message';
      let id = null;
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'event') kind = value;
        else if (field === 'id') id = value;
        else if (field === 'data') data.push(value);
      }
      if (!data.length) continue;
      message(kind, id, data.join('\n'));
      if (kind === 'terminal') terminal = true;
    }
  }
}
