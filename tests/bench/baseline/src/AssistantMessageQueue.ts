/*
 * AssistantMessageQueue — the ORIGINAL design that runlane replaced, rewritten
 * here from its documented algorithm as the baseline of tests/bench/compare.py.
 *
 * BullMQ + Redis in front of the OpenAI Assistants API:
 *
 *   addMessageToThread(threadId, message, instructions)
 *     - adds one BullMQ job per message, id `${threadId}-${Date.now()}`,
 *       delayed by the batch window (10 s by default);
 *     - adds the job id to a Redis set per thread.
 *
 *   the worker (a BullMQ Worker, concurrency 5), for each job:
 *     - takes a per-thread lock: SET lock NX EX lockTtlSeconds;
 *       a job that finds it taken just returns;
 *     - reads the thread's set; the oldest job of the set processes the whole
 *       batch, any other job releases the lock and just returns;
 *     - the oldest job reads every job of the set, posts each message to the
 *       thread (POST /threads/{id}/messages), creates a run
 *       (POST /threads/{id}/runs), then polls GET /threads/{id}/runs/{run}
 *       with a delay starting at 1 s, growing by 1.5x up to 15 s, until the
 *       run is terminal; requires_action goes to the handleRequiresAction
 *       hook and its outputs to submit_tool_outputs;
 *     - releases the lock and removes the processed job ids from the set.
 *
 * ITS FLAWS ARE KEPT ON PURPOSE (they are what the benchmark measures; do not
 * fix them here):
 *   - A message that arrives while a run is active: its job fires while the
 *     lock is held and just returns (the message is never posted), and its id
 *     stays in the set (BullMQ keeps completed jobs), so it is the "oldest"
 *     forever after and every later job of the thread returns too. When the
 *     lock has expired meanwhile (a run longer than lockTtlSeconds), the
 *     message is posted during the run and the API answers 400 ("Can't add
 *     messages to T while a run R is active"): the job fails.
 *   - A failure after some messages were posted (a 400, 429 or 5xx, no retry
 *     of its own) fails the job, BullMQ retries it (attempts 3) and the retry
 *     posts the batch again from its first message: the first message ends up
 *     in the thread up to three times.
 *   - A worker that dies holding the lock leaves the thread locked until the
 *     lock's EX expires (lockTtlSeconds); meanwhile every job of the thread
 *     returns, i.e. its messages are lost.
 *   - Two messages of one thread added in the same millisecond get the same
 *     job id: BullMQ keeps the first job and ignores the second, whose message
 *     is dropped.
 *   - A run's end is noticed only at the next poll (1 s, 1.5 s, 2.25 s ... up
 *     to 15 s apart).
 *   - The job that processes a batch holds one of the worker's 5 slots for the
 *     whole run: at most 5 runs in flight per worker process.
 *
 * No OpenAI SDK: plain fetch() against options.baseUrl.
 */
