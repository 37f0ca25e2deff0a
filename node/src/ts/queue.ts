/**
 * AssistantMessageQueue: the idiomatic Node face of a runlane client.
 *
 * Producer calls (enqueue...) and every store round trip run off the event
 * loop (libuv threadpool, through the addon's bridge); events arrive through
 * one ThreadSafeFunction per client and are drained here with
 * runlane_poll(rl, 0). All queueing decisions are the core's.
 */
import { EventEmitter } from 'node:events';

import { Batch, BatchSettler } from './batch';
import { Channel } from './channel';
import { Conf, ConfigValue, propertyByOption } from './config';
import {
  ClosedError,
  InvalidArgumentError,
  LeaseLostError,
  NonRetriableError,
  NotFoundError,
  RunlaneError,
  StateError,
  TimeoutError,
  UnknownOptionError,
  UnsupportedError,
  errorFromCode,
  toRunlaneError,
} from './errors';
import { BridgeHandle, Pointer, raw } from './native';
import type {
  AssistantMessageQueueOptions,
  BatchHandler,
  BatchMessage,
  CompletedEvent,
  ConversationStatus,
  DeadLetter,
  EnqueueManyItem,
  EnqueueOptions,
  EnqueueResult,
  FailedEvent,
  QueueHealth,
  QueueStatus,
  QueueTotals,
  RunlaneEvent,
  RunlaneEvents,
  ToolCall,
  ToolContext,
  ToolFunction,
  ToolOutput,
} from './types';

type Json = Record<string, unknown>;

/** Options of the binding itself (not configuration keys). */
const BINDING_OPTIONS = new Set([
  'handler', 'handleRequiresAction', 'tools', 'config', 'keepAlive', 'drainTimeoutMs', 'name', 'autoReplyAck',
]);

/** The original API's option names -> configuration options. */
const LEGACY: Record<string, string> = {
  redisUrl: 'store',
  openAIApiKey: 'openaiApiKey',
  assistantId: 'openaiAssistantId',
  baseURL: 'openaiBaseUrl',
  queuePrefix: 'keyPrefix',
  messageDelay: 'batchWindowMs',
  concurrency: 'workerConcurrency',
  defaultInstructions: 'openaiInstructions',
  lockDuration: 'leaseMs',
};

/** Builds and validates the core configuration of `options` (throws typed ConfigErrors). */
export function buildConf(options: AssistantMessageQueueOptions): Conf {
  const conf = new Conf();
  try {
    const o = options as Record<string, unknown>;
    for (const [name, value] of Object.entries(o)) {
      if (value === undefined || BINDING_OPTIONS.has(name)) continue;
      if (name === 'removeOnComplete') continue;
      if (name === 'backoff') {
        const b = value as { type?: string; delay?: number };
        if (b.delay !== undefined) conf.set('backoffBaseMs', b.delay, 'backoff.delay');
        if (b.type === 'fixed' && b.delay !== undefined) {
          conf.set('backoffMaxMs', b.delay, 'backoff.delay');
          conf.set('backoffJitter', 0, 'backoff.type');
        } else if (b.type !== undefined && b.type !== 'exponential') {
          throw new UnknownOptionError(`runlane: invalid option "backoff.type": expected fixed or exponential, got "${b.type}"`);
        }
        continue;
      }
      if (name in LEGACY) {
        const canonical = LEGACY[name];
        if (o[canonical] === undefined) conf.set(canonical, value as ConfigValue, name);
        continue;
      }
      conf.set(name, value as ConfigValue, name);
    }
    for (const [key, value] of Object.entries(options.config ?? {})) conf.set(key, value, key);
    return conf;
  } catch (e) {
    conf.destroy();
    throw e;
  }
}

const noop = () => {};

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

function camelKeys<T>(obj: Json): T {
  const out: Json = {};
  for (const [k, v] of Object.entries(obj)) out[k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())] = v;
  return out as T;
}

function toMessages(list: unknown): BatchMessage[] {
  if (!Array.isArray(list)) return [];
  return list.map((m: Json) => {
    const msg: BatchMessage = { id: str(m.id), tsMs: Number(m.ts_ms ?? 0), content: str(m.content) };
    if (typeof m.instructions === 'string') msg.instructions = m.instructions;
    if (m.metadata && typeof m.metadata === 'object') msg.metadata = m.metadata as Record<string, string>;
    return msg;
  });
}

/** Tool calls of an event, in the original API's shape (the core sends {id, name, arguments}). */
function toToolCalls(list: unknown): ToolCall[] {
  if (!Array.isArray(list)) return [];
  return list.map((c: Json) => {
    const fn = (c.function && typeof c.function === 'object' ? c.function : c) as Json;
    return { id: str(c.id), type: 'function' as const, function: { name: str(fn.name), arguments: str(fn.arguments) || '{}' } };
  });
}

