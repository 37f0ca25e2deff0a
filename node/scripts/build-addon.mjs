#!/usr/bin/env node
// `npx runlane-build-addon`: the source build of the addon, for platforms the
// prebuilt binary does not cover (anything but linux-x64 glibc) or by choice.
// Runs cmake-js in the installed package; the result (build/Release/) is
// preferred over the prebuilt binary from then on. Needs the tools named in
// README.md (Install, "Building from source").
import { createRequire } from 'node:module';
import path from 'node:path';
import { PKG, run } from './common.mjs';

const require = createRequire(path.join(PKG, 'package.json'));
let cmakeJs;
try {
  cmakeJs = require.resolve('cmake-js/bin/cmake-js');
} catch {
  console.error('runlane-build-addon: cmake-js is not installed (it is a dependency of runlane: reinstall it)');
  process.exit(1);
}
try {
  run(process.execPath, [cmakeJs, 'compile']);
} catch (e) {
  console.error(`runlane-build-addon: the source build failed: ${e.message}`);
  process.exit(1);
}
