// npm pack / npm publish: make the tarball self-contained.
// 1. vendor/: the core's C sources, header, Lua scripts, EmbedLua.cmake and
//    the SWIG interface, copied from the repository;
// 2. generated/runlane_wrap.cxx: the SWIG raw layer, so users need no SWIG;
// 3. build the addon here, generate the typed options from the core's
//    property table (runlane_conf_properties()), compile the TypeScript.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { IN_REPO, PKG, REPO, run } from './common.mjs';
import { generateWrapper } from './swig.mjs';

if (IN_REPO) {
  const vendor = path.join(PKG, 'vendor');
  rmSync(vendor, { recursive: true, force: true });
  for (const d of ['src', 'include', 'lua']) {
    cpSync(path.join(REPO, 'core', d), path.join(vendor, 'core', d), { recursive: true });
  }
  mkdirSync(path.join(vendor, 'cmake'), { recursive: true });
  for (const f of ['EmbedLua.cmake', 'RunlaneHiredis.cmake', 'fetch_hiredis.py']) {
    cpSync(path.join(REPO, 'cmake', f), path.join(vendor, 'cmake', f));
  }
  // The pinned hiredis 1.x source (sha256-checked, from the deps cache), so
  // that a user's source build needs neither pip nor the network.
  const hiredis = execFileSync(process.env.PYTHON || 'python3',
    [path.join(REPO, 'cmake', 'fetch_hiredis.py')], { encoding: 'utf8' }).trim();
  cpSync(path.join(hiredis, 'hiredis'), path.join(vendor, 'hiredis', 'hiredis'), { recursive: true });
  mkdirSync(path.join(vendor, 'bindings'), { recursive: true });
  cpSync(path.join(REPO, 'bindings', 'runlane.i'), path.join(vendor, 'bindings', 'runlane.i'));
  console.log('[runlane] vendored core/src, core/include, core/lua, cmake/, hiredis (pinned source), bindings/runlane.i');
} else if (!existsSync(path.join(PKG, 'vendor', 'core'))) {
  throw new Error('runlane prepack: neither the repository (../core) nor vendor/ is here');
}
const bin = (name) => path.join(PKG, 'node_modules', '.bin', name);
try {
  generateWrapper();
  run(bin('cmake-js'), ['compile']);
  run(process.execPath, [path.join(PKG, 'scripts', 'gen-options.mjs')]);
  run(bin('tsc'), ['-p', 'tsconfig.json']);
  run(process.execPath, [path.join(PKG, 'scripts', 'gen-esm.mjs')]);
} catch (e) {
  // npm runs no postpack after a failed prepack: do not leave a stale copy
  // of the core behind (the addon's CMakeLists prefers vendor/ when present).
  if (IN_REPO) for (const d of ['vendor', 'generated']) rmSync(path.join(PKG, d), { recursive: true, force: true });
  console.error(`[runlane] prepack failed: ${e.message}`);
  process.exit(1);
}
