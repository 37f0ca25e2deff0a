/**
 * How the installed package finds its addon: the prebuilt binary for
 * linux-x64 glibc (prebuilds/linux-x64/, libraries beside it) when no source
 * build exists; with none that loads, an error naming what was tried and the
 * source-build command.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, test } from 'node:test';

const PKG = path.dirname(require.resolve('runlane/package.json'));

/** The runlane.node file that a fresh process loads for require('runlane'). */
function loadedAddon(env: NodeJS.ProcessEnv = process.env): string {
  return execFileSync(process.execPath, ['-e',
    "require('runlane').features(); console.log(Object.keys(require.cache).find((k) => k.endsWith('.node')))"],
  { encoding: 'utf8', env }).trim();
}

describe('addon loading', () => {
  test('the installed package loads its prebuilt linux-x64 binary', { skip: process.platform !== 'linux' || process.arch !== 'x64' }, () => {
    assert.equal(loadedAddon(), path.join(PKG, 'prebuilds', 'linux-x64', 'runlane.node'));
  });

  test('with no binary that loads, the error names what was tried and the source build', () => {
    const env = { ...process.env, RUNLANE_NODE_ADDON: path.join(PKG, 'README.md') };
    const r = spawnSync(process.execPath, ['-e', "require('runlane').features()"], { encoding: 'utf8', env });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /runlane: no native addon for linux-x64 loads/);
    assert.match(r.stderr, /README\.md/);
    assert.match(r.stderr, /npx runlane-build-addon/);
  });
});
