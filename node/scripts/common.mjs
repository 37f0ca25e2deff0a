// Paths and helpers shared by the packaging scripts.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const PKG = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = path.resolve(PKG, '..');
/** True when the package sits in the runlane repository (not installed from a tarball). */
export const IN_REPO = existsSync(path.join(REPO, 'core', 'include', 'runlane.h'))
  && existsSync(path.join(REPO, 'bindings', 'runlane.i'));

export function run(cmd, args, opts = {}) {
  console.log(`[runlane] ${cmd} ${args.join(' ')}`);
  execFileSync(cmd, args, { stdio: 'inherit', cwd: PKG, ...opts });
}

/** Where the core's sources are: the vendored copy if present, else the repository. */
export function sourceDirs() {
  const vendor = path.join(PKG, 'vendor');
  if (existsSync(path.join(vendor, 'core', 'include', 'runlane.h'))) {
    return { core: path.join(vendor, 'core'), bindings: path.join(vendor, 'bindings') };
  }
  return { core: path.join(REPO, 'core'), bindings: path.join(REPO, 'bindings') };
}

export function addonPath() {
  for (const c of ['Release', 'Debug', 'RelWithDebInfo']) {
    const p = path.join(PKG, 'build', c, 'runlane.node');
    if (existsSync(p)) return p;
  }
  return null;
}
