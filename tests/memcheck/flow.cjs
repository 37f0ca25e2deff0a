// A whole Node user flow, small, for running under valgrind: the custom
// backend on the memory store (handler acks, a failing handler retries) and
// close. RUNLANE_NODE_PKG points at the package (a directory with dist/).
'use strict';
const { AssistantMessageQueue } = require(process.env.RUNLANE_NODE_PKG || 'runlane');

async function main() {
  const got = [];
  let calls = 0;
  const q = new AssistantMessageQueue({
    store: 'memory://memcheck-node', batchWindowMs: 50, backoffBaseMs: 20, backoffMaxMs: 40,
    handler: async (batch) => {
      calls++;
      if (batch.conversationId === 'flaky' && calls < 3) throw new Error('model exploded');
      got.push([batch.conversationId, batch.messages.map((m) => m.content)]);
    },
  });
  await q.startWorker();
  await q.addMessageToThread('c1', 'hello');
  await q.addMessageToThread('c1', 'again');
  await q.addMessageToThread('flaky', 'boom');
  const deadline = Date.now() + 60000;
  while (got.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  await q.close();
  got.sort();
  const ok = JSON.stringify(got) === JSON.stringify([['c1', ['hello', 'again']], ['flaky', ['boom']]]);
  console.log(ok ? '1 passed, 0 failed' : `0 passed, 1 failed: ${JSON.stringify(got)}`);
  process.exitCode = ok ? 0 : 1;
}
main().catch((e) => { console.error(e); process.exitCode = 1; });
