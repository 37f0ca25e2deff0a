/** Errors are typed; bad options fail early with the core's own message. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  AssistantMessageQueue,
  ClosedError,
  ConfigError,
  ErrorCode,
  InvalidArgumentError,
  InvalidOptionError,
  NotFoundError,
  RunlaneError,
  StoreError,
  TooLargeError,
  UnknownOptionError,
  runlaneConfigProperties,
} from 'runlane';

import { memoryStore } from './helpers';

describe('bad options', () => {
  test('an out-of-range value names the option, the key and the range', () => {
    assert.throws(
      () => new AssistantMessageQueue({ store: memoryStore('bad'), batchWindowMs: -5 }),
      (e: unknown) => {
        assert.ok(e instanceof InvalidOptionError, `expected InvalidOptionError, got ${String(e)}`);
        assert.ok(e instanceof ConfigError);
        assert.ok(e instanceof RunlaneError);
        assert.equal(e.errno, ErrorCode.INVALID_VALUE);
        assert.equal(e.code, 'RUNLANE_ERR_INVALID_VALUE');
        assert.match(e.message, /batchWindowMs/);
        assert.match(e.message, /batch\.window\.ms/);
        assert.match(e.message, /out of range \[0, 86400000\]/);
        return true;
      },
    );
  });

  test('a wrong type gets the core message', () => {
    assert.throws(() => new AssistantMessageQueue({ batchWindowMs: 'soon' as unknown as number }),
      (e: unknown) => e instanceof InvalidOptionError && /expected an integer, got "soon"/.test(e.message));
    assert.throws(() => new AssistantMessageQueue({ backend: 'gpt' as 'custom' }),
      (e: unknown) => e instanceof InvalidOptionError && /expected one of custom\|responses\|assistants/.test(e.message));
    assert.throws(() => new AssistantMessageQueue({ store: 'postgres://x' }),
      (e: unknown) => e instanceof InvalidOptionError && /store/.test(e.message));
    assert.throws(() => new AssistantMessageQueue({ openaiStream: 'maybe' as unknown as boolean }),
      (e: unknown) => e instanceof InvalidOptionError && /expected true or false/.test(e.message));
  });

  test('an unknown option is refused with a suggestion', () => {
    assert.throws(
      () => new AssistantMessageQueue({ batchWindowMS: 50 } as Record<string, unknown>),
      (e: unknown) => {
        assert.ok(e instanceof UnknownOptionError, String(e));
        assert.match(e.message, /unknown option "batchWindowMS"/);
        assert.match(e.message, /did you mean "batchWindowMs"/);
        return true;
      },
    );
    assert.throws(() => new AssistantMessageQueue({ config: { 'no.such.key': 1 } }), UnknownOptionError);
  });

  test('every configuration key of the core is an option', () => {
    const props = runlaneConfigProperties();
    assert.ok(props.length > 10);
    for (const p of props) {
      assert.match(p.option, /^[a-z][A-Za-z0-9]*$/, `${p.name} -> ${p.option}`);
      assert.ok(['string', 'int', 'enum', 'bool', 'float', 'json'].includes(p.type), `${p.name}: ${p.type}`);
    }
    assert.ok(props.some((p) => p.name === 'batch.window.ms' && p.option === 'batchWindowMs'));
  });
});

describe('typed errors', () => {
  test('bad arguments are InvalidArgumentError', async () => {
    const q = new AssistantMessageQueue({ store: memoryStore('args') });
    try {
      await assert.rejects(q.enqueue('', 'x'), InvalidArgumentError);
      await assert.rejects(q.enqueue(42 as unknown as string, 'x'), InvalidArgumentError);
      await assert.rejects(q.enqueue('c\u0001', 'x'), (e: unknown) =>
        e instanceof InvalidArgumentError && e.code === 'RUNLANE_ERR_INVALID_ARG');
      await assert.rejects(q.enqueue('c', 'x', { metadata: { n: 1 as unknown as string } }), InvalidArgumentError);
    } finally {
      await q.close();
    }
  });

  test('a message over batch.max.bytes is TooLargeError', async () => {
    const q = new AssistantMessageQueue({ store: memoryStore('large'), batchMaxBytes: 8 });
    try {
      await assert.rejects(q.enqueue('c', 'way more than eight bytes'), (e: unknown) =>
        e instanceof TooLargeError && e.errno === ErrorCode.TOO_LARGE && /batch\.max\.bytes/.test(e.message));
    } finally {
      await q.close();
    }
  });

  test('settling an unknown batch is NotFoundError', async () => {
    const q = new AssistantMessageQueue({ store: memoryStore('nf'), handler: () => undefined });
    try {
      await q.startWorker();
      await assert.rejects(q.ack('b-no-such-batch'), NotFoundError);
      await assert.rejects(q.retryDead('d-no-such-letter'), NotFoundError);
    } finally {
      await q.close();
    }
  });

  test('calls after close() are ClosedError; close() is idempotent', async () => {
    const q = new AssistantMessageQueue({ store: memoryStore('closed') });
    await q.close();
    await q.close();
    await assert.rejects(q.enqueue('c', 'x'), ClosedError);
    await assert.rejects(q.startWorker(), ClosedError);
    assert.equal(q.isClosed, true);
  });

  test('an unreachable Redis is a retriable StoreError', async () => {
    const q = new AssistantMessageQueue({ store: 'redis://127.0.0.1:1/0', redisConnectTimeoutMs: 500 });
    await assert.rejects(q.enqueue('c', 'x'), (e: unknown) => {
      assert.ok(e instanceof StoreError, `expected StoreError, got ${String(e)}`);
      assert.equal(e.retriable, true);
      return true;
    });
    await q.close();
    await assert.rejects(AssistantMessageQueue.create({ store: 'redis://127.0.0.1:1/0', redisConnectTimeoutMs: 500 }), StoreError);
  });
});
