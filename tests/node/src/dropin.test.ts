/**
 * The original AssistantMessageQueue's README code (BullMQ-based library),
 * with only the import changed, against the OpenAI emulator
 * (RUNLANE_TEST_EMULATOR) and Redis (RUNLANE_TEST_REDIS):
 *   - "Basic Usage": `new AssistantMessageQueue({ redisUrl, openAIApiKey,
 *     assistantId })`, addMessageToThread, startWorker(), close(). The
 *     assistant id selects the assistants backend, OPENAI_BASE_URL is where
 *     the requests go, close() does not stall.
 *   - the NestJS example module: a `useFactory` provider of
 *     AssistantMessageQueueService with ConfigService and
 *     handleRequiresAction; createThread + addMessageToThread answered with
 *     the tool's output.
 * And what keeps a misconfigured queue from hanging: startWorker() on the
 * custom backend with nobody taking batches rejects at once; close() does
 * not drain for a batch nobody holds. Plus health(), the terminus indicator
 * and @InjectRunlaneQueue.
 *
 * The snippets' Redis URL ('redis://localhost:6379') is the only literal
 * replaced: by the test's server.
 */
import 'reflect-metadata';

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, describe, test } from 'node:test';

import { Body, Controller, Get, Injectable, Module, Param, Post } from '@nestjs/common';
import { ConfigModule, ConfigService } from '@nestjs/config';
import { Test } from '@nestjs/testing';
import { HealthCheckService, TerminusModule } from '@nestjs/terminus';
// The only change to the original code: the import.
import { AssistantMessageQueue, Batch, CompletedEvent, QueueStatus, StateError, ToolCall, ToolOutput } from 'runlane';
import {
  AssistantMessageQueueService,
  InjectQueue,
  InjectRunlaneQueue,
  RunlaneHealthIndicator,
  RunlaneModule,
  getQueueToken,
} from 'runlane/nestjs';

import { memoryStore, redisTest, requireRedis, useEmulator, waitFor, within } from './helpers';

const EMULATOR = process.env.RUNLANE_TEST_EMULATOR;
const noEmulator = !EMULATOR || !existsSync(EMULATOR) ? 'RUNLANE_TEST_EMULATOR is not set' : false;
const SCALE = Number(process.env.RUNLANE_TEST_TIME_SCALE || '1') || 1;
/** The README's literal key: the emulator checks it. */
const README_KEY = 'your-openai-api-key';

let root = '';

interface LoggedRequest { method: string; path: string; status: number; body?: unknown }

async function requests(): Promise<LoggedRequest[]> {
  const res = await fetch(`${root}/_emulator/requests?limit=2000`);
  const j = (await res.json()) as { requests?: LoggedRequest[] } | LoggedRequest[];
  return Array.isArray(j) ? j : (j.requests ?? []);
}

function bodyOf(r: LoggedRequest): Record<string, unknown> {
  if (typeof r.body === 'string') {
    try {
      return JSON.parse(r.body) as Record<string, unknown>;
    } catch {
      return {};
    }
  }
  return (r.body ?? {}) as Record<string, unknown>;
}

