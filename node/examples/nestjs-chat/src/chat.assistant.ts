import { Injectable, Logger } from '@nestjs/common';
import { Batch, CompletedEvent, FailedEvent, NonRetriableError } from 'runlane';
import { AssistantMessageQueueService, AssistantTool, OnRunlaneEvent, RunlaneHandler } from 'runlane/nestjs';

/**
 * Runs each turn (custom backend: any model or agent framework fits here)
 * and offers tools. With the `responses`/`assistants` backends the model
 * calls the @AssistantTool methods itself; here the handler calls them.
 */
@Injectable()
export class ChatAssistant {
  private readonly log = new Logger(ChatAssistant.name);

  constructor(private readonly queue: AssistantMessageQueueService) {}

  /** One turn: every message of the burst, in order. Resolve = done; throw = retry later. */
  @RunlaneHandler()
  async reply(batch: Batch): Promise<{ text: string }> {
    if (batch.content.length > 10000) throw new NonRetriableError('message too long'); // dead-lettered at once
    let text = `You said: ${batch.messages.map((m) => m.content).join(' / ')}`;
    const order = /order (\w+)/i.exec(batch.content);
    if (order) {
      const status = await this.queue.callTool('get_order_status', { orderId: order[1] }, {
        threadId: batch.threadId, conversationId: batch.conversationId, batchId: batch.batchId,
        toolCallId: `${batch.batchId}:order`,
      });
      text += ` — order ${order[1]}: ${status}`;
    }
    return { text };
  }

  @AssistantTool('get_order_status')
  async orderStatus(args: { orderId: string }): Promise<string> {
    return args.orderId.startsWith('A') ? 'shipped' : 'processing';
  }

  /** The turn is done: send the reply to the user (here: the log). */
  @OnRunlaneEvent('completed')
  delivered(e: CompletedEvent): void {
    const text = e.reply ?? (e.result as { text?: string } | undefined)?.text;
    this.log.log(`reply to ${e.conversationId} (batch ${e.batchId}): ${text}`);
  }

  /** Last event of the queue: on shutdown, after in-flight turns drained. */
  @OnRunlaneEvent('stopped')
  stopped(): void {
    this.log.log('queue stopped');
  }

  @OnRunlaneEvent('dead')
  dead(e: FailedEvent): void {
    this.log.error(`conversation ${e.conversationId}: batch ${e.batchId} dead-lettered: ${e.error}`);
  }
}
