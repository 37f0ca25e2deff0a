/**
 * runlane for Node: one lane per conversation.
 *
 *   import { AssistantMessageQueue } from 'runlane';
 *   const q = new AssistantMessageQueue({ store: 'redis://127.0.0.1:6379/0', batchWindowMs: 3000,
 *                                         handler: async (batch) => reply(batch) });
 *   await q.startWorker();
 *   await q.addMessageToThread('conv-1', 'hello');
 *
 * NestJS: `import { RunlaneModule } from 'runlane/nestjs'`.
 */
import { raw } from './native';

export { AssistantMessageQueue, buildConf, isConfigOption, runlaneConfigProperties } from './queue';
export type { CloseOptions } from './queue';
export { Batch } from './batch';
export { RunlaneDashboard, runlaneDashboard } from './dashboard';
export type { RunlaneDashboardOptions, DashboardMiddleware, DashboardRequest, DashboardResponse } from './dashboard';
export type { PropertyInfo, ConfigValue } from './config';
export type { RunlaneConfigOptions } from './options.generated';
export { CONFIG_KEYS } from './options.generated';
export * from './errors';
export type * from './types';

/** Version of the loaded core, e.g. "0.1.0". */
export function version(): string {
  return raw().runlane_version_str();
}

/** Feature bits of the loaded core (RUNLANE_FEATURE_*). */
export function features(): { redis: boolean; redisTls: boolean; http: boolean; httpTls: boolean; cluster: boolean; bits: number } {
  const f = raw().runlane_features();
  return { redis: !!(f & 1), redisTls: !!(f & 2), http: !!(f & 4), httpTls: !!(f & 8), cluster: !!(f & 16), bits: f };
}

/** The SWIG-generated raw layer (the C API one to one). For tools and tests; the classes cover the API. */
export function rawBinding(): unknown {
  return raw();
}