describe('the original README code against the emulator', { skip: noEmulator }, () => {
  const savedEnv = { ...process.env };
  useEmulator(EMULATOR, README_KEY, (r) => {
    root = r;
    // As the official SDKs read it (runlane_new reads the process environment).
    process.env.OPENAI_BASE_URL = `${root}/v1`;
  });

  after(() => {
    for (const k of ['OPENAI_BASE_URL', 'REDIS_URL', 'OPENAI_API_KEY', 'OPENAI_ASSISTANT_ID']) {
      if (savedEnv[k] === undefined) delete process.env[k];
      else process.env[k] = savedEnv[k];
    }
  });

  test('README "Basic Usage": assistantId selects the assistants backend, OPENAI_BASE_URL is honoured, close() is prompt', redisTest(), async () => {
    const redisUrl = requireRedis();
    const startedAt = Date.now();

    // ---- the README snippet (Redis URL from the test) ----
    // Initialize the queue manager
    const assistantQueue = new AssistantMessageQueue({
      redisUrl: redisUrl,
      openAIApiKey: 'your-openai-api-key',
      assistantId: 'your-assistant-id',
    });

    // Add a message to a thread
    await assistantQueue.addMessageToThread('thread-123', 'Hello, assistant!');

    // Start the worker to process messages
    assistantQueue.startWorker();
    // ---- end of the snippet ----

    try {
      assert.equal(assistantQueue.config['backend'], 'assistants', 'assistantId with no backend selects assistants');
      // The batch's window is the default 10 s; then a run is created for the
      // thread at the emulator, with the README's assistant id.
      const isRun = (r: LoggedRequest) =>
        r.method === 'POST' && /\/threads\/[^/]+\/runs$/.test(r.path) && bodyOf(r).assistant_id === 'your-assistant-id';
      const run = await waitFor('a run created at the emulator (OPENAI_BASE_URL) with assistant_id your-assistant-id',
        async () => (await requests()).find(isRun), (10000 + 20000) * SCALE);
      assert.ok(run, 'expected a run request');
      assert.notEqual(run!.status, 401, 'the README key reached the emulator as the API key');
    } finally {
      // When shutting down
      const t0 = Date.now();
      await assistantQueue.close();
      assert.ok(Date.now() - t0 < 5000 * SCALE, `close() took ${Date.now() - t0} ms`);
    }
    assert.ok(Date.now() - startedAt < 60000 * SCALE);
  });

  test('the NestJS example module: a useFactory provider of AssistantMessageQueueService, handleRequiresAction, createThread', redisTest(), async () => {
    process.env.REDIS_URL = requireRedis();
    process.env.OPENAI_API_KEY = README_KEY;
    process.env.OPENAI_ASSISTANT_ID = 'asst_nest_example';

    // ---- the original example module (nestjs-example-module.ts) ----
    @Injectable()
    class FunctionCallingService {
      async handleFunctionCalls(threadId: string, runId: string, toolCalls: ToolCall[]): Promise<ToolOutput[]> {
        return Promise.all(toolCalls.map(async (toolCall) => {
          const args = JSON.parse(toolCall.function.arguments);
          let result: any;
          switch (toolCall.function.name) {
            case 'get_user_data':
              result = await this.getUserData(args.userId);
              break;
            default:
              result = { error: `Unknown function: ${toolCall.function.name}` };
          }
          return { tool_call_id: toolCall.id, output: JSON.stringify(result) };
        }));
      }

      private async getUserData(userId: string): Promise<any> {
        return { id: userId, name: 'John Doe' };
      }
    }

    @Controller('chat')
    class ChatController {
      constructor(private readonly assistantService: AssistantMessageQueueService) {}

      @Post('threads')
      async createThread(): Promise<{ threadId: string }> {
        const threadId = await this.assistantService.createThread();
        return { threadId };
      }

      @Post('threads/:threadId/messages')
      async sendMessage(@Param('threadId') threadId: string, @Body() body: { message: string }): Promise<{ jobId: string }> {
        const jobId = await this.assistantService.addMessageToThread(threadId, body.message);
        return { jobId };
      }

      @Get('status')
      async getStatus(): Promise<QueueStatus> {
        return this.assistantService.getQueueStatus();
      }
    }

    @Module({
      imports: [ConfigModule.forRoot()],
      providers: [
        FunctionCallingService,
        {
          provide: AssistantMessageQueueService,
          useFactory: (configService: ConfigService, functionCallingService: FunctionCallingService) => {
            return new AssistantMessageQueueService({
              redisUrl: configService.get<string>('REDIS_URL') || 'redis://localhost:6379',
              openAIApiKey: configService.get<string>('OPENAI_API_KEY') || '',
              assistantId: configService.get<string>('OPENAI_ASSISTANT_ID') || '',
              handleRequiresAction: functionCallingService.handleFunctionCalls.bind(functionCallingService),
            });
          },
          inject: [ConfigService, FunctionCallingService],
        },
      ],
      controllers: [ChatController],
      exports: [AssistantMessageQueueService],
    })
    class AssistantMessageQueueModule {}
    // ---- end of the example ----

    const moduleRef = await Test.createTestingModule({ imports: [AssistantMessageQueueModule] }).compile();
    const app = moduleRef.createNestApplication();
    await app.init(); // the service starts its worker on module init, as the original did
    const service = app.get(AssistantMessageQueueService);
    const completed: CompletedEvent[] = [];
    service.on('completed', (e) => completed.push(e));
    let closed = false;
    try {
      assert.equal(service.isRunning, true, 'the worker runs after app.init()');
      assert.equal(service.config['backend'], 'assistants');
      const chat = app.get(ChatController);
      const { threadId } = await chat.createThread();
      assert.match(threadId, /^thread_/);
      await chat.sendMessage(threadId, { message: 'who am I? [[tool:get_user_data {"userId":"u-7"}]]' });
      // Default window 10 s, then the run, the tool call, the reply.
      await waitFor('the completed reply', () => completed.length > 0, (10000 + 30000) * SCALE);
      assert.equal(completed[0].threadId, threadId);
      assert.match(completed[0].reply ?? '', /^echo: who am I\?/);
      assert.match(completed[0].reply ?? '', /get_user_data=\{"id":"u-7","name":"John Doe"\}/);
      const t0 = Date.now();
      await app.close(); // drains and closes the queue
      closed = true;
      assert.ok(Date.now() - t0 < 5000 * SCALE, `app.close() took ${Date.now() - t0} ms`);
      assert.equal(service.isClosed, true, 'the service closed itself on shutdown');
    } finally {
      if (!closed) await app.close();
    }
  });
});

