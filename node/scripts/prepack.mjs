// npm pack / npm publish: make the tarball self-contained.
// 1. vendor/: the core's C sources, header, Lua scripts, EmbedLua.cmake and
//    the SWIG interface, copied from the repository;
// 2. generated/runlane_wrap.cxx: the SWIG raw layer, so users need no SWIG;
// 3. build the addon here and, on linux-x64, bundle it with the libraries it
//    needs into prebuilds/linux-x64/ (scripts/bundle.mjs): the prebuilt
//    binary that an install uses when it fits, with no install script;
// 4. generate the typed options from the core's property table
//    (runlane_conf_properties()), compile the TypeScript.
// In a fresh clone the build tools (cmake-js, typescript) are installed
// first (`npm ci --ignore-scripts`), so `npm pack` alone works.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { IN_REPO, PKG, REPO, run } from './common.mjs';
import { bundle } from './bundle.mjs';
import { generateWrapper } from './swig.mjs';

if (IN_REPO) {
  const vendor = path.join(PKG, 'vendor');
  rmSync(vendor, { recursive: true, force: true });
  for (const d of ['src', 'include', 'lua', 'dashboard']) {
    cpSync(path.join(REPO, 'core', d), path.join(vendor, 'core', d), { recursive: true });
  }
  mkdirSync(path.join(vendor, 'cmake'), { recursive: true });
  for (const f of ['EmbedLua.cmake', 'EmbedFile.cmake', 'RunlaneHiredis.cmake', 'fetch_hiredis.py']) {
    cpSync(path.join(REPO, 'cmake', f), path.join(vendor, 'cmake', f));
  }
  // The pinned hiredis 1.x source (sha256-checked, from the deps cache), so
  // that a user's source build needs neither pip nor the network.
  const hiredis = execFileSync(process.env.PYTHON || 'python3',
    [path.join(REPO, 'cmake', 'fetch_hiredis.py')], { encoding: 'utf8' }).trim();
  cpSync(path.join(hiredis, 'hiredis'), path.join(vendor, 'hiredis', 'hiredis'), { recursive: true });
  mkdirSync(path.join(vendor, 'bindings'), { recursive: true });
  cpSync(path.join(REPO, 'bindings', 'runlane.i'), path.join(vendor, 'bindings', 'runlane.i'));
  console.log('[runlane] vendored core/src, core/include, core/lua, core/dashboard, cmake/, hiredis (pinned source), bindings/runlane.i');
} else if (!existsSync(path.join(PKG, 'vendor', 'core'))) {
  throw new Error('runlane prepack: neither the repository (../core) nor vendor/ is here');
}
const bin = (name) => path.join(PKG, 'node_modules', '.bin', name);
try {
  if (!existsSync(bin('cmake-js')) || !existsSync(bin('tsc'))) {
    const npm = process.env.npm_execpath;
    const args = ['ci', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'];
    if (npm && npm.endsWith('.js')) run(process.execPath, [npm, ...args]);
    else run(npm || 'npm', args);
  }
  generateWrapper();
  run(bin('cmake-js'), ['compile']);
  rmSync(path.join(PKG, 'prebuilds'), { recursive: true, force: true });
  if (process.platform === 'linux' && process.arch === 'x64' && process.env.RUNLANE_NO_PREBUILT !== '1') bundle();
  else console.log('[runlane] not linux-x64: the tarball carries no prebuilt addon (installs build from source)');
  run(process.execPath, [path.join(PKG, 'scripts', 'gen-options.mjs')]);
  run(bin('tsc'), ['-p', 'tsconfig.json']);
  run(process.execPath, [path.join(PKG, 'scripts', 'gen-esm.mjs')]);
} catch (e) {
  // npm runs no postpack after a failed prepack: do not leave a stale copy
  // of the core behind (the addon's CMakeLists prefers vendor/ when present).
  if (IN_REPO) for (const d of ['vendor', 'generated', 'prebuilds']) rmSync(path.join(PKG, d), { recursive: true, force: true });
  console.error(`[runlane] prepack failed: ${e.message}`);
  process.exit(1);
}
