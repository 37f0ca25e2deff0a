// Makes the prebuilt addon self-contained, as auditwheel does for a wheel:
// copies build/Release/runlane.node into prebuilds/linux-x64/ together with
// every shared library it loads beyond glibc, libgcc_s and libstdc++ (libcurl
// and the ~30 libraries behind it, cJSON, OpenSSL...), each renamed with a
// hash of its contents (so a different copy of the same soname already in
// the process is never taken for ours) and found through an $ORIGIN rpath.
//   node scripts/bundle.mjs [ADDON] [OUT_DIR]
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import path from 'node:path';
import { PKG, addonPath } from './common.mjs';
import { findTool } from './swig.mjs';

/** What every glibc Linux has (the manylinux policy's own libraries, plus libstdc++ for C++). */
export const SYSTEM_LIB = /^(linux-vdso|ld-linux[-\w.]*|libc|libm|libpthread|libdl|librt|libresolv|libutil|libnsl|libanl|libgcc_s|libstdc\+\+)\.so(\.|$)/;

/** The libraries ldd resolves for `file`, as [needed name, path]; throws on "not found". */
function lddDeps(file) {
  const out = execFileSync('ldd', [file], { encoding: 'utf8' });
  const deps = [];
  for (const line of out.split('\n')) {
    const m = /^\s*(\S+) => (.*?)(?: \(0x[0-9a-f]+\))?$/.exec(line);
    if (!m) continue;
    if (m[2] === 'not found') throw new Error(`${file}: ${m[1]} not found`);
    if (m[2]) deps.push([m[1], m[2]]);
  }
  return deps;
}

function hashedName(soname, file) {
  const h = createHash('sha256').update(readFileSync(file)).digest('hex').slice(0, 8);
  const i = soname.indexOf('.so');
  return `${soname.slice(0, i)}-${h}${soname.slice(i)}`;
}

export function bundle(addon = addonPath(), outDir = path.join(PKG, 'prebuilds', 'linux-x64')) {
  if (!addon) throw new Error('bundle: no built addon (build/Release/runlane.node)');
  const patchelf = findTool('patchelf');
  const pe = (...args) => execFileSync(patchelf, args, { encoding: 'utf8' }).trim();
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });

  const renamed = new Map(); // soname -> bundled file name
  for (const [soname, file] of lddDeps(addon)) {
    if (SYSTEM_LIB.test(soname) || renamed.has(soname)) continue;
    const real = realpathSync(file);
    const name = hashedName(soname, real);
    copyFileSync(real, path.join(outDir, name));
    chmodSync(path.join(outDir, name), 0o755);
    renamed.set(soname, name);
  }
  const target = path.join(outDir, 'runlane.node');
  copyFileSync(addon, target);
  // Debug info is most of the addon's size and no user needs it.
  execFileSync('strip', ['--strip-unneeded', target]);

  for (const file of [target, ...[...renamed.values()].map((n) => path.join(outDir, n))]) {
    const args = [];
    for (const needed of pe('--print-needed', file).split('\n').filter(Boolean)) {
      if (renamed.has(needed)) args.push('--replace-needed', needed, renamed.get(needed));
    }
    if (file !== target) args.push('--set-soname', path.basename(file));
    // DT_RPATH (not RUNPATH): it also serves the libraries' own dependencies.
    args.push('--force-rpath', '--set-rpath', '$ORIGIN', file);
    pe(...args);
  }

  // Proof: everything the bundled addon loads is ours or glibc/libstdc++.
  const stray = lddDeps(target).filter(([soname, file]) =>
    !SYSTEM_LIB.test(soname) && path.dirname(realpathSync(file)) !== realpathSync(outDir));
  if (stray.length) throw new Error(`bundle: still loaded from the system: ${stray.map((s) => s.join(' => ')).join(', ')}`);
  console.log(`[runlane] bundled the addon and ${renamed.size} libraries into ${path.relative(PKG, outDir)}`);
  return outDir;
}

if (import.meta.url === `file://${process.argv[1]}`) bundle(process.argv[2], process.argv[3]);
