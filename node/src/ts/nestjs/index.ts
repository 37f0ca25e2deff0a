/** NestJS integration: `import { RunlaneModule } from 'runlane/nestjs'`. */
export { RunlaneModule, RunlaneCoreModule } from './module';
export type { RunlaneModuleOptions, RunlaneModuleAsyncOptions } from './module';
export { AssistantMessageQueueService } from './service';
export { RunlaneExplorer } from './explorer';
export { RunlaneRegistry } from './registry';
export type { RegisteredQueue } from './registry';
export { AssistantTool, OnRunlaneEvent, RunlaneHandler, InjectRunlaneQueue, InjectQueue } from './decorators';
export { RunlaneHealthIndicator } from './health';
export { RunlaneDashboardModule } from './dashboard';
export type { RunlaneDashboardModuleOptions } from './dashboard';
export type { RunlaneHealthOptions, RunlaneHealthResult, RunlaneHealthDetails } from './health';
export {
  DEFAULT_QUEUE_NAME,
  RUNLANE_EVENT_HANDLER,
  RUNLANE_HANDLER,
  RUNLANE_TOOL,
  getQueueOptionsToken,
  getQueueToken,
} from './constants';
