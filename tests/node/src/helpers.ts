/** Shared helpers of the Node tests. */
import { ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';

/** redis://127.0.0.1:PORT/0 from run.sh, or undefined. */
export const REDIS_URL = process.env.RUNLANE_TEST_REDIS || undefined;
export const REQUIRE_REDIS = process.env.RUNLANE_REQUIRE_REDIS === '1';
/** RUNLANE_NO_SKIP=1 (scripts/test.sh sets it): a test that cannot run fails instead of skipping. */
export const NO_SKIP = process.env.RUNLANE_NO_SKIP === '1';

/**
 * Test options for a test that needs Redis: skipped without
 * RUNLANE_TEST_REDIS, unless RUNLANE_REQUIRE_REDIS=1 or RUNLANE_NO_SKIP=1
 * (then the test runs and fails in requireRedis()).
 */
export function redisTest(): { skip: string | false } {
  if (REDIS_URL || REQUIRE_REDIS || NO_SKIP) return { skip: false };
  return { skip: 'RUNLANE_TEST_REDIS is not set' };
}

/**
 * The `skip` option of a suite that needs something (`missing`: why it
 * cannot run, or false). Under RUNLANE_NO_SKIP=1 a missing need registers a
 * failing test in its place.
 */
export function skipUnless(missing: string | false): string | false {
  if (missing && NO_SKIP) {
    test(`RUNLANE_NO_SKIP=1: ${missing}`, () => {
      throw new Error(`RUNLANE_NO_SKIP=1 but the suite cannot run: ${missing}`);
    });
  }
  return missing;
}

export function requireRedis(): string {
  if (!REDIS_URL) throw new Error('RUNLANE_REQUIRE_REDIS=1 (or RUNLANE_NO_SKIP=1) but RUNLANE_TEST_REDIS is not set: Redis tests cannot run');
  return REDIS_URL;
}

/** A name no other test uses (memory store names, Redis key prefixes). */
export function unique(tag: string): string {
  return `${tag}-${process.pid}-${randomBytes(4).toString('hex')}`;
}

export function memoryStore(tag: string): string {
  return `memory://${unique(tag)}`;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** RUNLANE_TEST_TIME_SCALE (>= 1): slow runs stretch every deadline of waitFor. */
export const TIME_SCALE = Math.max(1, Number(process.env.RUNLANE_TEST_TIME_SCALE) || 1);

/** Waits until `cond()` is truthy; fails with `what` after `timeoutMs` (times TIME_SCALE). */
export async function waitFor<T>(what: string, cond: () => T | Promise<T>, timeoutMs = 10000): Promise<T> {
  timeoutMs *= TIME_SCALE;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** `p`, or `onTimeout` after `ms` (the timer is cleared either way). */
export async function within<T, U>(p: Promise<T>, ms: number, onTimeout: U): Promise<T | U> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<U>((r) => (timer = setTimeout(() => r(onTimeout), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The next `name` event of `emitter`; rejects on a 'dead' event (with its
 * error) or after `ms`, so that a test fails with a reason instead of
 * hanging.
 */
export function nextEvent<T>(emitter: import('node:events').EventEmitter, name: string, ms = 15000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      emitter.off(name, onEvent);
      emitter.off('dead', onDead);
    };
    const onEvent = (e: T) => {
      done();
      resolve(e);
    };
    const onDead = (e: { error?: string }) => {
      done();
      reject(new Error(`expected '${name}', got a dead letter: ${e.error}`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`no '${name}' event within ${ms} ms`));
    }, ms);
    emitter.on(name, onEvent);
    if (name !== 'dead') emitter.on('dead', onDead);
  });
}

/** Path of a compiled fixture script. */
export function fixture(name: string): string {
  return path.join(__dirname, 'fixtures', `${name}.js`);
}

export { test };

/**
 * Starts the OpenAI emulator (tests/emulator/emulator.py, at `script`) on a
 * free port with `apiKey`; resolves once it prints its port, with the
 * process (kill it with SIGTERM) and its root URL (`http://127.0.0.1:PORT`,
 * the API under `/v1`). Rejects if it exits first.
 */
export async function startEmulator(script: string, apiKey: string): Promise<{ proc: ChildProcess; root: string }> {
  const proc = spawn('python3', [script, '--port', '0', '--api-key', apiKey], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    const rl = createInterface({ input: proc.stdout! });
    rl.on('line', (line) => {
      const m = /^EMULATOR_PORT=(\d+)/.exec(line);
      if (m) resolve(Number(m[1]));
    });
    proc.on('exit', (code) => reject(new Error(`the emulator exited (${code})`)));
  });
  return { proc, root: `http://127.0.0.1:${port}` };
}

/**
 * In a suite: starts the emulator before its tests (`onStart(root)` then
 * runs) and stops it after them.
 */
export function useEmulator(script: string | undefined, apiKey: string, onStart: (root: string) => void): void {
  let proc: ChildProcess | undefined;
  before(async () => {
    const e = await startEmulator(script!, apiKey);
    proc = e.proc;
    onStart(e.root);
  });
  after(() => {
    proc?.kill('SIGTERM');
  });
}