import { EventEmitter } from 'node:events';
import { Job, Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

export interface ToolOutput {
  tool_call_id: string;
  output: string;
}

export interface Run {
  id: string;
  status: string;
  thread_id: string;
  completed_at?: number | null;
  required_action?: {
    type: string;
    submit_tool_outputs: {
      tool_calls: { id: string; type: string; function: { name: string; arguments: string } }[];
    };
  } | null;
  [k: string]: unknown;
}

export interface MessageJobData {
  threadId: string;
  message: string;
  instructions?: string;
}

export interface AssistantMessageQueueOptions {
  /** Redis URL, e.g. redis://127.0.0.1:6379/0 */
  redisUrl: string;
  /** Prefix of every key (BullMQ's and the sets' and locks'). */
  prefix?: string;
  queueName?: string;
  /** Delay of every message's job: the batch window (default 10 s). */
  batchWindowMs?: number;
  /** BullMQ Worker concurrency (default 5). */
  concurrency?: number;
  /** EX of the per-thread lock (default 300 s). */
  lockTtlSeconds?: number;
  /** BullMQ attempts of a job (default 3). */
  attempts?: number;
  baseUrl?: string;
  apiKey?: string;
  assistantId: string;
  /** Called on requires_action; returns the tool outputs to submit. */
  handleRequiresAction?: (run: Run) => Promise<ToolOutput[]>;
}

const TERMINAL = new Set(['completed', 'failed', 'cancelled', 'expired', 'incomplete']);

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/*
 * Events (instrumentation only; they change nothing in the algorithm):
 *   'added'        {threadId, message, jobId, at, collided}
 *   'job'          {jobId, threadId, outcome: 'locked'|'not-oldest'|'processed'|'failed', at, error?}
 *   'posted'       {threadId, message, at, status}
 *   'run-created'  {threadId, runId, at}
 *   'poll'         {threadId, runId, status, at}
 *   'run-finished' {threadId, runId, status, at, messages}
 */
export class AssistantMessageQueue extends EventEmitter {
  readonly queue: Queue<MessageJobData>;
  readonly redis: IORedis;
  private worker?: Worker<MessageJobData>;
  private readonly lastJobId = new Map<string, string>();
  private readonly opts: Required<Omit<AssistantMessageQueueOptions, 'handleRequiresAction' | 'apiKey'>> & {
    apiKey?: string;
    handleRequiresAction?: (run: Run) => Promise<ToolOutput[]>;
  };

  constructor(options: AssistantMessageQueueOptions) {
    super();
    this.opts = {
      prefix: 'amq',
      queueName: 'assistant-messages',
      batchWindowMs: 10000,
      concurrency: 5,
      lockTtlSeconds: 300,
      attempts: 3,
      baseUrl: 'https://api.openai.com/v1',
      ...options,
    };
    this.redis = new IORedis(this.opts.redisUrl, { maxRetriesPerRequest: null });
    this.queue = new Queue<MessageJobData>(this.opts.queueName, {
      connection: this.redis,
      prefix: this.opts.prefix,
      defaultJobOptions: {
        attempts: this.opts.attempts,
        backoff: { type: 'exponential', delay: 1000 },
      },
    });
  }

  private setKey(threadId: string): string {
    return `${this.opts.prefix}:thread:${threadId}:jobs`;
  }

  private lockKey(threadId: string): string {
    return `${this.opts.prefix}:lock:${threadId}`;
  }

  /** Queues one message; it is sent with the thread's batch when its window is over. */
  async addMessageToThread(threadId: string, message: string, instructions?: string): Promise<string> {
    const jobId = `${threadId}-${Date.now()}`;
    await this.queue.add(
      'message',
      { threadId, message, instructions },
      { jobId, delay: this.opts.batchWindowMs },
    );
    await this.redis.sadd(this.setKey(threadId), jobId);
    // Instrumentation only: a job id this process already used means BullMQ
    // kept the older job and this message went nowhere.
    const collided = this.lastJobId.get(threadId) === jobId;
    this.lastJobId.set(threadId, jobId);
    this.emit('added', { threadId, message, jobId, at: Date.now(), collided });
    return jobId;
  }

  startWorker(): void {
    const connection = new IORedis(this.opts.redisUrl, { maxRetriesPerRequest: null });
    this.worker = new Worker<MessageJobData>(
      this.opts.queueName,
      (job) => this.processJob(job),
      { connection, prefix: this.opts.prefix, concurrency: this.opts.concurrency },
    );
    this.worker.on('failed', (job, err) => {
      this.emit('job', {
        jobId: job?.id, threadId: job?.data.threadId, outcome: 'failed', at: Date.now(),
        error: String(err?.message ?? err),
      });
    });
    this.worker.on('error', () => { /* connection errors: BullMQ reconnects */ });
  }

  async close(): Promise<void> {
    if (this.worker) await this.worker.close();
    await this.queue.close();
    this.redis.disconnect();
  }

  private async processJob(job: Job<MessageJobData>): Promise<string> {
    const { threadId } = job.data;
    const lockKey = this.lockKey(threadId);
    const got = await this.redis.set(lockKey, String(job.id), 'EX', this.opts.lockTtlSeconds, 'NX');
    if (got !== 'OK') {
      this.emit('job', { jobId: job.id, threadId, outcome: 'locked', at: Date.now() });
      return 'locked';
    }
    let processed: string[] = [];
    try {
      const ids = await this.redis.smembers(this.setKey(threadId));
      const jobs = (await Promise.all(ids.map((id) => Job.fromId<MessageJobData>(this.queue, id))))
        .filter((j): j is Job<MessageJobData> => !!j)
        .sort((a, b) => a.timestamp - b.timestamp);
      if (jobs.length === 0 || jobs[0].id !== job.id) {
        this.emit('job', { jobId: job.id, threadId, outcome: 'not-oldest', at: Date.now() });
        return 'not-oldest';
      }
      for (const j of jobs) {
        await this.api('POST', `/threads/${threadId}/messages`, { role: 'user', content: j.data.message });
        this.emit('posted', { threadId, message: j.data.message, at: Date.now() });
      }
      const instructions = jobs[jobs.length - 1].data.instructions;
      const run = (await this.api('POST', `/threads/${threadId}/runs`, {
        assistant_id: this.opts.assistantId,
        ...(instructions ? { instructions } : {}),
      })) as Run;
      this.emit('run-created', { threadId, runId: run.id, at: Date.now() });
      const final = await this.pollRun(threadId, run.id);
      this.emit('run-finished', {
        threadId, runId: run.id, status: final.status, at: Date.now(),
        messages: jobs.map((j) => j.data.message),
      });
      processed = ids;
      this.emit('job', { jobId: job.id, threadId, outcome: 'processed', at: Date.now() });
      return final.status;
    } finally {
      await this.redis.del(lockKey);
      if (processed.length) await this.redis.srem(this.setKey(threadId), ...processed);
    }
  }

  private async pollRun(threadId: string, runId: string): Promise<Run> {
    let delay = 1000;
    for (;;) {
      await sleep(delay);
      const run = (await this.api('GET', `/threads/${threadId}/runs/${runId}`)) as Run;
      this.emit('poll', { threadId, runId, status: run.status, at: Date.now() });
      if (TERMINAL.has(run.status)) return run;
      if (run.status === 'requires_action') {
        const outputs = this.opts.handleRequiresAction
          ? await this.opts.handleRequiresAction(run)
          : (run.required_action?.submit_tool_outputs.tool_calls ?? []).map((c) => ({
              tool_call_id: c.id, output: '',
            }));
        await this.api('POST', `/threads/${threadId}/runs/${runId}/submit_tool_outputs`, {
          tool_outputs: outputs,
        });
      }
      delay = Math.min(delay * 1.5, 15000);
    }
  }

  private async api(method: string, path: string, body?: unknown): Promise<unknown> {
    const headers: Record<string, string> = {
      'Content-Type': 'application/json',
      'OpenAI-Beta': 'assistants=v2',
    };
    if (this.opts.apiKey) headers.Authorization = `Bearer ${this.opts.apiKey}`;
    const res = await fetch(this.opts.baseUrl + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) {
      this.emit('http-error', { method, path, status: res.status, at: Date.now() });
      throw new Error(`${method} ${path}: ${res.status} ${text}`);
    }
    return JSON.parse(text);
  }
}
