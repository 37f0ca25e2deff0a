/** Metadata keys and injection tokens of the NestJS integration. */

/** Name of the queue registered without a name. */
export const DEFAULT_QUEUE_NAME = 'default';

/** Metadata: `@OnRunlaneEvent` handlers of a method (array of {@link EventHandlerMeta}). */
export const RUNLANE_EVENT_HANDLER = 'runlane:event_handler';
/** Metadata: `@AssistantTool` registrations of a method (array of {@link ToolMeta}). */
export const RUNLANE_TOOL = 'runlane:tool';
/** Metadata: `@RunlaneHandler` of a method ({@link HandlerMeta}). */
export const RUNLANE_HANDLER = 'runlane:handler';

export interface EventHandlerMeta {
  event: string;
  /** Queue name; undefined = every queue. */
  queue?: string;
}
export interface ToolMeta {
  name: string;
  /** Queue name; undefined = every queue. */
  queue?: string;
}
export interface HandlerMeta {
  /** Queue name; default 'default'. */
  queue: string;
}

const QUEUE_PREFIX = 'runlane.queue:';
const OPTIONS_PREFIX = 'runlane.queue-options:';

/** Injection token of the queue `name` (an AssistantMessageQueueService). */
export function getQueueToken(name: string = DEFAULT_QUEUE_NAME): string {
  return `${QUEUE_PREFIX}${name}`;
}

/** Injection token of the options of the queue `name`. */
export function getQueueOptionsToken(name: string = DEFAULT_QUEUE_NAME): string {
  return `${OPTIONS_PREFIX}${name}`;
}