describe('a queue that could only hang fails or ends at once', () => {
  test('startWorker() on the custom backend with no handler and no batch consumer rejects at once; nothing is claimed', async () => {
    const q = new AssistantMessageQueue({ store: memoryStore('nohandler'), batchWindowMs: 0 });
    try {
      await q.enqueue('chat-1', 'hi');
      await assert.rejects(q.startWorker(), (e: Error) => {
        assert.ok(e instanceof StateError, `expected a StateError, got ${e.name}`);
        assert.match(e.message, /custom/);
        assert.match(e.message, /handler/);
        return true;
      });
      assert.equal(q.isRunning, false);
      const st = await q.status('chat-1');
      assert.equal(st.pending, 1, 'the message is still pending');
      assert.equal(st.inflight ?? 0, 0, 'nothing was claimed');
      // A consumer registered first: the worker starts.
      q.on('batch', (b: Batch) => void b.ack());
      await q.startWorker();
      assert.equal(q.isRunning, true);
    } finally {
      await q.close();
    }
  });

  test('close() does not drain for a batch nobody holds; the batch goes back with no attempt spent', async () => {
    const store = memoryStore('unheld');
    const q = new AssistantMessageQueue({ store, batchWindowMs: 0, drainTimeoutMs: 30000 });
    const listener = () => undefined; // takes nothing: it is removed before the batch comes
    q.on('batch', listener);
    const other = new AssistantMessageQueue({ store });
    try {
      await q.startWorker();
      q.off('batch', listener);
      const warned = new Promise<void>((r) => process.once('warning', () => r()));
      await q.enqueue('chat-2', 'hello');
      await within(warned, 10000 * SCALE, undefined);
      const state = async () => (await other.status('chat-2')) as unknown as { state?: string; owner?: string | null; attempts?: number };
      await waitFor('the batch leased', async () => (await state()).state === 'leased', 10000 * SCALE);
      const t0 = Date.now();
      const closed = await within(q.close().then(() => true), 5000 * SCALE, false);
      assert.ok(closed, `close() waited ${Date.now() - t0} ms for a batch nobody holds`);
      const st = await state();
      assert.equal(st.state, 'ready', 'released: ready again for any worker');
      assert.ok(!st.owner, 'no owner');
      assert.equal(st.attempts ?? 0, 0, 'no attempt spent');
    } finally {
      await q.close();
      await other.close();
    }
  });
});

