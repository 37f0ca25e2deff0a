#!/usr/bin/env node
// Node worker of the chaos suite: the responses backend driven through the
// Node package (AssistantMessageQueue), tool calls answered by
// handleRequiresAction. The twin of py_worker.py.
//
//   node node_worker.cjs STORE CONFIG_JSON      (RUNLANE_NODE_PKG: the package dir)
//
// Prints every reply as one JSON line on stdout (the "completed" event's
// data, like `runlane worker --backend responses`), then confirms it
// (replyAck). Tool outputs are the same pure function of (name, arguments)
// as tool.sh: "<name>:<first 12 hex of sha256(arguments)>"; calls are logged
// to $CHAOS_TOOL_LOG. One line per failed attempt, lost lease or background
// error on stderr, in the CLI worker's words ("batch B attempt N: retry: ...").
// SIGTERM or SIGINT: drain (up to 30 s) and exit.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const { AssistantMessageQueue } = require(process.env.RUNLANE_NODE_PKG || 'runlane');

const [store, configText] = process.argv.slice(2);
const config = JSON.parse(configText);
const toolLog = process.env.CHAOS_TOOL_LOG;

function err(line) {
  process.stderr.write(`runlane node worker: ${line}\n`);
}

function tools(threadId, runId, toolCalls) {
  return toolCalls.map((call) => {
    const { name, arguments: args } = call.function;
    const output = `${name}:${crypto.createHash('sha256').update(args).digest('hex').slice(0, 12)}`;
    if (toolLog) {
      // One short line per call: O_APPEND writes of it do not interleave.
      fs.appendFileSync(toolLog, JSON.stringify({ id: call.id, name, conversation_id: threadId, run_id: runId, by: 'node' }) + '\n');
    }
    err(`tool ${name} (call ${call.id}) ok`);
    return { tool_call_id: call.id, output };
  });
}

async function main() {
  let q;
  try {
    q = new AssistantMessageQueue({
      store,
      config: { ...config, backend: 'responses' },
      handleRequiresAction: tools,
      autoReplyAck: false,
    });
    await q.startWorker();
  } catch (e) {
    // Like `runlane worker`: exit 1 when the store cannot be reached at start.
    err(`cannot start on the store ${store}: ${e && e.message}`);
    if (q) await q.close({ mode: 'release' }).catch(() => {});
    process.exitCode = 1;
    return;
  }
  q.on('completed', (ev) => {
    process.stdout.write(JSON.stringify(ev.raw) + '\n');
    ev.replyAck().catch((e) => err(`reply_ack ${ev.batchId}: ${e.message}`));
    err(`${ev.conversationId} batch ${ev.batchId} attempt ${ev.attempt}: completed`);
  });
  const failed = (ev) =>
    err(`${ev.conversationId} batch ${ev.batchId} attempt ${ev.attempt}: ${ev.dead ? 'dead' : 'retry'}: ${ev.error}`);
  q.on('failed', failed);
  q.on('dead', failed);
  q.on('lease_lost', (ev) => err(`lease_lost: ${ev.conversationId}: ${ev.error}`));
  q.on('error', (ev) => err(`error: : ${(ev && ev.error && ev.error.message) || (ev && ev.message) || ev}`));
  err(`started: store ${store}, backend responses, tools by handleRequiresAction`);
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    err('stopping (draining turns in flight)');
    const t = Date.now();
    await q.close({ mode: 'drain', timeoutMs: 30000 });
    err(`stopped after ${((Date.now() - t) / 1000).toFixed(1)}s`);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => {
  err(`fatal: ${e && e.stack}`);
  process.exitCode = 1;
});
