/** Public types of the runlane Node package. */
import type { ConfigValue } from './config';
import type { RunlaneConfigOptions } from './options.generated';
import type { Batch } from './batch';

/** One message of a batch, in the order it was queued. */
export interface BatchMessage {
  /** Message id returned by enqueue. */
  id: string;
  /** Enqueue time (store clock), milliseconds since the epoch. */
  tsMs: number;
  content: string;
  instructions?: string;
  metadata?: Record<string, string>;
}

/** A tool call of a turn (OpenAI function calling). */
export interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

/** The answer to one tool call. */
export interface ToolOutput {
  tool_call_id: string;
  output: string;
}

/** Context handed to a tool function. */
export interface ToolContext {
  /** Conversation (thread) id. */
  threadId: string;
  conversationId: string;
  /** Provider run / response id, when known. */
  runId?: string;
  batchId?: string;
  /** The tool call id: use it as an idempotency key (tools run at least once). */
  toolCallId: string;
}

/** A tool: receives the parsed JSON arguments; its result is JSON-encoded unless it is a string. */
export type ToolFunction = (args: any, ctx: ToolContext) => unknown | Promise<unknown>;

/**
 * Runs one turn of the custom backend. Resolving acks the batch (the value
 * is recorded as its result); rejecting fails the attempt: retried with
 * backoff until maxAttempts, or dead-lettered at once for a
 * {@link NonRetriableError}.
 */
export type BatchHandler = (batch: Batch) => unknown | Promise<unknown>;

/** Answers tool calls (the original API): returns one output per call. */
export type RequiresActionHandler = (
  threadId: string,
  runId: string,
  toolCalls: ToolCall[],
) => ToolOutput[] | Promise<ToolOutput[]>;

/** Option names of the BullMQ-based AssistantMessageQueue, still accepted. */
export interface LegacyOptions {
  /** = `store` (e.g. `redis://localhost:6379/0`). */
  redisUrl?: string;
  /** = `openaiApiKey`. */
  openAIApiKey?: string;
  /** = `openaiAssistantId`; with no `backend` given it selects the assistants backend. */
  assistantId?: string;
  /** = `openaiBaseUrl` (the official SDK's name). Default: the OPENAI_BASE_URL environment variable. */
  baseURL?: string;
  /** = `keyPrefix`. */
  queuePrefix?: string;
  /** = `batchWindowMs`. */
  messageDelay?: number;
  /** = `workerConcurrency`. */
  concurrency?: number;
  /** = `openaiInstructions`. */
  defaultInstructions?: string;
  /** = `leaseMs`. */
  lockDuration?: number;
  /** `delay` = `backoffBaseMs`; type `fixed` also caps `backoffMaxMs` at `delay`. */
  backoff?: { type?: 'fixed' | 'exponential'; delay?: number };
  /** Accepted and ignored: finished batches are always removed. */
  removeOnComplete?: boolean;
}

/** Options of {@link AssistantMessageQueue}: the whole core configuration, typed, plus the binding's own. */
export interface AssistantMessageQueueOptions extends RunlaneConfigOptions, LegacyOptions {
  /** Runs each batch (custom backend). Without it, take batches from the 'batch' event or `batches()` and ack/fail them. */
  handler?: BatchHandler;
  /** Answers tool calls of HTTP backends; default: the registered tools. */
  handleRequiresAction?: RequiresActionHandler;
  /** Tools by name (also `registerTool`, or `@AssistantTool` in NestJS). */
  tools?: Record<string, ToolFunction>;
  /** Configuration by dotted key (`{'batch.window.ms': 50}`), applied after the typed options. */
  config?: Record<string, ConfigValue>;
  /**
   * A started worker keeps the process alive until close(), like a server
   * (default true). With false, the process may exit while the worker is
   * idle: it is kept alive only while batches are in flight.
   */
  keepAlive?: boolean;
  /**
   * HTTP backends: confirm each 'completed' reply (runlane_reply_ack) once
   * the 'completed' listeners ran (default true). With false, call
   * `event.replyAck()` after the reply reached the user: a crash before that
   * delivers the reply again instead of losing it.
   */
  autoReplyAck?: boolean;
  /** How long close() waits for in-flight batches before releasing them (default 30000 ms). */
  drainTimeoutMs?: number;
  /** A name for messages (NestJS: the queue's name). */
  name?: string;
}

/** What `health()` reports (one core call, runlane_health). */
export interface QueueHealth {
  /** Store reachable and the worker running (or never started: a producer-only queue). */
  ok: boolean;
  /** The store answered. */
  storeOk: boolean;
  /** Why the store did not answer (only when storeOk is false). */
  storeError?: string;
  /** `idle` (never started), `running`, `stopping` or `stopped`. */
  worker: 'idle' | 'running' | 'stopping' | 'stopped';
  workerRunning: boolean;
  /** The effective backend (`custom`, `responses`, `assistants`). */
  backend: string;
  /** Batches this queue holds. */
  inflight: number;
  /** How long the oldest due conversation has waited for a worker (ms; 0 when none is late); null when the store did not answer. */
  lagMs: number | null;
}

