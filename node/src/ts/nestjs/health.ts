/**
 * A health indicator for @nestjs/terminus (not a dependency: the result has
 * terminus's HealthIndicatorResult shape, `{ [key]: { status: 'up' | 'down',
 * ... } }`, which HealthCheckService.check() reads as it is):
 *
 *   @Get('health') @HealthCheck()
 *   check() { return this.health.check([() => this.runlane.isHealthy('runlane')]); }
 *
 * The facts of each queue come from the core (runlane_health: store
 * reachable, worker state, lag of the oldest due conversation).
 */
import { Injectable } from '@nestjs/common';

import type { QueueHealth } from '../types';
import { RunlaneRegistry } from './registry';

export interface RunlaneHealthOptions {
  /** Only this queue (default: every queue RunlaneModule registered). */
  queue?: string;
  /** Also down when a queue's lag (ms) is above this. */
  maxLagMs?: number;
}

/** One queue's facts, with its own status. */
export type RunlaneHealthDetails = (QueueHealth & { status: 'up' | 'down' }) | { status: 'down'; error: string };

/** terminus's HealthIndicatorResult shape. */
export type RunlaneHealthResult = Record<string, { status: 'up' | 'down'; queues: Record<string, RunlaneHealthDetails> }>;

@Injectable()
export class RunlaneHealthIndicator {
  constructor(private readonly registry: RunlaneRegistry) {}

  /**
   * `{ [key]: { status, queues: { [name]: facts } } }`: up when every queue
   * is healthy by the core (store reachable; worker running, or never
   * started in a producer-only queue) and within `maxLagMs`.
   */
  async isHealthy(key = 'runlane', options: RunlaneHealthOptions = {}): Promise<RunlaneHealthResult> {
    const all = this.registry.all();
    const queues = options.queue === undefined ? all : all.filter((q) => q.name === options.queue);
    const details: Record<string, RunlaneHealthDetails> = {};
    let up = queues.length > 0;
    if (options.queue !== undefined && queues.length === 0) {
      details[options.queue] = { status: 'down', error: `no queue named "${options.queue}" is registered` };
    }
    await Promise.all(
      queues.map(async (q) => {
        try {
          const h = await q.queue.health();
          const ok = h.ok && (options.maxLagMs === undefined || (h.lagMs !== null && h.lagMs <= options.maxLagMs));
          details[q.name] = { ...h, status: ok ? 'up' : 'down' };
          if (!ok) up = false;
        } catch (e) {
          details[q.name] = { status: 'down', error: e instanceof Error ? e.message : String(e) };
          up = false;
        }
      }),
    );
    return { [key]: { status: up ? 'up' : 'down', queues: details } };
  }
}
