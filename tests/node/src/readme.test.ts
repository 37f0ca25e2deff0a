/**
 * Every ```ts / ```js block of node/README.md runs, and passes.
 *
 * Each block is transpiled (TypeScript's transpileModule: CommonJS,
 * decorators), wrapped in an async function (top-level await) and run in a
 * fresh `node` process from the test's directory (where `runlane` is
 * installed), with:
 *   - OPENAI_BASE_URL / OPENAI_API_KEY pointing at the bundled emulator
 *     (RUNLANE_TEST_EMULATOR), as the official SDKs and the core honour;
 *   - every `redis://...` URL literal replaced by a private `memory://` store;
 *   - the setup named by an HTML comment right before the fence,
 *     `<!-- snippet: setup=NAME -->`: code run before the block (stubs such as
 *     sendToUser, a ready `queue`) and checks run after it (SETUPS); a
 *     `queue` left open is closed at the end.
 * Blocks that are not code use another fence (text, sh). A ts/js block with an
 * unknown setup, or one that throws, fails: nothing is skipped silently.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';

import * as ts from 'typescript';

import { memoryStore, skipUnless, useEmulator } from './helpers';

const EMULATOR = process.env.RUNLANE_TEST_EMULATOR;
const README = EMULATOR ? path.resolve(path.dirname(EMULATOR), '..', '..', 'node', 'README.md') : '';
const skip = skipUnless(!EMULATOR || !existsSync(README) ? 'RUNLANE_TEST_EMULATOR is not set' : false);
const API_KEY = 'sk-readme-node-test';
const SCALE = Math.max(1, Number(process.env.RUNLANE_TEST_TIME_SCALE) || 1);

const STUBS = `
const SENT = [];
const myModel = async (texts) => 'reply to ' + [].concat(texts).join(' ');
const sendToUser = async (conversationId, reply) => { SENT.push([conversationId, reply]); };
`;

const WAIT = `
const waitFor = async (pred, what) => {
  const end = Date.now() + 15000 * ${SCALE};
  while (!pred()) {
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 20));
  }
};
`;

/** name -> [code before the block, code after it] */
const SETUPS: Record<string, [string, string]> = {
  '': ['', ''],
  stubs: [STUBS, ''],
  // A custom-backend queue on the memory store, and a webhook's message.
  queue: [
    `const { AssistantMessageQueue } = require('runlane');
const queue = new AssistantMessageQueue({ store: STORE, handler: async () => {} });
const webhook = { messageId: 'wamid.1' };`,
    '',
  ],
  // The HTTP walkthrough: the reply, with the tool's output, reaches
  // sendToUser; confirmed by replyAck, it is not pending any more.
  http: [
    STUBS + WAIT,
    `await waitFor(() => SENT.length > 0, 'the reply');
if (SENT[0][0] !== 'chat-42' || !SENT[0][1].startsWith('echo: hi') || !SENT[0][1].includes('lookup_order={"status":"shipped"}'))
  throw new Error('unexpected reply ' + JSON.stringify(SENT));`,
  ],
  // A responses-backend queue on the emulator, its worker started.
  keys: [
    `const { AssistantMessageQueue } = require('runlane');
const queue = new AssistantMessageQueue({ backend: 'responses', openaiModel: 'gpt-test', store: STORE, batchWindowMs: 50 });
await queue.startWorker();`,
    '',
  ],
  // The Express mount: requireOperator lets every request through; the
  // page and the session answer over HTTP, then the server closes.
  dashboard: [
    `const requireOperator = (req, res, next) => next();`,
    `if (!server.listening) await new Promise((r) => server.once('listening', r));
const port = server.address().port;
const page = await fetch('http://127.0.0.1:' + port + '/ops/lanes/');
if (page.status !== 200 || !(await page.text()).includes('<html')) throw new Error('page: ' + page.status);
const s = await fetch('http://127.0.0.1:' + port + '/ops/lanes/api/session');
if (s.status !== 200 || !(await s.json()).csrf_token) throw new Error('session: ' + s.status);
await new Promise((r) => server.close(r));`,
  ],
  // The NestJS mount: the app starts; the guard refuses a request without
  // the token and lets one with it through to the dashboard.
  'nest-dashboard': [
    `require('reflect-metadata');
process.env.OPS_TOKEN = 'ops-secret';`,
    `const { NestFactory } = require('@nestjs/core');
const nest = await NestFactory.create(AppModule, { logger: false, abortOnError: false });
await nest.listen(0, '127.0.0.1');
const base = 'http://127.0.0.1:' + nest.getHttpServer().address().port + '/ops/lanes/';
const denied = await fetch(base + 'api/session');
if (denied.status !== 403) throw new Error('without the token: ' + denied.status);
const s = await fetch(base + 'api/session', { headers: { authorization: 'Bearer ops-secret' } });
if (s.status !== 200 || !(await s.json()).csrf_token) throw new Error('session: ' + s.status);
await nest.close();`,
  ],
};

