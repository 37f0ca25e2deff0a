// After npm pack in the repository: drop the vendored sources, the
// generated wrapper and the prebuilt addon again (they are build products, never committed).
// --all also removes build/ and dist/.
import { rmSync } from 'node:fs';
import path from 'node:path';
import { IN_REPO, PKG } from './common.mjs';

if (!IN_REPO) process.exit(0); // an installed package keeps what it carries
for (const d of ['vendor', 'generated', 'prebuilds']) rmSync(path.join(PKG, d), { recursive: true, force: true });
if (process.argv.includes('--all')) {
  for (const d of ['build', 'dist', path.join('src', 'ts', 'options.generated.ts')]) {
    rmSync(path.join(PKG, d), { recursive: true, force: true });
  }
}
