/**
 * The NestJS example app (node/examples/nestjs-chat), built against the
 * installed tarball by run.sh (RUNLANE_EXAMPLE_MAIN): chat webhooks in,
 * one reply per burst out, a clean exit on SIGTERM.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { describe, test } from 'node:test';

import { skipUnless, waitFor, within } from './helpers';

const MAIN = process.env.RUNLANE_EXAMPLE_MAIN;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

describe('NestJS example app', { skip: skipUnless(MAIN ? false : 'RUNLANE_EXAMPLE_MAIN is not set') }, () => {
  test('webhooks in, one reply per burst, drained on SIGTERM', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, [MAIN!], {
      env: { ...process.env, PORT: String(port), BATCH_WINDOW_MS: '1500', REDIS_URL: '', NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const exited = new Promise<string>((r) => child.on('exit', (code, signal) => r(signal ?? String(code))));
    try {
      await waitFor('the app to listen', () => out.includes('listening on') || child.exitCode !== null, 20000);
      assert.ok(out.includes('listening on'), `the app did not start: ${out}`);
      const url = `http://127.0.0.1:${port}`;
      const post = (path: string, body: unknown) =>
        fetch(url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const r1 = await post('/webhooks/chat', { conversationId: 'conv-1', messageId: 'p-1', text: 'hi' });
      assert.equal(r1.status, 202);
      const first = (await r1.json()) as { id: string; duplicate: boolean };
      const again = (await (await post('/webhooks/chat', { conversationId: 'conv-1', messageId: 'p-1', text: 'hi' })).json()) as { id: string; duplicate: boolean };
      assert.equal(again.duplicate, true);
      assert.equal(again.id, first.id);
      assert.equal((await post('/webhooks/typing', { conversationId: 'conv-1' })).status, 204);
      await post('/webhooks/chat', { conversationId: 'conv-1', messageId: 'p-2', text: 'where is order A17?' });
      await waitFor('the reply in the log', () => /reply to conv-1 .*You said: hi \/ where is order A17\? — order A17: shipped/.test(out), 30000);
      const status = (await (await fetch(`${url}/queue/status`)).json()) as { pending: number; acked: number };
      assert.equal(status.pending, 0);
      assert.equal(status.acked, 1);
      const metrics = await (await fetch(`${url}/metrics`)).text();
      assert.match(metrics, /runlane_batches_acked_total 1/);
    } finally {
      child.kill('SIGTERM');
    }
    const code = await within(exited, 15000, 'timeout' as const);
    if (code === 'timeout') child.kill('SIGKILL');
    assert.notEqual(code, 'timeout', `the app did not exit after SIGTERM: ${out}`);
    // Nest runs the shutdown hooks, then re-raises the signal.
    assert.ok(code === '0' || code === 'SIGTERM', `exit: ${code}\n${out}`);
    assert.match(out, /queue stopped/, 'the queue was drained on shutdown');
  });
});
