import { Injectable } from '@nestjs/common';

import { AssistantMessageQueue } from '../queue';
import type { AssistantMessageQueueOptions } from '../types';

/**
 * The queue as a NestJS provider: an AssistantMessageQueue (same API),
 * created by RunlaneModule, its worker started on module init when
 * configured and drained on application shutdown.
 */
@Injectable()
export class AssistantMessageQueueService extends AssistantMessageQueue {
  constructor(options: AssistantMessageQueueOptions) {
    super(options);
  }
}
