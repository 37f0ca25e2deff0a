/**
 * The web dashboard in a NestJS app: a controller over the core's request
 * handler (through RunlaneDashboard, the same adapter as the Express
 * middleware), at a path of the app's choosing, behind the app's guards:
 *
 *   @Module({
 *     imports: [
 *       RunlaneModule.forRoot({ store: 'redis://127.0.0.1:6379/0' }),
 *       RunlaneDashboardModule.register({ path: 'ops/lanes', guards: [AdminGuard] }),
 *     ],
 *   })
 *
 * Global guards (APP_GUARD, app.useGlobalGuards) apply as to any controller;
 * `guards` adds guards for the dashboard only. The app's global prefix
 * applies too.
 */
import { All, Controller, DynamicModule, Inject, Module, OnModuleDestroy, Req, Res, UseGuards } from '@nestjs/common';
import type { CanActivate } from '@nestjs/common';
import type { IncomingMessage, ServerResponse } from 'node:http';

import { RunlaneDashboard } from '../dashboard';
import type { RunlaneDashboardOptions } from '../dashboard';
import type { AssistantMessageQueue } from '../queue';
import { DEFAULT_QUEUE_NAME, getQueueToken } from './constants';

export interface RunlaneDashboardModuleOptions extends Omit<RunlaneDashboardOptions, 'prefix'> {
  /** Where the dashboard lives (default 'runlane'); the page is at '<path>/'. */
  path?: string;
  /** The queue shown (a RunlaneModule queue name; default 'default'). */
  queue?: string;
  /** Guards for the dashboard's routes only (classes or instances), on top of the app's global ones. */
  // eslint-disable-next-line @typescript-eslint/no-unsafe-function-type
  guards?: (CanActivate | Function)[];
}

let seq = 0;

function dashboardController(path: string, queueToken: string, optionsToken: string, guards: RunlaneDashboardModuleOptions['guards']) {
  @Controller(path)
  class RunlaneDashboardController implements OnModuleDestroy {
    readonly dashboard: RunlaneDashboard;

    constructor(@Inject(queueToken) queue: AssistantMessageQueue, @Inject(optionsToken) options: RunlaneDashboardModuleOptions) {
      const { path: _p, queue: _q, guards: _g, ...rest } = options;
      this.dashboard = new RunlaneDashboard(queue, rest);
    }

    // '' is the mount point, '*rest' everything under it.
    @All(['', '*rest'])
    async handle(@Req() req: IncomingMessage & { params?: Record<string, unknown> }, @Res() res: ServerResponse): Promise<void> {
      const rest = req.params?.rest;
      const rel = '/' + (Array.isArray(rest) ? rest.join('/') : typeof rest === 'string' ? rest : '');
      await this.dashboard.respond(req, res, rel);
    }

    onModuleDestroy(): void {
      this.dashboard.close();
    }
  }
  if (guards && guards.length) UseGuards(...guards)(RunlaneDashboardController);
  return RunlaneDashboardController;
}

/** The dashboard of one RunlaneModule queue, mounted as a controller. */
@Module({})
export class RunlaneDashboardModule {
  static register(options: RunlaneDashboardModuleOptions = {}): DynamicModule {
    const path = (options.path ?? 'runlane').replace(/^\/+|\/+$/g, '');
    const optionsToken = `runlane.dashboard-options:${++seq}`;
    const controller = dashboardController(path, getQueueToken(options.queue ?? DEFAULT_QUEUE_NAME), optionsToken, options.guards);
    return {
      module: RunlaneDashboardModule,
      controllers: [controller],
      providers: [{ provide: optionsToken, useValue: options }],
    };
  }
}
