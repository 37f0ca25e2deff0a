/** The queue with the memory store: the whole flow of the custom backend. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  AssistantMessageQueue,
  Batch,
  CompletedEvent,
  FailedEvent,
  NonRetriableError,
  RunlaneEvent,
  version,
} from 'runlane';

import { memoryStore, sleep, waitFor } from './helpers';

describe('AssistantMessageQueue (memory store)', () => {
  test('loads the core and reports its version', () => {
    assert.match(version(), /^\d+\.\d+\.\d+$/);
  });

  test('a burst of one conversation is one batch, in order, acked by the handler', async () => {
    const batches: Batch[] = [];
    const completed: CompletedEvent[] = [];
    const q = new AssistantMessageQueue({
      store: memoryStore('flow'),
      batchWindowMs: 50,
      handler: async (b) => {
        batches.push(b);
        return { replied: b.messages.length };
      },
    });
    q.on('completed', (e) => completed.push(e));
    try {
      await q.startWorker();
      const id1 = await q.addMessageToThread('thread-1', 'hello');
      assert.equal(typeof id1, 'string');
      assert.ok(id1.length > 0, 'addMessageToThread resolves to a message id');
      await q.addMessageToThread('thread-1', 'are you there?', 'be brief');
      await q.enqueue('thread-1', 'third', { metadata: { user: 'u1' } });

      await waitFor('the completed event', () => completed.length === 1);
      assert.equal(batches.length, 1, 'one batch for the burst');
      const b = batches[0];
      assert.equal(b.conversationId, 'thread-1');
      assert.equal(b.threadId, 'thread-1');
      assert.equal(b.attempt, 1);
      assert.deepEqual(b.messages.map((m) => m.content), ['hello', 'are you there?', 'third']);
      assert.equal(b.messages[0].id, id1);
      assert.equal(b.instructions, 'be brief');
      assert.deepEqual(b.messages[2].metadata, { user: 'u1' });
      assert.equal(b.content, 'hello\nare you there?\nthird');
      assert.ok(b.messages.every((m) => m.tsMs > 0));
      assert.equal(completed[0].batchId, b.batchId);
      assert.deepEqual(completed[0].result, { replied: 3 });

      const totals = await q.status();
      assert.equal(totals.pending, 0);
      assert.equal(totals.inflight, 0);
      assert.equal(totals.acked, 1);
      const conv = await q.status('thread-1');
      assert.equal(conv.conversationId, 'thread-1');
      assert.equal(conv.pending, 0);
      const legacy = await q.getQueueStatus();
      assert.deepEqual(Object.keys(legacy).sort(), ['activeCount', 'completedCount', 'deadCount', 'delayedCount', 'failedCount', 'waitingCount']);
      assert.equal(legacy.completedCount, 1);
    } finally {
      await q.close();
    }
  });

  test('messages that arrive during a turn go in the next batch, one turn at a time', async () => {
    let running = 0;
    let maxRunning = 0;
    const seen: string[][] = [];
    const q = new AssistantMessageQueue({
      store: memoryStore('busy'),
      batchWindowMs: 20,
      handler: async (b) => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        seen.push(b.messages.map((m) => m.content));
        await sleep(150);
        running--;
      },
    });
    try {
      await q.startWorker();
      await q.enqueue('c', 'one');
      await waitFor('the first batch', () => seen.length === 1);
      await q.enqueue('c', 'two');
      await q.enqueue('c', 'three');
      await waitFor('the second batch', () => seen.length === 2, 5000);
      assert.deepEqual(seen, [['one'], ['two', 'three']]);
      assert.equal(maxRunning, 1, 'never two turns of one conversation at once');
    } finally {
      await q.close();
    }
  });

  test('idempotency keys queue a repeated webhook once', async () => {
    const q = new AssistantMessageQueue({ store: memoryStore('idem'), batchWindowMs: 50 });
    try {
      const a = await q.enqueue('c', 'hi', { idempotencyKey: 'platform-msg-1' });
      const b = await q.enqueue('c', 'hi', { idempotencyKey: 'platform-msg-1' });
      const c = await q.enqueue('c', 'hi', { idempotencyKey: 'platform-msg-2' });
      assert.equal(a.duplicate, false);
      assert.equal(b.duplicate, true);
      assert.equal(b.id, a.id, 'the repeat returns the first id');
      assert.notEqual(c.id, a.id);
      assert.equal((await q.status('c')).pending, 2);
    } finally {
      await q.close();
    }
  });

  test('enqueueMany queues in input order and reports duplicates', async () => {
    const q = new AssistantMessageQueue({ store: memoryStore('many'), batchWindowMs: 50 });
    try {
      const r = await q.enqueueMany([
        { conversationId: 'a', content: '1', idempotencyKey: 'k1' },
        { conversationId: 'b', content: '2', instructions: 'x' },
        { conversationId: 'a', content: '1 again', idempotencyKey: 'k1' },
      ]);
      assert.equal(r.length, 3);
      assert.equal(r[2].duplicate, true);
      assert.equal(r[2].id, r[0].id);
      const totals = await q.status();
      assert.equal(totals.pending, 2);
      assert.equal(totals.conversations, 2);
      assert.deepEqual(await q.enqueueMany([]), []);
    } finally {
      await q.close();
    }
  });

  test('touch restarts the quiet window without storing a message', async () => {
    const q = new AssistantMessageQueue({ store: memoryStore('touch'), batchWindowMs: 5000 });
    try {
      await q.enqueue('c', 'typing...');
      const before = await q.status('c');
      await sleep(20);
      await q.touch('c');
      const after = await q.status('c');
      assert.equal(after.pending, 1, 'touch stores no message');
      assert.ok((after.dueMs ?? 0) > (before.dueMs ?? 0), `due time moves on (${before.dueMs} -> ${after.dueMs})`);
    } finally {
      await q.close();
    }
  });

  test('a failing handler is retried, then dead-lettered; dead letters can be retried and purged', async () => {
    let failUntil = Infinity;
    const attempts: number[] = [];
    const failed: FailedEvent[] = [];
    const dead: FailedEvent[] = [];
    const completed: CompletedEvent[] = [];
    const q = new AssistantMessageQueue({
      store: memoryStore('retry'),
      batchWindowMs: 20,
      maxAttempts: 3,
      backoffBaseMs: 10,
      backoffMaxMs: 20,
      handler: async (b) => {
        attempts.push(b.attempt);
        if (attempts.length <= failUntil) throw new Error(`model unavailable (attempt ${b.attempt})`);
      },
    });
    q.on('failed', (e) => failed.push(e));
    q.on('dead', (e) => dead.push(e));
    q.on('completed', (e) => completed.push(e));
    try {
      await q.startWorker();
      await q.enqueue('conv-x', 'please answer');
      await waitFor('the dead event', () => dead.length === 1);
      assert.deepEqual(attempts, [1, 2, 3]);
      assert.deepEqual(failed.map((e) => e.attempt), [1, 2]);
      assert.equal(dead[0].conversationId, 'conv-x');
      assert.equal(dead[0].dead, true);
      assert.match(dead[0].error, /model unavailable \(attempt 3\)/);

      const letters = await q.listDead();
      assert.equal(letters.length, 1);
      assert.equal(letters[0].conversationId, 'conv-x');
      assert.equal(letters[0].attempts, 3);
      assert.deepEqual(letters[0].messages.map((m) => m.content), ['please answer']);
      assert.equal((await q.status()).dead, 1);

      failUntil = 0; // the model is back
      assert.equal(await q.retryDead(letters[0].id), 1);
      await waitFor('the retried batch to complete', () => completed.length === 1);
      assert.equal(attempts[attempts.length - 1], 1, 'attempts restart after a dead-letter retry');
      assert.equal((await q.listDead()).length, 0);

      failUntil = Infinity;
      await q.enqueue('conv-y', 'again');
      await waitFor('the second dead letter', () => dead.length === 2);
      assert.equal(await q.purgeDead(), 1);
      assert.equal((await q.listDead()).length, 0);
    } finally {
      await q.close();
    }
  });

  test('a NonRetriableError dead-letters at once', async () => {
    const dead: FailedEvent[] = [];
    let calls = 0;
    const q = new AssistantMessageQueue({
      store: memoryStore('nonretriable'),
      batchWindowMs: 20,
      maxAttempts: 5,
      handler: () => {
        calls++;
        throw new NonRetriableError('content policy');
      },
    });
    q.on('dead', (e) => dead.push(e));
    try {
      await q.startWorker();
      await q.enqueue('c', 'bad request');
      await waitFor('the dead event', () => dead.length === 1);
      assert.equal(calls, 1);
      assert.equal(dead[0].attempt, 1);
      assert.match(dead[0].error, /content policy/);
    } finally {
      await q.close();
    }
  });

  test('without a handler: batches() yields batches to ack, events() yields every event', async () => {
    const q = new AssistantMessageQueue({ store: memoryStore('iter'), batchWindowMs: 20 });
    const events: RunlaneEvent[] = [];
    const collector = (async () => {
      for await (const ev of q) events.push(ev);
    })();
    try {
      await q.startWorker();
      await q.enqueue('c1', 'x');
      await q.enqueue('c2', 'y');
      const got: string[] = [];
      for await (const batch of q.batches()) {
        got.push(batch.conversationId);
        if (batch.conversationId === 'c1') await batch.ack();
        else await q.fail(batch.batchId, new Error('nope'), { retriable: false });
        if (got.length === 2) break;
      }
      assert.deepEqual(got.sort(), ['c1', 'c2']);
      await waitFor('completed and dead events', () =>
        events.some((e) => e.type === 'completed') && events.some((e) => e.type === 'dead'));
    } finally {
      await q.close();
    }
    await collector;
    const types = events.map((e) => e.type);
    assert.ok(types.includes('batch'), `events: ${types}`);
    assert.equal(types[types.length - 1], 'stopped', 'stopped is the last event');
  });

  test('batch.release() gives the batch back: same id, messages and attempt, no failure', async () => {
    const seen: Array<{ id: string; attempt: number; contents: string[] }> = [];
    const failed: FailedEvent[] = [];
    const q = new AssistantMessageQueue({
      store: memoryStore('release'),
      batchWindowMs: 20,
      handler: async (b) => {
        seen.push({ id: b.batchId, attempt: b.attempt, contents: b.messages.map((m) => m.content) });
        if (seen.length === 1) {
          await b.release();
          await assert.rejects(b.ack(), { name: 'StateError' }); // released: settled here
        }
      },
    });
    q.on('failed', (e) => failed.push(e));
    try {
      await q.enqueue('c', 'x');
      await q.enqueue('c', 'y');
      await q.startWorker();
      await waitFor('the released batch delivered again', () => seen.length >= 2);
      await waitFor('the redelivery acked', async () => (await q.getQueueStatus()).completedCount === 1);
      assert.deepEqual(seen[1], seen[0], 'expected the same batch id, attempt and messages');
      assert.equal(seen[0].attempt, 1, 'a release spends no attempt');
      assert.deepEqual(failed, [], 'a release is not a failure');
      const st = await q.getQueueStatus();
      assert.equal(st.failedCount, 0, 'no failed attempt counted');
      assert.equal(st.deadCount, 0);
    } finally {
      await q.close();
    }
  });

  test('q.release(batchId) gives back a batch taken from batches(); unknown ids reject', async () => {
    const q = new AssistantMessageQueue({ store: memoryStore('release-id'), batchWindowMs: 10 });
    try {
      const it = q.batches(); // before startWorker: a custom worker needs someone taking its batches
      await q.startWorker();
      await q.enqueue('c', 'x');
      const { value: first } = await it.next();
      await q.release(first.batchId);
      const { value: again } = await it.next();
      assert.equal(again.batchId, first.batchId);
      assert.equal(again.attempt, first.attempt);
      await again.ack();
      await assert.rejects(q.release(first.batchId), { name: 'NotFoundError' });
      await it.return?.();
    } finally {
      await q.close();
    }
  });

  test('the store URL is shown as the core masks its password', async () => {
    // Port 1: nothing listens; the config is read before any connection.
    const q = new AssistantMessageQueue({ store: 'redis://user:p@ss@127.0.0.1:1/0' });
    try {
      assert.equal(q.config['store'], 'redis://user:***@127.0.0.1:1/0');
    } finally {
      await q.close().catch(() => undefined);
    }
  });

  test('a batch settles once', async () => {
    const q = new AssistantMessageQueue({ store: memoryStore('once'), batchWindowMs: 10 });
    try {
      const it = q.batches(); // before startWorker: a custom worker needs someone taking its batches
      await q.startWorker();
      await q.enqueue('c', 'x');
      const { value: batch } = await it.next();
      await batch.ack();
      await assert.rejects(batch.ack(), { name: 'StateError' });
      await it.return?.();
    } finally {
      await q.close();
    }
  });

  test('close() with a stuck handler gives up after drainTimeoutMs and hands the batch to another worker', async () => {
    const store = memoryStore('drain');
    let release!: () => void;
    const stuck = new Promise<void>((r) => (release = r));
    const seenByA: Batch[] = [];
    const seenByB: Batch[] = [];
    const a = new AssistantMessageQueue({ store, batchWindowMs: 10, leaseMs: 60000, handler: async (b) => {
      seenByA.push(b);
      await stuck;
    } });
    const b = new AssistantMessageQueue({ store, batchWindowMs: 10, handler: (batch) => {
      seenByB.push(batch);
    } });
    try {
      await a.startWorker();
      await a.enqueue('c', 'hello');
      await waitFor('A to take the batch', () => seenByA.length === 1);
      await b.startWorker();
      const t0 = Date.now();
      await a.close({ timeoutMs: 200 });
      assert.ok(Date.now() - t0 < 5000, 'close() returns after the drain timeout');
      await waitFor('B to get the released batch', () => seenByB.length === 1);
      assert.equal(seenByB[0].batchId, seenByA[0].batchId, 'the same batch, released by A');
      assert.deepEqual(seenByB[0].messages.map((m) => m.content), ['hello']);
      release(); // A's handler ends after close(): its ack is dropped quietly
      await sleep(50);
      await waitFor('B to ack it', async () => (await b.status()).acked === 1);
    } finally {
      release();
      await a.close();
      await b.close();
    }
  });

  test('metrics are Prometheus text', async () => {
    const q = new AssistantMessageQueue({ store: memoryStore('metrics') });
    try {
      await q.enqueue('c', 'x');
      const text = await q.metrics();
      assert.match(text, /# TYPE runlane_enqueued_total counter/);
      assert.match(text, /^runlane_enqueued_total 1$/m);
    } finally {
      await q.close();
    }
  });

  test('options of the original API are accepted', async () => {
    const q = new AssistantMessageQueue({
      redisUrl: memoryStore('legacy'),
      messageDelay: 1234,
      concurrency: 7,
      lockDuration: 60000,
      queuePrefix: 'legacy',
      maxAttempts: 4,
      backoff: { type: 'fixed', delay: 500 },
      removeOnComplete: true,
    });
    try {
      assert.equal(q.config['batch.window.ms'], '1234');
      assert.equal(q.config['worker.concurrency'], '7');
      assert.equal(q.config['lease.ms'], '60000');
      assert.equal(q.config['key.prefix'], 'legacy');
      assert.equal(q.config['max.attempts'], '4');
      assert.equal(q.config['backoff.base.ms'], '500');
      assert.equal(q.config['backoff.max.ms'], '500');
      assert.match(q.config['store'], /^memory:\/\/legacy/);
    } finally {
      await q.close();
    }
  });

  test('typed options reach the core as dotted keys; secrets are masked', async () => {
    const q = new AssistantMessageQueue({
      store: memoryStore('typed'),
      batchWindowMs: 50,
      batchMaxWaitMs: 1000,
      backoffJitter: 0.25,
      openaiStream: false,
      openaiApiKey: 'sk-secret',
      openaiHeaders: { 'api-key': 'x' },
      busyPolicy: 'interrupt',
      config: { 'worker.poll.ms': 100 },
    });
    try {
      assert.equal(q.config['batch.window.ms'], '50');
      assert.equal(q.config['batch.max.wait.ms'], '1000');
      assert.equal(q.config['backoff.jitter'], '0.25');
      assert.equal(q.config['openai.stream'], 'false');
      assert.equal(q.config['busy.policy'], 'interrupt');
      assert.equal(q.config['worker.poll.ms'], '100');
      assert.equal(q.config['openai.api.key'], '********');
      assert.equal(q.config['openai.headers'], '********');
    } finally {
      await q.close();
    }
  });
});
