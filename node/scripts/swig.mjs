// Generates generated/runlane_wrap.cxx (the raw layer) from bindings/runlane.i
// with SWIG 4.5.1 `-javascript -napi`. Debian's swig (4.1) has no -napi, so
// SWIG comes from PyPI into a private venv (node/.swig-venv) unless
// RUNLANE_SWIG names a swig binary that has it.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { PKG, run, sourceDirs } from './common.mjs';

const SWIG_VERSION = '4.5.1';

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
  const venv = path.join(PKG, '.swig-venv');
  const swig = path.join(venv, 'bin', 'swig');
  if (existsSync(swig) && hasNapi(swig)) return swig;
  const python = process.env.PYTHON || 'python3';
  run(python, ['-m', 'venv', venv]);
  run(path.join(venv, 'bin', 'pip'), ['install', '--quiet', `swig==${SWIG_VERSION}`]);
  if (!hasNapi(swig)) throw new Error(`${swig} has no -napi`);
  return swig;
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