describe('options of the official SDK', () => {
  test('baseURL is an alias of openaiBaseUrl; OPENAI_BASE_URL is its default', async () => {
    const saved = process.env.OPENAI_BASE_URL;
    try {
      const a = new AssistantMessageQueue({ store: memoryStore('alias'), baseURL: 'http://127.0.0.1:9/v1' });
      assert.equal(a.config['openai.base.url'], 'http://127.0.0.1:9/v1');
      await a.close();
      process.env.OPENAI_BASE_URL = 'http://127.0.0.1:8/v1';
      const b = new AssistantMessageQueue({ store: memoryStore('env') });
      assert.equal(b.config['openai.base.url'], 'http://127.0.0.1:8/v1');
      await b.close();
      const c = new AssistantMessageQueue({ store: memoryStore('env2'), openaiBaseUrl: 'http://127.0.0.1:7/v1' });
      assert.equal(c.config['openai.base.url'], 'http://127.0.0.1:7/v1', 'an explicit value wins');
      await c.close();
    } finally {
      if (saved === undefined) delete process.env.OPENAI_BASE_URL;
      else process.env.OPENAI_BASE_URL = saved;
    }
  });
});

describe('health', () => {
  test('health(): store reachable, worker state, lag of the oldest due conversation', async () => {
    const q = new AssistantMessageQueue({ store: memoryStore('health'), batchWindowMs: 0 });
    try {
      let h = await q.health();
      assert.deepEqual({ ok: h.ok, storeOk: h.storeOk, worker: h.worker, workerRunning: h.workerRunning, backend: h.backend, lagMs: h.lagMs },
        { ok: true, storeOk: true, worker: 'idle', workerRunning: false, backend: 'custom', lagMs: 0 });
      await q.enqueue('chat-3', 'x');
      await waitFor('lag to grow with a conversation due and no worker', async () => ((await q.health()).lagMs ?? 0) >= 200, 10000 * SCALE);
      q.setHandler(() => undefined);
      await q.startWorker();
      await waitFor('the lag back to 0 once claimed', async () => (await q.health()).lagMs === 0, 10000 * SCALE);
      h = await q.health();
      assert.equal(h.workerRunning, true);
      assert.equal(h.worker, 'running');
      assert.equal(h.ok, true);
    } finally {
      await q.close();
    }
  });

  test('RunlaneHealthIndicator with @nestjs/terminus: up while healthy, down (503) once the queue is closed', async () => {
    @Controller('health')
    class HealthController {
      constructor(private readonly health: HealthCheckService, private readonly runlane: RunlaneHealthIndicator) {}

      @Get()
      check() {
        return this.health.check([() => this.runlane.isHealthy('runlane')]);
      }
    }
    const moduleRef = await Test.createTestingModule({
      imports: [TerminusModule, RunlaneModule.forRoot({ store: memoryStore('terminus'), handler: () => undefined })],
      controllers: [HealthController],
    }).compile();
    const app = moduleRef.createNestApplication();
    await app.init();
    try {
      const ctl = app.get(HealthController);
      const ok = (await ctl.check()) as { status: string; details: Record<string, { status: string; queues: Record<string, { storeOk: boolean; workerRunning: boolean; lagMs: number }> }> };
      assert.equal(ok.status, 'ok');
      assert.equal(ok.details.runlane.status, 'up');
      assert.equal(ok.details.runlane.queues.default.storeOk, true);
      assert.equal(ok.details.runlane.queues.default.workerRunning, true);
      assert.equal(typeof ok.details.runlane.queues.default.lagMs, 'number');
      await app.get(AssistantMessageQueueService).close();
      await assert.rejects(ctl.check(), (e: { getStatus?: () => number; getResponse?: () => unknown }) => {
        assert.equal(e.getStatus?.(), 503);
        const body = e.getResponse?.() as { error: Record<string, { status: string }> };
        assert.equal(body.error.runlane.status, 'down');
        return true;
      });
    } finally {
      await app.close();
    }
  });

  test('@InjectRunlaneQueue injects a queue; @InjectQueue is its deprecated alias (same token)', async () => {
    @Injectable()
    class Uses {
      constructor(
        @InjectRunlaneQueue('support') readonly support: AssistantMessageQueueService,
        @InjectQueue('support') readonly legacy: AssistantMessageQueueService,
      ) {}
    }
    const moduleRef = await Test.createTestingModule({
      imports: [RunlaneModule.forRoot({ name: 'support', store: memoryStore('inject') })],
      providers: [Uses],
    }).compile();
    try {
      const u = moduleRef.get(Uses);
      assert.ok(u.support instanceof AssistantMessageQueueService);
      assert.equal(u.support, u.legacy);
      assert.equal(u.support, moduleRef.get(getQueueToken('support')));
    } finally {
      await moduleRef.close();
    }
  });
});