// setup -> [text of the block, what the harness runs instead]
const SUBST: Record<string, [string, string][]> = {
  http: [["'where is my order 1234?'", `'where is my order 1234? [[tool:lookup_order {"id": 1234}]]'`]],
  dashboard: [['app.listen(8080)', "app.listen(0, '127.0.0.1')"]],
};

interface Program {
  name: string;
  setup: string;
  code: string;
}

/** The ts/js blocks of a Markdown file, each with the setup of its marker. */
function programs(file: string): Program[] {
  const lines = readFileSync(file, 'utf8').split('\n');
  const out: Program[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = /^```(\S*)\s*$/.exec(lines[i]);
    if (!m) continue;
    const lang = m[1].toLowerCase();
    const start = i + 1;
    let j = i - 1;
    while (j >= 0 && !lines[j].trim()) j--;
    const mark = j >= 0 ? /^<!--\s*snippet:(.*?)-->\s*$/.exec(lines[j]) : null;
    const attrs: Record<string, string> = {};
    for (const kv of (mark?.[1] ?? '').trim().split(/\s+/).filter(Boolean)) {
      const [k, v = ''] = kv.split('=');
      attrs[k] = v;
    }
    const body: string[] = [];
    for (i++; i < lines.length && !lines[i].startsWith('```'); i++) body.push(lines[i]);
    if (['ts', 'typescript', 'js', 'javascript'].includes(lang)) {
      out.push({ name: `README.md:${start}`, setup: attrs.setup ?? '', code: body.join('\n') + '\n' });
    }
  }
  return out;
}

let baseUrl = '';

function runProgram(p: Program): { status: number | null; output: string } {
  const setup = SETUPS[p.setup];
  if (!setup) throw new Error(`${p.name}: unknown snippet setup "${p.setup}"`);
  const store = memoryStore('readme');
  let code = p.code.replace(/redis:\/\/[^'"`\s]*/g, store);
  for (const [from, to] of SUBST[p.setup] ?? []) {
    if (!code.includes(from)) throw new Error(`${p.name}: setup ${p.setup} expects ${from} in the block`);
    code = code.replace(from, to);
  }
  const js = ts.transpileModule(code, {
    compilerOptions: {
      module: ts.ModuleKind.CommonJS,
      target: ts.ScriptTarget.ES2022,
      esModuleInterop: true,
      experimentalDecorators: true,
    },
    reportDiagnostics: true,
  });
  if (js.diagnostics?.length) {
    throw new Error(`${p.name}: ${js.diagnostics.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n')).join('; ')}`);
  }
  const prog = `const STORE = ${JSON.stringify(store)};
process.on('unhandledRejection', (e) => { console.error('unhandled rejection', e); process.exit(3); });
(async () => {
${setup[0]}
${js.outputText}
${setup[1]}
if (typeof queue !== 'undefined') await queue.close();
})().then(() => { process.exitCode = process.exitCode ?? 0; }, (e) => { console.error(e); process.exit(2); });
`;
  const r = spawnSync(process.execPath, ['-e', prog], {
    env: { ...process.env, OPENAI_BASE_URL: baseUrl, OPENAI_API_KEY: API_KEY },
    encoding: 'utf8',
    timeout: 90_000 * SCALE,
  });
  return { status: r.status, output: `${r.stderr}\n--- stdout\n${r.stdout}` };
}

describe('node/README.md snippets', { skip }, () => {
  const progs = skip ? [] : programs(README);

  useEmulator(EMULATOR, API_KEY, (root) => {
    baseUrl = `${root}/v1`;
  });

  test('the README has ts blocks', () => {
    assert.ok(progs.length >= 4, JSON.stringify(progs.map((p) => p.name)));
  });

  for (const p of progs) {
    test(`${p.name} (setup=${p.setup || 'none'}) runs`, () => {
      const r = runProgram(p);
      assert.equal(r.status, 0, `${p.name} failed:\n${r.output}`);
    });
  }

  test('a broken walkthrough fails', () => {
    const p = progs.find((x) => x.setup === 'http');
    assert.ok(p);
    for (const [from, to] of [
      ['await sendToUser(e.conversationId, e.reply);', ''],
      ['toolCalls.map(', 'toolCalls.mapp('],
    ]) {
      assert.ok(p.code.includes(from), from);
      const r = runProgram({ ...p, code: p.code.replace(from, to) });
      assert.notEqual(r.status, 0, `still passes without ${from}`);
    }
  });
});
