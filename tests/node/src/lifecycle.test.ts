/** No handle is left open: processes exit by themselves once done. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, test } from 'node:test';

import { fixture, memoryStore, redisTest, requireRedis } from './helpers';

interface Outcome {
  exited: boolean;
  code: number | null;
  ms: number;
  stdout: string;
  stderr: string;
}

/** Runs the child; kills it (by its pid) if it is still alive after `boundMs`. */
function runChild(args: string[], boundMs: number, script = 'exit-child'): Promise<Outcome> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, [fixture(script), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    let exited = false;
    const timer = setTimeout(() => {
      if (!exited) child.kill('SIGKILL');
    }, boundMs);
    child.on('exit', (code, signal) => {
      exited = signal === null;
      clearTimeout(timer);
      resolve({ exited, code, ms: Date.now() - t0, stdout, stderr });
    });
  });
}

const BOUND_MS = 20000;

describe('shutdown leaves no handle open', () => {
  test('create, use, close(): the process exits by itself', async () => {
    const r = await runChild(['close', memoryStore('exit')], BOUND_MS);
    assert.ok(r.exited, `the child did not exit within ${BOUND_MS} ms (stdout=${r.stdout} stderr=${r.stderr})`);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /done/);
    console.log(`# child exited ${r.ms} ms after spawn`);
  });

  test('keepAlive: false, no close(): an idle worker does not hold the process', async () => {
    const r = await runChild(['no-close-idle', memoryStore('idle')], BOUND_MS);
    assert.ok(r.exited, `the child did not exit within ${BOUND_MS} ms (stdout=${r.stdout} stderr=${r.stderr})`);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /done/);
  });

  test('a producer without a worker does not hold the process', async () => {
    const r = await runChild(['producer', memoryStore('producer')], BOUND_MS);
    assert.ok(r.exited, `the child did not exit within ${BOUND_MS} ms`);
    assert.equal(r.code, 0, r.stderr);
  });

  test('a started worker keeps the process alive until close() (keepAlive default)', async () => {
    const r = await runChild(['keepalive', memoryStore('keep')], 4000);
    assert.match(r.stdout, /done/, r.stderr);
    assert.equal(r.exited, false, 'the worker should keep the process alive until close()');
  });

  test('in a worker thread: use, close(), the thread and the process end by themselves', async () => {
    const r = await runChild(['close', memoryStore('thread')], BOUND_MS, 'thread-child');
    assert.ok(r.exited, `did not exit within ${BOUND_MS} ms (stdout=${r.stdout} stderr=${r.stderr})`);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /done/);
    assert.match(r.stdout, /worker exit 0/);
  });

  test('a worker thread terminated with its queue open: the process still exits cleanly', async () => {
    const r = await runChild(['terminate', memoryStore('terminate')], BOUND_MS, 'thread-child');
    assert.ok(r.exited, `did not exit within ${BOUND_MS} ms (stdout=${r.stdout} stderr=${r.stderr})`);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /running/);
    assert.match(r.stdout, /worker exit 1/);
  });

  test('create, use, close() on Redis: the process exits by itself', redisTest(), async () => {
    const url = requireRedis();
    const r = await runChild(['close', url], BOUND_MS);
    assert.ok(r.exited, `the child did not exit within ${BOUND_MS} ms (stderr=${r.stderr})`);
    assert.equal(r.code, 0, r.stderr);
  });
});
