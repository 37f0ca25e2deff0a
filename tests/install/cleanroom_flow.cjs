// The Node half of the clean-room test (tests/install/cleanroom.sh): runs
// inside the chroot with only the installed npm tarball. Same three flows as
// cleanroom_flow.py (memory; Redis over TLS when CR_REDIS_URL is given; the
// Responses backend against the emulator): a burst to a few conversations,
// every message back once, in order, in one turn per burst.
'use strict';
const runlane = require('runlane');
const { AssistantMessageQueue } = runlane;

const SCALE = Number(process.env.RUNLANE_TEST_TIME_SCALE || '1');
const WINDOW_MS = Math.round(1000 * SCALE);
const DEADLINE_MS = 90000 * SCALE;
const CONVS = 3;
const BURST = 4;

function fail(flow, why) {
  console.log(`FAIL ${flow}: ${why}`);
  process.exit(1);
}

async function until(cond, flow, what) {
  const end = Date.now() + DEADLINE_MS;
  while (!cond()) {
    if (Date.now() > end) fail(flow, `${what} missing after ${DEADLINE_MS} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function burst(label) {
  const sent = {};
  for (let i = 0; i < CONVS; i++) sent[`js-${label}-c${i}`] = Array.from({ length: BURST }, (_, j) => `js ${label} c${i} m${j}`);
  return sent;
}

async function handlerFlow(flow, opts) {
  const sent = burst(flow);
  const turns = {};
  let n = 0;
  const q = new AssistantMessageQueue({
    batchWindowMs: WINDOW_MS,
    ...opts,
    handler: async (batch) => {
      (turns[batch.conversationId] ??= []).push(batch.messages.map((m) => m.content));
      n += batch.messages.length;
    },
  });
  await q.startWorker();
  for (let j = 0; j < BURST; j++) for (const [conv, msgs] of Object.entries(sent)) await q.addMessageToThread(conv, msgs[j]);
  await until(() => n >= CONVS * BURST, flow, 'turns');
  await q.close();
  for (const [conv, msgs] of Object.entries(sent)) {
    const got = turns[conv] ?? [];
    if (JSON.stringify(got.flat()) !== JSON.stringify(msgs)) fail(flow, `${conv}: sent ${JSON.stringify(msgs)}, turns got ${JSON.stringify(got)}`);
    if (got.length !== 1) fail(flow, `${conv}: the burst took ${got.length} turns, not 1`);
  }
  console.log(`PASS ${flow}`);
}

async function responsesFlow(baseUrl) {
  const flow = 'responses';
  const replies = {};
  let n = 0;
  const q = new AssistantMessageQueue({
    store: 'memory://cleanroom-responses', backend: 'responses',
    openaiBaseUrl: baseUrl, openaiModel: 'gpt-4o-mini', batchWindowMs: WINDOW_MS,
  });
  q.on('completed', (ev) => { (replies[ev.conversationId] ??= []).push(ev.reply); n++; });
  const convs = [];
  for (let i = 0; i < CONVS; i++) convs.push(await q.createConversation());
  const sent = Object.fromEntries(convs.map((c) => [c, Array.from({ length: BURST }, (_, j) => `js responses ${c.slice(-6)} m${j}`)]));
  await q.startWorker();
  for (let j = 0; j < BURST; j++) for (const c of convs) await q.addMessageToThread(c, sent[c][j]);
  await until(() => n >= CONVS, flow, 'replies');
  await q.close();
  for (const c of convs) {
    const want = [`echo: ${sent[c].join('\n')}`];
    if (JSON.stringify(replies[c]) !== JSON.stringify(want)) fail(flow, `${c}: replies ${JSON.stringify(replies[c])}, want ${JSON.stringify(want)}`);
  }
  console.log(`PASS ${flow}`);
}

async function main() {
  console.log(`runlane features ${JSON.stringify(runlane.features())}`);
  await handlerFlow('memory', { store: 'memory://cleanroom' });
  if (process.env.CR_REDIS_URL) {
    if (!runlane.features().redisTls) fail('redis-tls', 'this build has no TLS for Redis');
    await handlerFlow('redis-tls', { store: process.env.CR_REDIS_URL, redisTlsCaFile: process.env.CR_REDIS_CA });
  }
  await responsesFlow(process.env.CR_OPENAI_BASE_URL);
}
main().catch((e) => fail('node', e && e.stack ? e.stack : String(e)));
