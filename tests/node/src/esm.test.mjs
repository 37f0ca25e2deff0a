// The ESM entry points are views of the CommonJS build: one set of classes.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';

import runlaneDefault, { AssistantMessageQueue, RunlaneError, version } from 'runlane';
import { RunlaneModule, getQueueToken } from 'runlane/nestjs';

const require = createRequire(import.meta.url);

test('import and require give the same classes', () => {
  const cjs = require('runlane');
  assert.equal(AssistantMessageQueue, cjs.AssistantMessageQueue);
  assert.equal(RunlaneError, cjs.RunlaneError);
  assert.equal(runlaneDefault.AssistantMessageQueue, AssistantMessageQueue);
  assert.match(version(), /^\d+\.\d+\.\d+$/);
  const nest = require('runlane/nestjs');
  assert.equal(RunlaneModule, nest.RunlaneModule);
  assert.equal(getQueueToken('x'), nest.getQueueToken('x'));
});

test('an ESM program can run a turn', async () => {
  const q = new AssistantMessageQueue({ store: `memory://esm-${process.pid}`, batchWindowMs: 20, handler: (b) => b.content });
  const done = new Promise((resolve) => q.once('completed', resolve));
  await q.startWorker();
  await q.enqueue('c', 'from esm');
  const ev = await done;
  assert.equal(ev.result, 'from esm');
  await q.close();
});
