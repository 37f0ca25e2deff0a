/**
 * Against a real Redis (RUNLANE_TEST_REDIS, started by run.sh): the flow,
 * retries and dead letters, concurrent enqueues sharing round trips, and two
 * worker processes sharing the load
 * without ever running one conversation twice at once.
 */
import assert from 'node:assert/strict';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { describe, test } from 'node:test';

import { AssistantMessageQueue, Batch, CompletedEvent, FailedEvent } from 'runlane';

import { fixture, redisTest, requireRedis, sleep, unique, waitFor, within } from './helpers';

describe('redis store', () => {
  test('the full flow: batched, acked, idempotent', redisTest(), async () => {
    const store = requireRedis();
    const batches: Batch[] = [];
    const completed: CompletedEvent[] = [];
    const q = new AssistantMessageQueue({
      store, keyPrefix: unique('flow'), batchWindowMs: 50,
      handler: (b) => {
        batches.push(b);
      },
    });
    q.on('completed', (e) => completed.push(e));
    try {
      await q.startWorker();
      const a = await q.enqueue('conv', 'one', { idempotencyKey: 'wh-1' });
      const dup = await q.enqueue('conv', 'one', { idempotencyKey: 'wh-1' });
      assert.equal(dup.duplicate, true);
      assert.equal(dup.id, a.id);
      await q.addMessageToThread('conv', 'two', 'short answers');
      await waitFor('completed', () => completed.length === 1);
      assert.deepEqual(batches[0].messages.map((m) => m.content), ['one', 'two']);
      assert.equal(batches[0].instructions, 'short answers');
      const totals = await q.status();
      assert.equal(totals.pending, 0);
      assert.equal(totals.inflight, 0);
    } finally {
      await q.close();
    }
  });

  test('concurrent enqueue() calls share round trips (group commit in the core)', redisTest(), async () => {
    const store = requireRedis();
    const q = new AssistantMessageQueue({ store, keyPrefix: unique('group') });
    try {
      await q.status(); // opened and connected before Redis holds writes
      // Redis holds writes for 300 ms: the first enqueue waits on the wire while the
      // others, on libuv's other threads, queue up behind it and go out together.
      const paused = spawnSync('redis-cli', ['-u', store, 'CLIENT', 'PAUSE', '300', 'WRITE'], { encoding: 'utf8' });
      assert.equal(paused.stdout.trim(), 'OK', paused.stderr);
      const n = 64;
      const results = await Promise.all(Array.from({ length: n }, (_, i) => q.enqueue(`c${i % 8}`, `m${i}`)));
      assert.equal(new Set(results.map((r) => r.id)).size, n, 'one id per call');
      const text = await q.metrics();
      const trips = Number(/^runlane_enqueue_round_trips_total (\d+)$/m.exec(text)?.[1]);
      assert.ok(trips > 0 && trips < n, `${trips} round trips for ${n} concurrent enqueues`);
      assert.equal((await q.status()).pending, n);
    } finally {
      await q.close();
    }
  });

  test('handler failure -> retry -> dead letter -> retry from the dead letters', redisTest(), async () => {
    const store = requireRedis();
    let fail = true;
    const dead: FailedEvent[] = [];
    const failed: FailedEvent[] = [];
    const completed: CompletedEvent[] = [];
    const q = new AssistantMessageQueue({
      store, keyPrefix: unique('dead'), batchWindowMs: 20, maxAttempts: 2, backoffBaseMs: 10, backoffMaxMs: 20,
      handler: () => {
        if (fail) throw new Error('upstream 503');
      },
    });
    q.on('dead', (e) => dead.push(e));
    q.on('failed', (e) => failed.push(e));
    q.on('completed', (e) => completed.push(e));
    try {
      await q.startWorker();
      await q.enqueue('c', 'x');
      await waitFor('dead', () => dead.length === 1);
      assert.equal(failed.length, 1);
      assert.equal(dead[0].attempt, 2);
      const letters = await q.listDead();
      assert.equal(letters.length, 1);
      assert.match(letters[0].error, /upstream 503/);
      fail = false;
      assert.equal(await q.retryDead(), 1);
      await waitFor('completed after retry', () => completed.length === 1);
      assert.equal((await q.status()).dead, 0);
    } finally {
      await q.close();
    }
  });

  test('two worker processes share the load and never run one conversation twice at once', redisTest(), async () => {
    const store = requireRedis();
    const prefix = unique('share');
    interface Rec { pid: number; conv: string; batch: string; start: number; end: number; ids: string[] }
    const records: Rec[] = [];
    const ready = new Set<number>();
    const closed = new Set<number>();
    const children: ChildProcess[] = [];
    const exits: Promise<number | null>[] = [];
    for (let i = 0; i < 2; i++) {
      const child = spawn(process.execPath, [fixture('worker-child'), store, prefix], { stdio: ['pipe', 'pipe', 'inherit'] });
      child.stdin!.on('error', () => {}); // "stop" may reach a child that already exited
      children.push(child);
      exits.push(new Promise((r) => child.on('exit', (code) => r(code))));
      createInterface({ input: child.stdout! }).on('line', (line) => {
        const m = JSON.parse(line) as Partial<Rec> & { ready?: number; closed?: number };
        if (m.ready) ready.add(m.ready);
        else if (m.closed) closed.add(m.closed);
        else records.push(m as Rec);
      });
    }
    const producer = new AssistantMessageQueue({ store, keyPrefix: prefix, batchWindowMs: 50 });
    try {
      await waitFor('both workers to start', () => ready.size === 2, 20000);
      const ids = new Set<string>();
      const CONVS = 12;
      // Bursts a little longer apart than the quiet window, so that new
      // batches become due while turns of the same conversations still run.
      for (let round = 0; round < 8; round++) {
        const rs = await Promise.all(
          Array.from({ length: CONVS * 3 }, (_, i) => producer.enqueue(`conv-${i % CONVS}`, `r${round} m${i}`)),
        );
        for (const r of rs) ids.add(r.id);
        await sleep(70);
      }
      const total = ids.size;
      await waitFor(`all ${total} messages to be handled`, () => records.reduce((n, r) => n + r.ids.length, 0) >= total, 60000);
      // Nothing more can come once every batch is acked (a child writes a
      // batch's record before its ack), and a child's "closed" line follows
      // all its records on the same stream: wait for both, not for a time.
      await waitFor('the queue to be idle', async () => {
        const t = await producer.status();
        return t.pending === 0 && t.inflight === 0;
      }, 20000);
      for (const c of children) c.stdin!.write('stop\n');
      await waitFor('both workers to close', () => closed.size === 2, 20000);

      const delivered = records.flatMap((r) => r.ids);
      assert.equal(delivered.length, total, 'every message is delivered exactly once');
      assert.equal(new Set(delivered).size, total, 'no message is delivered twice');
      for (const id of ids) assert.ok(delivered.includes(id), `message ${id} was delivered`);

      const byConv = new Map<string, Rec[]>();
      for (const r of records) byConv.set(r.conv, [...(byConv.get(r.conv) ?? []), r]);
      for (const [conv, recs] of byConv) {
        recs.sort((a, b) => a.start - b.start);
        for (let i = 1; i < recs.length; i++) {
          assert.ok(
            recs[i].start >= recs[i - 1].end,
            `${conv}: turn ${recs[i].batch} (pid ${recs[i].pid}) started at ${recs[i].start} before ` +
              `turn ${recs[i - 1].batch} (pid ${recs[i - 1].pid}) ended at ${recs[i - 1].end}`,
          );
        }
      }
      const perPid = new Map<number, number>();
      for (const r of records) perPid.set(r.pid, (perPid.get(r.pid) ?? 0) + 1);
      console.log(`# batches per worker process: ${JSON.stringify(Object.fromEntries(perPid))}; ${records.length} batches, ${total} messages`);
      assert.equal(perPid.size, 2, `both processes handled batches: ${JSON.stringify(Object.fromEntries(perPid))}`);
      const totals = await producer.status();
      assert.equal(totals.pending, 0);
      assert.equal(totals.inflight, 0);
    } finally {
      for (const c of children) c.stdin!.end('stop\n');
      const codes = await within(Promise.all(exits), 20000, null);
      if (codes === null) for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
      await producer.close();
      assert.ok(codes !== null, 'the worker processes exit by themselves after close()');
      assert.deepEqual(codes, [0, 0]);
    }
  });
});
