// The dashboard scenario (scenario.mjs) through `runlane dashboard`:
// a real redis-server, the CLI worker (custom backend, --exec), a producer,
// the dashboard program on a free loopback port, and Debian's chromium,
// headless, driven by playwright-core (no browser download).
//
// Env: RUNLANE_BIN (default build/default/core/cli/runlane),
//      RUNLANE_TEST_REDIS (else a private redis-server is started),
//      RUNLANE_CHROMIUM (default /usr/bin/chromium),
//      RUNLANE_BROWSER_ARTIFACTS (default build/browser-artifacts/cli).
// Prints where the screenshots are; exits non-zero on any failure.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, existsSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { runScenario } from './scenario.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
const bin = process.env.RUNLANE_BIN || join(root, 'build/default/core/cli/runlane');
const chromiumPath = process.env.RUNLANE_CHROMIUM || '/usr/bin/chromium';
const artifacts = process.env.RUNLANE_BROWSER_ARTIFACTS || join(root, 'build/browser-artifacts/cli');
const work = mkdtempSync(join(tmpdir(), 'runlane-browser-'));
const children = [];
let redisDir = null;
const log = (m) => console.log(`[browser] ${m}`);

function cleanup() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  if (redisDir) {
    try { execFileSync(join(root, 'scripts/redis-server.sh'), ['stop', redisDir], { stdio: 'ignore' }); } catch {}
  }
}

// The URL a started program prints ("listening on URL"), or a failure.
function waitForUrl(child, what, timeoutMs) {
  return new Promise((ok, fail) => {
    let out = '';
    const timer = setTimeout(() => fail(new Error(`${what} did not start: ${out}`)), timeoutMs);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/\S+)/);
      if (m) { clearTimeout(timer); ok(m[1]); }
    });
    child.on('exit', (code) => { clearTimeout(timer); fail(new Error(`${what} exited with ${code}: ${out}`)); });
  });
}

function start(args, name) {
  const c = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUNLANE_STORE: '' } });
  let err = '';
  c.stderr.on('data', (d) => { err = (err + d).slice(-4000); });
  c.on('exit', (code, sig) => { if (code && !c.stopping) log(`${name} exited with ${code ?? sig}: ${err}`); });
  children.push(c);
  return c;
}

function enqueue(store, xs, conv, text) {
  return new Promise((ok, fail) => {
    const c = spawn(bin, ['--store', store, ...xs, 'enqueue', conv, text], { stdio: 'ignore' });
    c.on('exit', (code) => (code === 0 ? ok() : fail(new Error(`enqueue ${conv}: exit ${code}`))));
  });
}

async function main() {
  const t0 = Date.now();
  let redis = process.env.RUNLANE_TEST_REDIS;
  if (!redis) {
    redisDir = join(work, 'redis');
    const port = execFileSync(join(root, 'scripts/redis-server.sh'), ['start', redisDir]).toString().trim();
    redis = `redis://127.0.0.1:${port}/0`;
  }
  const hostPort = redis.replace(/^redis:\/\/([^@/]*@)?/, '').replace(/\/.*$/, '');
  const [host, port] = hostPort.split(':');
  // The dashboard reaches the store with a password and holds an API key:
  // neither may reach the browser.
  const password = `pw-browser-${process.pid}-secret`;
  const apiKey = `sk-browser-${process.pid}-secret`;
  const user = `rlbrowser${process.pid}`;
  execFileSync('redis-cli', ['-h', host, '-p', port, 'ACL', 'SETUSER', user, 'on', `>${password}`, '~*', '&*', '+@all']);
  const db = (redis.match(/\/(\d+)$/) || [null, '0'])[1];
  const dashStore = `redis://${user}:${password}@${host}:${port}/${db}`;

  const prefix = `br${process.pid}`;
  const xs = ['-X', `key.prefix=${prefix}`];
  // Visible states: a batch window of 1.5 s (pending), turns of 1.5 s (in flight).
  // The due time is set at enqueue: producers and worker share these.
  const queueXs = [...xs, '-X', 'batch.window.ms=1500', '-X', 'max.attempts=1'];
  const workerXs = [...queueXs, '-X', 'worker.poll.ms=100'];
  const breakFile = join(work, 'break');
  const delivered = join(work, 'delivered.log');
  writeFileSync(breakFile, '');
  writeFileSync(join(work, 'turn.sh'), [
    '#!/bin/sh',
    'cat >/dev/null',
    'sleep 1.5',
    `case "$RUNLANE_CONVERSATION_ID" in doomed-*) if [ -e '${breakFile}' ]; then echo "provider said no: the model is down" >&2; exit 1; fi;; esac`,
    `echo "$RUNLANE_CONVERSATION_ID $RUNLANE_BATCH_ID" >> '${delivered}'`,
    '',
  ].join('\n'));

  const worker = start(['--store', redis, ...workerXs, 'worker', '--concurrency', '8', '--exec', `sh ${join(work, 'turn.sh')}`], 'worker');
  worker.stdout.resume();
  const dash = start(['--store', dashStore, ...xs, '-X', `openai.api.key=${apiKey}`, 'dashboard',
    '--listen', '127.0.0.1:0', '--history-interval', '1'], 'dashboard');
  const url = await waitForUrl(dash, 'runlane dashboard', 10000);
  log(`dashboard at ${url}`);
  assertNoSecret(url, [password, apiKey]);

  // The dead letter to retry, then live traffic on a few conversations.
  await enqueue(redis, queueXs, 'doomed-1', 'hello, is anyone there?');
  let producing = true;
  let n = 0;
  const producer = (async () => {
    while (producing) {
      const conv = `live-${n % 6}`; // each one every 2.4 s: past its batch window
      await enqueue(redis, queueXs, conv, `message ${n} to ${conv}`).catch((e) => log(String(e)));
      n++;
      await new Promise((r) => setTimeout(r, 400));
    }
  })();

  const browser = await chromium.launch({ executablePath: chromiumPath });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await runScenario(page, url, {
      artifacts,
      liveConversation: 'live-0',
      deadConversation: 'doomed-1',
      beforeRetry: async () => unlinkSync(breakFile),
      isDelivered: async (conv) => existsSync(delivered) &&
        readFileSync(delivered, 'utf8').split('\n').some((l) => l.startsWith(`${conv} `)),
      secrets: [password, apiKey],
      timeoutMs: 30000,
      log,
    });
  } finally {
    await browser.close();
    producing = false;
    await producer;
  }
  // The dashboard stops cleanly on SIGTERM.
  dash.stopping = true;
  const code = await new Promise((ok) => { dash.on('exit', (c) => ok(c)); dash.kill('SIGTERM'); });
  if (code !== 0) throw new Error(`runlane dashboard exited with ${code} on SIGTERM`);
  worker.stopping = true;
  try { execFileSync('redis-cli', ['-h', host, '-p', port, 'ACL', 'DELUSER', user], { stdio: 'ignore' }); } catch {}
  log(`screenshots in ${artifacts}`);
  log(`passed in ${((Date.now() - t0) / 1000).toFixed(1)} s (${n} messages produced)`);
}

function assertNoSecret(text, secrets) {
  for (const s of secrets) if (text.includes(s)) throw new Error('a secret was printed');
}

main().then(() => { cleanup(); rmSync(work, { recursive: true, force: true }); },
  (e) => { console.error(`[browser] FAIL: ${e.stack || e}`); cleanup(); process.exitCode = 1; });
