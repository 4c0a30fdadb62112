// `npm pack` ships the contracts inside the package: prepack copies the repo's proto/ in, postpack removes the
// copy, so git holds them once (proto/ at the root) and a checkout never reads a stale copy.
import { cpSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const source = fileURLToPath(new URL('../../../proto', import.meta.url));
const target = fileURLToPath(new URL('../proto', import.meta.url));
const action = process.argv[2];

rmSync(target, { recursive: true, force: true });
if (action === 'copy') {
  cpSync(source, target, { recursive: true, filter: (path) => !/\.(yaml|yml|lock)$/.test(path) });
} else if (action !== 'remove') {
  throw new Error(`usage: node scripts/protos.mjs copy|remove (got ${action})`);
}
