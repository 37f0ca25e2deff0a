/** The NestJS module: forRoot, forRootAsync, discovery of decorated providers, shutdown. */
import 'reflect-metadata';

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { Inject, Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { Batch, CompletedEvent, InvalidOptionError } from 'runlane';
import {
  AssistantMessageQueueService,
  AssistantTool,
  InjectQueue,
  OnRunlaneEvent,
  RUNLANE_EVENT_HANDLER,
  RUNLANE_TOOL,
  RunlaneHandler,
  RunlaneModule,
  getQueueToken,
} from 'runlane/nestjs';

import { memoryStore, waitFor } from './helpers';

@Injectable()
class ChatEvents {
  readonly completed: CompletedEvent[] = [];
  readonly batches: string[] = [];

  @OnRunlaneEvent('completed')
  onCompleted(e: CompletedEvent): void {
    this.completed.push(e);
  }

  @OnRunlaneEvent('batch')
  onBatch(b: Batch): void {
    this.batches.push(b.batchId);
  }
}

@Injectable()
class Assistant {
  readonly turns: string[][] = [];

  constructor(private readonly queue: AssistantMessageQueueService) {}

  @RunlaneHandler()
  async reply(batch: Batch): Promise<{ text: string }> {
    this.turns.push(batch.messages.map((m) => m.content));
    const weather = await this.queue.callTool('get_weather', '{"city":"Paris"}', {
      threadId: batch.threadId, conversationId: batch.conversationId, toolCallId: 'call_1',
    });
    return { text: `weather: ${weather}` };
  }

  @AssistantTool('get_weather')
  getWeather(args: { city: string }): { city: string; sky: string } {
    return { city: args.city, sky: 'clear' };
  }
}

describe('RunlaneModule', () => {
  test('decorators only set metadata under runlane:* keys', () => {
    const m = Reflect.getMetadata(RUNLANE_EVENT_HANDLER, ChatEvents.prototype.onCompleted);
    assert.deepEqual(m, [{ event: 'completed', queue: undefined }]);
    assert.deepEqual(Reflect.getMetadata(RUNLANE_TOOL, Assistant.prototype.getWeather), [{ name: 'get_weather', queue: undefined }]);
    assert.ok(Reflect.getMetadataKeys(Assistant.prototype.reply).every((k: string) => !k.startsWith('runlane:') || k === 'runlane:handler'));
  });

  test('forRoot: injectable service, @RunlaneHandler + @AssistantTool + @OnRunlaneEvent discovered, worker started, drained on shutdown', async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [RunlaneModule.forRoot({ store: memoryStore('nest'), batchWindowMs: 50 })],
      providers: [ChatEvents, Assistant],
    }).compile();
    await moduleRef.init();
    const queue = moduleRef.get(AssistantMessageQueueService);
    const events = moduleRef.get(ChatEvents);
    const assistant = moduleRef.get(Assistant);
    try {
      assert.ok(queue.isRunning, 'the worker starts on module init when the queue has a handler');
      assert.equal(moduleRef.get(getQueueToken()), queue, 'getQueueToken() is the same queue');
      assert.deepEqual(queue.toolNames, ['get_weather']);

      await queue.addMessageToThread('t-1', 'hi');
      await queue.addMessageToThread('t-1', 'what is the weather?');
      await waitFor('the @OnRunlaneEvent(completed) handler', () => events.completed.length === 1);
      assert.deepEqual(assistant.turns, [['hi', 'what is the weather?']]);
      assert.deepEqual(events.completed[0].result, { text: 'weather: {"city":"Paris","sky":"clear"}' });
      assert.deepEqual(events.batches, [events.completed[0].batchId]);
    } finally {
      await moduleRef.close();
    }
    assert.equal(queue.isClosed, true, 'application shutdown closes the queue');
  });

  test('forRootAsync: options from a factory with injected dependencies', async () => {
    const SETTINGS = Symbol('SETTINGS');
    @Module({ providers: [{ provide: SETTINGS, useValue: { store: memoryStore('async'), window: 40 } }], exports: [SETTINGS] })
    class SettingsModule {}

    const completed: CompletedEvent[] = [];
    const moduleRef = await Test.createTestingModule({
      imports: [
        RunlaneModule.forRootAsync({
          imports: [SettingsModule],
          inject: [SETTINGS],
          useFactory: async (s: { store: string; window: number }) => ({
            store: s.store,
            batchWindowMs: s.window,
            handler: (b: Batch) => ({ echoed: b.content }),
          }),
        }),
      ],
    }).compile();
    await moduleRef.init();
    const queue = moduleRef.get(AssistantMessageQueueService);
    try {
      assert.equal(queue.config['batch.window.ms'], '40');
      queue.on('completed', (e) => completed.push(e));
      await queue.enqueue('c', 'ping');
      await waitFor('completed', () => completed.length === 1);
      assert.deepEqual(completed[0].result, { echoed: 'ping' });
    } finally {
      await moduleRef.close();
    }
  });

  test('several named queues: getQueueToken(name), @InjectQueue(name), events per queue', async () => {
    @Injectable()
    class Producer {
      constructor(
        @InjectQueue('sales') readonly sales: AssistantMessageQueueService,
        @Inject(getQueueToken('support')) readonly support: AssistantMessageQueueService,
      ) {}
    }
    @Injectable()
    class SupportListener {
      readonly seen: string[] = [];
      @OnRunlaneEvent('completed', { queue: 'support' })
      done(e: CompletedEvent): void {
        this.seen.push(e.conversationId);
      }
    }
    const moduleRef = await Test.createTestingModule({
      imports: [
        RunlaneModule.forRoot({ name: 'sales', store: memoryStore('sales'), batchWindowMs: 30, handler: () => 'sold' }),
        RunlaneModule.forRoot({ name: 'support', store: memoryStore('support'), batchWindowMs: 30, handler: () => 'helped' }),
      ],
      providers: [Producer, SupportListener],
    }).compile();
    await moduleRef.init();
    const p = moduleRef.get(Producer);
    const listener = moduleRef.get(SupportListener);
    try {
      assert.notEqual(p.sales, p.support);
      assert.equal(p.sales.name, 'sales');
      assert.equal(p.support.name, 'support');
      await p.sales.enqueue('s-1', 'buy');
      await p.support.enqueue('h-1', 'help');
      await waitFor('the support completion', () => listener.seen.length === 1);
      assert.deepEqual(listener.seen, ['h-1'], 'the listener hears only its queue');
    } finally {
      await moduleRef.close();
    }
    assert.ok(p.sales.isClosed && p.support.isClosed);
  });

  test('worker: false keeps a producer-only queue', async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [RunlaneModule.forRoot({ store: memoryStore('producer'), worker: false, handler: () => undefined })],
    }).compile();
    await moduleRef.init();
    const queue = moduleRef.get(AssistantMessageQueueService);
    assert.equal(queue.isRunning, false);
    await moduleRef.close();
  });

  test('bad options fail the module with a typed error', async () => {
    await assert.rejects(
      Test.createTestingModule({ imports: [RunlaneModule.forRoot({ batchWindowMs: -1 })] }).compile(),
      (e: unknown) => e instanceof InvalidOptionError && /batch\.window\.ms/.test(e.message),
    );
  });
});
