/**
 * HTTP backends against the OpenAI emulator (tests/emulator/emulator.py,
 * path in RUNLANE_TEST_EMULATOR): run_started, tool calls answered by
 * registered tools and by @AssistantTool methods, deltas, completed with
 * the reply. Skipped without the emulator or python3 (failed under
 * RUNLANE_NO_SKIP=1).
 */
import 'reflect-metadata';

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, test } from 'node:test';

import { Injectable } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { AssistantMessageQueue, CompletedEvent, ToolCallsEvent } from 'runlane';
import { AssistantMessageQueueService, AssistantTool, OnRunlaneEvent, RunlaneModule } from 'runlane/nestjs';

import { memoryStore, nextEvent, skipUnless, useEmulator, waitFor } from './helpers';

const EMULATOR = process.env.RUNLANE_TEST_EMULATOR;
const skip = skipUnless(!EMULATOR || !existsSync(EMULATOR) ? 'RUNLANE_TEST_EMULATOR is not set' : false);
const API_KEY = 'sk-runlane-node-test-key';

let baseUrl = '';

function openaiOptions() {
  return {
    backend: 'responses' as const,
    openaiBaseUrl: baseUrl,
    openaiApiKey: API_KEY,
    openaiModel: 'gpt-test',
    openaiTools: [{ type: 'function', name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } }],
    batchWindowMs: 50,
  };
}

