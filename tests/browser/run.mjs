// The dashboard scenario (scenario.mjs) through each way of serving it:
//   cli   `runlane dashboard` (libmicrohttpd), at the root;
//   node  the Node mount: tests/node's dashboard_server.js, Express
//         `app.use('/admin/runlane', runlaneDashboard(queue))`;
//   asgi  the Python mount: tests/python/dashboard_server.py, the ASGI app
//         in a Starlette `Mount('/admin/runlane', ...)` under uvicorn.
// Each target gets its own key prefix, CLI worker (custom backend, --exec),
// producer and dead letter on one real redis-server, and Debian's chromium,
// headless, driven by playwright-core (no browser download). The mounts are
// served under a path prefix to prove the page's relative URLs work there.
//
//   node run.mjs [cli] [node] [asgi]      (default: all three)
//
// Env: RUNLANE_BIN (default build/default/core/cli/runlane),
//      RUNLANE_BROWSER_NODE_APP (default build/node-app: tests/node/run.sh's
//        app kept with RUNLANE_NODE_KEEP_APP, holding dist/dashboard_server.js),
//      RUNLANE_BROWSER_PY (default $RUNLANE_VENV/bin/python, else
//        build/venv/bin/python: runlane, uvicorn and starlette installed),
//      RUNLANE_TEST_REDIS (else a private redis-server is started),
//      RUNLANE_CHROMIUM (default /usr/bin/chromium),
//      RUNLANE_BROWSER_ARTIFACTS (default build/browser-artifacts; one
//        directory per target).
// A missing piece (chromium, the runlane program, the Node app, the Python
// venv) fails the run: nothing is skipped. Exits non-zero on any failure.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, existsSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { runScenario } from './scenario.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
const bin = process.env.RUNLANE_BIN || join(root, 'build/default/core/cli/runlane');
const nodeApp = process.env.RUNLANE_BROWSER_NODE_APP || join(root, 'build/node-app');
const python = process.env.RUNLANE_BROWSER_PY ||
  join(process.env.RUNLANE_VENV || join(root, 'build/venv'), 'bin/python');
const chromiumPath = process.env.RUNLANE_CHROMIUM || '/usr/bin/chromium';
const artifactsRoot = process.env.RUNLANE_BROWSER_ARTIFACTS || join(root, 'build/browser-artifacts');
const mountPath = '/admin/runlane';
const work = mkdtempSync(join(tmpdir(), 'runlane-browser-'));
const children = [];
let redisDir = null;
let log = (m) => console.log(`[browser] ${m}`);

function cleanup() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  if (redisDir) {
    try { execFileSync(join(root, 'scripts/redis-server.sh'), ['stop', redisDir], { stdio: 'ignore' }); } catch {}
  }
}

// The URL a started server prints ("listening on URL" for the CLI, the bare
// URL as the first line for the test servers), or a failure.
function waitForUrl(child, what, timeoutMs) {
  return new Promise((ok, fail) => {
    let out = '';
    const timer = setTimeout(() => fail(new Error(`${what} did not start in ${timeoutMs} ms: ${out}${child.err}`)), timeoutMs);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/(?:^|listening on )(http:\/\/\S+)/m);
      if (m) { clearTimeout(timer); ok(m[1]); }
    });
    child.on('exit', (code) => { clearTimeout(timer); fail(new Error(`${what} exited with ${code}: ${out}${child.err}`)); });
  });
}

function start(cmd, args, name) {
  // stdin is a pipe the test servers watch: if this process dies, they stop.
  const c = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, RUNLANE_STORE: '' } });
  c.err = '';
  c.stderr.on('data', (d) => { c.err = (c.err + d).slice(-4000); });
  c.on('exit', (code, sig) => { if (code && !c.stopping) log(`${name} exited with ${code ?? sig}: ${c.err}`); });
  children.push(c);
  return c;
}

async function stop(c, name) {
  c.stopping = true;
  if (c.exitCode !== null || c.signalCode !== null) return c.exitCode;
  const code = await new Promise((ok) => { c.on('exit', (x, sig) => ok(x ?? sig)); c.kill('SIGTERM'); });
  return code;
}

function enqueue(store, xs, conv, text) {
  return new Promise((ok, fail) => {
    const c = spawn(bin, ['--store', store, ...xs, 'enqueue', conv, text], { stdio: 'ignore' });
    c.on('exit', (code) => (code === 0 ? ok() : fail(new Error(`enqueue ${conv}: exit ${code}`))));
  });
}

// What each target needs, checked before anything starts: a missing piece
// is a failure, never a skip.
function preflight(targets) {
  const missing = [];
  if (!existsSync(chromiumPath)) missing.push(`chromium (${chromiumPath}; scripts/deps.sh installs it)`);
  if (!existsSync(bin)) missing.push(`the runlane program (${bin}; build build/default first)`);
  if (targets.includes('node') && !existsSync(join(nodeApp, 'dist/dashboard_server.js')))
    missing.push(`the Node test app (${nodeApp}/dist/dashboard_server.js; tests/node/run.sh with RUNLANE_NODE_KEEP_APP=${nodeApp})`);
  if (targets.includes('asgi')) {
    try {
      execFileSync(python, ['-c', 'import runlane.dashboard, uvicorn, starlette'], { stdio: 'pipe' });
    } catch (e) {
      missing.push(`a Python with runlane, uvicorn and starlette (${python}; python/run_tests.sh installs them): ${String(e.stderr || e.message).trim().split('\n').pop()}`);
    }
  }
  if (missing.length) throw new Error(`missing: ${missing.join('; ')}`);
}

