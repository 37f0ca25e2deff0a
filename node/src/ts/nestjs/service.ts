import { Injectable, OnApplicationShutdown, OnModuleInit } from '@nestjs/common';

import { AssistantMessageQueue } from '../queue';
import type { AssistantMessageQueueOptions } from '../types';

/**
 * The queue as a NestJS provider: an AssistantMessageQueue (same API).
 *
 * Created by RunlaneModule, its worker is started on module init when
 * configured and drained on application shutdown by the module. Created by
 * the app's own provider, as with the original library
 * (`{ provide: AssistantMessageQueueService, useFactory: () => new
 * AssistantMessageQueueService({ redisUrl, openAIApiKey, assistantId }) }`),
 * it starts its worker on module init and closes on application shutdown
 * itself.
 */
@Injectable()
export class AssistantMessageQueueService extends AssistantMessageQueue implements OnModuleInit, OnApplicationShutdown {
  /** @internal Set by RunlaneModule, whose explorer starts and closes its queues. */
  managedByModule = false;

  constructor(options: AssistantMessageQueueOptions) {
    super(options);
  }

  /** @internal Nest lifecycle: a queue of the app's own provider starts its worker. */
  async onModuleInit(): Promise<void> {
    if (!this.managedByModule) await this.startWorker();
  }

  /** @internal Nest lifecycle: a queue of the app's own provider closes (drains). */
  async onApplicationShutdown(): Promise<void> {
    if (!this.managedByModule) await this.close();
  }
}
