/**
 * Finds the runlane decorators on providers (DiscoveryService +
 * MetadataScanner) and wires them to the queues on module init; starts the
 * workers that are configured to run; closes (drains) every queue on
 * application shutdown.
 */
import { Injectable, Logger, OnApplicationShutdown, OnModuleInit } from '@nestjs/common';
import { DiscoveryService, MetadataScanner } from '@nestjs/core';

import {
  EventHandlerMeta,
  HandlerMeta,
  RUNLANE_EVENT_HANDLER,
  RUNLANE_HANDLER,
  RUNLANE_TOOL,
  ToolMeta,
} from './constants';
import { RegisteredQueue, RunlaneRegistry } from './registry';

@Injectable()
export class RunlaneExplorer implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger('Runlane');

  constructor(
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    private readonly registry: RunlaneRegistry,
  ) {}

  async onModuleInit(): Promise<void> {
    this.explore();
    const starts = this.registry
      .all()
      .filter((q) => q.worker === true || (q.worker === undefined && q.queue.hasHandler))
      .map((q) => q.queue.startWorker());
    await Promise.all(starts);
  }

  async onApplicationShutdown(): Promise<void> {
    await Promise.all(this.registry.all().map((q) => q.queue.close()));
  }

  private queuesFor(name: string | undefined, what: string): RegisteredQueue[] {
    if (name === undefined) return this.registry.all();
    const q = this.registry.get(name);
    if (!q) throw new Error(`runlane: ${what} names queue "${name}", which RunlaneModule did not register`);
    return [q];
  }

  private explore(): void {
    const handlers = new Map<string, string>();
    for (const wrapper of this.discovery.getProviders()) {
      const instance = wrapper.instance as Record<string, unknown> | undefined;
      if (!instance || typeof instance !== 'object' || !wrapper.isDependencyTreeStatic()) continue;
      const proto = Object.getPrototypeOf(instance) as object | null;
      if (!proto || proto === Object.prototype) continue;
      const owner = typeof wrapper.name === 'string' ? wrapper.name : (proto.constructor?.name ?? 'provider');
      for (const method of this.scanner.getAllMethodNames(proto)) {
        const fn = (proto as Record<string, unknown>)[method];
        if (typeof fn !== 'function') continue;
        const where = `${owner}.${method}`;
        const call = (...args: unknown[]) => (instance[method] as (...a: unknown[]) => unknown)(...args);

        for (const meta of (Reflect.getMetadata(RUNLANE_EVENT_HANDLER, fn) as EventHandlerMeta[] | undefined) ?? []) {
          for (const q of this.queuesFor(meta.queue, `@OnRunlaneEvent on ${where}`)) {
            q.queue.on(meta.event as 'completed', (...args: unknown[]) => {
              try {
                const r = call(...args);
                if (r && typeof (r as Promise<unknown>).then === 'function') {
                  (r as Promise<unknown>).catch((e: unknown) => this.logger.error(`${where} failed on '${meta.event}': ${String(e)}`));
                }
              } catch (e) {
                this.logger.error(`${where} failed on '${meta.event}': ${String(e)}`);
              }
            });
          }
        }
        for (const meta of (Reflect.getMetadata(RUNLANE_TOOL, fn) as ToolMeta[] | undefined) ?? []) {
          for (const q of this.queuesFor(meta.queue, `@AssistantTool on ${where}`)) {
            q.queue.registerTool(meta.name, (args, ctx) => call(args, ctx));
          }
        }
        const h = Reflect.getMetadata(RUNLANE_HANDLER, fn) as HandlerMeta | undefined;
        if (h) {
          const [q] = this.queuesFor(h.queue, `@RunlaneHandler on ${where}`);
          if (handlers.has(h.queue)) {
            throw new Error(`runlane: queue "${h.queue}" has two handlers: ${handlers.get(h.queue)} and ${where}`);
          }
          handlers.set(h.queue, where);
          q.queue.setHandler((batch) => call(batch));
        }
      }
    }
  }
}
