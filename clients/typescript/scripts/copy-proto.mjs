// The package carries the protocol's .proto file; its one source is the repository's.
import { copyFileSync, mkdirSync } from 'node:fs';

const from = new URL('../../../proto/shipsec/worker/v1/worker.proto', import.meta.url);
const to = new URL('../proto/', import.meta.url);
mkdirSync(to, { recursive: true });
copyFileSync(from, new URL('worker.proto', to));
