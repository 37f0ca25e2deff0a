import 'reflect-metadata';

import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';

import { AppModule } from './app.module';

async function bootstrap(): Promise<void> {
  const app = await NestFactory.create(AppModule, { logger: ['log', 'warn', 'error'] });
  // SIGTERM/SIGINT -> onApplicationShutdown: runlane drains in-flight turns,
  // releases the rest to the other instances, and lets the process exit.
  app.enableShutdownHooks();
  await app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1');
  Logger.log(`listening on ${await app.getUrl()}`, 'Bootstrap');
}

void bootstrap();