describe('responses backend (emulator)', { skip }, () => {
  useEmulator(EMULATOR, API_KEY, (root) => {
    baseUrl = `${root}/v1`;
  });

  test('conversation keys: a key the app names gets one conversation, recorded; get/set/forget', async () => {
    const q = new AssistantMessageQueue({ ...openaiOptions(), store: memoryStore('keys') });
    try {
      assert.equal(await q.getConversationMapping('chat-42'), null);
      await q.startWorker();
      let done = nextEvent<CompletedEvent>(q, 'completed');
      await q.enqueue('chat-42', 'hello');
      let ev = await done;
      assert.equal(ev.conversationId, 'chat-42');
      assert.equal(ev.reply, 'echo: hello');
      const conv = await q.getConversationMapping('chat-42');
      assert.match(conv ?? '', /^conv_/);
      done = nextEvent<CompletedEvent>(q, 'completed');
      await q.enqueue('chat-42', 'again');
      ev = await done;
      assert.equal(await q.getConversationMapping('chat-42'), conv, 'a later turn uses the same conversation');
      const imported = await q.createConversation();
      await q.setConversationMapping('+15551234567', imported);
      assert.equal(await q.getConversationMapping('+15551234567'), imported);
      await q.forgetConversationMapping('chat-42');
      assert.equal(await q.getConversationMapping('chat-42'), null);
      await assert.rejects(q.setConversationMapping('k', ''));
      // migration off the Assistants API: copied once, in order
      const thread = await q.createThread();
      for (const text of ['m0', 'm1']) {
        const r = await fetch(`${baseUrl}/threads/${thread}/messages`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'openai-beta': 'assistants=v2', authorization: `Bearer ${API_KEY}` },
          body: JSON.stringify({ role: 'user', content: text }),
        });
        assert.equal(r.status, 200);
      }
      const m = await q.migrateThread('chat-mig', thread);
      assert.equal(m.copied, 2);
      assert.match(m.conversationId, /^conv_/);
      assert.equal(await q.getConversationMapping('chat-mig'), m.conversationId);
      const again = await q.migrateThread('chat-mig');
      assert.equal(again.copied, 0);
      assert.equal(again.conversationId, m.conversationId);
    } finally {
      await q.close();
    }
  });

  test('a turn with a tool call: tools answer, deltas stream, completed carries the reply', async () => {
    const toolEvents: ToolCallsEvent[] = [];
    let deltas = '';
    const q = new AssistantMessageQueue({
      ...openaiOptions(),
      store: memoryStore('responses'),
      tools: { get_weather: (args: { city: string }, ctx) => ({ city: args.city, sky: 'clear', call: ctx.toolCallId }) },
    });
    q.on('tool_calls', (e) => toolEvents.push(e));
    q.on('delta', (e) => (deltas += e.text));
    const completed = nextEvent<CompletedEvent>(q, 'completed');
    try {
      await q.startWorker();
      const conv = await q.createConversation({ user: 'u-1' });
      assert.match(conv, /^conv_/);
      await q.enqueue(conv, 'weather in Paris? [[tool:get_weather {"city":"Paris"}]]');
      const ev = await completed;
      assert.equal(toolEvents.length, 1);
      assert.equal(toolEvents[0].toolCalls[0].function.name, 'get_weather');
      assert.deepEqual(JSON.parse(toolEvents[0].toolCalls[0].function.arguments), { city: 'Paris' });
      assert.equal(ev.conversationId, conv);
      assert.match(ev.reply ?? '', /^echo: weather in Paris\?/);
      assert.match(ev.reply ?? '', /tools: get_weather=\{"city":"Paris","sky":"clear","call":"call_/);
      assert.match(ev.runId ?? '', /^resp_/);
      assert.equal(ev.messageIds?.length, 1);
      assert.ok(deltas.length > 0, 'deltas streamed');
      assert.ok(!JSON.stringify(ev.raw).includes(API_KEY), 'the API key never shows in events');
    } finally {
      await q.close();
    }
  });

  test('assistants backend: createThread, a run with a tool call, completed', async () => {
    const q = new AssistantMessageQueue({
      ...openaiOptions(),
      backend: 'assistants',
      openaiAssistantId: 'asst_test',
      // The Assistants API nests a function tool's fields under "function".
      openaiTools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: {} } } }],
      store: memoryStore('assistants'),
      tools: { get_weather: () => 'windy' },
    });
    const completed = nextEvent<CompletedEvent>(q, 'completed');
    try {
      await q.startWorker();
      const thread = await q.createThread({ user: 'u-2' });
      assert.match(thread, /^thread_/);
      await q.addMessageToThread(thread, 'outside? [[tool:get_weather]]');
      const ev = await completed;
      assert.match(ev.runId ?? '', /^run_/);
      assert.match(ev.reply ?? '', /tools: get_weather=windy/);
    } finally {
      await q.close();
    }
  });

  test('handleRequiresAction answers tool calls (the original API)', async () => {
    const seen: string[] = [];
    const q = new AssistantMessageQueue({
      ...openaiOptions(),
      store: memoryStore('requires-action'),
      handleRequiresAction: async (threadId, runId, calls) => {
        seen.push(`${threadId}:${runId}:${calls.map((c) => c.function.name).join(',')}`);
        return calls.map((c) => ({ tool_call_id: c.id, output: 'sunny' }));
      },
    });
    const completed = nextEvent<CompletedEvent>(q, 'completed');
    try {
      await q.startWorker();
      const conv = await q.createConversation();
      await q.addMessageToThread(conv, 'and now? [[tool:get_weather]]');
      const ev = await completed;
      assert.equal(seen.length, 1);
      assert.match(seen[0], new RegExp(`^${conv}:resp_.*:get_weather$`));
      assert.match(ev.reply ?? '', /tools: get_weather=sunny/);
    } finally {
      await q.close();
    }
  });

  test('NestJS: @AssistantTool methods answer, @OnRunlaneEvent(completed) gets the reply', async () => {
    @Injectable()
    class Tools {
      readonly replies: string[] = [];
      @AssistantTool('get_weather')
      weather(args: { city?: string }): string {
        return `rain in ${args.city ?? 'nowhere'}`;
      }
      @OnRunlaneEvent('completed')
      done(e: CompletedEvent): void {
        this.replies.push(e.reply ?? '');
      }
    }
    const moduleRef = await Test.createTestingModule({
      imports: [RunlaneModule.forRoot({ ...openaiOptions(), store: memoryStore('nest-responses'), worker: true })],
      providers: [Tools],
    }).compile();
    await moduleRef.init();
    const tools = moduleRef.get(Tools);
    try {
      const queue = moduleRef.get(AssistantMessageQueueService);
      const conv = await queue.createConversation();
      await queue.enqueue(conv, 'weather? [[tool:get_weather {"city":"Oslo"}]]');
      await waitFor('the completed reply', () => tools.replies.length === 1, 15000);
      assert.match(tools.replies[0], /tools: get_weather=rain in Oslo/);
    } finally {
      await moduleRef.close();
    }
  });
});
