/**
 * Enqueue never blocks the event loop: the store round trips run in the
 * libuv threadpool. Measures the loop's lag during a burst of 10,000
 * enqueues and prints it; asserts only that the loop kept turning during the
 * burst (no wall-clock threshold that could flake).
 */
import assert from 'node:assert/strict';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { describe, test } from 'node:test';

import { AssistantMessageQueue } from 'runlane';

import { memoryStore, redisTest, requireRedis, unique } from './helpers';

const N = 10000;

async function burst(label: string, q: AssistantMessageQueue): Promise<void> {
  await q.waitUntilReady();
  const h = monitorEventLoopDelay({ resolution: 1 });
  // The longest stretch without a turn of the loop, from the start of the
  // burst to its end: a 1 ms interval notes when the loop came round.
  let ticks = 0;
  let last = performance.now();
  let stall = 0;
  const tick = setInterval(() => {
    const now = performance.now();
    stall = Math.max(stall, now - last);
    last = now;
    ticks++;
  }, 1);
  h.enable();
  const t0 = performance.now();
  last = t0;
  const all: Promise<unknown>[] = [];
  for (let i = 0; i < N; i++) all.push(q.enqueue(`conv-${i % 500}`, `message ${i}`));
  const results = await Promise.all(all);
  const t1 = performance.now();
  stall = Math.max(stall, t1 - last);
  const ms = t1 - t0;
  h.disable();
  clearInterval(tick);
  console.log(
    `# ${label}: ${N} enqueues in ${ms.toFixed(0)} ms (${Math.round((N / ms) * 1000)}/s); ` +
      `longest stall of the event loop ${stall.toFixed(1)} ms; loop turns seen ${ticks}; ` +
      `monitorEventLoopDelay p50 ${(h.percentile(50) / 1e6).toFixed(1)} ms, p99 ${(h.percentile(99) / 1e6).toFixed(1)} ms, max ${(h.max / 1e6).toFixed(1)} ms`,
  );
  assert.equal(results.length, N);
  assert.equal((await q.status()).pending, N);
  assert.ok(ticks >= 1 && stall < ms,
    `the event loop was not blocked for the whole burst (longest stall ${stall.toFixed(1)} ms of ${ms.toFixed(1)} ms, turns ${ticks})`);
}

describe('event-loop lag during a burst of enqueues', () => {
  test(`memory store: ${N} enqueues`, async () => {
    const q = new AssistantMessageQueue({ store: memoryStore('lag'), batchWindowMs: 60000 });
    try {
      await burst('memory', q);
    } finally {
      await q.close();
    }
  });

  test(`redis store: ${N} enqueues`, redisTest(), async () => {
    const q = new AssistantMessageQueue({ store: requireRedis(), keyPrefix: unique('lag'), batchWindowMs: 60000 });
    try {
      await burst('redis', q);
    } finally {
      await q.close();
    }
  });
});