/** Options of one enqueue. */
export interface EnqueueOptions {
  /** The chat platform's message id: the same key for the same conversation is queued once. */
  idempotencyKey?: string;
  /** Per-turn instructions; the last message's value in a batch wins. */
  instructions?: string;
  metadata?: Record<string, string>;
}

export interface EnqueueResult {
  id: string;
  /** True when the idempotency key was used already (nothing was stored). */
  duplicate: boolean;
}

export interface EnqueueManyItem extends EnqueueOptions {
  conversationId: string;
  content: string;
}

/** Totals of the queue (runlane_status without a conversation). */
export interface QueueTotals {
  pending: number;
  ready: number;
  inflight: number;
  dead: number;
  conversations: number;
  enqueued?: number;
  acked?: number;
  failed?: number;
  deadLettered?: number;
  recovered?: number;
  [counter: string]: number | undefined;
}

/** One conversation (runlane_status with a conversation). */
export interface ConversationStatus {
  conversationId: string;
  pending: number;
  inflight: number;
  attempts: number;
  batchId: string | null;
  owner: string | null;
  leaseExpiresMs: number | null;
  dueMs: number | null;
  lastError: string | null;
  state?: string;
  [field: string]: unknown;
}

/** The original getQueueStatus() shape. */
export interface QueueStatus {
  /** Batches leased by a worker now. */
  activeCount: number;
  /** Conversations waiting for their quiet window or their turn. */
  waitingCount: number;
  /** Messages queued and not yet in a batch. */
  delayedCount: number;
  /** Batches acknowledged (store counter). */
  completedCount: number;
  /** Failed attempts (store counter). */
  failedCount: number;
  /** Dead letters now. */
  deadCount: number;
}

/** A dead-lettered batch. */
export interface DeadLetter {
  id: string;
  conversationId: string;
  batchId: string;
  attempts: number;
  error: string;
  deadAtMs: number;
  messages: BatchMessage[];
}

// ---- events -------------------------------------------------------------

interface EventBase {
  conversationId: string;
  /** = conversationId (the original API's name). */
  threadId: string;
  batchId: string;
  attempt: number;
}

export interface CompletedEvent extends EventBase {
  type: 'completed';
  /** Custom backend: the handler's resolved value. */
  result?: unknown;
  /** HTTP backends: the assistant's reply text. */
  reply?: string;
  /** HTTP backends: the provider's run (assistants) or response (responses) id. */
  runId?: string;
  /** HTTP backends: token usage as the provider reported it. */
  usage?: Record<string, unknown>;
  /** Ids of the messages the turn answered. */
  messageIds?: string[];
  /**
   * HTTP backends: true when this is a reply delivered again because it was
   * not confirmed in time (reply.redeliver.ms); `batchId` is the same every
   * time, so drop the ones you already sent.
   */
  redelivered?: boolean;
  /**
   * HTTP backends: confirms that the reply reached the user (see
   * autoReplyAck); a reply confirmed already resolves too. A no-op for the
   * custom backend.
   */
  replyAck(): Promise<void>;
  /** The event's whole JSON payload. */
  raw: Record<string, unknown>;
}

export interface FailedEvent extends EventBase {
  type: 'failed' | 'dead';
  error: string;
  /** True when the batch was dead-lettered. */
  dead: boolean;
  raw: Record<string, unknown>;
}

export interface DeltaEvent extends EventBase {
  type: 'delta';
  /** The streamed text of this delta. */
  text: string;
  raw: Record<string, unknown>;
}

export interface RunStartedEvent extends EventBase {
  type: 'run_started';
  runId?: string;
  raw: Record<string, unknown>;
}

export interface ToolCallsEvent extends EventBase {
  type: 'tool_calls';
  runId?: string;
  toolCalls: ToolCall[];
  raw: Record<string, unknown>;
}

export interface LeaseLostEvent extends EventBase {
  type: 'lease_lost';
  error: string;
  raw: Record<string, unknown>;
}

export interface ErrorEvent {
  type: 'error';
  error: Error;
}

export interface StoppedEvent {
  type: 'stopped';
  raw: Record<string, unknown>;
}

export interface BatchEvent {
  type: 'batch';
  batch: Batch;
}

/** What the async iterator yields: every event, discriminated by `type`. */
export type RunlaneEvent =
  | BatchEvent
  | CompletedEvent
  | FailedEvent
  | DeltaEvent
  | RunStartedEvent
  | ToolCallsEvent
  | LeaseLostEvent
  | ErrorEvent
  | StoppedEvent;

/** EventEmitter signatures. */
export interface RunlaneEvents {
  batch: [batch: Batch];
  completed: [event: CompletedEvent];
  failed: [event: FailedEvent];
  dead: [event: FailedEvent];
  delta: [event: DeltaEvent];
  run_started: [event: RunStartedEvent];
  tool_calls: [event: ToolCallsEvent];
  lease_lost: [event: LeaseLostEvent];
  error: [error: Error];
  stopped: [event: StoppedEvent];
}

export type RunlaneEventName = keyof RunlaneEvents;
