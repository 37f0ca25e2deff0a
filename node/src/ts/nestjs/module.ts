/**
 * RunlaneModule, in the manner of @nestjs/bullmq:
 *
 *   RunlaneModule.forRoot({ store: 'redis://...', batchWindowMs: 3000 })
 *   RunlaneModule.forRootAsync({ imports: [ConfigModule], inject: [ConfigService],
 *                                useFactory: (c) => ({ store: c.get('REDIS_URL') }) })
 *   RunlaneModule.forRoot({ name: 'support', ... })   // more queues: getQueueToken('support')
 *
 * Each call registers one queue (an AssistantMessageQueueService) under
 * getQueueToken(name); the unnamed one is also injectable by class.
 */
import { DynamicModule, Module, ModuleMetadata, Provider } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';

import type { AssistantMessageQueueOptions } from '../types';
import { DEFAULT_QUEUE_NAME, getQueueOptionsToken, getQueueToken } from './constants';
import { RunlaneExplorer } from './explorer';
import { RunlaneHealthIndicator } from './health';
import { RunlaneRegistry } from './registry';
import { AssistantMessageQueueService } from './service';

export interface RunlaneModuleOptions extends AssistantMessageQueueOptions {
  /** Queue name (default 'default'); inject with @InjectRunlaneQueue(name) or getQueueToken(name). */
  name?: string;
  /**
   * Start the worker on module init. Default: when the queue has a batch
   * handler (the `handler` option or a @RunlaneHandler method).
   */
  worker?: boolean;
}

export interface RunlaneModuleAsyncOptions extends Pick<ModuleMetadata, 'imports'> {
  /** Queue name (default 'default'). */
  name?: string;
  useFactory: (...args: any[]) => Omit<RunlaneModuleOptions, 'name'> | Promise<Omit<RunlaneModuleOptions, 'name'>>;
  inject?: any[];
  /** Register the queue globally (default true). */
  global?: boolean;
}

/** The shared part: one registry and one explorer per application. */
@Module({
  imports: [DiscoveryModule],
  providers: [RunlaneRegistry, RunlaneExplorer, RunlaneHealthIndicator],
  exports: [RunlaneRegistry, RunlaneHealthIndicator],
})
export class RunlaneCoreModule {}

@Module({})
export class RunlaneModule {
  /** Registers a queue with static options. */
  static forRoot(options: RunlaneModuleOptions & { global?: boolean } = {}): DynamicModule {
    const name = options.name ?? DEFAULT_QUEUE_NAME;
    const { global, ...rest } = options;
    return RunlaneModule.build(name, { provide: getQueueOptionsToken(name), useValue: rest }, [], global);
  }

  /** Registers a queue whose options come from a factory with injected dependencies. */
  static forRootAsync(options: RunlaneModuleAsyncOptions): DynamicModule {
    const name = options.name ?? DEFAULT_QUEUE_NAME;
    const provider: Provider = {
      provide: getQueueOptionsToken(name),
      useFactory: options.useFactory,
      inject: options.inject ?? [],
    };
    return RunlaneModule.build(name, provider, options.imports ?? [], options.global);
  }

  private static build(name: string, optionsProvider: Provider, imports: NonNullable<ModuleMetadata['imports']>, global = true): DynamicModule {
    const token = getQueueToken(name);
    const providers: Provider[] = [
      optionsProvider,
      {
        provide: token,
        useFactory: (opts: RunlaneModuleOptions, registry: RunlaneRegistry) => {
          const { worker, ...queueOptions } = opts ?? {};
          const queue = new AssistantMessageQueueService({ ...queueOptions, name });
          queue.managedByModule = true;
          registry.add({ name, queue, worker });
          return queue;
        },
        inject: [getQueueOptionsToken(name), RunlaneRegistry],
      },
    ];
    // RunlaneCoreModule re-exported: the app can inject RunlaneHealthIndicator.
    const exports: NonNullable<ModuleMetadata['exports']> = [token, RunlaneCoreModule];
    if (name === DEFAULT_QUEUE_NAME) {
      providers.push({ provide: AssistantMessageQueueService, useExisting: token });
      exports.push(AssistantMessageQueueService);
    }
    return {
      module: RunlaneModule,
      global,
      imports: [RunlaneCoreModule, ...imports],
      providers,
      exports,
    };
  }
}
