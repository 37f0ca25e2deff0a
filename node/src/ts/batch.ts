import type { BatchMessage } from './types';

/** What a Batch needs from its queue (implemented by AssistantMessageQueue). */
export interface BatchSettler {
  settleAck(batch: Batch, result: unknown): Promise<void>;
  settleFail(batch: Batch, error: unknown, retriable: boolean | undefined): Promise<void>;
  settleRelease(batch: Batch): Promise<void>;
}

/**
 * A batch of a conversation delivered by the worker (custom backend): every
 * message of its quiet window, in order. Run the turn, then ack() or fail()
 * it exactly once (a handler's promise does this for you), or release() it
 * to give it back without running it.
 */
export class Batch {
  readonly type = 'batch' as const;
  /** Conversation id (the thread id of the original API). */
  readonly conversationId: string;
  /** Stable across attempts: use it to drop a repeated delivery. */
  readonly batchId: string;
  /** 1 for the first attempt. */
  readonly attempt: number;
  readonly messages: readonly BatchMessage[];
  /** @internal */
  settled = false;
  /** @internal set when the lease was lost */
  lost = false;

  /** @internal */
  constructor(
    private readonly settler: BatchSettler,
    conversationId: string,
    batchId: string,
    attempt: number,
    messages: BatchMessage[],
  ) {
    this.conversationId = conversationId;
    this.batchId = batchId;
    this.attempt = attempt;
    this.messages = messages;
  }

  /** = conversationId. */
  get threadId(): string {
    return this.conversationId;
  }

  /** The messages' contents joined by newlines. */
  get content(): string {
    return this.messages.map((m) => m.content).join('\n');
  }

  /** The instructions of the turn: the last message's that has some. */
  get instructions(): string | undefined {
    for (let i = this.messages.length - 1; i >= 0; i--) {
      if (this.messages[i].instructions !== undefined) return this.messages[i].instructions;
    }
    return undefined;
  }

  /** Done: the messages are removed and the conversation's next batch may start. */
  ack(result?: unknown): Promise<void> {
    return this.settler.settleAck(this, result);
  }

  /**
   * This attempt failed: retried after a backoff until maxAttempts, then
   * dead-lettered; with `retriable: false` (or a NonRetriableError) it is
   * dead-lettered at once.
   */
  fail(error?: unknown, options?: { retriable?: boolean }): Promise<void> {
    return this.settler.settleFail(this, error, options?.retriable);
  }

  /**
   * Gives the batch back without spending an attempt (e.g. this process is
   * shutting down and will not run it): it is due at once for any worker and
   * delivered again with the same batch id, messages and attempt number.
   * Settles the batch here (a handler's return no longer acks it). Rejects
   * with NotFoundError for a batch no longer held by this client.
   */
  release(): Promise<void> {
    return this.settler.settleRelease(this);
  }

  toJSON(): Record<string, unknown> {
    return {
      conversationId: this.conversationId,
      batchId: this.batchId,
      attempt: this.attempt,
      messages: this.messages,
    };
  }
}
