import { Module } from '@nestjs/common';
import { RunlaneModule } from 'runlane/nestjs';

import { ChatAssistant } from './chat.assistant';
import { WebhookController } from './webhook.controller';

@Module({
  imports: [
    // One queue for the whole app. With REDIS_URL, every instance of the app
    // shares it: a conversation runs one turn at a time across all of them.
    RunlaneModule.forRootAsync({
      useFactory: () => ({
        store: process.env.REDIS_URL || 'memory',
        keyPrefix: 'chat',
        batchWindowMs: Number(process.env.BATCH_WINDOW_MS ?? 3000), // quiet time before a turn
        batchMaxWaitMs: 20000, // ...but never longer than this after the first message
        maxAttempts: 3,
        // The worker starts on module init because ChatAssistant has a @RunlaneHandler.
      }),
    }),
  ],
  controllers: [WebhookController],
  providers: [ChatAssistant],
})
export class AppModule {}