// The dashboard server of one target, over `dashStore` with key prefix
// `prefix`; returns { child, url }.
async function serve(target, dashStore, prefix, apiKey) {
  let child;
  if (target === 'cli') {
    child = start(bin, ['--store', dashStore, '-X', `key.prefix=${prefix}`, '-X', `openai.api.key=${apiKey}`,
      'dashboard', '--listen', '127.0.0.1:0', '--history-interval', '1'], 'runlane dashboard');
  } else if (target === 'node') {
    child = start(process.execPath, [join(nodeApp, 'dist/dashboard_server.js'), '--store', dashStore,
      '--set', `key.prefix=${prefix}`, '--set', `openai.api.key=${apiKey}`, '--mount', 'express',
      '--path', mountPath, '--port', '0', '--history-interval-ms', '1000'], 'node dashboard_server');
  } else {
    child = start(python, [join(root, 'tests/python/dashboard_server.py'), '--store', dashStore,
      '--set', `key.prefix=${prefix}`, '--set', `openai.api.key=${apiKey}`,
      '--path', mountPath, '--port', '0', '--history-interval-ms', '1000'], 'python dashboard_server');
  }
  const url = await waitForUrl(child, `the ${target} dashboard`, 20000);
  if (target !== 'cli' && !new URL(url).pathname.startsWith(`${mountPath}/`))
    throw new Error(`the ${target} dashboard is not under ${mountPath}: ${url}`);
  return { child, url };
}

// One target: its own prefix, worker, producer, dead letter and browser.
async function runTarget(target, redis, dashStore, secrets, apiKey, browser) {
  const t0 = Date.now();
  const prefix = `br${process.pid}${target}`;
  const dir = join(work, target);
  mkdirSync(dir);
  const xs = ['-X', `key.prefix=${prefix}`];
  // Visible states: a batch window of 1.5 s (pending), turns of 1.5 s (in flight).
  // The due time is set at enqueue: producers and worker share these.
  const queueXs = [...xs, '-X', 'batch.window.ms=1500', '-X', 'max.attempts=1'];
  const workerXs = [...queueXs, '-X', 'worker.poll.ms=100'];
  const breakFile = join(dir, 'break');
  const delivered = join(dir, 'delivered.log');
  writeFileSync(breakFile, '');
  writeFileSync(join(dir, 'turn.sh'), [
    '#!/bin/sh',
    'cat >/dev/null',
    'sleep 1.5',
    `case "$RUNLANE_CONVERSATION_ID" in doomed-*) if [ -e '${breakFile}' ]; then echo "provider said no: the model is down" >&2; exit 1; fi;; esac`,
    `echo "$RUNLANE_CONVERSATION_ID $RUNLANE_BATCH_ID" >> '${delivered}'`,
    '',
  ].join('\n'));

  const worker = start(bin, ['--store', redis, ...workerXs, 'worker', '--concurrency', '8', '--exec', `sh ${join(dir, 'turn.sh')}`], `${target} worker`);
  worker.stdout.resume();
  const { child: dash, url } = await serve(target, dashStore, prefix, apiKey);
  log(`dashboard at ${url}`);
  for (const s of secrets) if (url.includes(s)) throw new Error('a secret was printed');

  // The dead letter to retry, then live traffic on a few conversations.
  const deadConv = `doomed-${target}`;
  await enqueue(redis, queueXs, deadConv, 'hello, is anyone there?');
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

  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  try {
    const page = await context.newPage();
    await runScenario(page, url, {
      artifacts: join(artifactsRoot, target),
      liveConversation: 'live-0',
      deadConversation: deadConv,
      beforeRetry: async () => unlinkSync(breakFile),
      isDelivered: async (conv) => existsSync(delivered) &&
        readFileSync(delivered, 'utf8').split('\n').some((l) => l.startsWith(`${conv} `)),
      secrets,
      timeoutMs: 30000,
      log,
    });
  } finally {
    await context.close();
    producing = false;
    await producer;
  }
  // The server stops cleanly on SIGTERM.
  const code = await stop(dash);
  if (code !== 0) throw new Error(`the ${target} dashboard exited with ${code} on SIGTERM: ${dash.err}`);
  await stop(worker);
  log(`passed in ${((Date.now() - t0) / 1000).toFixed(1)} s (${n} messages produced); screenshots in ${join(artifactsRoot, target)}`);
}

async function main() {
  const all = ['cli', 'node', 'asgi'];
  const targets = process.argv.slice(2).length ? process.argv.slice(2) : all;
  for (const t of targets) if (!all.includes(t)) throw new Error(`unknown target ${t} (${all.join(', ')})`);
  preflight(targets);
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
  const browser = await chromium.launch({ executablePath: chromiumPath });
  try {
    for (const target of targets) {
      const base = log;
      log = (m) => base(`${target}: ${m}`);
      try {
        await runTarget(target, redis, dashStore, [password, apiKey], apiKey, browser);
      } finally {
        log = base;
      }
    }
  } finally {
    await browser.close();
    try { execFileSync('redis-cli', ['-h', host, '-p', port, 'ACL', 'DELUSER', user], { stdio: 'ignore' }); } catch {}
  }
  log(`${targets.join(', ')}: passed in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

main().then(() => { cleanup(); rmSync(work, { recursive: true, force: true }); },
  (e) => { console.error(`[browser] FAIL: ${e.stack || e}`); cleanup(); process.exitCode = 1; });
