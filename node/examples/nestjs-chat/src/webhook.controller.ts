import { Body, Controller, Get, Header, HttpCode, Post } from '@nestjs/common';
import { AssistantMessageQueueService } from 'runlane/nestjs';

/** What the chat platform posts for each user message. */
interface ChatWebhook {
  conversationId: string;
  /** The platform's message id: a webhook delivered twice is queued once. */
  messageId: string;
  text: string;
  userId?: string;
}

@Controller()
export class WebhookController {
  constructor(private readonly queue: AssistantMessageQueueService) {}

  /** Queues the message and answers at once; the turn runs after the user's quiet window. */
  @Post('webhooks/chat')
  @HttpCode(202)
  async message(@Body() body: ChatWebhook): Promise<{ id: string; duplicate: boolean }> {
    return this.queue.enqueue(body.conversationId, body.text, {
      idempotencyKey: body.messageId,
      metadata: body.userId ? { userId: body.userId } : undefined,
    });
  }

  /** "User is typing": the quiet window restarts, so a half-written burst is not answered yet. */
  @Post('webhooks/typing')
  @HttpCode(204)
  async typing(@Body() body: { conversationId: string }): Promise<void> {
    await this.queue.touch(body.conversationId);
  }

  @Get('queue/status')
  status() {
    return this.queue.status();
  }

  @Get('metrics')
  @Header('content-type', 'text/plain; version=0.0.4')
  metrics(): Promise<string> {
    return this.queue.metrics();
  }
}