function errorText(e: unknown): string {
  if (e instanceof Error) return e.message || e.name;
  if (typeof e === 'string') return e;
  try {
    return JSON.stringify(e) ?? String(e);
  } catch {
    return String(e);
  }
}

function requireString(name: string, v: unknown, allowEmpty = false): string {
  if (typeof v !== 'string' || (!allowEmpty && v.length === 0)) {
    throw new InvalidArgumentError(`runlane: ${name} must be a non-empty string, got ${v === '' ? '""' : typeof v}`, -1);
  }
  return v;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

type State = 'opening' | 'open' | 'closing' | 'closed';
type WorkerState = 'idle' | 'starting' | 'running' | 'stopping' | 'stopped';

export interface CloseOptions {
  /** `drain` (default): wait up to timeoutMs for in-flight batches; `release`: hand them back at once. */
  mode?: 'drain' | 'release';
  /** Default: the drainTimeoutMs option (30000). */
  timeoutMs?: number;
}

export interface AssistantMessageQueue {
  on<E extends keyof RunlaneEvents>(event: E, listener: (...args: RunlaneEvents[E]) => void): this;
  once<E extends keyof RunlaneEvents>(event: E, listener: (...args: RunlaneEvents[E]) => void): this;
  off<E extends keyof RunlaneEvents>(event: E, listener: (...args: RunlaneEvents[E]) => void): this;
  emit<E extends keyof RunlaneEvents>(event: E, ...args: RunlaneEvents[E]): boolean;
}

/**
 * A queue of chat messages per conversation, batched by a quiet window, one
 * turn per conversation at a time across every process that shares the
 * store. API of the original BullMQ-based class (addMessageToThread,
 * startWorker, close, getQueueStatus) plus the whole runlane surface.
 */
export class AssistantMessageQueue extends EventEmitter implements BatchSettler {
  /** The queue's name (NestJS) or "default". */
  readonly name: string;
  /** Every configuration key and its effective value (secrets masked). */
  readonly config: Readonly<Record<string, string>>;

  private readonly options: AssistantMessageQueueOptions;
  private handler?: BatchHandler;
  private readonly tools = new Map<string, ToolFunction>();
  private readonly keepAlive: boolean;
  private readonly autoReplyAck: boolean;
  private readonly drainTimeoutMs: number;
  private readonly backend: string;
  private readonly ready: Promise<void>;
  private bridge?: BridgeHandle;
  private rl?: Pointer;
  private state: State = 'opening';
  private workerState: WorkerState = 'idle';
  private starting?: Promise<void>;
  private closing?: Promise<void>;
  private refed = false;
  private readonly inflight = new Map<string, Batch>();
  private readonly eventChannels = new Set<Channel<RunlaneEvent>>();
  private readonly batchChannels = new Set<Channel<Batch>>();
  private warnedUnhandled = false;
  /** Batches delivered to no handler, listener or iterator: close() gives them back instead of draining for them. */
  private readonly unheld = new Set<string>();

  constructor(options: AssistantMessageQueueOptions = {}) {
    super();
    if (options === null || typeof options !== 'object') {
      throw new InvalidArgumentError('runlane: options must be an object', -1);
    }
    this.options = options;
    this.name = options.name ?? 'default';
    this.handler = options.handler;
    if (options.handler !== undefined && typeof options.handler !== 'function') {
      throw new InvalidArgumentError('runlane: option "handler" must be a function', -1);
    }
    this.keepAlive = options.keepAlive ?? true;
    this.autoReplyAck = options.autoReplyAck ?? true;
    this.drainTimeoutMs = options.drainTimeoutMs ?? 30000;
    for (const [n, fn] of Object.entries(options.tools ?? {})) this.registerTool(n, fn);

    const conf = buildConf(options);
    let ready: Promise<void>;
    try {
      this.config = Object.freeze(conf.dump());
      this.backend = this.config['backend'] ?? 'custom';
      ready = raw()
        .bridge_new(conf.ptr, () => this.drain(), errorFromCode)
        .then(([bridge, rl]) => {
          this.bridge = bridge;
          this.rl = rl;
          if (this.state === 'opening') this.state = 'open';
        });
    } finally {
      conf.destroy();
    }
    this.ready = ready.catch((e) => {
      throw toRunlaneError(e);
    });
    this.ready.catch(noop); // surfaced by each call instead
  }

  /** Creates a queue and waits until its store is connected. */
  static async create(options: AssistantMessageQueueOptions = {}): Promise<AssistantMessageQueue> {
    const q = new AssistantMessageQueue(options);
    try {
      await q.ready;
    } catch (e) {
      await q.close().catch(noop);
      throw e;
    }
    return q;
  }

  /** Resolves once the store is connected; rejects with why it is not. */
  waitUntilReady(): Promise<void> {
    return this.ready;
  }

  // ---- producer -----------------------------------------------------------

  /** Queues one message of a conversation (the original API): resolves to its message id. */
  addMessageToThread(threadId: string, message: string, instructions?: string): Promise<string> {
    return this.enqueue(threadId, message, instructions === undefined ? undefined : { instructions }).then((r) => r.id);
  }

  /**
   * Queues one message; with an idempotency key, a repeat is queued once.
   * The store round trip runs in the libuv threadpool: the event loop never
   * waits for it.
   */
  enqueue(conversationId: string, content: string, options?: EnqueueOptions): Promise<EnqueueResult> {
    try {
      requireString('conversationId', conversationId);
      requireString('content', content, true);
      const json = options ? this.optionsJson(options) : null;
      return this.call((b) => raw().bridge_call(b, 'enqueue', conversationId, content, json));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Queues many messages in one round trip; all or nothing. Results are in input order. */
  async enqueueMany(items: readonly EnqueueManyItem[]): Promise<EnqueueResult[]> {
    if (!Array.isArray(items)) throw new InvalidArgumentError('runlane: enqueueMany expects an array', -1);
    if (items.length === 0) return [];
    const list = items.map((m, i) => {
      if (!m || typeof m !== 'object') throw new InvalidArgumentError(`runlane: messages[${i}] is not an object`, -1);
      requireString(`messages[${i}].conversationId`, m.conversationId);
      requireString(`messages[${i}].content`, m.content, true);
      return { conversation_id: m.conversationId, content: m.content, ...this.optionsObject(m) };
    });
    const out = await this.call((b) => raw().bridge_call(b, 'enqueue_many', JSON.stringify(list)));
    return (JSON.parse(out) as Array<{ id: string; duplicate: boolean }>).map((r) => ({ id: r.id, duplicate: r.duplicate }));
  }

  /**
   * Creates a conversation at the provider (responses backend: POST
   * /conversations) and resolves to its id (`conv_...`), to use as the
   * conversation id of enqueue(). Uses the openai.* settings whatever the
   * backend; needs no worker.
   */
  async createConversation(metadata?: Record<string, string>): Promise<string> {
    return this.call((b) => raw().bridge_call(b, 'conversation_create', metadata ? JSON.stringify(metadata) : null));
  }

  /** Creates a thread (assistants backend: POST /threads) and resolves to its id (`thread_...`). The original API's createThread. */
  async createThread(metadata?: Record<string, string>): Promise<string> {
    return this.call((b) => raw().bridge_call(b, 'thread_create', metadata ? JSON.stringify(metadata) : null));
  }

  // ---- conversation keys -------------------------------------------------

  /**
   * The provider conversation (`conv_...`) or thread (`thread_...`) a
   * conversation key maps to, or null when it has none yet. With the
   * responses and assistants backends, a conversation id that is not a
   * provider id ("chat-42", a phone number) is a key: its first turn creates
   * the provider conversation and records the mapping in the store, shared
   * by every worker; at most one provider conversation ever receives a
   * key's messages.
   */
  async getConversationMapping(key: string): Promise<string | null> {
    requireString('key', key);
    return this.call((b) => raw().bridge_call(b, 'map_get', key));
  }

  /**
   * Maps a key to an existing provider conversation or thread (an import),
   * replacing any mapping; the key's next turn uses it.
   */
  async setConversationMapping(key: string, providerId: string): Promise<void> {
    requireString('key', key);
    requireString('providerId', providerId);
    await this.call((b) => raw().bridge_call(b, 'map_set', key, providerId));
  }

  /** Forgets a key's mapping: its next turn creates a new provider conversation. */
  async forgetConversationMapping(key: string): Promise<void> {
    requireString('key', key);
    await this.call((b) => raw().bridge_call(b, 'map_forget', key));
  }

  /**
   * Migration off the Assistants API: copies the messages of the thread
   * `threadId` (omitted: the thread `key` maps to, or `key` itself when it is
   * a thread id), oldest first, into a new Responses conversation and maps
   * `key` to it. Resumable (run it again after a failure: only what is
   * missing is copied) and idempotent (once done, nothing is copied again).
   */
  async migrateThread(key: string, threadId?: string): Promise<{ conversationId: string; threadId?: string; copied: number; total: number }> {
    requireString('key', key);
    if (threadId !== undefined) requireString('threadId', threadId);
    const r = JSON.parse(await this.call((b) => raw().bridge_call(b, 'migrate', key, threadId ?? null))) as Json;
    return {
      conversationId: r.conversation_id as string,
      threadId: r.thread_id as string | undefined,
      copied: r.copied as number,
      total: r.total as number,
    };
  }

  /** Typing signal: the conversation's quiet window restarts now. */
  async touch(conversationId: string): Promise<void> {
    requireString('conversationId', conversationId);
    await this.call((b) => raw().bridge_call(b, 'touch', conversationId));
  }

  // ---- status -------------------------------------------------------------

  /** Totals of the queue, or the detail of one conversation. */
  status(): Promise<QueueTotals>;
  status(conversationId: string): Promise<ConversationStatus>;
  async status(conversationId?: string): Promise<QueueTotals | ConversationStatus> {
    if (conversationId !== undefined) requireString('conversationId', conversationId);
    const out = await this.call((b) => raw().bridge_call(b, 'status', conversationId ?? null));
    return camelKeys(JSON.parse(out) as Json);
  }

  /** The original API's counts. */
  async getQueueStatus(): Promise<QueueStatus> {
    const t = await this.status();
    return {
      activeCount: t.inflight ?? 0,
      waitingCount: t.ready ?? 0,
      delayedCount: t.pending ?? 0,
      completedCount: t.acked ?? 0,
      failedCount: t.failed ?? 0,
      deadCount: t.dead ?? 0,
    };
  }

  /** Counters and gauges of this client, Prometheus text format. */
  async metrics(): Promise<string> {
    await this.opened();
    return this.rawCall(() => raw().runlane_metrics(this.rl!));
  }

  /**
   * Store reachable, worker state, lag of the oldest due conversation: one
   * core call (runlane_health) making one store round trip, off the event
   * loop. A store that does not answer is reported (`storeOk: false`), not
   * thrown.
   */
  async health(): Promise<QueueHealth> {
    const h = JSON.parse(await this.call((b) => raw().bridge_call(b, 'health'))) as Json;
    const out: QueueHealth = {
      ok: h.ok === true,
      storeOk: h.store_ok === true,
      worker: str(h.worker) as QueueHealth['worker'],
      workerRunning: h.worker_running === true,
      backend: str(h.backend),
      inflight: Number(h.inflight ?? 0),
      lagMs: typeof h.lag_ms === 'number' ? h.lag_ms : null,
    };
    if (typeof h.store_error === 'string') out.storeError = h.store_error;
    return out;
  }

  // ---- dead letters -------------------------------------------------------

  /** Dead-lettered batches, oldest first. */
  async listDead(options: { offset?: number; limit?: number } = {}): Promise<DeadLetter[]> {
    const offset = options.offset ?? 0;
    const limit = options.limit ?? 100;
    if (!Number.isInteger(offset) || offset < 0 || !Number.isInteger(limit) || limit < 0) {
      throw new InvalidArgumentError('runlane: offset and limit must be non-negative integers', -1);
    }
    const out = await this.call((b) => raw().bridge_call(b, 'dead_list', offset, limit));
    return (JSON.parse(out) as Json[]).map((d) => ({
      id: str(d.id),
      conversationId: str(d.conversation_id),
      batchId: str(d.batch_id),
      attempts: Number(d.attempts ?? 0),
      error: str(d.error),
      deadAtMs: Number(d.dead_at_ms ?? 0),
      messages: toMessages(d.messages),
    }));
  }

  /** Puts a dead letter (all of them without an id) back in front of its conversation. Resolves to how many. */
  async retryDead(deadId?: string): Promise<number> {
    if (deadId !== undefined) requireString('deadId', deadId);
    return this.call((b) => raw().bridge_call(b, 'dead_retry', deadId ?? null));
  }

  /** Deletes a dead letter (all of them without an id) for good. Resolves to how many. */
  async purgeDead(deadId?: string): Promise<number> {
    if (deadId !== undefined) requireString('deadId', deadId);
    return this.call((b) => raw().bridge_call(b, 'dead_purge', deadId ?? null));
  }

  // ---- worker -------------------------------------------------------------

  /** Sets the batch handler (before or after startWorker). */
  setHandler(handler: BatchHandler | undefined): this {
    if (handler !== undefined && typeof handler !== 'function') {
      throw new InvalidArgumentError('runlane: handler must be a function', -1);
    }
    this.handler = handler;
    return this;
  }

  get hasHandler(): boolean {
    return this.handler !== undefined;
  }

  /** True while the worker runs. */
  get isRunning(): boolean {
    return this.workerState === 'running';
  }

  /** Starts this client's worker: it claims due conversations and delivers batches. Idempotent. */
  async startWorker(): Promise<void> {
    if (this.workerState === 'running') return;
    if (this.starting) return this.starting;
    if (this.workerState !== 'idle') throw new StateError('runlane: the worker was stopped; create a new queue', -11);
    this.starting = (async () => {
      this.workerState = 'starting';
      try {
        await this.opened();
        // The core decides whether this backend needs someone to take its
        // batches; the binding only says whether anyone does.
        const r = raw();
        const flags = this.takesBatches() ? r.RUNLANE_HOST_RUNS_BATCHES : 0;
        this.rawCall(() => r.runlane_start_check(this.rl!, flags));
        await this.call((b) => raw().bridge_call(b, 'start'));
      } catch (e) {
        this.workerState = 'idle';
        throw e;
      } finally {
        this.starting = undefined;
      }
      this.workerState = 'running';
      this.updateRef();
    })();
    return this.starting;
  }

  /** A handler, a 'batch' listener or an iterator takes the batches. */
  private takesBatches(): boolean {
    return this.handler !== undefined || this.listenerCount('batch') > 0 || this.eventChannels.size > 0 || this.batchChannels.size > 0;
  }

  /** Gives back batches nobody holds (no attempt spent): a drain must not wait for them. */
  private releaseUnheld(): Promise<unknown> {
    const held = [...this.unheld].map((id) => this.inflight.get(id)).filter((b): b is Batch => b !== undefined && !b.settled);
    this.unheld.clear();
    return Promise.all(held.map((b) => this.settleRelease(b).catch(noop)));
  }

  /**
   * Closes the queue: stops the worker (draining in-flight batches up to
   * timeoutMs, then releasing the rest to other workers), waits for calls in
   * flight, frees the client. Idempotent; after it no handle is left open.
   */
  close(options: CloseOptions = {}): Promise<void> {
    if (!this.closing) this.closing = this.doClose(options);
    return this.closing;
  }

  private async doClose(options: CloseOptions): Promise<void> {
    this.state = 'closing';
    try {
      await this.ready;
    } catch {
      this.finishClose();
      return;
    }
    const bridge = this.bridge!;
    if (this.starting) await this.starting.catch(noop);
    if (this.workerState === 'running') {
      this.workerState = 'stopping';
      await this.releaseUnheld();
      const mode = options.mode === 'release' ? raw().RUNLANE_STOP_RELEASE : raw().RUNLANE_STOP_DRAIN;
      const timeout = options.timeoutMs ?? this.drainTimeoutMs;
      try {
        await raw().bridge_call(bridge, 'stop', mode, timeout);
      } catch (e) {
        if (!(e instanceof TimeoutError)) this.emitError(e as Error);
      }
      this.drain(); // what the worker said last, STOPPED included
      this.workerState = 'stopped';
    }
    // From here on calls are refused; the bridge lets the calls still in
    // flight (acks of handlers, enqueues) end before it frees the client.
    this.state = 'closed';
    raw().bridge_close(bridge);
    try {
      await raw().bridge_call(bridge, 'destroy');
    } finally {
      this.rl = undefined;
      this.finishClose();
    }
  }

  private finishClose(): void {
    this.state = 'closed';
    this.workerState = this.workerState === 'idle' ? 'idle' : 'stopped';
    for (const b of this.inflight.values()) b.settled = true;
    this.inflight.clear();
    for (const c of this.eventChannels) c.end();
    for (const c of this.batchChannels) c.end();
  }

  /** True once close() was called. */
  get isClosed(): boolean {
    return this.state === 'closing' || this.state === 'closed';
  }

  // ---- settling -----------------------------------------------------------

  /** Acknowledges a batch by id (for batches taken from events). */
  async ack(batchId: string, result?: unknown): Promise<void> {
    const b = this.inflight.get(batchId);
    if (b) return this.settleAck(b, result);
    requireString('batchId', batchId);
    await this.call((br) => raw().bridge_call(br, 'ack', batchId, result === undefined ? null : JSON.stringify(result)), true);
  }

  /** Fails a batch by id (retried unless retriable is false). */
  async fail(batchId: string, error?: unknown, options?: { retriable?: boolean }): Promise<void> {
    const b = this.inflight.get(batchId);
    if (b) return this.settleFail(b, error, options?.retriable);
    requireString('batchId', batchId);
    await this.call((br) => raw().bridge_call(br, 'fail', batchId, errorText(error ?? 'failed by the host'), options?.retriable ?? true), true);
  }

  /**
   * Gives a batch back by id without spending an attempt (for batches taken
   * from events): due at once for any worker, delivered again with the same
   * batch id. Rejects with NotFoundError for a batch not held here.
   */
  async release(batchId: string): Promise<void> {
    const b = this.inflight.get(batchId);
    if (b) return this.settleRelease(b);
    requireString('batchId', batchId);
    await this.call((br) => raw().bridge_call(br, 'release', batchId), true);
  }

  /** @internal */
  async settleAck(batch: Batch, result: unknown): Promise<void> {
    let json: string | null = null;
    if (result !== undefined) {
      try {
        json = JSON.stringify(result) ?? null;
      } catch {
        json = null;
      }
    }
    await this.settle(batch, (b) => raw().bridge_call(b, 'ack', batch.batchId, json));
    if (this.backend === 'custom') {
      const ev: CompletedEvent = {
        type: 'completed',
        conversationId: batch.conversationId,
        threadId: batch.conversationId,
        batchId: batch.batchId,
        attempt: batch.attempt,
        result,
        messageIds: batch.messages.map((m) => m.id),
        replyAck: () => Promise.resolve(),
        raw: { conversation_id: batch.conversationId, batch_id: batch.batchId, attempt: batch.attempt },
      };
      this.publish('completed', ev);
    }
  }

  /** @internal */
  async settleFail(batch: Batch, error: unknown, retriable: boolean | undefined): Promise<void> {
    const retry = retriable ?? !(error instanceof NonRetriableError || (error as { retriable?: unknown })?.retriable === false);
    const text = errorText(error ?? 'failed by the host');
    await this.settle(batch, (b) => raw().bridge_call(b, 'fail', batch.batchId, text, retry));
  }

  /** @internal */
  async settleRelease(batch: Batch): Promise<void> {
    await this.settle(batch, (b) => raw().bridge_call(b, 'release', batch.batchId));
  }

  /** A batch is settled once: ack, fail or release through the core, retried on store trouble. */
  private async settle(batch: Batch, op: (bridge: BridgeHandle) => Promise<void>): Promise<void> {
    if (batch.settled) throw new StateError(`runlane: batch ${batch.batchId} is already settled`, -11);
    batch.settled = true;
    try {
      await this.withRetry(() => this.call(op, true));
    } finally {
      this.forget(batch);
    }
  }

  /** Store trouble is retriable: try a settle a few times before giving up. */
  private async withRetry(fn: () => Promise<void>): Promise<void> {
    for (let i = 0; ; i++) {
      try {
        return await fn();
      } catch (e) {
        if (!(e instanceof RunlaneError) || !e.retriable || i >= 4 || this.state === 'closed') throw e;
        await sleep(100 * 2 ** i);
      }
    }
  }

  private forget(batch: Batch): void {
    // A released batch may be delivered again (same id) before its settle
    // resolves: forget only this delivery.
    if (this.inflight.get(batch.batchId) === batch) {
      this.inflight.delete(batch.batchId);
      this.unheld.delete(batch.batchId);
    }
    this.updateRef();
  }

  /** Answers a tool-calls event (HTTP backends). */
  async submitToolOutputs(batchId: string, outputs: ToolOutput[]): Promise<void> {
    requireString('batchId', batchId);
    await this.call((b) => raw().bridge_call(b, 'submit_tool_outputs', batchId, JSON.stringify(outputs)), true);
  }

  /** Confirms that a completed turn's reply reached the user (HTTP backends). */
  async replyAck(batchId: string): Promise<void> {
    requireString('batchId', batchId);
    await this.call((b) => raw().bridge_call(b, 'reply_ack', batchId), true);
  }

  // ---- tools ----------------------------------------------------------------

  /** Registers a tool for tool calls (used when no handleRequiresAction is given). */
  registerTool(name: string, fn: ToolFunction): this {
    requireString('tool name', name);
    if (typeof fn !== 'function') throw new InvalidArgumentError(`runlane: tool "${name}" must be a function`, -1);
    this.tools.set(name, fn);
    return this;
  }

  get toolNames(): string[] {
    return [...this.tools.keys()];
  }

  /** Runs a registered tool; its result is JSON-encoded unless it is a string. Errors become `{"error": ...}` outputs. */
  async callTool(name: string, args: unknown, ctx: ToolContext): Promise<string> {
    const fn = this.tools.get(name);
    if (!fn) return JSON.stringify({ error: `unknown tool "${name}"` });
    try {
      const parsed = typeof args === 'string' ? (args.length ? JSON.parse(args) : {}) : args;
      const out = await fn(parsed, ctx);
      return typeof out === 'string' ? out : JSON.stringify(out ?? null);
    } catch (e) {
      return JSON.stringify({ error: errorText(e) });
    }
  }

  // ---- iteration ------------------------------------------------------------

  /** Every event from now on, in order; ends after 'stopped' or close(). */
  events(): AsyncIterableIterator<RunlaneEvent> {
    const ch: Channel<RunlaneEvent> = new Channel(() => this.eventChannels.delete(ch));
    if (this.state === 'closed') ch.end();
    else this.eventChannels.add(ch);
    return ch;
  }

  /** Batches to run yourself (no handler): ack() or fail() each. Ends on stop or close(). */
  batches(): AsyncIterableIterator<Batch> {
    const ch: Channel<Batch> = new Channel(() => this.batchChannels.delete(ch));
    if (this.state === 'closed') ch.end();
    else this.batchChannels.add(ch);
    return ch;
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<RunlaneEvent> {
    return this.events();
  }

  // ---- internals ------------------------------------------------------------

  private optionsObject(o: EnqueueOptions): Json {
    const out: Json = {};
    if (o.idempotencyKey !== undefined) out.idempotency_key = o.idempotencyKey;
    if (o.instructions !== undefined) out.instructions = o.instructions;
    if (o.metadata !== undefined) out.metadata = o.metadata;
    return out;
  }

  private optionsJson(o: EnqueueOptions): string | null {
    if (typeof o !== 'object' || o === null) throw new InvalidArgumentError('runlane: enqueue options must be an object', -1);
    const obj = this.optionsObject(o);
    return Object.keys(obj).length ? JSON.stringify(obj) : null;
  }

  private async opened(internal = false): Promise<void> {
    if (!internal && this.isClosed) throw new ClosedError(`runlane: queue "${this.name}" is closed`, -15);
    await this.ready;
    if (this.state === 'closed' || !this.bridge) throw new ClosedError(`runlane: queue "${this.name}" is closed`, -15);
  }

  /**
   * A bridge call (its promise rejects with the typed errors). Straight to
   * the bridge once connected; before, after waiting for the connection.
   * `internal` calls (settling batches) are still allowed while closing.
   */
  private call<T>(fn: (b: BridgeHandle) => Promise<T>, internal = false): Promise<T> {
    const b = this.bridge;
    if (b && (this.state === 'open' || (internal && this.state === 'closing'))) return fn(b);
    return this.opened(internal).then(() => fn(this.bridge!));
  }

  /**
   * @internal The dashboard adapter's way to the bridge (dashboard.ts): a
   * call once the queue is open, refused with ClosedError after close.
   */
  _bridgeCall<T>(fn: (b: BridgeHandle) => Promise<T> | T): Promise<T> {
    return this.call(async (b) => fn(b));
  }

  private rawCall<T>(fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      throw toRunlaneError(e);
    }
  }

  /** Keeps the event loop alive while the worker runs (keepAlive) or batches are in flight. */
  private updateRef(): void {
    if (!this.bridge || this.state === 'closed') return;
    const want = this.workerState === 'running' && (this.keepAlive || this.inflight.size > 0);
    if (want !== this.refed) {
      this.refed = want;
      raw().bridge_ref(this.bridge, want);
    }
  }

  /** Drains the core's event queue (woken by the bridge). */
  private drain(): void {
    const rl = this.rl;
    if (!rl || this.state === 'closed') return;
    const r = raw();
    let firstError: unknown;
    for (;;) {
      const ev = r.runlane_poll(rl, 0);
      if (!ev) break;
      let type: number, json: string, code: number, message: string;
      try {
        type = r.runlane_event_type(ev);
        json = r.runlane_event_json(ev);
        code = r.runlane_event_error_code(ev);
        message = r.runlane_event_error_message(ev);
      } finally {
        r.runlane_event_destroy(ev);
      }
      try {
        this.dispatch(type, json, code, message);
      } catch (e) {
        firstError ??= e; // a listener threw: keep draining, rethrow below
      }
    }
    if (firstError !== undefined) {
      process.nextTick(() => {
        throw firstError;
      });
    }
  }

  private dispatch(type: number, jsonText: string, code: number, message: string): void {
    const r = raw();
    let json: Json = {};
    try {
      json = JSON.parse(jsonText) as Json;
    } catch {
      json = {};
    }
    const base = {
      conversationId: str(json.conversation_id),
      threadId: str(json.conversation_id),
      batchId: str(json.batch_id),
      attempt: Number(json.attempt ?? 0),
    };
    switch (type) {
      case r.RUNLANE_EVENT_BATCH:
        return this.onBatch(new Batch(this, base.conversationId, base.batchId, base.attempt, toMessages(json.messages)));
      case r.RUNLANE_EVENT_COMPLETED: {
        let confirmed: Promise<void> | undefined;
        const replyAck = () =>
          (confirmed ??= this.replyAck(base.batchId).catch((e: unknown) => {
            if (!(e instanceof NotFoundError)) throw e; // confirmed already, or expired
          }));
        this.publish('completed', {
          type: 'completed',
          ...base,
          reply: typeof json.reply === 'string' ? json.reply : undefined,
          runId: str(json.run_id) || str(json.response_id) || undefined,
          usage: json.usage && typeof json.usage === 'object' ? (json.usage as Record<string, unknown>) : undefined,
          messageIds: Array.isArray(json.message_ids) ? (json.message_ids as string[]) : undefined,
          redelivered: json.redelivered === true,
          replyAck,
          raw: json,
        });
        if (this.autoReplyAck && this.backend !== 'custom') {
          replyAck().catch((e: unknown) => {
            if (!(e instanceof UnsupportedError)) this.settleError(null, e);
          });
        }
        return;
      }
      case r.RUNLANE_EVENT_FAILED:
      case r.RUNLANE_EVENT_DEAD: {
        const dead = type === r.RUNLANE_EVENT_DEAD;
        const ev: FailedEvent = { type: dead ? 'dead' : 'failed', ...base, error: str(json.error) || message, dead, raw: json };
        return this.publish(ev.type, ev);
      }
      case r.RUNLANE_EVENT_DELTA:
        return this.publish('delta', {
          type: 'delta', ...base, text: str(json.delta) || str(json.text), raw: json,
        });
      case r.RUNLANE_EVENT_RUN_STARTED:
        return this.publish('run_started', { type: 'run_started', ...base, runId: str(json.run_id) || str(json.response_id) || undefined, raw: json });
      case r.RUNLANE_EVENT_TOOL_CALLS: {
        const toolCalls = toToolCalls(json.tool_calls);
        const ev = { type: 'tool_calls' as const, ...base, runId: str(json.run_id) || str(json.response_id) || undefined, toolCalls, raw: json };
        this.publish('tool_calls', ev);
        void this.answerToolCalls(ev.conversationId, ev.batchId, ev.runId, toolCalls);
        return;
      }
      case r.RUNLANE_EVENT_LEASE_LOST: {
        const b = this.inflight.get(base.batchId);
        if (b) {
          b.lost = true;
          b.settled = true;
          this.forget(b);
        }
        return this.publish('lease_lost', { type: 'lease_lost', ...base, error: message || str(json.error), raw: json });
      }
      case r.RUNLANE_EVENT_ERROR:
        return this.emitError(errorFromCode(code, message || str(json.error) || 'runlane: background error', true));
      case r.RUNLANE_EVENT_STOPPED: {
        this.publish('stopped', { type: 'stopped', raw: json });
        for (const c of this.batchChannels) c.end();
        for (const c of this.eventChannels) c.end();
        return;
      }
      default:
        return;
    }
  }

  private onBatch(batch: Batch): void {
    this.inflight.set(batch.batchId, batch);
    this.updateRef();
    const listened = this.listenerCount('batch') > 0 || this.eventChannels.size > 0 || this.batchChannels.size > 0;
    this.publish('batch', batch);
    for (const c of this.batchChannels) c.push(batch);
    if (this.handler) {
      void this.runHandler(this.handler, batch);
    } else if (!listened && this.state === 'closing') {
      // Closing: nobody will run it, so it goes back now instead of
      // holding up the drain.
      void this.settleRelease(batch).catch(noop);
    } else if (!listened) {
      this.unheld.add(batch.batchId);
    }
    if (!this.handler && !listened && this.state !== 'closing' && !this.warnedUnhandled) {
      this.warnedUnhandled = true;
      process.emitWarning(
        `runlane: queue "${this.name}" delivered batch ${batch.batchId} but has no handler, no 'batch' listener and no iterator; ` +
          'it stays leased until acked, failed or released (close() gives it back at once)',
        'RunlaneWarning',
      );
    }
  }

  private async runHandler(handler: BatchHandler, batch: Batch): Promise<void> {
    let result: unknown;
    try {
      result = await handler(batch);
    } catch (e) {
      if (!batch.settled) await this.settleFail(batch, e, undefined).catch((err) => this.settleError(batch, err));
      return;
    }
    if (!batch.settled) await this.settleAck(batch, result).catch((err) => this.settleError(batch, err));
  }

  private settleError(batch: Batch | null, e: unknown): void {
    if (e instanceof ClosedError) return;
    // The batch is no longer ours: the core already raised LEASE_LOST for it
    // (a stale settle, a failed renew, or a release at stop); not again here.
    if (batch && (e instanceof LeaseLostError || e instanceof NotFoundError)) return;
    this.emitError(e as Error);
  }

  private async answerToolCalls(conversationId: string, batchId: string, runId: string | undefined, calls: ToolCall[]): Promise<void> {
    try {
      let outputs: ToolOutput[];
      if (this.options.handleRequiresAction) {
        outputs = await this.options.handleRequiresAction(conversationId, runId ?? '', calls);
      } else if (this.tools.size === 0) {
        // No tools here: the host answers from its 'tool_calls' listener
        // (submitToolOutputs), or tool.timeout.ms answers for it.
        if (this.listenerCount('tool_calls') === 0 && this.eventChannels.size === 0) {
          process.emitWarning(`runlane: queue "${this.name}" got tool calls but has no tools, no handleRequiresAction and no 'tool_calls' listener`, 'RunlaneWarning');
        }
        return;
      } else {
        outputs = await Promise.all(calls.map(async (c) => ({
          tool_call_id: c.id,
          output: await this.callTool(c.function?.name, c.function?.arguments ?? '{}', {
            threadId: conversationId, conversationId, runId, batchId, toolCallId: c.id,
          }),
        })));
      }
      await this.submitToolOutputs(batchId, outputs);
    } catch (e) {
      if (!(e instanceof ClosedError)) this.emitError(e as Error);
    }
  }

  private publish<E extends keyof RunlaneEvents>(name: E, payload: RunlaneEvents[E][0]): void {
    const item = (name === 'batch' ? { type: 'batch', batch: payload } : payload) as RunlaneEvent;
    for (const c of this.eventChannels) c.push(item);
    (this.emit as (n: string, p: unknown) => boolean)(name, payload);
  }

  /** 'error' goes to listeners; without any, it becomes a process warning (never a crash). */
  private emitError(err: Error): void {
    for (const c of this.eventChannels) c.push({ type: 'error', error: err });
    if (this.listenerCount('error') > 0) this.emit('error', err);
    else process.emitWarning(`runlane: queue "${this.name}": ${err.message}`, 'RunlaneWarning');
  }
}

/** The configuration keys of the core: name, camelCase option, type, default, range, doc. */
export { properties as runlaneConfigProperties } from './config';

/** True when `name` is a configuration option (camelCase) of the core. */
export function isConfigOption(name: string): boolean {
  return propertyByOption(name) !== undefined;
}
