/**
 * Input that cannot be stored faithfully is refused by the core, never stored
 * corrupted, and rejects with the typed error: invalid Unicode, U+0000 (which
 * a C string would cut), control bytes in messages, header values with CR/LF.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  AssistantMessageQueue,
  ConfigError,
  ErrorCode,
  FailedEvent,
  InvalidArgumentError,
  InvalidOptionError,
  NonRetriableError,
  NotFoundError,
} from 'runlane';

import { memoryStore, redisTest, requireRedis, unique, waitFor } from './helpers';

/** The rejection is an InvalidArgumentError whose message matches `re`. */
function invalidArg(re: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${String(e)}`);
    assert.equal(e.errno, ErrorCode.INVALID_ARG);
    assert.match(e.message, re);
    return true;
  };
}

async function refusesCorruptText(q: AssistantMessageQueue): Promise<void> {
  // Lone surrogates (JSON.stringify writes them as \udc80 escapes).
  await assert.rejects(q.enqueue('c', 'x', { metadata: { k: 'v\udc80' } }), invalidArg(/options\.metadata\.k/));
  await assert.rejects(q.enqueue('c', 'x', { instructions: 'be \ud800 brief' }), invalidArg(/options\.instructions/));
  await assert.rejects(q.enqueue('c', 'x', { idempotencyKey: 'm-\udfff' }), invalidArg(/options\.idempotency_key/));
  // U+0000 in JSON: refused, never cut.
  await assert.rejects(q.enqueue('c', 'x', { metadata: { k: 'keep\u0000lost' } }),
    invalidArg(/options\.metadata\.k.*U\+0000/));
  await assert.rejects(q.enqueueMany([{ conversationId: 'ok', content: 'a' }, { conversationId: 'victim\u0000x', content: 'b' }]),
    invalidArg(/messages\[1\]\.conversation_id/));
  await assert.rejects(q.enqueueMany([{ conversationId: 'c', content: 'keep\u0000lost' }]), invalidArg(/messages\[0\]\.content/));
  // U+0000 in a C string argument: refused, never cut.
  await assert.rejects(q.enqueue('victim\u0000x', 'x'), invalidArg(/NUL/));
  await assert.rejects(q.enqueue('c', 'keep\u0000lost'), invalidArg(/NUL/));
  assert.equal((await q.status()).pending, 0, 'a refused message stores nothing');
  assert.equal((await q.status('victim')).pending, 0, '"victim\\u0000x" must not land in "victim"');
  // Idempotency keys "a\u0000b" and "a" never collide: the first is refused.
  const first = await q.enqueue('c', 'first', { idempotencyKey: 'a' });
  await assert.rejects(q.enqueue('c', 'second', { idempotencyKey: 'a\u0000b' }), invalidArg(/options\.idempotency_key/));
  await assert.rejects(q.enqueueMany([{ conversationId: 'c', content: 'x', idempotencyKey: 'a\u0000b' }]),
    invalidArg(/messages\[0\]\.idempotency_key/));
  assert.equal(first.duplicate, false);
  assert.equal((await q.status('c')).pending, 1);
}

describe('text that would be stored corrupted', () => {
  test('is refused with InvalidArgumentError naming the field (memory store)', async () => {
    const q = new AssistantMessageQueue({ store: memoryStore('input') });
    try {
      await refusesCorruptText(q);
    } finally {
      await q.close();
    }
  });

  test('is refused with InvalidArgumentError naming the field (Redis)', redisTest(), async () => {
    const q = new AssistantMessageQueue({ store: requireRedis(), keyPrefix: unique('input') });
    try {
      await refusesCorruptText(q);
    } finally {
      await q.close();
    }
  });
});

describe('error messages', () => {
  test('escape control bytes of the input', async () => {
    const q = new AssistantMessageQueue({ store: memoryStore('esc') });
    try {
      await assert.rejects(q.retryDead('d\u001b]0;pwned\u0007'), (e: unknown) => {
        assert.ok(e instanceof NotFoundError, String(e));
        assert.ok(!/[\u0000-\u001f\u007f]/.test(e.message), `raw control byte in ${JSON.stringify(e.message)}`);
        assert.ok(e.message.includes('d\\x1b]0;pwned\\x07'), e.message);
        return true;
      });
    } finally {
      await q.close();
    }
    assert.throws(() => new AssistantMessageQueue({ config: { 'batch.window.ms': '1\u001b[2J' } }), (e: unknown) =>
      e instanceof InvalidOptionError && !e.message.includes('\u001b') && e.message.includes('\\x1b[2J'));
  });
});

describe('header values', () => {
  const bad: Array<[string, Record<string, unknown>]> = [
    ['CR/LF in openaiHeaders', { openaiHeaders: { 'X-A': 'v\r\nX-Injected: 1' } }],
    ['a name that is not a token', { openaiHeaders: { 'X A': 'v' } }],
    ['U+0000 in openaiHeaders', { openaiHeaders: { 'X-A': 'v\u0000x' } }],
    ['DEL in openaiOrganization', { openaiOrganization: 'org\u007f' }],
    ['DEL in openaiApiKey', { openaiApiKey: 'sk-abc\u007f' }],
    ['NUL in openaiApiKey', { openaiApiKey: 'sk-abc\u0000junk' }],
  ];
  for (const [what, options] of bad) {
    test(`are refused when the queue is configured: ${what}`, () => {
      assert.throws(
        () => new AssistantMessageQueue({ store: memoryStore('hdr'), backend: 'responses', ...options }),
        (e: unknown) => {
          assert.ok(e instanceof InvalidOptionError && e instanceof ConfigError, `expected InvalidOptionError, got ${String(e)}`);
          assert.ok(!e.message.includes('Injected') && !e.message.includes('sk-abc'), `a secret is echoed: ${e.message}`);
          return true;
        },
      );
    });
  }
});

describe('a handler error with a NUL', () => {
  test('still settles its batch, the NUL shown as \\u0000', async () => {
    const dead: FailedEvent[] = [];
    const q = new AssistantMessageQueue({
      store: memoryStore('errnul'),
      batchWindowMs: 20,
      leaseMs: 600000,
      handler: () => {
        throw new NonRetriableError('bad\u0000tail');
      },
    });
    q.on('dead', (e) => dead.push(e));
    try {
      await q.startWorker();
      await q.enqueue('c', 'hello');
      await waitFor('the dead event', () => dead.length === 1);
      assert.ok(dead[0].error.includes('bad\\u0000tail'), dead[0].error);
    } finally {
      await q.close();
    }
  });
});
