/**
 * Decorators: they only record metadata under `runlane:*` keys; the
 * explorer (RunlaneExplorer) finds them on providers at module init.
 */
import 'reflect-metadata';
import { Inject } from '@nestjs/common';

import type { RunlaneEventName } from '../types';
import {
  DEFAULT_QUEUE_NAME,
  EventHandlerMeta,
  HandlerMeta,
  RUNLANE_EVENT_HANDLER,
  RUNLANE_HANDLER,
  RUNLANE_TOOL,
  ToolMeta,
  getQueueToken,
} from './constants';

function append<T>(key: string, value: T): MethodDecorator {
  return (_target, _property, descriptor) => {
    const fn = descriptor.value as unknown as object;
    const prev = (Reflect.getMetadata(key, fn) as T[] | undefined) ?? [];
    Reflect.defineMetadata(key, [...prev, value], fn);
    return descriptor;
  };
}

/**
 * The method answers tool calls of `name`: called with the parsed JSON
 * arguments and a ToolContext (its `toolCallId` is an idempotency key: tools
 * run at least once). Its result is JSON-encoded unless it is a string.
 */
export function AssistantTool(name: string, options: { queue?: string } = {}): MethodDecorator {
  return append<ToolMeta>(RUNLANE_TOOL, { name, queue: options.queue });
}

/**
 * The method listens to a queue event: 'batch', 'completed', 'failed',
 * 'dead', 'delta', 'run_started', 'tool_calls', 'lease_lost', 'error',
 * 'stopped'. Without `queue`, on every queue.
 */
export function OnRunlaneEvent(event: RunlaneEventName, options: { queue?: string } = {}): MethodDecorator {
  return append<EventHandlerMeta>(RUNLANE_EVENT_HANDLER, { event, queue: options.queue });
}

/**
 * The method runs the batches of a queue (custom backend): resolving acks,
 * throwing fails (retried; a NonRetriableError dead-letters at once).
 * One per queue.
 */
export function RunlaneHandler(queue: string = DEFAULT_QUEUE_NAME): MethodDecorator {
  return (_target, _property, descriptor) => {
    Reflect.defineMetadata(RUNLANE_HANDLER, { queue } satisfies HandlerMeta, descriptor.value as unknown as object);
    return descriptor;
  };
}

/**
 * Injects the runlane queue `name` (default: the unnamed queue), an
 * AssistantMessageQueueService. Named apart from @nestjs/bullmq's
 * `@InjectQueue`, so an app can import both.
 */
export function InjectRunlaneQueue(name: string = DEFAULT_QUEUE_NAME): PropertyDecorator & ParameterDecorator {
  return Inject(getQueueToken(name));
}

/**
 * @deprecated Use {@link InjectRunlaneQueue}: this name is also
 * @nestjs/bullmq's, and an app that imports both clashes. Same behaviour.
 */
export const InjectQueue = InjectRunlaneQueue;
