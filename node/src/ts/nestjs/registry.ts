import { Injectable } from '@nestjs/common';

import type { AssistantMessageQueueService } from './service';

export interface RegisteredQueue {
  name: string;
  queue: AssistantMessageQueueService;
  /** Start the worker on module init: true, false, or undefined = when a handler is configured. */
  worker?: boolean;
}

/** Every queue created by RunlaneModule in this application. */
@Injectable()
export class RunlaneRegistry {
  private readonly queues = new Map<string, RegisteredQueue>();

  add(entry: RegisteredQueue): void {
    if (this.queues.has(entry.name)) {
      throw new Error(`runlane: a queue named "${entry.name}" is registered twice (RunlaneModule.forRoot with the same name)`);
    }
    this.queues.set(entry.name, entry);
  }

  get(name: string): RegisteredQueue | undefined {
    return this.queues.get(name);
  }

  all(): RegisteredQueue[] {
    return [...this.queues.values()];
  }
}
